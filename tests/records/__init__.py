from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.tools import tool

from harness import DummyStack


def records_stack(workdir: Path, tweak: Callable[[dict], None] | None = None) -> DummyStack:
    """A native dummy stack with the recorder and its FerretDB, started (skips without Mosquitto; fails, not
    skips, when FerretDB is not built: these tests are about the record)."""
    from slowctl.stack.native import StackError, find_mosquitto

    try:
        find_mosquitto()
    except StackError as exc:
        pytest.skip(str(exc))
    os.environ.setdefault("SLOWCTL_FERRETDB", str(tool("ferretdb")))
    return DummyStack(workdir, tweak, records=True).start()
