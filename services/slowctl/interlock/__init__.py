"""The interlock process: the stack's interlock rules on MQTT (rules: slowctl.safety)."""
