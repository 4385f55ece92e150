"""Keithley 2410 / 2400 SourceMeter as a sensor bias supply: SCPI, one channel (0).

The contract's vset is a magnitude; the configured `polarity` decides the sign sent
(`:SOUR:VOLT -150`), and a set or measured voltage of the other sign reads ERROR with
alarm POLARITY. No hardware ramp: the framework's software ramp steps the voltage.
A poll is one line: `:OUTP?;:READ?;:SENS:CURR:PROT:TRIP?` -> `1;-1.500000E+02,-1.200000E-07;0`
(`:READ?` only while the output is on: with it off the 2410 refuses it with error 803).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl.drivers.base import ChannelParam, NoOptions, SupplyDriver
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings
from slowctl.drivers.wire import ask, decimal, flag

VARIANTS = {"2410": (1100.0, 1.05), "2400": (210.0, 1.05)}  # highest |V|, highest compliance (A)
NOT_MEASURED = 9.0e37  # the 2400 family writes +9.91e37 for a value it did not measure
POLARITY_NOISE = 1.0  # V; a measured voltage of the wrong sign beyond this is a polarity alarm
SETUP = (":SOUR:CLE:AUTO OFF",  # never let :READ? switch the source on by itself
         ":SENS:FUNC:CONC ON", ':SENS:FUNC "VOLT","CURR"',  # measure the terminal voltage too
         ":FORM:ELEM VOLT,CURR")


def _number(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise LinkError(f"unreadable number {text[:32]!r}") from None


def _magnitude(text: str) -> float:
    return abs(float(text))




class KeithleyOptions(NoOptions):
    variant: Literal["2410", "2400"] = Field(default="2410", description="2410: 1100 V, 2400: 210 V")
    polarity: Literal["+", "-"] = Field(description="sign of the bias voltage; required (a wrong polarity "
                                        "forward-biases the sensor)")
    joined_queries: bool = Field(default=True, description="several queries and settings per line, answers "
                                 "joined by ';' (2400 manual); false: one line each")


class Keithley2410(SupplyDriver):
    model = "keithley-2410"
    description = "Keithley 2410 / 2400 SourceMeter (sensor bias)"
    high_voltage = True
    Options = KeithleyOptions
    hardware_ramp = False
    max_channels = 1
    link_settings = LinkSettings(write_termination="\n", read_termination="\n")

    vset = ChannelParam(":SOUR:VOLT", "V", kind=_magnitude, limits=(0, 1100))
    iset = ChannelParam(":SENS:CURR:PROT", "A", kind=_magnitude, limits=(0, 1.05))

    options: KeithleyOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settings: tuple[float, float] | None = None  # signed Vset, compliance
        self._on = False  # the output, as last read: decides whether a poll asks :READ?

    @classmethod
    def check_config(cls, options: dict[str, Any], channels: dict) -> list[str]:
        errors = super().check_config(options, channels)
        opts = cls._options_or_none(options)
        if opts is None:
            return errors
        for ch, cfg in channels.items():
            if cfg.rampup is None:
                errors.append(f"channels.{ch}.rampup: required: the {opts.variant} has no hardware ramp, "
                              "without a software ramp every vset is a step (set rampup and ramp_step)")
        return errors

    @classmethod
    def instrument_limits(cls, action: str, options: KeithleyOptions | None = None) -> tuple[float, float] | None:
        """The variant's range: a 2400 stops at 210 V where a 2410 goes to 1100 V."""
        if action == "vset" and options is not None:
            return (0.0, VARIANTS[options.variant][0])
        return super().instrument_limits(action, options)

    @property
    def sign(self) -> float:
        return -1.0 if self.options.polarity == "-" else 1.0

    # --- protocol ----------------------------------------------------------
    def _ask(self, *queries: str) -> list[str]:
        return ask(self.link, list(queries), joined=self.options.joined_queries)

    def _command(self, *commands: str) -> None:
        """Settings, then the error queue; *CLS first, so that no stale error is blamed on them.

        The error query goes in a line of its own: a header error discards the rest of its line.
        """
        lines = [";".join(["*CLS", *commands])] if self.options.joined_queries else ["*CLS", *commands]
        for line in lines:
            self.link.write(line)
        error = self.link.query(":SYST:ERR?")
        try:
            failed = int(error.partition(",")[0]) != 0
        except ValueError:
            raise LinkError(f"unreadable error reply {error[:64]!r}") from None
        if failed:
            raise InstrumentError(f"instrument refused {';'.join(commands)!r}: {error}")

    def _get(self, param: ChannelParam, channel: int) -> str:
        return self._ask(f"{param.command}?")[0]

    def _set(self, param: ChannelParam, channel: int, value: float) -> None:
        if param.name == "vset" and self._on and self._settings and self._settings[0] * self.sign < 0:
            # set from the front panel with the other sign: the next step would cross zero
            raise InstrumentError(f"the output is on at {self._settings[0]:g} V, opposite to the configured "
                                  f"polarity {self.options.polarity!r}: switch it off first")
        signed = self.sign * value if param.name == "vset" and value else value
        self._command(f"{param.command} {decimal(signed)}")
        if self._settings is not None:  # what the instrument now holds: the next poll needs no full read
            vset, iset = self._settings
            self._settings = (signed, iset) if param.name == "vset" else (vset, signed)

    # --- the framework's view ----------------------------------------------
    def connect(self) -> str:
        identity = self.link.query("*IDN?")
        fields = [f.strip() for f in identity.split(",")]
        if len(fields) < 2 or not fields[0].upper().startswith("KEITHLEY"):
            raise LinkError(f"not a Keithley SourceMeter: {identity[:64]!r}")
        if fields[1].upper() != f"MODEL {self.options.variant}":
            raise LinkError(f"{fields[1]!r} is not the configured variant {self.options.variant}: {identity[:64]!r}")
        function, output = self._ask(":SOUR:FUNC?", ":OUTP?")
        if function.strip().upper() not in ("VOLT", "VOLTAGE"):
            if flag(output):  # switching the function would change a live output
                raise InstrumentError(f"the {self.options.variant} sources {function.strip()} with the output on: "
                                      "switch it off at the front panel first")
            self._command(":SOUR:FUNC VOLT")
        self._command(*SETUP)
        self._settings = None
        self._on = flag(output)
        return identity

    def switch(self, channel: int, on: bool) -> None:
        self._command(f":OUTP {'ON' if on else 'OFF'}")
        self._on = on

    def clear(self, channel: int) -> None:
        # nothing latches on a 2410: compliance ends with its cause; clear empties the error queue
        # and the event registers (*CLS, sent by _command)
        self._command()

    def _measure(self, text: str) -> tuple[float | None, float | None]:
        values = text.split(",")
        if len(values) != 2:
            raise LinkError(f"expected VOLT,CURR from :READ?, got {text[:64]!r}")
        v, i = (_number(x) for x in values)
        return (None if abs(v) >= NOT_MEASURED else v), (None if abs(i) >= NOT_MEASURED else i)

    def read(self, channels: list[int], full: bool) -> dict[int, SupplyChannel]:
        settings = [":SOUR:VOLT?", ":SENS:CURR:PROT?"] if full or self._settings is None else []
        n = len(settings)
        reading: str | None = None
        trip = "0"
        if self.options.joined_queries:
            measure = [":READ?", ":SENS:CURR:PROT:TRIP?"] if self._on else []
            answers = self._ask_tolerant([*settings, ":OUTP?", *measure])
            head, on = answers[:n], flag(answers[n])
            if len(answers) == n + 3:
                reading, trip = answers[n + 1], answers[n + 2]
        else:
            head = [self.link.query(q) for q in settings]
            on = flag(self.link.query(":OUTP?"))
        if on and reading is None:  # off at the last poll (or switched on behind our back)
            reading, trip = self._ask(":READ?", ":SENS:CURR:PROT:TRIP?")
        if head:
            self._settings = (_number(head[0]), _number(head[1]))
        assert self._settings is not None
        self._on = on
        vmon, imon = self._measure(reading) if on and reading is not None else (0.0, 0.0)
        in_compliance = on and flag(trip)
        vset, iset = self._settings
        alarms = ["COMPLIANCE"] if in_compliance else []
        if vset * self.sign < 0 or (vmon is not None and vmon * self.sign < -POLARITY_NOISE):
            state, alarms = ChannelState.ERROR, [*alarms, "POLARITY"]
        elif in_compliance:
            state = ChannelState.COMPLIANCE
        else:
            state = ChannelState.ON if on else ChannelState.OFF
        # a value the instrument did not measure (+9.91e37) is None: "not available", never a number
        result = SupplyChannel(
            on=on, vset=abs(vset), vmon=None if vmon is None else abs(vmon), iset=iset,  # type: ignore[arg-type]
            imon=None if imon is None else abs(imon), state=state, alarms=alarms,  # type: ignore[arg-type]
        )
        return {ch: result for ch in channels}

    def _ask_tolerant(self, queries: list[str]) -> list[str]:
        """One joined line; a :READ? refused because the output went off leaves one answer fewer."""
        reply = self.link.query(";".join(queries))
        parts = reply.split(";")
        if len(parts) == len(queries) or (":READ?" in queries and len(parts) == len(queries) - 1):
            return parts
        raise LinkError(f"expected {len(queries)} answers, got {reply[:64]!r}")
