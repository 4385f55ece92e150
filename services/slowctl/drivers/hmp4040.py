"""Rohde & Schwarz (HAMEG) HMP4040 / HMP2030 low-voltage supply: SCPI, LF-terminated.

Channel 0 of the config is OUT1 on the front panel. Channel selection and the
query travel in one message (`INST:NSEL 1;MEAS:VOLT?`), so no other request can
slip between them.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl.drivers.base import ChannelParam, NoOptions, SupplyDriver
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings
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

    vset = ChannelParam("SOUR:VOLT", "V", limits=(0, 32.05))
    iset = ChannelParam("SOUR:CURR", "A", limits=(0, 10.0))
    vmon = ChannelParam("MEAS:VOLT", "V", readonly=True)
    imon = ChannelParam("MEAS:CURR", "A", readonly=True)

    options: HmpOptions

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._settings: dict[int, tuple[float, float]] = {}
        self._outputs = self.options.channels  # physical outputs, from *IDN? at connect

    @classmethod
    def channel_count(cls, options: HmpOptions) -> int:  # type: ignore[override]
        return options.channels

    # --- protocol ----------------------------------------------------------
    @staticmethod
    def _select(channel: int) -> str:
        return f"INST:NSEL {channel + 1}"

    def _ask(self, channel: int, *queries: str) -> list[str]:
        return ask(self.link, list(queries), prefix=self._select(channel))

    def _command(self, command: str) -> None:
        """Send a setting and read the error queue: SCPI settings have no reply of their own.

        *CLS first, in the same message: an old error must not be blamed on this command.
        """
        self.link.write(f"*CLS;{command}")
        error = self.link.query("SYST:ERR?")
        code, _, text = error.partition(",")
        try:
            if int(code) != 0:
                raise InstrumentError(f"instrument refused {command!r}: {error}")
        except ValueError:
            raise LinkError(f"unreadable error reply {error!r}") from None

    def _get(self, param: ChannelParam, channel: int) -> str:
        return self._ask(channel, f"{param.command}?")[0]

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
        if not flag(self.link.query("OUTP:GEN?")):
            # the master switch turns on every armed output, configured or not: disarm the others first
            for other in range(self._outputs):
                if other != channel and flag(self._ask(other, "OUTP:SEL?")[0]):
                    self._command(f"{self._select(other)};OUTP:SEL OFF")
        self._command(f"{self._select(channel)};OUTP:SEL ON")
        self._command("OUTP:GEN ON")

    def clear(self, channel: int) -> None:
        # acknowledge a fuse or over-voltage trip by disarming the output; an output that did not trip
        # is left alone
        fuse, ovp = self._ask(channel, "FUSE:TRIP?", "VOLT:PROT:TRIP?")
        if flag(fuse) or flag(ovp):
            self._command(f"{self._select(channel)};OUTP:SEL OFF")

    def read(self, channels: list[int], full: bool) -> dict[int, SupplyChannel]:
        general = flag(self.link.query("OUTP:GEN?"))
        result = {}
        for ch in channels:
            if full or ch not in self._settings:
                v, i = self._ask(ch, "SOUR:VOLT?", "SOUR:CURR?")
                try:
                    self._settings[ch] = (float(v), float(i))
                except ValueError:
                    raise LinkError(f"unreadable set values {v!r} / {i!r}") from None
            vmon, imon, armed, fuse, ovp = self._ask(ch, "MEAS:VOLT?", "MEAS:CURR?", "OUTP:SEL?", "FUSE:TRIP?",
                                                     "VOLT:PROT:TRIP?")
            on = general and flag(armed)
            alarms = [name for name, bit in (("FUSE", fuse), ("OVP", ovp)) if flag(bit)]
            if alarms:
                state = ChannelState.TRIPPED
            else:
                state = ChannelState.ON if on else ChannelState.OFF
            vset, iset = self._settings[ch]
            try:
                result[ch] = SupplyChannel(on=on, vset=vset, vmon=float(vmon), iset=iset, imon=float(imon),
                                           state=state, alarms=alarms)
            except ValueError:
                raise LinkError(f"unreadable measurement {vmon!r} / {imon!r}") from None
        return result
