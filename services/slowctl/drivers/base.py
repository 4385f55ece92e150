"""Driver base classes. A driver knows its instrument's protocol and nothing about MQTT.

Drivers declare their channel parameters (PyMeasure style); the protocol
plumbing of a driver family lives in its `_get`/`_set` methods:

    class MySupply(SupplyDriver):
        vset = ChannelParam("VOLT", "V", limits=(0, 500))
        imon = ChannelParam("MEAS:CURR", "A", readonly=True)

    driver.vset[0] = 100.0   # validated against the instrument's range, then sent
    driver.imon[0]           # -> float
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from slowctl.drivers.actions import LIMIT_KEY, RATES, SUPPLY_ACTIONS
from slowctl.drivers.link import InstrumentError, Link, LinkError, LinkSettings
from slowctl.drivers.readings import Reading, SupplyChannel


class ChannelLimits(Protocol):
    """The configured limits of a channel, as the config-time checks see them (slowctl.config.ChannelConfig)."""

    @property
    def vmax(self) -> float | None: ...
    @property
    def imax(self) -> float | None: ...
    @property
    def ramp_max(self) -> float | None: ...
    @property
    def rampup(self) -> float | None: ...
    @property
    def rampdown(self) -> float | None: ...
    @property
    def tmin(self) -> float | None: ...
    @property
    def tmax(self) -> float | None: ...


def off_grid(value: float, step: float) -> bool:
    """True when `value` is not a whole number of `step`s (relative tolerance for binary fractions).

    The tolerance scales with the step and the value, never absolute: a 50 pA step is judged as finely as 0.1 V.
    """
    n = round(value / step)
    return abs(n * step - value) > step * 1e-6 + abs(value) * 1e-12


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Steps = tuple[tuple[float, float], ...]  # (top of a range, its step), ranges in increasing order, SI units


def range_step(steps: Steps, value: float | None) -> float | None:
    """The step of the smallest range that holds |value| (auto range); None beyond them or without a value."""
    if value is None or not math.isfinite(value):
        return None
    return next((step for top, step in steps if abs(value) <= top), None)


class ChannelParam:
    """A per-channel instrument parameter: command, unit, scale to SI, instrument range and resolution.

    `limits` and `resolution` are in SI units, from the instrument's manual; the driver's doc page says which
    are confirmed. A settable parameter without a resolution accepts any value the wire format can carry.
    `steps` is for an instrument whose step depends on the range that holds the value (auto range):
    `((2.1, 50e-6), (21, 500e-6))` - a value up to 2.1 on a 50 µV grid, up to 21 on a 500 µV one;
    `resolution` is then the finest of them unless given.
    `query` is the text that reads the parameter (default `<command>?`), with the driver's fields
    (`{n}`, ...) filled in by `query_text`; `parse` turns its answer into the value: together they let a
    driver join the queries of several parameters in one message.
    """

    def __init__(
        self,
        command: str,
        unit: str = "",
        *,
        scale: float = 1.0,
        kind: Callable[[str], Any] = float,
        limits: tuple[float, float] | None = None,
        resolution: float | None = None,
        readonly: bool = False,
        steps: Steps | None = None,
        query: str | None = None,
    ) -> None:
        self.command = command
        self.unit = unit
        self.scale = scale  # SI value = instrument value * scale
        self.kind = kind
        self.limits = limits  # instrument range, SI units
        self.steps = steps
        if resolution is None and steps:
            resolution = min(step for _, step in steps)
        self.resolution = resolution  # smallest step the instrument holds, SI units
        self.readonly = readonly
        self.query = f"{command}?" if query is None else query
        self.name = command

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, driver: Driver | None, owner: type) -> Any:
        if driver is None:
            return self
        return _BoundParam(self, driver)

    def step_at(self, value: float | None = None) -> float | None:
        """The step the instrument holds `value` with: its range's with `steps`, else `resolution`.

        Without a value (or beyond the last range) the finest step: what any range may hold.
        """
        step = range_step(self.steps, value) if self.steps else None
        return self.resolution if step is None else step

    def query_text(self, **fields: Any) -> str:
        """The query that reads this parameter, e.g. `V{n}?` with n=1 -> `V1?`."""
        return self.query.format(**fields)

    def check(self, value: float, limits: tuple[float, float] | None, step: float | None = None) -> None:
        if self.readonly:
            raise InstrumentError(f"{self.name} is read-only")
        if not math.isfinite(value):
            raise InstrumentError(f"{self.name} must be a finite number")
        if limits and not limits[0] <= value <= limits[1]:
            lo, hi = limits
            raise InstrumentError(
                f"{self.name} {value:g} {self.unit} outside the instrument range {lo:g}..{hi:g} {self.unit}"
            )
        if step and off_grid(value, step):
            raise InstrumentError(
                f"{self.name} {value:g} {self.unit} is finer than the instrument's {step:g} {self.unit} "
                "step: refused rather than rounded"
            )

    def parse(self, text: str) -> Any:
        try:
            raw = self.kind(text)
        except ValueError:  # a garbled number means a garbled line
            raise LinkError(f"unreadable {self.name} value {text!r}") from None
        if self.kind is not float:
            return raw
        return float(f"{raw * self.scale:.12g}")  # 100 µA -> 1e-4 A, not 9.999999999999999e-05


class _BoundParam:
    def __init__(self, param: ChannelParam, driver: Driver) -> None:
        self._p, self._d = param, driver

    def __getitem__(self, channel: int) -> Any:
        return self._p.parse(self._d._get(self._p, channel))

    def __setitem__(self, channel: int, value: float) -> None:
        cls = type(self._d)
        self._p.check(
            value,
            cls.instrument_limits(self._p.name, self._d.options),
            cls.instrument_step(self._p.name, self._d.options, value),
        )
        self._d._set(self._p, channel, value / self._p.scale)


class Driver(ABC):
    model: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    link_settings: ClassVar[LinkSettings] = LinkSettings()
    max_channels: ClassVar[int] = 1

    def __init__(self, link: Link, options: BaseModel, channels: Iterable[int]) -> None:
        self.link = link
        self.options = options
        self.channels = sorted(channels)

    # --- config-time checks -------------------------------------------------
    @classmethod
    def channel_count(cls, options: BaseModel) -> int:
        return cls.max_channels

    @classmethod
    def parse_options(cls, raw: dict[str, Any]) -> BaseModel:
        return cls.Options.model_validate(raw)

    @classmethod
    def check_config(cls, options: dict[str, Any], channels: dict[int, ChannelLimits]) -> list[str]:
        """Model-specific config errors as 'key.path: message'."""
        try:
            opts = cls.parse_options(options)
        except ValidationError as exc:
            return [
                "options."
                + ".".join(str(p) for p in e["loc"])
                + ": "
                + ("unknown option" if e["type"] == "extra_forbidden" else e["msg"])
                for e in exc.errors()
            ]
        n = cls.channel_count(opts)
        return [f"channels.{c}: {cls.model} has channels 0..{n - 1}" for c in channels if c >= n]

    @classmethod
    def actions(cls) -> frozenset[str]:
        return frozenset()

    @classmethod
    def instrument_limits(cls, action: str, options: BaseModel | None = None) -> tuple[float, float] | None:
        """The instrument's own range for an action's value: the declared parameter's, which a driver
        may narrow by its options (model variant, module rating)."""
        param = getattr(cls, action, None)
        return param.limits if isinstance(param, ChannelParam) else None

    @classmethod
    def instrument_step(cls, action: str, options: BaseModel | None = None, value: float | None = None) -> float | None:
        """The smallest step the instrument holds for an action's value (SI): the declared parameter's
        resolution, which a driver may change by its options (model variant, range). With `value`, the
        step of the range that holds it (`ChannelParam.steps`); without, the finest."""
        param = getattr(cls, action, None)
        return param.step_at(value) if isinstance(param, ChannelParam) else None

    @classmethod
    def _options_or_none(cls, options: dict[str, Any]) -> BaseModel | None:
        try:
            return cls.parse_options(options)
        except ValidationError:
            return None  # reported by check_config

    # --- protocol plumbing, per driver family -------------------------------
    def _get(self, param: ChannelParam, channel: int) -> str:
        raise NotImplementedError

    def _set(self, param: ChannelParam, channel: int, value: float) -> None:
        raise NotImplementedError

    # --- the framework's view ------------------------------------------------
    @abstractmethod
    def connect(self) -> str:
        """Identify and prepare the instrument; returns its identity string."""

    @abstractmethod
    def read(self, channels: list[int], full: bool) -> Mapping[int, Reading]:
        """Read channels; `full` also re-reads settings that change only on command."""


class SupplyDriver(Driver):
    """A power supply channel: on/off, vset, iset, ramp rates, trip clear."""

    hardware_ramp: ClassVar[bool] = False
    high_voltage: ClassVar[bool] = False  # a sensor-bias supply: HV dashboards, confirmation in the UI
    # the action names a driver supports, beyond on/off/vset/iset
    extra_actions: ClassVar[frozenset[str]] = frozenset({"clear"})

    @classmethod
    def actions(cls) -> frozenset[str]:
        base = set(SUPPLY_ACTIONS) | set(cls.extra_actions)
        if cls.hardware_ramp:
            base |= set(RATES)
        return frozenset(base)

    @classmethod
    def polarity(cls, options: BaseModel | None = None) -> str | None:
        """The sign of the output ("+" or "-") where the config fixes it; None where the hardware decides."""
        return None

    @classmethod
    def check_config(cls, options: dict[str, Any], channels: dict[int, ChannelLimits]) -> list[str]:
        errors = super().check_config(options, channels)
        opts = cls._options_or_none(options)
        # config key -> the action whose instrument range it must lie in: each limit, and the start rates
        ranged: dict[str, str] = {}
        for action, limit in LIMIT_KEY.items():
            ranged.setdefault(limit, action)
        ranged.update({rate: rate for rate in RATES})
        for ch, cfg in channels.items():
            for key, action in ranged.items():
                value, limits = getattr(cfg, key), cls.instrument_limits(action, opts)
                if value is not None and limits and not limits[0] <= value <= limits[1]:
                    errors.append(
                        f"channels.{ch}.{key}: {value:g} outside the {cls.model} range {limits[0]:g}..{limits[1]:g}"
                    )
            if not cls.hardware_ramp and cfg.rampdown is not None and cfg.rampup is None:
                errors.append(
                    f"channels.{ch}.rampdown: {cls.model} has no hardware ramp: the software ramp needs rampup too"
                )
            if cfg.vmax is None:
                errors.append(f"channels.{ch}.vmax: required for a supply channel")
            if cfg.imax is None:
                errors.append(f"channels.{ch}.imax: required for a supply channel")
        return errors

    def configure_channel(self, channel: int, rampup: float | None, rampdown: float | None, off_mode: str) -> None:
        """Apply start-up settings that never change an output (ramp rates, power-down mode)."""
        if self.hardware_ramp:
            if rampup is not None:
                self.rampup[channel] = rampup  # type: ignore[attr-defined]
            if rampdown is not None:
                self.rampdown[channel] = rampdown  # type: ignore[attr-defined]

    def kill(self, channel: int) -> None:
        """Switch the output off at once, without a ramp, whatever the channel's power-down mode. An
        instrument without a hardware ramp switches off at once anyway."""
        self.switch(channel, False)

    def set_voltage(self, channel: int, volts: float) -> None:
        self.vset[channel] = volts  # type: ignore[attr-defined]

    def set_current(self, channel: int, amps: float) -> None:
        self.iset[channel] = amps  # type: ignore[attr-defined]

    def set_ramp(self, channel: int, up: float | None = None, down: float | None = None) -> None:
        if up is not None:
            self.rampup[channel] = up  # type: ignore[attr-defined]
        if down is not None:
            self.rampdown[channel] = down  # type: ignore[attr-defined]

    @abstractmethod
    def switch(self, channel: int, on: bool) -> None: ...

    @abstractmethod
    def clear(self, channel: int) -> None: ...

    @abstractmethod
    def read(self, channels: list[int], full: bool) -> dict[int, SupplyChannel]: ...


class SensorDriver(Driver):
    """Read-only sensors: no actions."""


class ChillerDriver(Driver):
    """A recirculating chiller: temperature setpoint, start/stop. Declares a `tset` ChannelParam."""

    @classmethod
    def actions(cls) -> frozenset[str]:
        return frozenset({"on", "off", "tset"})

    @classmethod
    def check_config(cls, options: dict[str, Any], channels: dict[int, ChannelLimits]) -> list[str]:
        errors = super().check_config(options, channels)
        limits = cls.instrument_limits("tset", cls._options_or_none(options))
        for ch, cfg in channels.items():
            for key in ("tmin", "tmax"):
                value = getattr(cfg, key)
                if value is None:
                    errors.append(f"channels.{ch}.{key}: required for a chiller channel")
                elif limits and not limits[0] <= value <= limits[1]:
                    errors.append(
                        f"channels.{ch}.{key}: {value:g} outside the {cls.model} range {limits[0]:g}..{limits[1]:g}"
                    )
        return errors

    def set_temperature(self, channel: int, celsius: float) -> None:
        self.tset[channel] = celsius  # type: ignore[attr-defined]

    @abstractmethod
    def switch(self, channel: int, on: bool) -> None: ...
