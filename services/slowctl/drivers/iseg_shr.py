"""iseg SHR / NHS / NHR high-voltage modules: SCPI, CR LF, echoed on the serial port.

`:MEAS:VOLT? (@0-3)` CR LF  ->  echo `:MEAS:VOLT? (@0-3)` CR LF, then `-0.50000E3V,0.00000E3V,...` CR LF.
A poll is one line: `:MEAS:VOLT? (@0-3);:MEAS:CURR? (@0-3);:READ:CHAN:STATUS? (@0-3);:READ:CHAN:EVENT:STATUS? (@0-3)`.
Values carry a unit suffix and the sign of the channel polarity; the contract gets magnitudes.
Settings have no reply: each is followed by `:SYST:ERR?`. Never `*CLS`: on an iseg
it also clears every channel's event register, i.e. the latched trips of all channels.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from slowctl.drivers.base import ChannelParam, NoOptions, Steps, SupplyDriver
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl.drivers.scpi import ErrorQueue
from slowctl.drivers.wire import ask, decimal

STATUS_BITS = {
    0: "POSITIVE",
    1: "ARC",
    2: "INPUT_ERROR",
    3: "ON",
    4: "RAMP",
    5: "EMCY",
    6: "CC",
    7: "CV",
    8: "LOW_RANGE",
    10: "I_BOUNDS",
    11: "V_BOUNDS",
    12: "INHIBIT",
    13: "TRIP",
    14: "I_LIMIT",
    15: "V_LIMIT",
    19: "RAMP_UP",
    20: "RAMP_DOWN",
}
ALARMS = ("ARC", "INPUT_ERROR", "EMCY", "CC", "I_BOUNDS", "V_BOUNDS", "INHIBIT", "TRIP", "I_LIMIT", "V_LIMIT")
FAULTS = frozenset({"ARC", "INPUT_ERROR", "INHIBIT"})
# ramp speed steps (V/s): 1 mV/s below 1 V/s, 10 mV/s from there (docs/instruments/iseg-shr.md, unconfirmed)
RAMP_STEPS: Steps = ((1.0, 1e-3), (1200.0, 1e-2))
POSITIVE, ON, EMCY, TRIP, RAMP_UP = 1 << 0, 1 << 3, 1 << 5, 1 << 13, 1 << 19

_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d*))?\s*([A-Za-z/%]*)\s*")


def parse_number(text: str, unit: str = "") -> float:
    """`1.23400E3V`, `-1.0E-6A`, `5.000E1V/s`, `12.3456E-6A`, `1.23456EA` (empty exponent), `500` -> float.

    A unit suffix is optional; a different unit than expected is a garbled reply (ValueError).
    """
    m = _NUMBER.fullmatch(text)
    if not m:
        raise ValueError(f"not a number: {text!r}")
    mantissa, exponent, suffix = m.groups()
    if suffix and suffix.lower() != unit.lower():
        raise ValueError(f"expected unit {unit or 'none'!r}, got {text!r}")
    if exponent in ("+", "-"):
        raise ValueError(f"not a number: {text!r}")
    return float(f"{mantissa}e{exponent or 0}")


def _magnitude(unit: str):
    def parse(text: str) -> float:
        return abs(parse_number(text, unit))

    return parse


def channel_state(status: int, event: int = 0) -> tuple[ChannelState, list[str]]:
    """State and alarms from the channel status word (and the latched event word: trip)."""
    names = {name for bit, name in STATUS_BITS.items() if status >> bit & 1}
    if event & TRIP:
        names.add("TRIP")
    alarms = [a for a in ALARMS if a in names]
    on = "ON" in names
    if "TRIP" in names:
        state = ChannelState.TRIPPED
    elif FAULTS & names:
        state = ChannelState.ERROR
    elif "EMCY" in names:
        state = ChannelState.OFF
    elif on and ({"CC", "I_LIMIT"} & names):
        state = ChannelState.COMPLIANCE
    elif on and "RAMP_UP" in names:
        state = ChannelState.RAMP_UP
    elif "RAMP_DOWN" in names:
        state = ChannelState.RAMP_DOWN
    elif "RAMP" in names:  # a firmware without bits 19/20: the direction is fixed by read()
        state = ChannelState.RAMP_UP if on else ChannelState.RAMP_DOWN
    else:
        state = ChannelState.ON if on else ChannelState.OFF
    return state, alarms


def channel_list(channels: list[int]) -> str:
    """`(@0-3)` for a contiguous run, else `(@0,2,3)`."""
    if len(channels) > 1 and channels == list(range(channels[0], channels[-1] + 1)):
        return f"(@{channels[0]}-{channels[-1]})"
    return "(@" + ",".join(map(str, channels)) + ")"


log = logging.getLogger(__name__)


class IsegOptions(NoOptions):
    channels: int = Field(default=4, ge=1, le=8, description="channels of the module")
    trip_action: int = Field(
        default=1,
        ge=0,
        le=4,
        description="applied at start: 0 flag only, 1 ramp down, "
        "2 off without ramp, 3 whole module off, 4 no delayed trip",
    )
    trip_time_ms: int | None = Field(default=None, ge=1, le=4095, description="applied at start; null leaves it")
    joined_queries: bool = Field(
        default=True,
        description="several ';'-joined commands per line, answers joined by ';' (standard SCPI; unconfirmed on iseg)",
    )
    channel_lists: bool = Field(
        default=True, description="one query for all channels with (@0-3) (unconfirmed for every query)"
    )
    error_queue: bool = Field(default=True, description="check each setting with :SYST:ERR? (unconfirmed)")
    vset_resolution: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="V; the module's voltage setting step where it differs from the driver's 10 mV (unconfirmed)",
    )
    iset_resolution: float | None = Field(
        default=None,
        gt=0,
        le=1e-5,
        description="A; the module's current setting step where it differs from the driver's 1 nA (unconfirmed)",
    )
    vnom: float | None = Field(default=None, gt=0, le=6000, description="the module's nominal voltage (V)")
    inom: float | None = Field(default=None, gt=0, le=0.02, description="the module's nominal current (A)")
    polarity: Literal["p", "n"] | None = Field(
        default=None,
        description="expected output polarity: a channel with the other one reads ERROR with alarm POLARITY",
    )


class IsegShr(SupplyDriver):
    model = "iseg-shr"
    description = "iseg SHR / NHS / NHR high-voltage module (SCPI)"
    high_voltage = True
    Options = IsegOptions
    hardware_ramp = True
    max_channels = 8
    link_settings = LinkSettings(write_termination="\r\n", read_termination="\r\n", echo=True)

    # steps unconfirmed (docs/instruments/iseg-shr.md); set values are read back with other headers
    # setting steps: what the replies confirm (%.5fE3: 10 mV, 10 mV/s; 1 mV/s below 1 V/s), unconfirmed
    vset = ChannelParam(":VOLT", "V", kind=_magnitude("V"), limits=(0, 6000), resolution=1e-2, query=":READ:VOLT?")
    iset = ChannelParam(":CURR", "A", kind=_magnitude("A"), limits=(0, 0.02), resolution=1e-9, query=":READ:CURR?")
    rampup = ChannelParam(":CONF:RAMP:VOLT:UP", "V/s", kind=_magnitude("V/s"), limits=(0.001, 1200), steps=RAMP_STEPS)
    rampdown = ChannelParam(
        ":CONF:RAMP:VOLT:DOWN", "V/s", kind=_magnitude("V/s"), limits=(0.001, 1200), steps=RAMP_STEPS
    )
    vmon = ChannelParam(":MEAS:VOLT", "V", kind=_magnitude("V"), readonly=True)
    imon = ChannelParam(":MEAS:CURR", "A", kind=_magnitude("A"), readonly=True)
    status = ChannelParam(":READ:CHAN:STATUS", kind=int, readonly=True)
    event = ChannelParam(":READ:CHAN:EVENT:STATUS", kind=int, readonly=True)

    ERRORS = ErrorQueue(":SYST:ERR?")  # never *CLS: it would clear the latched trips of every channel
    SETTINGS = ("vset", "iset", "rampup", "rampdown")
    MONITORS = ("vmon", "imon", "status", "event")

    options: IsegOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settings: dict[int, dict[str, float]] = {}
        self._status: dict[int, int] = {}  # last status word per channel (polarity, EMCY)
        self._off_mode: dict[int, str] = {}
        self._killed: set[int] = set()  # channels this driver put into emergency off

    @classmethod
    def polarity(cls, options: BaseModel | None = None) -> str | None:
        if isinstance(options, IsegOptions) and options.polarity is not None:
            return "+" if options.polarity == "p" else "-"
        return None

    @classmethod
    def channel_count(cls, options: IsegOptions) -> int:  # type: ignore[override]
        return options.channels

    @classmethod
    def instrument_limits(cls, action: str, options: BaseModel | None = None) -> tuple[float, float] | None:
        """The family's range, narrowed to the module's nominal voltage and current when configured."""
        limits = super().instrument_limits(action, options)
        nominal = {"vset": getattr(options, "vnom", None), "iset": getattr(options, "inom", None)}.get(action)
        return (0.0, min(limits[1], nominal)) if limits and nominal is not None else limits

    @classmethod
    def instrument_step(cls, action: str, options: BaseModel | None = None, value: float | None = None) -> float | None:
        """The driver's step, or the module's where the options give it."""
        step = {
            "vset": getattr(options, "vset_resolution", None),
            "iset": getattr(options, "iset_resolution", None),
        }.get(action)
        return step if step is not None else super().instrument_step(action, options, value)

    # --- protocol ----------------------------------------------------------
    def _ask(self, queries: list[str]) -> list[str]:
        return ask(self.link, queries, joined=self.options.joined_queries)

    def _command(self, *commands: str) -> None:
        """Send settings (no answer of their own), then read the error queue (option error_queue)."""
        if self.options.error_queue:
            self.ERRORS.command(self.link, *commands, joined=self.options.joined_queries)
        else:
            self.ERRORS.write(self.link, *commands, joined=self.options.joined_queries)

    def _get(self, param: ChannelParam, channel: int) -> str:
        return self.link.query(f"{param.query_text()} (@{channel})")

    def _check_polarity(self, channel: int) -> None:
        """A channel of the other polarity than configured would forward-bias the sensor: refuse."""
        if self.options.polarity is None:
            return
        status, _ = self._fresh_status(channel)
        actual = "p" if status & POSITIVE else "n"
        if actual != self.options.polarity:
            raise InstrumentError(
                f"channel {channel} has polarity {actual!r}, the config expects {self.options.polarity!r}: refused"
            )

    def _set(self, param: ChannelParam, channel: int, value: float) -> None:
        if param.name == "vset" and value:
            self._check_polarity(channel)
        sign = self._sign(channel) if param.name == "vset" and value else 1.0  # negative channel: negative Vset
        self._command(f"{param.command} {decimal(sign * value)},(@{channel})")
        if channel in self._settings:  # what the module now holds
            self._settings[channel][param.name] = value

    def _read(self, names: tuple[str, ...], channels: list[int]) -> dict[int, dict[str, Any]]:
        """Parameters of several channels, in as few round trips as the options allow."""
        out: dict[int, dict[str, Any]] = {ch: {} for ch in channels}
        groups = [channels] if self.options.channel_lists else [[ch] for ch in channels]
        for group in groups:
            sel = channel_list(group)
            params = [getattr(IsegShr, n) for n in names]
            answers = self._ask([f"{p.query_text()} {sel}" for p in params])
            for p, answer in zip(params, answers, strict=True):
                values = answer.split(",")
                if len(values) != len(group):
                    raise LinkError(f"expected {len(group)} values for {p.command}, got {answer[:64]!r}")
                for ch, text in zip(group, values, strict=True):
                    out[ch][p.name] = p.parse(text.strip())
        return out

    def _fresh_status(self, channel: int) -> tuple[int, int]:
        m = self._read(("status", "event"), [channel])[channel]
        self._status[channel] = m["status"]
        return m["status"], m["event"]

    def _sign(self, channel: int) -> float:
        if channel not in self._status:
            self._fresh_status(channel)
        return 1.0 if self._status[channel] & POSITIVE else -1.0

    # --- the framework's view ----------------------------------------------
    def connect(self) -> str:
        identity = self.link.query("*IDN?")
        if "iseg" not in identity.split(",")[0].lower():
            raise LinkError(f"not an iseg module: {identity[:64]!r}")
        self._settings.clear()
        self._status.clear()
        self._killed.clear()
        if self.options.error_queue:  # stale errors must not be blamed on the next command
            self.ERRORS.errors(self.link)
        if self.options.error_queue and self.options.joined_queries:
            # a channel the module lacks is refused here, with a reason, not later with a timeout
            sel = channel_list(self.channels) if self.options.channel_lists else f"(@{max(self.channels)})"
            status, errors = self.ERRORS.checked_query(self.link, f":READ:CHAN:STATUS? {sel}")
            if not status or errors:
                why = "; ".join(errors) or "no status reply"
                raise InstrumentError(f"channels {sel} not all on this module ({identity}): {why}")
            if self.options.channel_lists:  # the polarities, for the sign of the first Vset
                words = [IsegShr.status.parse(w.strip()) for w in status.split(",")]
                if len(words) != len(self.channels):
                    raise LinkError(f"expected {len(self.channels)} status words, got {status[:64]!r}")
                self._status.update(zip(self.channels, words, strict=True))
        return identity

    def configure_channel(self, channel: int, rampup: float | None, rampdown: float | None, off_mode: str) -> None:
        super().configure_channel(channel, rampup, rampdown, off_mode)
        self._off_mode[channel] = off_mode
        status, _ = self._fresh_status(channel)
        if status & ON:  # a new trip action on a live channel could ramp it down: leave it as it is
            log.warning("channel %d is on: trip action and time left as the module has them", channel)
            return
        commands = [f":CONF:TRIP:ACTION {self.options.trip_action},(@{channel})"]
        if self.options.trip_time_ms is not None:
            commands.append(f":CONF:TRIP:TIME {self.options.trip_time_ms},(@{channel})")
        self._command(*commands)

    def kill(self, channel: int) -> None:
        self._command(f":VOLT EMCY OFF,(@{channel})")  # emergency off: no ramp; the next `on` clears it
        self._killed.add(channel)

    def switch(self, channel: int, on: bool) -> None:
        sel = f"(@{channel})"
        if not on:
            if self._off_mode.get(channel) == "kill":
                self.kill(channel)
            else:
                self._command(f":VOLT OFF,{sel}")
            return
        self._check_polarity(channel)
        status, event = self._fresh_status(channel)
        if (status | event) & TRIP:
            raise InstrumentError(f"channel {channel} is tripped: send clear first")
        if status & EMCY and channel not in self._killed:  # someone else's emergency off: never ours to undo
            raise InstrumentError(f"channel {channel} is in emergency off (EMCY): send clear first")
        commands = [f":VOLT EMCY CLR,{sel}"] if status & EMCY else []
        self._command(*commands, f":VOLT ON,{sel}")
        self._killed.discard(channel)

    def clear(self, channel: int) -> None:
        status, _ = self._fresh_status(channel)
        sel = f"(@{channel})"
        commands = [f":VOLT EMCY CLR,{sel}"] if status & EMCY else []
        self._command(*commands, f":EVENT CLEAR,{sel}")
        self._killed.discard(channel)

    def read(self, channels: list[int], full: bool) -> dict[int, SupplyChannel]:
        stale = [ch for ch in channels if full or ch not in self._settings]
        if stale:
            self._settings.update(self._read(self.SETTINGS, stale))
        mon = self._read(self.MONITORS, channels)
        result = {}
        for ch in channels:
            s, m = self._settings[ch], mon[ch]
            status, event = m["status"], m["event"]
            self._status[ch] = status
            state, alarms = channel_state(status, event)
            if state is ChannelState.RAMP_UP and not status & RAMP_UP and m["vmon"] > s["vset"]:
                state = ChannelState.RAMP_DOWN  # bit 4 without direction bits: compare with Vset
            polarity = "p" if status & POSITIVE else "n"
            if self.options.polarity is not None and polarity != self.options.polarity:
                alarms = [*alarms, "POLARITY"]
                if state is not ChannelState.TRIPPED:  # a trip stays visible as such
                    state = ChannelState.ERROR
            result[ch] = SupplyChannel(
                on=bool(status & ON),
                vset=s["vset"],
                vmon=m["vmon"],
                iset=s["iset"],
                imon=m["imon"],
                state=state,
                rampup=s["rampup"],
                rampdown=s["rampdown"],
                alarms=alarms,
            )
        return result
