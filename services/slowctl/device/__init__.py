"""The device side: one instrument service (policy core, MQTT adapter, contract, payloads)."""
