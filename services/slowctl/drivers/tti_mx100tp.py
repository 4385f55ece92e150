"""Aim-TTi MX100TP / CPX400DP / QL355TP low-voltage supplies: the TTi ASCII command set.

`V1 5.0` LF sets output 1 to 5 V (settings have no reply); `V1O?` LF -> `5.002V` CR LF.
Config channel 0 is output 1. After every setting the driver reads the standard event
status register (`*ESR?`, and `EER?` for the number of an execution error), so a refused
value raises InstrumentError. Trips come from the limit event status register `LSR<n>?`,
which is cleared by reading it: the driver remembers a trip until `clear` (TRIPRST) or
until the output is seen on again. docs/instruments/tti-mx100tp.md lists what is unconfirmed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from slowctl.drivers.base import ChannelLimits, ChannelParam, NoOptions, SupplyDriver
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl.drivers.scpi import EventRegisters
from slowctl.drivers.wire import decimal, flag

# outputs, highest voltage (V) and current (A) over all outputs and ranges
VARIANTS: dict[str, tuple[int, float, float]] = {
    "MX100TP": (3, 70.0, 6.0),
    "CPX400DP": (2, 60.0, 20.0),
    "QL355TP": (3, 35.0, 5.0),
}
# setting resolution of vset (V) and iset (A) per model (unconfirmed: docs/instruments/tti-mx100tp.md)
STEPS: dict[str, tuple[float, float]] = {
    "MX100TP": (1e-3, 1e-4),
    "CPX400DP": (1e-2, 1e-3),
    "QL355TP": (1e-3, 1e-4),
}
# TTi model names end in the number of outputs: QP 4, TP 3, DP 2, SP / P 1
SUFFIX_OUTPUTS = (("QP", 4), ("TP", 3), ("DP", 2), ("SP", 1), ("P", 1))
MAKERS = re.compile(r"THURLBY|THANDAR|\bTTI\b|AIM", re.IGNORECASE)

EER_TEXT = {
    100: "range error: value not allowed",
    101: "recall: the store holds corrupted data",
    102: "recall: the store is empty",
    103: "no such output",
    104: "not allowed while the output is on",
    200: "read only: another interface holds the lock",
}

Bit = Annotated[int, Field(ge=0, le=7)]
PositiveLevel = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class TtiOptions(NoOptions):
    outputs: int = Field(default=3, ge=1, le=4, description="MX100TP / QL355TP: 3, CPX400DP: 2")
    variant: Literal["MX100TP", "CPX400DP", "QL355TP"] | None = Field(
        default=None, description="tightens the vset/iset range to this model's and refuses another model"
    )
    error_check: Literal["esr", "eer"] = Field(
        default="esr", description="after a setting read *ESR? (+ EER? on an execution error) or EER? only"
    )
    setpoint_header: bool = Field(default=True, description="V1? replies 'V1 5.000' (true) or '5.000' (unconfirmed)")
    trip_bits: dict[str, Bit] = Field(
        default_factory=lambda: {"OVP": 2, "OCP": 3}, description="LSR<n>? bit per trip alarm (unconfirmed per model)"
    )
    ovp: dict[int, PositiveLevel] = Field(default_factory=dict, description="channel: OVP level (V) set at start")
    ocp: dict[int, PositiveLevel] = Field(default_factory=dict, description="channel: OCP level (A) set at start")


def _with_unit(unit: str) -> Callable[[str], float]:
    """A monitor reply ends with its unit: `5.002V`; without it the line is garbled."""

    def parse(text: str) -> float:
        if not text.endswith(unit):
            raise ValueError(text)
        return float(text[: -len(unit)])

    return parse


def outputs_of(model: str) -> int | None:
    """Outputs of a TTi model from its name, None when the name does not say."""
    if model in VARIANTS:
        return VARIANTS[model][0]
    return next((n for suffix, n in SUFFIX_OUTPUTS if model.endswith(suffix)), None)


class TtiMx100tp(SupplyDriver):
    model = "tti-mx100tp"
    description = "Aim-TTi MX100TP / CPX400DP / QL355TP low-voltage supply"
    Options = TtiOptions
    max_channels = 4
    link_settings = LinkSettings(
        write_termination="\n", read_termination="\r\n", baudrate=9600, xonxoff=True, min_interval=0.01
    )

    # `{n}` is the output number (channel + 1); the finest steps of the family (STEPS: per model)
    vset = ChannelParam("V{n}", "V", limits=(0.0, 70.0), resolution=1e-3)  # V1? -> V1 5.000
    iset = ChannelParam("I{n}", "A", limits=(0.0, 20.0), resolution=1e-4)  # I1? -> I1 0.5000
    vmon = ChannelParam("V{n}O", "V", kind=_with_unit("V"), readonly=True)  # V1O? -> 5.002V
    imon = ChannelParam("I{n}O", "A", kind=_with_unit("A"), readonly=True)  # I1O? -> 0.100A
    ovp = ChannelParam("OVP{n}", "V", limits=(0.0, 80.0), resolution=0.01)  # set only: OVP1? answers "VP1 13.50"
    ocp = ChannelParam("OCP{n}", "A", limits=(0.0, 22.0), resolution=0.001)  # set only: OCP1? answers "CP1 2.500"
    output = ChannelParam("OP{n}", kind=flag, readonly=True)  # OP1? -> 1; switched by switch()
    limit_events = ChannelParam("LSR{n}", kind=int, readonly=True)  # cleared by reading
    HEADED = ("vset", "iset")  # replies that repeat the header (option setpoint_header)

    options: TtiOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settings: dict[int, tuple[float, float]] = {}
        self._trips: dict[int, list[str]] = {}  # LSR trip bits seen, kept until clear / output on
        variant = VARIANTS.get(self.options.variant or "")
        self._range = (variant[1], variant[2]) if variant else (70.0, 20.0)
        self._steps = STEPS.get(self.options.variant or "", (1e-3, 1e-4))  # the model's, once known
        self._errors = EventRegisters(EER_TEXT, esr=self.options.error_check == "esr")

    @classmethod
    def channel_count(cls, options: BaseModel) -> int:
        return options.outputs if isinstance(options, TtiOptions) else cls.max_channels

    @classmethod
    def instrument_step(cls, action: str, options: BaseModel | None = None, value: float | None = None) -> float | None:
        """The variant's steps when configured; else the family's finest (the model's apply after connect)."""
        variant = getattr(options, "variant", None)
        if action in ("vset", "iset") and variant:
            return STEPS[variant][action == "iset"]
        return super().instrument_step(action, options, value)

    @classmethod
    def check_config(cls, options: dict[str, Any], channels: dict[int, ChannelLimits]) -> list[str]:
        errors = super().check_config(options, channels)
        try:
            opts = cls.parse_options(options)
        except ValidationError:
            return errors  # already reported
        assert isinstance(opts, TtiOptions)  # parse_options validates with cls.Options
        if opts.variant:
            _, vmax, imax = VARIANTS[opts.variant]
            for ch, cfg in channels.items():
                for key, top in (("vmax", vmax), ("imax", imax)):
                    value = getattr(cfg, key)
                    if value is not None and value > top:
                        errors.append(f"channels.{ch}.{key}: {value:g} outside the {opts.variant} range 0..{top:g}")
        for key in ("ovp", "ocp"):
            lo, hi = getattr(cls, key).limits
            for ch, level in getattr(opts, key).items():
                if ch not in channels:
                    errors.append(f"options.{key}.{ch}: channel {ch} is not configured")
                elif not lo <= level <= hi:
                    errors.append(f"options.{key}.{ch}: {level:g} outside the {cls.model} range {lo:g}..{hi:g}")
        return errors

    # --- protocol ----------------------------------------------------------
    def _command(self, command: str) -> None:
        """Send a setting, then read the error registers: a setting has no reply of their own."""
        self._errors.command(self.link, command)

    def _get(self, param: ChannelParam, channel: int) -> str:
        reply = self.link.query(param.query_text(n=channel + 1))
        if param.name in self.HEADED and self.options.setpoint_header:
            header = param.command.format(n=channel + 1)
            if not reply.startswith(f"{header} "):
                raise LinkError(f"unexpected reply {reply[:32]!r} to {header}?")
            return reply[len(header) + 1 :]
        return reply

    def _set(self, param: ChannelParam, channel: int, value: float) -> None:
        self._settings.pop(channel, None)  # the next read asks the instrument what it holds now
        self._command(f"{param.command.format(n=channel + 1)} {decimal(value)}")

    # --- the framework's view ----------------------------------------------
    def connect(self) -> str:
        identity = self.link.query("*IDN?")
        fields = [f.strip() for f in identity.split(",")]
        if len(fields) < 2 or not MAKERS.search(fields[0]):
            raise LinkError(f"not an Aim-TTi supply: {identity[:64]!r}")
        model = fields[1].upper()
        if self.options.variant and model != self.options.variant:
            raise LinkError(f"expected a {self.options.variant}, found {model}")
        outputs = outputs_of(model)
        if outputs is not None and outputs < self.options.outputs:
            raise InstrumentError(f"{model} has {outputs} outputs, the config expects {self.options.outputs}")
        if model in VARIANTS:
            self._range = VARIANTS[model][1:]
            self._steps = STEPS[model]
        # stale errors of an earlier session: *ESR? and EER? clear on reading. No *CLS, which
        # would also clear the limit status registers, and with them a trip not yet seen.
        self._errors.flush(self.link)
        self._settings.clear()
        self._trips.clear()
        return identity

    def configure_channel(self, channel: int, rampup: float | None, rampdown: float | None, off_mode: str) -> None:
        for key, setting, monitor in (("ovp", self.vset, self.vmon), ("ocp", self.iset, self.imon)):
            level = getattr(self.options, key).get(channel)
            if level is None:
                continue
            # on, a level at or below the set value would trip the output once the load lets it get there
            if self.output[channel] and max(setting[channel], monitor[channel]) >= level:
                # a protection level below what the output delivers now would trip it
                raise InstrumentError(
                    f"{key} {level:g} of output {channel + 1} is not above its present output: "
                    "not set, so that the output is not tripped"
                )
            getattr(self, key)[channel] = level

    def _check_model(self, param: ChannelParam, value: float, top: float, step: float) -> None:
        """The connected model's range and step, narrower than the family's the parameter declares."""
        if math.isfinite(value) and value > top:
            param.check(value, (0.0, top))
        param.check(value, None, step)

    def set_voltage(self, channel: int, volts: float) -> None:
        self._check_model(TtiMx100tp.vset, volts, self._range[0], self._steps[0])
        super().set_voltage(channel, volts)

    def set_current(self, channel: int, amps: float) -> None:
        self._check_model(TtiMx100tp.iset, amps, self._range[1], self._steps[1])
        super().set_current(channel, amps)

    def switch(self, channel: int, on: bool) -> None:
        n = channel + 1
        self._command(f"OP{n} {int(on)}")
        if self.output[channel] != on:  # a tripped output does not come on
            raise InstrumentError(
                f"output {n} did not switch {'on' if on else 'off'}" + (" (tripped? send clear first)" if on else "")
            )

    def clear(self, channel: int) -> None:
        # TRIPRST resets the trips of every output: there is no per-output reset
        self._command("TRIPRST")
        self._trips.clear()

    def read(self, channels: list[int], full: bool) -> dict[int, SupplyChannel]:
        result = {}
        for ch in channels:
            if full or ch not in self._settings:
                self._settings[ch] = (self.vset[ch], self.iset[ch])
            vset, iset = self._settings[ch]
            vmon, imon = self.vmon[ch], self.imon[ch]
            on = self.output[ch]
            lsr = self.limit_events[ch]
            new = [name for name, bit in self.options.trip_bits.items() if lsr >> bit & 1]
            if new:
                seen = self._trips.setdefault(ch, [])
                seen += [a for a in new if a not in seen]
            elif on:
                self._trips.pop(ch, None)  # back on: the trip was reset at the instrument
            alarms = list(self._trips.get(ch, []))
            # constant current: the output sits at the current limit, below its set voltage
            cc = on and iset > 0 and imon >= iset - max(0.002, 0.01 * iset) and vmon < vset - max(0.02, 0.005 * vset)
            if alarms:
                state = ChannelState.TRIPPED
            elif cc:
                state, alarms = ChannelState.COMPLIANCE, ["CC"]
            else:
                state = ChannelState.ON if on else ChannelState.OFF
            result[ch] = SupplyChannel(on=on, vset=vset, vmon=vmon, iset=iset, imon=imon, state=state, alarms=alarms)
        return result
