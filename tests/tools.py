"""Programs the tests run for real that are built from source by scripts/build-test-tools.sh
(`scripts/install.sh --test` builds them; the suite fails, it does not skip, when one is missing)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def _built() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-test-tools.sh"), "--paths"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.split())


def tool(name: str) -> Path:
    """The built program `name` (telegraf, influxd, compose, ferretdb)."""
    path = _built().get(name)
    if path is None:
        pytest.fail(f"{name} is not built: run scripts/build-test-tools.sh {name} (scripts/install.sh --test does)")
    return Path(path)
