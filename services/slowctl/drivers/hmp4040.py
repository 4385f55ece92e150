"""Rohde & Schwarz (HAMEG) HMP4040 / HMP2030 low-voltage supply: SCPI, LF-terminated.

Channel 0 of the config is OUT1 on the front panel. Channel selection and the
query travel in one message (`INST:NSEL 1;MEAS:VOLT?`), so no other request can
slip between them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from slowctl.drivers.base import ChannelParam, NoOptions, SupplyDriver
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl.drivers.scpi import ErrorQueue
from slowctl.drivers.wire import ask, decimal, flag


class HmpOptions(NoOptions):
    channels: Literal[3, 4] = Field(default=4, description="HMP4040: 4, HMP2030: 3")
    fuse: bool | None = Field(default=None, description="switch the electronic fuse on/off at start; null leaves it")
    fuse_delay_ms: int | None = Field(default=None, ge=0, le=250)


class Hmp4040(SupplyDriver):
    model = "hmp4040"
    description = "Rohde & Schwarz HMP4040 / HMP2030 low-voltage supply"
    Options = HmpOptions
    max_channels = 4
    link_settings = LinkSettings(write_termination="\n", read_termination="\n", rtscts=True)

    # setting resolution: 1 mV; current 0.1 mA below 1 A, 1 mA from 1 A (docs/instruments/hmp4040.md)
    vset = ChannelParam("SOUR:VOLT", "V", limits=(0, 32.05), resolution=1e-3)
    iset = ChannelParam("SOUR:CURR", "A", limits=(0, 10.0), steps=((1.0, 1e-4), (10.0, 1e-3)))
    vmon = ChannelParam("MEAS:VOLT", "V", readonly=True)
    imon = ChannelParam("MEAS:CURR", "A", readonly=True)
    armed = ChannelParam("OUTP:SEL", kind=flag, readonly=True)  # the output's own switch
    fuse_trip = ChannelParam("FUSE:TRIP", kind=flag, readonly=True)
    ovp_trip = ChannelParam("VOLT:PROT:TRIP", kind=flag, readonly=True)
    general = ChannelParam("OUTP:GEN", kind=flag, readonly=True)  # the master switch, not per output

    ERRORS = ErrorQueue("SYST:ERR?", clear="*CLS")  # *CLS first: an old error is not this command's
    SETTINGS = ("vset", "iset")
    MONITORS = ("vmon", "imon", "armed", "fuse_trip", "ovp_trip")

    options: HmpOptions

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._settings: dict[int, tuple[float, float]] = {}
        self._outputs: int = self.options.channels  # physical outputs, from *IDN? at connect

    @classmethod
    def channel_count(cls, options: HmpOptions) -> int:  # type: ignore[override]
        return options.channels

    # --- protocol ----------------------------------------------------------
    @staticmethod
    def _select(channel: int) -> str:
        return f"INST:NSEL {channel + 1}"

    def _read(self, channel: int, names: tuple[str, ...]) -> dict[str, Any]:
        """Several parameters of one output: its selection and their queries in one message."""
        params = [getattr(Hmp4040, name) for name in names]
        answers = ask(self.link, [p.query_text() for p in params], prefix=self._select(channel))
        return {p.name: p.parse(answer) for p, answer in zip(params, answers, strict=True)}

    def _general(self) -> bool:
        return bool(Hmp4040.general.parse(self.link.query(Hmp4040.general.query_text())))

    def _command(self, command: str) -> None:
        self.ERRORS.command(self.link, command)

    def _get(self, param: ChannelParam, channel: int) -> str:
        return ask(self.link, [param.query_text()], prefix=self._select(channel))[0]

    def _set(self, param: ChannelParam, channel: int, value: float) -> None:
        self._command(f"{self._select(channel)};{param.command} {decimal(value)}")

    # --- the framework's view ----------------------------------------------
    def connect(self) -> str:
        identity = self.link.query("*IDN?")
        fields = identity.split(",")
        if len(fields) < 2 or not re.fullmatch(r"HMP\d{4}", fields[1].strip()):
            raise LinkError(f"not an HMP supply: {identity!r}")
        model = fields[1].strip()
        outputs = int(model[-2])  # HMP4040: 4 outputs, HMP4030 / HMP2030: 3, HMP2020: 2
        if outputs < self.options.channels:
            raise InstrumentError(f"{model} has {outputs} outputs, the config expects {self.options.channels}")
        self._outputs = outputs
        self._settings.clear()
        return identity

    def configure_channel(self, channel: int, rampup: float | None, rampdown: float | None, off_mode: str) -> None:
        if self.options.fuse is not None:
            self._command(f"{self._select(channel)};FUSE {'ON' if self.options.fuse else 'OFF'}")
        if self.options.fuse_delay_ms is not None:
            self._command(f"{self._select(channel)};FUSE:DEL {self.options.fuse_delay_ms}")

    def switch(self, channel: int, on: bool) -> None:
        if not on:
            self._command(f"{self._select(channel)};OUTP:SEL OFF")
            return
        if not self._general():
            # the master switch turns on every armed output, configured or not: disarm the others first
            for other in range(self._outputs):
                if other != channel and self.armed[other]:
                    self._command(f"{self._select(other)};OUTP:SEL OFF")
        self._command(f"{self._select(channel)};OUTP:SEL ON")
        self._command("OUTP:GEN ON")

    def clear(self, channel: int) -> None:
        # acknowledge a fuse or over-voltage trip by disarming the output; an output that did not trip
        # is left alone
        trips = self._read(channel, ("fuse_trip", "ovp_trip"))
        if trips["fuse_trip"] or trips["ovp_trip"]:
            self._command(f"{self._select(channel)};OUTP:SEL OFF")

    def read(self, channels: list[int], full: bool) -> dict[int, SupplyChannel]:
        general = self._general()
        result = {}
        for ch in channels:
            if full or ch not in self._settings:
                s = self._read(ch, self.SETTINGS)
                self._settings[ch] = (s["vset"], s["iset"])
            m = self._read(ch, self.MONITORS)
            on = general and m["armed"]
            alarms = [name for name, key in (("FUSE", "fuse_trip"), ("OVP", "ovp_trip")) if m[key]]
            if alarms:
                state = ChannelState.TRIPPED
            else:
                state = ChannelState.ON if on else ChannelState.OFF
            vset, iset = self._settings[ch]
            result[ch] = SupplyChannel(
                on=on, vset=vset, vmon=m["vmon"], iset=iset, imon=m["imon"], state=state, alarms=alarms
            )
        return result
