"""slowctl: slow control for detector test benches. For scripts: `from slowctl import Client` (docs/python-api.md)."""

from __future__ import annotations

from typing import Any

__all__ = ["Client", "ClientError", "Refused"]


def __getattr__(name: str) -> Any:
    # lazily: the services import slowctl.* without paying for the client
    if name in __all__:
        from slowctl.client import client

        return getattr(client, name)
    raise AttributeError(f"module 'slowctl' has no attribute {name!r}")
