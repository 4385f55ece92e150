"""Instrument drivers, by model id."""

from slowctl.drivers.base import ChillerDriver, Driver, SensorDriver, SupplyDriver
from slowctl.drivers.caen_n1470 import CaenN1470
from slowctl.drivers.climate import ClimateBox
from slowctl.drivers.hmp4040 import Hmp4040

DRIVERS: dict[str, type[Driver]] = {cls.model: cls for cls in (CaenN1470, Hmp4040, ClimateBox)}

__all__ = ["DRIVERS", "ChillerDriver", "Driver", "SensorDriver", "SupplyDriver"]
