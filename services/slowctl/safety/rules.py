"""Interlock rules: declared, validated against the stack, evaluated on what the devices publish.

Pure logic, no MQTT and no threads: `Interlocks.evaluate(view, now)` takes the latest status of every
device and returns each rule's state with the reason. Fail-safe throughout: a reading that is missing,
an offline or disconnected device, or a status older than allowed counts as a violation.

Rule kinds (the stack config's `interlocks` section, one entry per rule, by name):
  requires   the protected outputs may be on only while other outputs are on and ok (LV before HV)
  dewpoint   a cold-side temperature stays at least `margin` K above a humidity sensor's dew point
  threshold  a reading stays below `above` / above `below`
  stale      the named devices are online, connected and their status is at most `max_age` s old
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slowctl.drivers import DRIVERS, kind_of, supply_kind

READINGS = {  # numeric fields of each kind of channel that a rule may watch
    "supply": ("vset", "vmon", "iset", "imon"),
    "environment": ("temperature", "humidity", "dewpoint"),
    "chiller": ("tset", "temperature", "status_code"),
}
OK_STATES = ("ON",)  # what "on and ok" means for a required output


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    protects: list[str] = Field(min_length=1, description="channels: 'hv.0', 'hv.*', '*.*'")
    action: Literal["ramp_down", "kill", "refuse_only"] = "ramp_down"
    latch: bool = Field(default=False, description="stays active until its condition is gone and it is cleared")
    delay: float = Field(default=0.0, ge=0, le=3600, description="s the condition must hold before it acts")


class RequiresRule(_Rule):
    kind: Literal["requires"]
    requires: list[str] = Field(min_length=1, description="outputs that must be on and ok: 'lv.0'")


class DewpointRule(_Rule):
    kind: Literal["dewpoint"]
    cold: str = Field(description="the cold-side temperature: 'chiller.0.temperature', 'climate.0.temperature'")
    humidity: str = Field(description="the humidity sensor whose dew point counts: 'climate.0'")
    margin: float = Field(gt=0, le=50, description="K above the dew point")
    hysteresis: float = Field(default=0.5, ge=0, le=20, description="K more before the rule clears")


class ThresholdRule(_Rule):
    kind: Literal["threshold"]
    reading: str = Field(description="'chiller.0.temperature'")
    above: float | None = None
    below: float | None = None
    hysteresis: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdRule:
        if self.above is None and self.below is None:
            raise ValueError("needs `above` or `below`")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError(f"below {self.below:g} must be lower than above {self.above:g}")
        return self


class StaleRule(_Rule):
    kind: Literal["stale"]
    devices: list[str] = Field(min_length=1)
    max_age: float = Field(default=10.0, gt=0, le=3600, description="s")


Rule = Annotated[RequiresRule | DewpointRule | ThresholdRule | StaleRule, Field(discriminator="kind")]
RULE_NAME = r"^[a-z][a-z0-9_-]{0,47}$"
RULE_KINDS = ("requires", "dewpoint", "threshold", "stale")


# --- what the devices publish --------------------------------------------------------------------------


@dataclass
class DeviceView:
    """The latest of one device: availability, and its status payload (docs/mqtt.md) with receive time."""

    online: bool = False
    status: dict[str, Any] | None = None
    received: float | None = None  # monotonic s when the status arrived

    def channel(self, ch: int) -> dict[str, Any] | None:
        for c in (self.status or {}).get("channels", []):
            if c.get("channel") == ch:
                return c
        return None


@dataclass
class RuleState:
    name: str
    active: bool
    reason: str
    protects: list[tuple[str, int]]
    action: str
    since: float | None = None  # monotonic s it became active
    latched: bool = False  # active only because it latched: the condition is gone, a clear is awaited
    floor: float | None = None  # dewpoint rules: the lowest cold-side temperature allowed now (°C)
    kind: str = ""


@dataclass
class _Memory:
    violated_since: float | None = None
    active: bool = False
    since: float | None = None
    latched: bool = False


def device_shapes(devices: Mapping[str, Any]) -> dict[str, tuple[str, list[int]]]:
    """{device: (kind, channels)} from the stack config's devices (objects with `model` and `channels`)."""
    return {dev: (_kind(DRIVERS[d.model]), sorted(d.channels)) for dev, d in devices.items()}


def protected(rule: Any, shapes: Mapping[str, tuple[str, list[int]]]) -> list[tuple[str, int]]:
    """The outputs a rule protects: its patterns resolved against the configured channels."""
    channels = {dev: chs for dev, (_, chs) in shapes.items()}
    out: list[tuple[str, int]] = []
    for pattern in rule.protects:
        out += [x for x in channels_matching(pattern, channels) if shapes[x[0]][0] != "environment" and x not in out]
    return out


def hv_outputs(devices: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Every HV output of the stack (sensor-bias supplies and channels allowed above SELV): what an
    emergency off switches off."""
    return [
        (dev, ch)
        for dev, d in devices.items()
        if supply_kind(d.model, [c.vmax for c in d.channels.values()]) == "hv"
        for ch in sorted(d.channels)
    ]


def guards(rules: Mapping[str, Any], devices: Mapping[str, Any], device: str) -> dict[int, list[str]]:
    """The rules protecting each channel of `device`: what its service enforces."""
    shapes = device_shapes(devices)
    out: dict[int, list[str]] = {}
    for name, rule in rules.items():
        for dev, ch in protected(rule, shapes):
            if dev == device:
                out.setdefault(ch, []).append(name)
    return out


def cold_sides(rules: Mapping[str, Any], device: str) -> dict[int, list[str]]:
    """The channels of `device` that are the cold side of a dewpoint rule: their setpoint has a floor."""
    out: dict[int, list[str]] = {}
    for name, rule in rules.items():
        ref = parse_ref(rule.cold, True) if isinstance(rule, DewpointRule) else None
        if ref and ref[0] == device:
            out.setdefault(ref[1], []).append(name)
    return out


def reference_errors(rules: Mapping[str, Any], shapes: Mapping[str, tuple[str, list[int]]]) -> list[str]:
    """What the rules refer to that the stack does not have, and requirements that form a cycle."""
    channels = {dev: chs for dev, (_, chs) in shapes.items()}
    kinds = {dev: kind for dev, (kind, _) in shapes.items()}
    errors: list[str] = []
    for name, rule in rules.items():
        where = f"interlocks.{name}"
        for i, pattern in enumerate(rule.protects):
            found = channels_matching(pattern, channels)
            if not found:
                errors.append(f"{where}.protects.{i}: {pattern!r} matches no configured channel")
            bad = [f"{d}.{c}" for d, c in found if kinds[d] == "environment"]
            if bad:
                errors.append(f"{where}.protects.{i}: {', '.join(bad)} have no output to protect")
        errors += _references(where, rule, channels, kinds)
    protects = {name: protected(rule, shapes) for name, rule in rules.items()}
    return errors + _requires_cycles(rules, protects, channels)


@dataclass
class Interlocks:
    """The stack's rules, resolved against its devices; `evaluate` is called with every new status."""

    rules: dict[str, Any]
    protects: dict[str, list[tuple[str, int]]]
    kinds: dict[str, str]  # device -> supply | environment | chiller
    memory: dict[str, _Memory] = field(default_factory=dict)

    @classmethod
    def for_stack(cls, rules: Mapping[str, Any], devices: Mapping[str, Any]) -> Interlocks:
        """The evaluator of a stack's (validated) rules; `devices` as in the stack config."""
        shapes = device_shapes(devices)
        kinds = {dev: kind for dev, (kind, _) in shapes.items()}
        return cls(dict(rules), {name: protected(rule, shapes) for name, rule in rules.items()}, kinds)

    def evaluate(self, view: Mapping[str, DeviceView], now: float) -> list[RuleState]:
        return [self._evaluate(name, rule, view, now) for name, rule in self.rules.items()]

    def clear(self, name: str) -> str | None:
        """An operator clears a latched rule; refused (with the reason) while its condition holds."""
        mem = self.memory.get(name)
        if name not in self.rules:
            return f"no interlock rule {name!r} (rules: {', '.join(self.rules) or 'none'})"
        if mem is None or not mem.latched:
            return f"interlock {name} is not latched"
        mem.latched = mem.active = False
        mem.since = None
        return None

    def _evaluate(self, name: str, rule: Any, view: Mapping[str, DeviceView], now: float) -> RuleState:
        mem = self.memory.setdefault(name, _Memory())
        violated, reason = _check(rule, view, now, mem.active)
        if violated:
            mem.violated_since = now if mem.violated_since is None else mem.violated_since
            held = now - mem.violated_since
            missing = reason.startswith(MISSING)
            if (missing or held >= rule.delay) and not mem.active:  # missing data acts at once: fail-safe
                mem.active, mem.since = True, now
            mem.latched = False
        else:
            mem.violated_since = None
            if mem.active and rule.latch:
                mem.latched = True
                reason = f"cleared condition ({reason}); latched until an operator clears it"
            elif mem.active:
                mem.active, mem.since = False, None
        floor = None
        if isinstance(rule, DewpointRule):
            dew, _ = reading_value(view, f"{rule.humidity}.dewpoint")
            floor = None if dew is None else round(dew + rule.margin, 3)
        protects = self.protects[name]
        return RuleState(name, mem.active, reason, protects, rule.action, mem.since, mem.latched, floor, rule.kind)


MISSING = "no data: "


def _kind(driver: Any) -> str:
    kind = kind_of(driver)
    return "environment" if kind == "sensor" else kind


def channels_matching(pattern: str, channels: Mapping[str, list[int]]) -> list[tuple[str, int]]:
    dev, _, ch = pattern.partition(".")
    return [
        (d, c)
        for d in channels
        if fnmatch.fnmatchcase(d, dev)
        for c in channels[d]
        if fnmatch.fnmatchcase(str(c), ch or "*")
    ]


def parse_ref(ref: str, with_field: bool) -> tuple[str, int, str | None] | None:
    parts = ref.split(".")
    if len(parts) != (3 if with_field else 2) or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2] if with_field else None


def _references(where: str, rule: Any, channels: Mapping[str, list[int]], kinds: Mapping[str, str]) -> list[str]:
    errors = []

    def channel_ref(key: str, ref: str, with_field: bool, kind: str | None = None) -> None:
        parsed = parse_ref(ref, with_field)
        shape = "<device>.<channel>.<reading>" if with_field else "<device>.<channel>"
        if parsed is None:
            errors.append(f"{where}.{key}: {ref!r} is not {shape}")
            return
        dev, ch, reading = parsed
        if dev not in channels or ch not in channels[dev]:
            errors.append(f"{where}.{key}: {dev}.{ch} is not a configured channel")
        elif kind and kinds[dev] != kind:
            errors.append(f"{where}.{key}: {dev}.{ch} is a {kinds[dev]} channel; this needs a climate sensor")
        elif reading is not None and reading not in READINGS[kinds[dev]]:
            errors.append(
                f"{where}.{key}: a {kinds[dev]} has no reading {reading!r} (one of {', '.join(READINGS[kinds[dev]])})"
            )

    if isinstance(rule, RequiresRule):
        for i, ref in enumerate(rule.requires):
            channel_ref(f"requires.{i}", ref, False)
            parsed = parse_ref(ref, False)
            if parsed and parsed[0] in kinds and kinds[parsed[0]] == "environment":
                errors.append(f"{where}.requires.{i}: {parsed[0]} has no output")
    elif isinstance(rule, DewpointRule):
        channel_ref("cold", rule.cold, True)
        channel_ref("humidity", rule.humidity, False, "environment")
    elif isinstance(rule, ThresholdRule):
        channel_ref("reading", rule.reading, True)
    elif isinstance(rule, StaleRule):
        errors += [
            f"{where}.devices.{i}: {d!r} is not a configured device"
            for i, d in enumerate(rule.devices)
            if d not in channels
        ]
    return errors


def _requires_cycles(
    rules: Mapping[str, Any], protects: Mapping[str, list[tuple[str, int]]], channels: Mapping[str, list[int]]
) -> list[str]:
    """A requires B and B requires A can never be switched on: refuse the config."""
    edges: dict[tuple[str, int], set[tuple[str, int]]] = {}
    for name, rule in rules.items():
        if isinstance(rule, RequiresRule):
            needed = {p for ref in rule.requires if (p := parse_ref(ref, False)) and p[0] in channels}
            for out in protects[name]:
                edges.setdefault(out, set()).update((d, c) for d, c, _ in needed)
    for start in edges:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    loop = " -> ".join(f"{d}.{c}" for d, c in [*path, start])
                    return [f"interlocks: requirements form a cycle ({loop}): no output could ever be switched on"]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return []


# --- the conditions --------------------------------------------------------------------------------


def reading_value(view: Mapping[str, DeviceView], ref: str) -> tuple[float | None, str]:
    dev, ch, reading = parse_ref(ref, True)  # type: ignore[misc]
    d = view.get(dev)
    if d is None or not d.online:
        return None, f"{MISSING}{dev} is offline"
    if (d.status or {}).get("state") != "ok":
        return None, f"{MISSING}{dev} is {(d.status or {}).get('state', 'silent')}"
    c = d.channel(ch)
    value = c.get(reading) if c and reading else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None, f"{MISSING}{ref} is not reported"
    return float(value), ""


def _check(rule: Any, view: Mapping[str, DeviceView], now: float, active: bool) -> tuple[bool, str]:
    """(violated, reason). An active rule clears only past its hysteresis."""
    if isinstance(rule, RequiresRule):
        for ref in rule.requires:
            dev, ch, _ = parse_ref(ref, False)  # type: ignore[misc]
            d = view.get(dev)
            if d is None or not d.online or (d.status or {}).get("state") != "ok":
                return True, f"{MISSING}{dev} is offline or not connected"
            c = d.channel(ch) or {}
            if not (c.get("on") and c.get("state") in OK_STATES):
                return True, f"{ref} is not on and ok (state {c.get('state', 'unknown')})"
        return False, f"{', '.join(rule.requires)} on and ok"
    if isinstance(rule, DewpointRule):
        cold, why = reading_value(view, rule.cold)
        dew, why2 = reading_value(view, f"{rule.humidity}.dewpoint")
        if cold is None or dew is None:
            return True, why or why2
        margin = cold - dew
        need = rule.margin + (rule.hysteresis if active else 0.0)
        text = (
            f"margin {margin:.1f} K {'<' if margin < need else '>='} {need:.1f} K ({rule.cold} {cold:.1f} °C, "
            f"dew point {dew:.1f} °C)"
        )
        return margin < need, text
    if isinstance(rule, ThresholdRule):
        value, why = reading_value(view, rule.reading)
        if value is None:
            return True, why
        slack = rule.hysteresis if active else 0.0
        if rule.above is not None and value > rule.above - slack:
            return True, f"{rule.reading} {value:g} > {rule.above - slack:g}"
        if rule.below is not None and value < rule.below + slack:
            return True, f"{rule.reading} {value:g} < {rule.below + slack:g}"
        return False, f"{rule.reading} {value:g} within limits"
    assert isinstance(rule, StaleRule)
    for dev in rule.devices:
        d = view.get(dev)
        if d is None or not d.online:
            return True, f"{MISSING}{dev} is offline"
        if d.received is None or now - d.received > rule.max_age:
            age = "never" if d.received is None else f"{now - d.received:.1f} s ago"
            return True, f"{MISSING}{dev} last reported {age} (max {rule.max_age:g} s)"
        if (d.status or {}).get("state") != "ok":
            return True, f"{MISSING}{dev} is {(d.status or {}).get('state')}"
    return False, f"{', '.join(rule.devices)} fresh"
