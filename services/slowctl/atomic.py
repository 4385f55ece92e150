"""State files that survive a power loss: replaced atomically and on disk before the call returns."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, body: Any) -> None:
    """Replace `path` atomically and wait until it is on disk: a torn file after a power loss would lose
    (or, for a latch file, invent) what the service must not forget."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(body, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)  # the rename itself must reach the disk too
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
