"""Alarm management: what an alarm handler keeps, from what the devices and the interlock rules publish.

Pure logic, no MQTT and no threads: `AlarmHandler.evaluate(view, rules, now, wall)` returns what was
raised and cleared; `ack` is the operator's acknowledgement. As in EPICS and Phoebus alarm handlers:
- an alarm is raised when its condition has held `delay` s, and is *active* while it holds;
- *acknowledged* is separate: an operator has seen it, whether or not it is still active;
- a latching alarm (the default) stays listed until its condition is gone **and** it is acknowledged;
  a non-latching one leaves the list when its condition goes.

Where alarms come from:
- limits on readings (the stack config's `alarms.limits`): HIHI/HIGH/LOW/LOLO with hysteresis, a delay
  and a severity per level (`<reading>.HIGH`, ...); a reading the device does not report is INVALID;
- each device: OFFLINE (its service), DISCONNECTED or ERROR (its instrument), STALE (no status for a while),
  all of severity invalid; while a device is blind its other alarms are held, neither raised nor cleared;
- the flags a device reports per channel (TRIP, OVC, FUSE, OUTPUT_LOST, ...);
- every active interlock rule (device `interlock`, kind the rule's name) whose condition is abnormal in
  itself (dewpoint, threshold, stale); a `requires` rule is a missing permission, an alarm only once it has
  switched an output off (LV lost under HV), not while everything is off anyway.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slowctl.atomic import write_json
from slowctl.safety.rules import MISSING, READINGS, DeviceView, RuleState, channels_matching, reading_value

LEVELS = ("hihi", "high", "low", "lolo")  # most severe first on each side
SEVERITIES = ("minor", "major", "invalid")
DEFAULT_SEVERITY = {"hihi": "major", "high": "minor", "low": "minor", "lolo": "major"}
MINOR_FLAGS = frozenset({"CC", "COMPLIANCE", "I_LIMIT", "V_LIMIT", "RAMP_ABORTED"})  # look at it, nothing broke
NOT_ALARMS = frozenset({"INTERLOCKED"})  # the interlock rule that blocks the channel is its own alarm
INTERLOCK = "interlock"  # the device of interlock alarms


class AlarmLimits(BaseModel):
    """Limits on one reading (of every channel its key matches)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hihi: float | None = None
    high: float | None = None
    low: float | None = None
    lolo: float | None = None
    hysteresis: float = Field(default=0.0, ge=0, description="how far back past a limit before its alarm clears")
    delay: float = Field(default=0.0, ge=0, le=3600, description="s a limit must be passed before the alarm")
    latch: bool = Field(default=True, description="stays listed until gone and acknowledged")
    severity: dict[Literal["hihi", "high", "low", "lolo"], Literal["minor", "major"]] = Field(
        default_factory=dict, description="per level; default hihi/lolo major, high/low minor"
    )

    @model_validator(mode="after")
    def _ordered(self) -> AlarmLimits:
        given = [(k, v) for k in ("lolo", "low", "high", "hihi") if (v := getattr(self, k)) is not None]
        if not given:
            raise ValueError("needs at least one of hihi, high, low, lolo")
        for (k1, v1), (k2, v2) in zip(given, given[1:], strict=False):
            if not v1 < v2:
                raise ValueError(f"{k1} {v1:g} must be below {k2} {v2:g}")
            if self.hysteresis >= v2 - v1:  # else a level would hold past the next limit
                raise ValueError(f"hysteresis {self.hysteresis:g} must be smaller than the gap from {k1} to {k2}")
        unused = [k for k in self.severity if getattr(self, k) is None]
        if unused:
            raise ValueError(f"severity given for {', '.join(unused)}, which has no limit")
        return self

    def severity_of(self, level: str) -> str:
        return self.severity.get(level, DEFAULT_SEVERITY[level])  # type: ignore[call-overload]

    def passed(self, value: float, current: str | None) -> list[str]:
        """The limits `value` is past, most severe first. A limit at or below the level now alarmed
        (`current`) counts as passed until the value is back by the hysteresis."""
        out = []
        for name in ("hihi", "high", "lolo", "low"):
            limit = getattr(self, name)
            if limit is None:
                continue
            holding = current == name or (current, name) in (("hihi", "high"), ("lolo", "low"))
            slack = self.hysteresis if holding else 0.0
            if (value > limit - slack) if name in ("hihi", "high") else (value < limit + slack):
                out.append(name)
        return out


class AlarmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stale_after: float = Field(
        default=15.0, gt=0, le=3600, description="s without a status before a device is STALE (at least 3 polls)"
    )
    limits: dict[str, AlarmLimits] = Field(
        default_factory=dict, description="by reading: 'climate.0.humidity', 'hv.*.imon' (units of the status)"
    )


def limit_errors(config: AlarmConfig, shapes: Mapping[str, tuple[str, list[int]]]) -> list[str]:
    """Limits on readings the stack does not have, and readings given limits twice."""
    channels = {dev: chs for dev, (_, chs) in shapes.items()}
    owner: dict[tuple[str, int, str], str] = {}
    errors = []
    for key in config.limits:
        where = f"alarms.limits.{key}"
        pattern, _, reading = key.rpartition(".")
        if "." not in pattern:
            errors.append(f"{where}: expected <device>.<channel>.<reading>, e.g. 'hv.*.imon'")
            continue
        found = [(d, c) for d, c in channels_matching(pattern, channels) if reading in READINGS[shapes[d][0]]]
        if not found:
            known = sorted({r for kind, _ in shapes.values() for r in READINGS[kind]})
            errors.append(f"{where}: matches no configured channel with a reading {reading!r} ({', '.join(known)})")
        for d, c in found:
            other = owner.setdefault((d, c, reading), key)
            if other != key:
                errors.append(f"{where}: {d}.{c}.{reading} already has limits under alarms.limits.{other}")
    return errors


@dataclass
class Alarm:
    device: str
    channel: int | None
    kind: str  # 'humidity.HIGH', 'TRIP', 'OFFLINE', or an interlock rule's name
    severity: str
    message: str
    since: float  # wall clock s it was raised
    active: bool = True
    latch: bool = True
    value: float | None = None
    acked_by: str | None = None
    acked_at: float | None = None

    @property
    def key(self) -> tuple[str, int | None, str]:
        return self.device, self.channel, self.kind

    @property
    def where(self) -> str:
        return self.device if self.channel is None else f"{self.device}.{self.channel}"

    def payload(self) -> dict[str, Any]:
        body = asdict(self)
        body["since"] = int(self.since * 1000)
        body["acked_at"] = None if self.acked_at is None else int(self.acked_at * 1000)
        body["acked"] = self.acked_by is not None
        return body


@dataclass(frozen=True)
class Change:
    what: Literal["raised", "cleared", "acked"]
    alarm: Alarm


@dataclass(frozen=True)
class _Condition:
    severity: str
    message: str
    value: float | None = None
    latch: bool = True


@dataclass(frozen=True)
class _Watch:
    device: str
    channel: int
    reading: str
    limits: AlarmLimits


@dataclass
class AlarmHandler:
    """The alarms of one stack; `devices` as in the stack config (objects with `poll_period`)."""

    config: AlarmConfig
    stale_limits: dict[str, float]  # device -> s
    watches: list[_Watch]
    started: float  # monotonic s: devices get their stale limit to announce themselves
    alarms: dict[tuple[str, int | None, str], Alarm] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)  # devices heard from since the start
    online_since: dict[str, float] = field(default_factory=dict)  # monotonic s: a status is due after its limit
    past_since: dict[tuple[str, int, str], float] = field(default_factory=dict)  # a limit passed since (delay)
    held_until: float = 0.0  # monotonic s: everything is held (start-up, the handler's own broker reconnect)

    @classmethod
    def for_stack(
        cls, config: AlarmConfig, devices: Mapping[str, Any], shapes: Mapping[str, tuple[str, list[int]]], now: float
    ) -> AlarmHandler:
        channels = {dev: chs for dev, (_, chs) in shapes.items()}
        watches = [
            _Watch(d, c, reading, limits)
            for key, limits in config.limits.items()
            for pattern, _, reading in [key.rpartition(".")]
            for d, c in channels_matching(pattern, channels)
            if reading in READINGS[shapes[d][0]]
        ]
        stale = {dev: max(config.stale_after, 3 * d.poll_period) for dev, d in devices.items()}
        return cls(config, stale, watches, now)

    # --- evaluation ---------------------------------------------------------------------------------
    def evaluate(
        self,
        view: Mapping[str, DeviceView],
        rules: Iterable[RuleState],
        now: float,
        wall: float,
        acted: Collection[str] = (),
        reported: Mapping[str, list[dict[str, Any]]] | None = None,
    ) -> list[Change]:
        """`acted`: the rules that have switched an output off since they became active. `reported`: alarms
        services raise about themselves (the recorder: not writing, buffer nearly full), by service."""
        if now < self.held_until:
            return []  # what the view shows may be older than the handler's own outage: judge nothing yet
        conditions, held = self._conditions(view, rules, acted, now)
        for service, alarms in (reported or {}).items():
            for a in alarms:
                kind, severity = str(a.get("kind", "FAULT"))[:64], a.get("severity")
                severity = severity if severity in SEVERITIES else "major"
                conditions[(service, None, kind)] = _Condition(severity, f"{service}: {a.get('message', kind)}"[:500])
        changes: list[Change] = []
        for key, cond in conditions.items():
            alarm = self.alarms.get(key)
            if alarm is not None and alarm.active:
                alarm.message, alarm.value = cond.message, cond.value
                continue
            if alarm is None:  # new
                alarm = self.alarms[key] = Alarm(*key, cond.severity, cond.message, wall, latch=cond.latch)
            alarm.active, alarm.message, alarm.value, alarm.since = True, cond.message, cond.value, wall
            changes.append(Change("raised", alarm))
        for key, alarm in list(self.alarms.items()):
            if key in conditions or key in held or not alarm.active:
                continue  # still there, not known now (held as it is), or already gone
            alarm.active = False
            changes.append(Change("cleared", alarm))
            if alarm.acked_by is not None or not alarm.latch:
                del self.alarms[key]
        return changes

    def hold(self, until: float) -> None:
        """Judge nothing before `until` (monotonic s): after the handler (re)connects, the devices' statuses
        are on their way; without this, its own outage would look like every device gone stale."""
        self.held_until = max(self.held_until, until)

    def _conditions(
        self, view: Mapping[str, DeviceView], rules: Iterable[RuleState], acted: Collection[str], now: float
    ) -> tuple[dict[tuple[str, int | None, str], _Condition], set[tuple[str, int | None, str]]]:
        conditions: dict[tuple[str, int | None, str], _Condition] = {}
        blind: set[str] = set()
        for dev, limit in self.stale_limits.items():
            d = view.get(dev) or DeviceView()
            if d.online:
                self.online_since.setdefault(dev, now)
            else:
                self.online_since.pop(dev, None)
            problem = _device_problem(dev, d, now, limit, self.online_since.get(dev, now))
            if problem is None:
                self.announced.add(dev)
                for c in (d.status or {}).get("channels", []):
                    ch = c.get("channel")
                    flags = [f for f in c.get("alarms") or [] if isinstance(f, str) and f not in NOT_ALARMS]
                    if c.get("state") == "TRIPPED" and not any("TRIP" in f for f in flags):
                        flags.append("TRIPPED")
                    for flag in flags:
                        severity = "minor" if flag in MINOR_FLAGS else "major"
                        conditions[(dev, ch, flag)] = _Condition(severity, f"{dev}.{ch} {flag}")
                continue
            blind.add(dev)
            if d.online or d.received is not None:
                self.announced.add(dev)
            kind, message = problem
            if kind and (dev in self.announced or now - self.started >= limit):
                conditions[(dev, None, kind)] = _Condition("invalid", message)
        # not known now, so held as they are: no data is no reason to clear an alarm
        held = {k for k in self.alarms if k[0] in blind and k[2] not in DEVICE_KINDS}
        for w in self.watches:
            if w.device in blind:
                continue
            value, why = reading_value(view, f"{w.device}.{w.channel}.{w.reading}")
            if value is None:
                conditions[(w.device, w.channel, f"{w.reading}.INVALID")] = _Condition(
                    "invalid", why.removeprefix(MISSING), latch=w.limits.latch
                )
                held |= {(w.device, w.channel, f"{w.reading}.{level.upper()}") for level in LEVELS}
                continue
            level = self._level(w, value, now)
            if level is not None:
                limit = getattr(w.limits, level)
                sign = ">" if level in ("hihi", "high") else "<"
                message = f"{w.device}.{w.channel} {w.reading} {value:g} {sign} {level.upper()} {limit:g}"
                conditions[(w.device, w.channel, f"{w.reading}.{level.upper()}")] = _Condition(
                    w.limits.severity_of(level), message, value, w.limits.latch
                )
        starting = now - self.started < max(self.stale_limits.values(), default=0.0)
        for state in rules:
            if not state.active:
                continue
            key = (INTERLOCK, None, state.name)
            listed = self.alarms.get(key)
            if state.kind == "requires" and state.name not in acted and not (listed and listed.active):
                continue  # a missing permission, not a fault, until it switches something off
            if starting and state.reason.startswith(MISSING) and not listed:
                continue  # the devices are still announcing themselves; their own alarms follow if they don't
            conditions[key] = _Condition("major", f"interlock {state.name}: {state.reason}")
        return conditions, held

    def _level(self, w: _Watch, value: float, now: float) -> str | None:
        """The most severe limit passed for `delay` s; the level alarmed now holds while its limit is
        passed, so a reading between HIGH and HIHI stays HIGH until HIHI is due."""
        current = self._alarmed_level(w)
        passed = w.limits.passed(value, current)
        for level in LEVELS:
            key = (w.device, w.channel, f"{w.reading}.{level}")
            if level in passed:
                self.past_since.setdefault(key, now)
            else:
                self.past_since.pop(key, None)
        due = [
            level
            for level in passed
            if level == current
            or now - self.past_since[(w.device, w.channel, f"{w.reading}.{level}")] >= w.limits.delay
        ]
        return due[0] if due else None

    def _alarmed_level(self, w: _Watch) -> str | None:
        for level in LEVELS:
            alarm = self.alarms.get((w.device, w.channel, f"{w.reading}.{level.upper()}"))
            if alarm is not None and alarm.active:
                return level
        return None

    # --- acknowledgement ----------------------------------------------------------------------------
    def ack(
        self, device: str, channel: int | None, kind: str | None, by: str, wall: float
    ) -> tuple[list[Change], str | None]:
        """Acknowledge the matching alarms; refused, with the reason, when none is unacknowledged."""
        what = device + ("" if channel is None else f".{channel}") + ("" if kind is None else f" {kind}")
        if device not in self.stale_limits and device != INTERLOCK:
            return [], f"no device {device!r} (devices: {', '.join(sorted(self.stale_limits))})"
        on_device = [a for a in self.alarms.values() if a.device == device]
        matches = [a for a in on_device if (channel is None or a.channel == channel) and _kind_matches(a.kind, kind)]
        if not matches:
            listed = ", ".join(f"{a.where} {a.kind}" for a in on_device)
            return [], f"no alarm on {what}" + (
                f" (alarms on {device}: {listed})" if listed else f"; {device} has none"
            )
        unacked = [a for a in matches if a.acked_by is None]
        if not unacked:
            return [], f"the alarms on {what} are already acknowledged"
        changes = []
        for alarm in unacked:
            alarm.acked_by, alarm.acked_at = by, wall
            changes.append(Change("acked", alarm))
            if not alarm.active:
                del self.alarms[alarm.key]
        return changes, None

    # --- the list -----------------------------------------------------------------------------------
    def listed(self) -> list[Alarm]:
        """Every active or unacknowledged alarm, most severe first, then oldest."""
        rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        return sorted(self.alarms.values(), key=lambda a: (rank.get(a.severity, 9), a.since, a.device, a.kind))

    def summary(self) -> dict[str, Any]:
        alarms = self.listed()
        return {
            "active": sum(a.active for a in alarms),
            "unacked": sum(a.acked_by is None for a in alarms),
            "highest": alarms[0].severity if alarms else None,
            "alarms": [a.payload() for a in alarms],
        }

    # --- across restarts ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What `save` writes: taken under the caller's lock, written outside it."""
        return {"version": 1, "alarms": [asdict(a) for a in self.alarms.values()]}

    def save(self, path: Path) -> None:
        write_json(path, self.snapshot())

    def load(self, path: Path) -> str | None:
        """The alarms listed when the handler stopped: an unacknowledged alarm must survive a restart.
        Returns why the file could not be read (the handler then starts empty and says so)."""
        if not path.exists():
            return None
        try:
            stored = _StoredAlarms.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            why = str(exc).splitlines()[0]
            return f"alarm state file {path} unreadable ({why}): alarms listed before the restart are lost"
        for a in stored.alarms:
            if a.device in self.stale_limits or a.device == INTERLOCK:
                self.alarms[(a.device, a.channel, a.kind)] = Alarm(**a.model_dump())
                self.announced.add(a.device)  # known before the restart: no start-up grace for it
        return None


class _StoredAlarm(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    device: str
    channel: int | None
    kind: str
    severity: Literal["minor", "major", "invalid"]
    message: str
    since: float
    active: bool
    latch: bool
    value: float | None
    acked_by: str | None
    acked_at: float | None


class _StoredAlarms(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1]
    alarms: list[_StoredAlarm]


DEVICE_KINDS = frozenset({"OFFLINE", "DISCONNECTED", "ERROR", "STALE"})


def _device_problem(dev: str, d: DeviceView, now: float, limit: float, online: float) -> tuple[str, str] | None:
    if not d.online:
        return "OFFLINE", f"{dev} is offline (its service is not running or lost the broker)"
    if d.received is None or d.status is None:
        if now - online <= limit:
            return "", ""  # just started: its first status is on its way (blind, no alarm yet)
        return "STALE", f"{dev} has published no status in {now - online:.0f} s since it came online"
    state = d.status.get("state")
    if state != "ok":
        kind = "ERROR" if state == "error" else "DISCONNECTED"
        return kind, f"{dev} is {state}: {d.status.get('error') or 'no reason given'}"
    if now - d.received > limit:
        return "STALE", f"{dev} last reported {now - d.received:.0f} s ago (max {limit:g} s)"
    return None


def _kind_matches(kind: str, wanted: str | None) -> bool:
    """'humidity.HIGH' is matched by itself, by 'HIGH' and by 'humidity' (any case)."""
    if wanted is None:
        return True
    w = wanted.upper()
    return kind.upper() == w or w in kind.upper().split(".")
