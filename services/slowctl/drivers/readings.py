"""What a driver reads from an instrument channel, in SI units: the vocabulary shared by every layer above."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ChannelState(str, enum.Enum):
    OFF = "OFF"
    RAMP_UP = "RAMP_UP"
    ON = "ON"
    COMPLIANCE = "COMPLIANCE"  # on, but the output is limited by the current limit
    RAMP_DOWN = "RAMP_DOWN"
    TRIPPED = "TRIPPED"
    ERROR = "ERROR"


@dataclass
class SupplyChannel:
    """One supply channel as read from the instrument (SI units)."""

    on: bool
    vset: float
    vmon: float | None  # None: not measured (e.g. a SourceMeter with its output off)
    iset: float
    imon: float | None
    state: ChannelState
    rampup: float | None = None
    rampdown: float | None = None
    alarms: list[str] = field(default_factory=list)

    KIND = "supply"


@dataclass
class SensorChannel:
    """One climate sensor: temperature (°C), relative humidity (%RH), dew point (°C)."""

    temperature: float
    humidity: float
    dewpoint: float

    KIND = "environment"


@dataclass
class ChillerChannel:
    """A recirculating chiller: bath temperature and setpoint (°C), running or not."""

    on: bool
    tset: float
    temperature: float
    state: ChannelState
    status_code: int | None = None
    status: str | None = None
    alarms: list[str] = field(default_factory=list)

    KIND = "chiller"


Reading = SupplyChannel | SensorChannel | ChillerChannel
