"""What a device service must not forget across a restart: latched alarms and the outputs it last saw.

One JSON file per device in the service's state directory, replaced atomically on every change. A file
that exists but cannot be read is not a clean slate: every channel stays latched until an operator
clears it (`UNREADABLE`), because the service cannot prove that no trip was latched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slowctl.atomic import write_json

VERSION = 1
UNREADABLE = "LATCH_STATE_UNREADABLE"


@dataclass
class Memory:
    latched: dict[int, set[str]] = field(default_factory=dict)
    outputs: dict[int, dict[str, Any]] = field(default_factory=dict)  # last seen: on, vset, iset, tset
    problem: str | None = None  # why the file could not be read


class MemoryFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: keep nothing (unit tests, one-off runs)

    def load(self, channels: list[int]) -> Memory:
        if self.path is None or not self.path.exists():
            return Memory()
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} state file")
            latched = {int(ch): set(_strings(v)) for ch, v in data["latched"].items()}
            outputs = {int(ch): dict(v) for ch, v in data["outputs"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            why = f"state file {self.path} unreadable ({exc}): every channel stays latched until cleared"
            return Memory(latched={ch: {UNREADABLE} for ch in channels}, problem=why)
        return Memory(
            latched={ch: a for ch, a in latched.items() if a and ch in channels},
            outputs={ch: o for ch, o in outputs.items() if ch in channels},
        )

    def save(self, memory: Memory) -> None:
        if self.path is None:
            return
        body = {
            "version": VERSION,
            "latched": {str(ch): sorted(a) for ch, a in sorted(memory.latched.items()) if a},
            "outputs": {str(ch): o for ch, o in sorted(memory.outputs.items())},
        }
        write_json(self.path, body)


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("latched alarms must be lists of names")
    return value
