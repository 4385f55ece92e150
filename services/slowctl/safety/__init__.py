"""Safety: interlock rules and their evaluation (no MQTT, no threads)."""
