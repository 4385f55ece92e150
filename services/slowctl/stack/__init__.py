"""The native stack: broker, gateway, control UI, supervisor, TLS, compose init."""
