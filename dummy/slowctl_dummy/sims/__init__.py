"""Registry of the simulated instruments, keyed by the CLI model name: every module here is scanned."""

import sys

from slowctl.registry import discover

from ..base import Instrument

SIMULATORS: dict[str, type[Instrument]] = discover(sys.modules[__name__], Instrument)

__all__ = ["SIMULATORS"]
