"""Instrument drivers, by model id: every module in this package is scanned (slowctl.registry)."""

import sys

from slowctl.drivers.base import ChillerDriver, Driver, SensorDriver, SupplyDriver
from slowctl.registry import discover

# mypy refuses an abstract class where type[T] is expected (python/mypy#4717); Driver is only the base
# that discover() filters by, and it returns the concrete subclasses alone
DRIVERS: dict[str, type[Driver]] = discover(sys.modules[__name__], Driver)  # type: ignore[type-abstract]


def kind_of(driver: type[Driver]) -> str:
    """The kind of device a driver drives: supply, chiller or sensor (what actions it can accept)."""
    for base, kind in ((SupplyDriver, "supply"), (ChillerDriver, "chiller"), (SensorDriver, "sensor")):
        if issubclass(driver, base):
            return kind
    raise ValueError(f"{driver.__name__}: not a supply, chiller or sensor driver")


SELV_LIMIT = 60.0  # V (IEC safety extra-low voltage, DC): a supply allowed above it is treated as HV


def supply_kind(model: str, vmax: list[float | None]) -> str | None:
    """'hv' or 'lv' for a supply (tag `kind` of its metrics, HV confirmation in the UI); None otherwise.

    HV: a sensor-bias instrument, or any supply whose channels may be set above SELV.
    """
    cls = DRIVERS[model]
    if not issubclass(cls, SupplyDriver):
        return None
    return "hv" if cls.high_voltage or any((v or 0) > SELV_LIMIT for v in vmax) else "lv"


def current_unit(model: str, vmax: list[float | None], imax: list[float | None]) -> tuple[str, float]:
    """The unit people read and type a supply's currents in, and its size in A: µA for HV and sensor bias
    (also when no imax is configured: an operator types µA out of habit) and for supplies limited to 10 mA."""
    small = supply_kind(model, vmax) == "hv" or 0 < max((i or 0 for i in imax), default=0) <= 0.01
    return ("µA", 1e-6) if small else ("A", 1.0)


__all__ = [
    "DRIVERS",
    "SELV_LIMIT",
    "ChillerDriver",
    "Driver",
    "SensorDriver",
    "SupplyDriver",
    "current_unit",
    "kind_of",
    "supply_kind",
]
