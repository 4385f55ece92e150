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


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` atomically with `text`, created with `mode` (never readable by others first)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
