"""What each channel of a device accepts: every action declared once, read by validation, payloads, UI and docs.

An `Action` says what a command means (value, unit, which config key limits it, which driver parameter
carries the instrument's range and resolution, which kinds of device accept it) and how it is applied to a
driver. `Capabilities.build` combines the declarations with a device's driver and config into one
`Capability` per channel and action; `Capability.check` is the whole static validation of a value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from slowctl.config import ChannelConfig, DeviceConfig
from slowctl.drivers import DRIVERS, SupplyDriver, kind_of
from slowctl.drivers.actions import LIMIT_KEY, RATES
from slowctl.drivers.base import off_grid


class CommandError(Exception):
    """A refused command; the message is the human-readable reason in the reply."""


Apply = Callable[[Any, int, Any], None]  # (driver, channel, value)


@dataclass(frozen=True)
class Action:
    name: str
    doc: str
    kinds: frozenset[str]
    apply: Apply
    unit: str = ""  # empty: the action takes no value
    positive: bool = False  # value must be > 0 (else >= 0); tset has both bounds from the config
    reading: str | None = None  # the read-back field that shows the applied value
    raises: bool = False  # may raise an output's voltage or current: the control UI asks to confirm it on HV

    @property
    def takes_value(self) -> bool:
        return bool(self.unit)

    @property
    def limit(self) -> str | None:
        """The channel config key of the highest accepted value (slowctl.drivers.actions, which config and
        drivers read too)."""
        return LIMIT_KEY.get(self.name)


def _switch(on: bool) -> Apply:
    return lambda driver, ch, _: driver.switch(ch, on)


def _clear(driver: Any, ch: int, _: Any) -> None:
    if isinstance(driver, SupplyDriver):
        driver.clear(ch)  # chillers: the latched alarms only, nothing on the instrument


def _ramp(direction: str) -> Apply:
    return lambda driver, ch, v: driver.set_ramp(ch, **{direction: v})


SUPPLY, CHILLER = frozenset({"supply"}), frozenset({"chiller"})

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("on", "switch the channel output on", SUPPLY | CHILLER, _switch(True), raises=True),
        Action("off", "switch the channel output off (ramped unless off_mode: kill)", SUPPLY | CHILLER, _switch(False)),
        Action("kill", "switch the channel output off at once, without a ramp", SUPPLY, lambda d, ch, _: d.kill(ch)),
        Action("vset", "set voltage", SUPPLY, lambda d, ch, v: d.set_voltage(ch, v), "V", reading="vset", raises=True),
        Action(
            "iset", "set current limit", SUPPLY, lambda d, ch, v: d.set_current(ch, v), "A", reading="iset", raises=True
        ),
        Action("rampup", "ramp-up rate", SUPPLY, _ramp("up"), "V/s", positive=True, reading="rampup"),
        Action("rampdown", "ramp-down rate", SUPPLY, _ramp("down"), "V/s", positive=True, reading="rampdown"),
        Action("clear", "reset a trip and acknowledge the channel's latched alarms", SUPPLY | CHILLER, _clear),
        Action(
            "tset",
            "set temperature (chillers)",
            CHILLER,
            lambda d, ch, v: d.set_temperature(ch, v),
            "°C",
            reading="tset",
        ),
    )
}
RAMP_ACTIONS = RATES


@dataclass(frozen=True)
class Capability:
    """One action on one channel: everything needed to accept or refuse its value."""

    action: Action
    channel: int
    config: ChannelConfig
    model: str
    instrument: tuple[float, float] | None  # the instrument's own range
    step: float | None  # the instrument's resolution

    @property
    def name(self) -> str:
        return self.action.name

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """The accepted range as the config and the instrument allow it together (None: open)."""
        a, c = self.action, self.config
        if not a.takes_value:
            return None, None
        lo, hi = (c.tmin, c.tmax) if a.name == "tset" else (0.0, getattr(c, a.limit) if a.limit else None)
        if self.instrument:
            lo = self.instrument[0] if lo is None else max(lo, self.instrument[0])
            hi = self.instrument[1] if hi is None else min(hi, self.instrument[1])
        return lo, hi

    def check(self, value: Any) -> float | None:
        """The value as a float, or CommandError saying why it is refused. Never clamps, never rounds."""
        a, c, unit = self.action, self.config, self.action.unit
        if not a.takes_value:
            if value is not None:
                raise CommandError(f"action {a.name!r} takes no value")
            return None
        if value is None:
            raise CommandError(f"action {a.name!r} needs a value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CommandError("value must be a number")
        if not finite_number(value):
            raise CommandError("value must be a finite number")
        value = float(value)
        where = f"channel {self.channel} ({c.name})"
        if a.name == "tset":  # temperatures may be negative: both bounds come from the config
            if c.tmin is None or c.tmax is None:
                raise CommandError(f"{where} has no tmin/tmax configured: tset refused")
            if not c.tmin <= value <= c.tmax:
                raise CommandError(
                    f"tset {value:g} {unit} outside the configured limits tmin={c.tmin:g}..tmax="
                    f"{c.tmax:g} {unit} of {where}"
                )
        elif a.positive and value <= 0:
            raise CommandError(f"{a.name} must be > 0 {unit}")
        elif value < 0:
            raise CommandError(f"{a.name} must be >= 0 {unit}")
        limit = getattr(c, a.limit) if a.limit else None
        if limit is not None and value > limit:
            raise CommandError(
                f"{a.name} {value:g} {unit} exceeds the configured limit {a.limit}={limit:g} {unit} of {where}"
            )
        if self.instrument and not self.instrument[0] <= value <= self.instrument[1]:
            lo, hi = self.instrument
            raise CommandError(f"{a.name} {value:g} {unit} outside the instrument range {lo:g}..{hi:g} {unit}")
        if self.step and off_grid(value, self.step):
            raise CommandError(
                f"{a.name} {value:g} {unit} is finer than the {self.model}'s {self.step:g} {unit} "
                f"step: send a multiple of {self.step:g} {unit}"
            )
        return value

    def same(self, a: float, b: float) -> bool:
        """Whether two values of this action are the same setting: within half a step of the instrument."""
        tolerance = self.step / 2 if self.step else 0.0
        return abs(a - b) <= tolerance + 1e-9 * max(1.0, abs(a), abs(b))

    def describe(self) -> dict[str, Any]:
        lo, hi = self.bounds
        return {"unit": self.action.unit or None, "min": lo, "max": hi, "step": self.step, "doc": self.action.doc}


def finite_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True)
class Capabilities:
    """Every channel's capabilities for one device."""

    model: str
    kind: str
    channels: dict[int, dict[str, Capability]]
    names: dict[int, str]
    soft_ramp: frozenset[int]  # channels ramped by the framework (no hardware ramp, a rate configured)
    polarity: str | None = None  # "+" or "-" where the config fixes the output's sign (values stay magnitudes)

    @classmethod
    def build(cls, dev: DeviceConfig, options: BaseModel | None = None) -> Capabilities:
        driver = DRIVERS[dev.model]
        options = driver.parse_options(dev.options) if options is None else options
        kind = kind_of(driver)
        hw_ramp = issubclass(driver, SupplyDriver) and driver.hardware_ramp
        soft = frozenset(ch for ch, c in dev.channels.items() if kind == "supply" and not hw_ramp and c.rampup)
        supported = set(driver.actions()) | ({"clear"} if kind == "chiller" else set())
        channels = {}
        for ch, c in sorted(dev.channels.items()):
            names = [
                n
                for n, a in ACTIONS.items()
                if kind in a.kinds and (n in supported or (n in RAMP_ACTIONS and ch in soft))
            ]
            channels[ch] = {
                n: Capability(
                    ACTIONS[n],
                    ch,
                    c,
                    dev.model,
                    driver.instrument_limits(n, options),
                    driver.instrument_step(n, options),
                )
                for n in names
            }
        polarity = driver.polarity(options) if issubclass(driver, SupplyDriver) else None
        return cls(dev.model, kind, channels, {ch: c.name for ch, c in dev.channels.items()}, soft, polarity)

    def get(self, action: Any, channel: Any) -> Capability:
        """The capability for a command, or CommandError saying what is wrong with action or channel."""
        if not isinstance(action, str) or action not in ACTIONS:
            shown = action if isinstance(action, str) else json.dumps(action)
            raise CommandError(f"unknown action {str(shown)[:32]!r} (expected one of {', '.join(ACTIONS)})")
        if isinstance(channel, bool) or not isinstance(channel, int):
            raise CommandError("channel must be an integer")
        if channel < 0:
            raise CommandError(f"channel {channel} is negative")
        if channel not in self.channels:
            raise CommandError(f"unknown channel {channel} (configured: {', '.join(map(str, self.channels))})")
        cap = self.channels[channel].get(action)
        if cap is None:
            raise CommandError(f"action {action!r} is not supported by this device")
        return cap

    def describe(self) -> dict[str, Any]:
        """The retained capabilities payload: per channel, each accepted action with unit, range and step."""
        return {
            "model": self.model,
            "kind": self.kind,
            "channels": [
                {
                    "channel": ch,
                    "name": self.names[ch],
                    "actions": {n: cap.describe() for n, cap in caps.items()},
                    **({"polarity": self.polarity} if self.kind == "supply" else {}),
                }
                for ch, caps in self.channels.items()
            ],
        }


def actions_table() -> str:
    """The docs' action table (docs/mqtt.md), made from the declarations."""
    rows = ["| action | value | limited by | accepted by | what it does |", "|---|---|---|---|---|"]
    for a in ACTIONS.values():
        limit = "`tmin`..`tmax`" if a.name == "tset" else f"`{a.limit}`" if a.limit else ""
        value = f"number ({a.unit}{', > 0' if a.positive else ''})" if a.takes_value else "none"
        rows.append(f"| `{a.name}` | {value} | {limit} | {', '.join(sorted(a.kinds))} | {a.doc} |")
    return "\n".join(rows)
