"""The slowctl climate box: temperature and humidity sensors on a line protocol.

`READ?` LF -> `21.53,45.20;22.01,38.77` LF (°C,%RH per sensor). Protocol: dummy/README.md.
"""

from __future__ import annotations

from pydantic import Field

from slowctl.drivers.base import NoOptions, SensorDriver
from slowctl.drivers.humidity import dewpoint
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings
from slowctl.drivers.readings import SensorChannel


class ClimateOptions(NoOptions):
    sensors: int = Field(default=2, ge=1, le=16)


class ClimateBox(SensorDriver):
    model = "climate"
    description = "slowctl climate box (temperature, humidity, dew point)"
    Options = ClimateOptions
    max_channels = 16
    link_settings = LinkSettings(write_termination="\n", read_termination="\n")

    options: ClimateOptions

    @classmethod
    def channel_count(cls, options: ClimateOptions) -> int:  # type: ignore[override]
        return options.sensors

    def _ask(self, request: str) -> str:
        reply = self.link.query(request)
        if reply.startswith("ERR"):
            raise InstrumentError(f"{request}: {reply}")
        return reply

    def connect(self) -> str:
        identity = self._ask("*IDN?")
        try:
            count = int(self._ask("NSENS?"))
        except ValueError:
            raise LinkError("unreadable sensor count") from None
        if count < self.options.sensors:
            raise InstrumentError(f"box has {count} sensors, config expects {self.options.sensors}")
        return identity

    def read(self, channels: list[int], full: bool) -> dict[int, SensorChannel]:
        reply = self._ask("READ?")
        sensors = reply.split(";")
        result = {}
        for ch in channels:
            try:
                t_text, rh_text = sensors[ch].split(",")
                t, rh = float(t_text), float(rh_text)
            except (IndexError, ValueError):
                raise LinkError(f"unreadable sensor {ch} in {reply[:64]!r}") from None
            result[ch] = SensorChannel(temperature=t, humidity=rh, dewpoint=round(dewpoint(t, rh), 2))
        return result
