"""Liveness for container healthchecks: the service touches a file while its loop runs and MQTT is up.

`slowctl healthcheck` (the compose healthcheck) says unhealthy when the file is
older than --max-age: a hung poll loop or a broker it cannot reach.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "SLOWCTL_HEALTH_FILE"


class Heartbeat:
    def __init__(self, path: str | None, every: float = 1.0) -> None:
        self.path = Path(path) if path else None
        self.every = every
        self._last = 0.0

    @classmethod
    def from_env(cls) -> Heartbeat:
        return cls(os.environ.get(ENV) or None)

    def beat(self, alive: bool) -> None:
        now = time.monotonic()
        if self.path is None or not alive or now - self._last < self.every:
            return
        self._last = now
        self.path.touch()


def check(path: Path, max_age: float) -> str | None:
    """None when healthy, else why not."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"{path} missing: the service has not run its loop with the broker connected yet"
    if age > max_age:
        return f"last heartbeat {age:.0f} s ago (limit {max_age:g} s): poll loop stuck or broker unreachable"
    return None
