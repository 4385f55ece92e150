"""Registry of the simulated instruments, keyed by the CLI model name."""

from ..base import Instrument
from .caen_n1470 import CaenN1470
from .climate import ClimateBox
from .hmp4040 import Hmp4040

SIMULATORS: dict[str, type[Instrument]] = {
    cls.model: cls for cls in (CaenN1470, Hmp4040, ClimateBox)
}

__all__ = ["SIMULATORS", "CaenN1470", "ClimateBox", "Hmp4040"]
