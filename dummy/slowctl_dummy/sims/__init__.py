"""Registry of the simulated instruments, keyed by the CLI model name: every module here is scanned."""

import sys

from slowctl.registry import discover

from ..base import Instrument
from .caen_n1470 import CaenN1470
from .climate import ClimateBox
from .hmp4040 import Hmp4040

SIMULATORS: dict[str, type[Instrument]] = discover(sys.modules[__name__], Instrument)

__all__ = ["SIMULATORS", "CaenN1470", "ClimateBox", "Hmp4040"]
