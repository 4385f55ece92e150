"""Instrument drivers, by model id: every module in this package is scanned (slowctl.registry)."""

import sys

from slowctl.drivers.base import ChillerDriver, Driver, SensorDriver, SupplyDriver
from slowctl.registry import discover

DRIVERS: dict[str, type[Driver]] = discover(sys.modules[__name__], Driver)

__all__ = ["DRIVERS", "ChillerDriver", "Driver", "SensorDriver", "SupplyDriver"]
