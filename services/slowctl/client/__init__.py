"""The client side: status and commands over MQTT, for the CLI and for scripts."""
