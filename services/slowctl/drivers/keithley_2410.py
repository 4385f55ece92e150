"""Keithley 2410 / 2400 SourceMeter as a sensor bias supply: SCPI, one channel (0).

The contract's vset is a magnitude; the configured `polarity` decides the sign sent
(`:SOUR:VOLT -150`), and a set or measured voltage of the other sign reads ERROR with
alarm POLARITY. No hardware ramp: the framework's software ramp steps the voltage.
A poll is one line: `:OUTP?;:READ?;:SENS:CURR:PROT:TRIP?` -> `1;-1.500000E+02,-1.200000E-07;0`
(`:READ?` only while the output is on: with it off the 2410 refuses it with error 803).
The VOLT element of a reading is a measurement only while voltage is sensed: sourcing voltage without
measuring it, the 2400 family puts the programmed source value there. A full read asks `:SENS:FUNC?`
too, and vmon is None (not measured) unless "VOLT" is among the sensed functions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from slowctl.drivers.base import ChannelParam, NoOptions, Steps, SupplyDriver, range_step
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl.drivers.scpi import ErrorQueue
from slowctl.drivers.wire import ask, decimal, flag

# Source programming resolution per range (auto range: the range is the smallest that holds the value; a range
# reaches 105 % of its name, the 20 V one 21 V): 2400-series specifications, docs/instruments/keithley-2410.md
LOW_V = ((0.21, 5e-6), (2.1, 50e-6), (21.0, 500e-6))
CURRENT_2410 = (
    (1.05e-6, 50e-12),
    (10.5e-6, 500e-12),
    (105e-6, 5e-9),
    (1.05e-3, 50e-9),
    (21e-3, 500e-9),
    (105e-3, 5e-6),
    (1.05, 50e-6),
)
CURRENT_2400 = (
    (1.05e-6, 50e-12),
    (10.5e-6, 500e-12),
    (105e-6, 5e-9),
    (1.05e-3, 50e-9),
    (10.5e-3, 500e-9),
    (105e-3, 5e-6),
    (1.05, 50e-6),
)
# highest |V|, highest compliance (A), voltage steps, compliance steps (assumed those of the current source)
VARIANTS: dict[str, tuple[float, float, Steps, Steps]] = {
    "2410": (1100.0, 1.05, (*LOW_V, (1100.0, 50e-3)), CURRENT_2410),
    "2400": (210.0, 1.05, (*LOW_V, (210.0, 5e-3)), CURRENT_2400),
}
NOT_MEASURED = 9.0e37  # the 2400 family writes +9.91e37 for a value it did not measure
POLARITY_NOISE = 1.0  # V; a measured voltage of the wrong sign beyond this is a polarity alarm
SETUP = (
    ":SOUR:CLE:AUTO OFF",  # never let :READ? switch the source on by itself
    ":SENS:FUNC:CONC ON",
    ':SENS:FUNC "VOLT","CURR"',  # measure the terminal voltage too
    ":FORM:ELEM VOLT,CURR",
)


def _functions(text: str) -> frozenset[str]:
    """`:SENS:FUNC?` -> `"VOLT:DC","CURR:DC"`: the sensed functions, short form (VOLT, CURR, RES)."""
    names = [part.strip().strip('"').split(":")[0].upper() for part in text.split(",")]
    if not all(names) and text.strip() not in ("", '""'):
        raise ValueError(text)
    return frozenset(name[:4] for name in names if name)


def _magnitude(text: str) -> float:
    return abs(float(text))


def _reading(text: str) -> tuple[float | None, float | None]:
    """`:READ?` with `:FORM:ELEM VOLT,CURR`; +9.91e37 (not measured) is None: "not available", never a number."""
    values = [float(x) for x in text.split(",")]
    if len(values) != 2:
        raise ValueError(text)
    v, i = (None if abs(x) >= NOT_MEASURED else x for x in values)
    return v, i


class KeithleyOptions(NoOptions):
    variant: Literal["2410", "2400"] = Field(default="2410", description="2410: 1100 V, 2400: 210 V")
    polarity: Literal["+", "-"] = Field(
        description="sign of the bias voltage; required (a wrong polarity forward-biases the sensor)"
    )
    joined_queries: bool = Field(
        default=True,
        description="several queries and settings per line, answers joined by ';' (2400 manual); false: one line each",
    )


class Keithley2410(SupplyDriver):
    model = "keithley-2410"
    description = "Keithley 2410 / 2400 SourceMeter (sensor bias)"
    high_voltage = True
    Options = KeithleyOptions
    hardware_ramp = False
    max_channels = 1
    link_settings = LinkSettings(write_termination="\n", read_termination="\n")

    # magnitudes: the polarity option gives the sign; steps of the 2410 (instrument_step: the variant's)
    vset = ChannelParam(":SOUR:VOLT", "V", kind=_magnitude, limits=(0, 1100), steps=VARIANTS["2410"][2])
    iset = ChannelParam(":SENS:CURR:PROT", "A", kind=_magnitude, limits=(0, 1.05), steps=VARIANTS["2410"][3])
    vsource = ChannelParam(":SOUR:VOLT", "V", readonly=True)  # the signed source level: polarity checks
    output = ChannelParam(":OUTP", kind=flag, readonly=True)
    reading = ChannelParam(":READ", kind=_reading, readonly=True)  # (V, A), signed
    tripped = ChannelParam(":SENS:CURR:PROT:TRIP", kind=flag, readonly=True)  # in compliance
    sensed = ChannelParam(":SENS:FUNC", kind=_functions, readonly=True)  # measured functions: VOLT, CURR

    ERRORS = ErrorQueue(":SYST:ERR?", clear="*CLS")  # *CLS first: no stale error is blamed on a setting

    options: KeithleyOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settings: tuple[float, float] | None = None  # signed Vset, compliance
        self._on = False  # the output, as last read: decides whether a poll asks :READ?
        self._volt_sensed = False  # VOLT among :SENS:FUNC? (full reads): else the VOLT element is no measurement

    @classmethod
    def check_config(cls, options: dict[str, Any], channels: dict) -> list[str]:
        errors = super().check_config(options, channels)
        opts = cls._options_or_none(options)
        if not isinstance(opts, KeithleyOptions):
            return errors  # invalid options: reported by the base check
        for ch, cfg in channels.items():
            if cfg.rampup is None:
                errors.append(
                    f"channels.{ch}.rampup: required: the {opts.variant} has no hardware ramp, "
                    "without a software ramp every vset is a step (set rampup and ramp_step)"
                )
        return errors

    @classmethod
    def instrument_limits(cls, action: str, options: BaseModel | None = None) -> tuple[float, float] | None:
        """The variant's range: a 2400 stops at 210 V where a 2410 goes to 1100 V."""
        if action == "vset" and isinstance(options, KeithleyOptions):
            return (0.0, VARIANTS[options.variant][0])
        return super().instrument_limits(action, options)

    @classmethod
    def instrument_step(cls, action: str, options: BaseModel | None = None, value: float | None = None) -> float | None:
        """The variant's step of the source range that holds the value (the finest without a value)."""
        if action in ("vset", "iset") and isinstance(options, KeithleyOptions):
            _, _, vsteps, isteps = VARIANTS[options.variant]
            steps = vsteps if action == "vset" else isteps
            return range_step(steps, value) or min(step for _, step in steps)
        return super().instrument_step(action, options, value)

    @classmethod
    def polarity(cls, options: BaseModel | None = None) -> str | None:
        return options.polarity if isinstance(options, KeithleyOptions) else None

    @property
    def sign(self) -> float:
        return -1.0 if self.options.polarity == "-" else 1.0

    # --- protocol ----------------------------------------------------------
    def _ask(self, *queries: str) -> list[str]:
        return ask(self.link, list(queries), joined=self.options.joined_queries)

    def _command(self, *commands: str) -> None:
        self.ERRORS.command(self.link, *commands, joined=self.options.joined_queries)

    def _get(self, param: ChannelParam, channel: int) -> str:
        return self._ask(param.query_text())[0]

    def _values(self, *params: ChannelParam) -> dict[str, Any]:
        return {p.name: p.parse(a) for p, a in zip(params, self._ask(*(p.query_text() for p in params)), strict=True)}

    def _set(self, param: ChannelParam, channel: int, value: float) -> None:
        if param.name == "vset" and self._on and self._settings and self._settings[0] * self.sign < 0:
            # set from the front panel with the other sign: the next step would cross zero
            raise InstrumentError(
                f"the output is on at {self._settings[0]:g} V, opposite to the configured "
                f"polarity {self.options.polarity!r}: switch it off first"
            )
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
        function, output = self._ask(":SOUR:FUNC?", Keithley2410.output.query_text())
        on = Keithley2410.output.parse(output)
        if function.strip().upper() not in ("VOLT", "VOLTAGE"):
            if on:  # switching the function would change a live output
                raise InstrumentError(
                    f"the {self.options.variant} sources {function.strip()} with the output on: "
                    "switch it off at the front panel first"
                )
            self._command(":SOUR:FUNC VOLT")
        self._command(*SETUP)
        self._settings = None
        self._on = on
        return identity

    def switch(self, channel: int, on: bool) -> None:
        self._command(f":OUTP {'ON' if on else 'OFF'}")
        self._on = on

    def clear(self, channel: int) -> None:
        # nothing latches on a 2410: compliance ends with its cause; clear empties the error queue
        # and the event registers (*CLS, sent by _command)
        self._command()

    def read(self, channels: list[int], full: bool) -> dict[int, SupplyChannel]:
        k = Keithley2410
        settings = [k.vsource, k.iset, k.sensed] if full or self._settings is None else []
        monitor = [k.reading, k.tripped]
        if self.options.joined_queries:
            params = [*settings, k.output, *(monitor if self._on else [])]
            answers = self._ask_tolerant([p.query_text() for p in params])
            if len(answers) < len(params):  # :READ? refused: the output went off since the last poll
                params = params[: len(settings) + 1]
            values = {p.name: p.parse(a) for p, a in zip(params, answers[: len(params)], strict=True)}
        else:
            values = {p.name: p.parse(self.link.query(p.query_text())) for p in [*settings, k.output]}
        on = values["output"]
        if on and "reading" not in values:  # off at the last poll (or switched on behind our back)
            values.update(self._values(*monitor))
        if settings:
            self._settings = (values["vsource"], values["iset"])
            self._volt_sensed = "VOLT" in values["sensed"]
        assert self._settings is not None
        self._on = on
        vmon, imon = values["reading"] if on else (0.0, 0.0)
        if not self._volt_sensed:
            vmon = None  # the VOLT element holds the programmed source value: not a measurement
        in_compliance = on and values["tripped"]
        vset, iset = self._settings
        alarms = ["COMPLIANCE"] if in_compliance else []
        if vset * self.sign < 0 or (vmon is not None and vmon * self.sign < -POLARITY_NOISE):
            state, alarms = ChannelState.ERROR, [*alarms, "POLARITY"]
        elif in_compliance:
            state = ChannelState.COMPLIANCE
        else:
            state = ChannelState.ON if on else ChannelState.OFF
        result = SupplyChannel(
            on=on,
            vset=abs(vset),
            vmon=None if vmon is None else abs(vmon),
            iset=iset,
            imon=None if imon is None else abs(imon),
            state=state,
            alarms=alarms,
        )
        return {ch: result for ch in channels}

    def _ask_tolerant(self, queries: list[str]) -> list[str]:
        """One joined line; a :READ? refused because the output went off leaves one answer fewer."""
        reply = self.link.query(";".join(queries))
        parts = reply.split(";")
        if len(parts) == len(queries) or (":READ?" in queries and len(parts) == len(queries) - 1):
            return parts
        raise LinkError(f"expected {len(queries)} answers, got {reply[:64]!r}")
