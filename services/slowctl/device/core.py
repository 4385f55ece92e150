"""The device policy core: every decision about one device's channels, without MQTT and without threads.

Built from the device config and its driver's declarations (capabilities.py). It decides commands on a
fresh read, runs software ramps, latches trips and unexpected changes, checks limits and held settings,
remembers ramp rates, and detects what changed without a command. Every method returns what happened
(events, an outcome); the MQTT adapter (adapter.py) publishes it. The adapter serialises all calls and
holds the instrument link while a method talks to the driver.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from slowctl.config import DeviceConfig
from slowctl.device.capabilities import Capabilities, Capability
from slowctl.device.commands import Command
from slowctl.device.events import Event
from slowctl.device.memory import UNREADABLE, Memory, MemoryFile
from slowctl.device.ramp import SoftRamp
from slowctl.drivers import Driver, SupplyDriver
from slowctl.drivers.actions import RATES
from slowctl.drivers.link import InstrumentError, LinkError
from slowctl.drivers.readings import ChannelState, ChillerChannel, Reading, SupplyChannel

RAMP_TICK = 0.2  # s between software-ramp steps
TRIP_LATCHED = "TRIP_LATCHED"
OUTPUT_LOST = "OUTPUT_LOST"
OUTPUT_ON_EXTERNALLY = "OUTPUT_ON_EXTERNALLY"
SETPOINT_CHANGED_EXTERNALLY = "SETPOINT_CHANGED_EXTERNALLY"
# latched alarms that forbid `on` (and raising a voltage) until an operator clears them
BLOCKING = frozenset({TRIP_LATCHED, OUTPUT_LOST, UNREADABLE})
Expect = frozenset[str]  # what a read may show changed by our own doing: "on" and setting names
NOTHING: Expect = frozenset()

Controlled = SupplyChannel | ChillerChannel  # channels with an output and settings


@dataclass
class Outcome:
    """A command's result: one reply, and the events it caused. `link_error`: the link failed on the way."""

    ok: bool
    error: str | None = None
    applied: Any = None
    events: list[Event] = field(default_factory=list)
    link_error: LinkError | None = None
    before: Any = None  # the setting (or output state) before the command, as read just before it


def _fmt(value: Any, unit: str) -> str:
    return f"{value:g} {unit}".strip() if isinstance(value, float) else str(value)


class DeviceCore:
    def __init__(
        self,
        device: str,
        cfg: DeviceConfig,
        caps: Capabilities,
        memory: MemoryFile,
        clock: Callable[[], float],
        guards: Mapping[int, list[str]] | None = None,
        cold_sides: Mapping[int, list[str]] | None = None,
    ) -> None:
        self.id, self.cfg, self.caps, self.memory_file = device, cfg, caps, memory
        # interlock rules protecting each channel; until the interlock process says otherwise, all of them
        # count as active (fail-safe: a dead or silent interlock process blocks, it never releases)
        self.guards = {ch: list(names) for ch, names in (guards or {}).items() if names}
        self.interlocks: dict[str, str] = {}  # active rule -> reason
        # dewpoint rules whose cold side is a channel here: its setpoint may not go below dew point + margin
        self.cold_sides = {ch: list(names) for ch, names in (cold_sides or {}).items() if names}
        self.floors: dict[str, float | None] = {}  # rule -> lowest allowed setpoint (None: not known)
        self.interlock_view: dict[str, Any] | None = None
        self.clock = clock  # monotonic seconds (ramps, ordering of reads); events carry wall time
        self.channels = sorted(cfg.channels)
        self.rates: dict[int, tuple[float | None, float | None]] = {
            ch: (c.rampup, c.rampdown or c.rampup) for ch, c in cfg.channels.items()
        }
        # the settings watched for changes without a command: those an action sets and reads back
        self.watched = {
            ch: [cap.action.reading for cap in caps_.values() if cap.action.reading]
            for ch, caps_ in caps.channels.items()
        }
        self.readings: dict[int, Reading] = {}  # as published: the instrument's view with policy overlays
        self.raw: dict[int, Reading] = {}  # the instrument's view, for change detection
        self.read_at: dict[int, float] = {}
        self.expect_on: dict[int, bool] = {}  # what the last command (or the first look) left each output at
        # sent and not yet read back (a link lost in between): what the next look may show as our doing
        self.pending: dict[int, dict[str, Any]] = {}
        self.targets: dict[int, float] = {}  # user vset of software-ramped channels
        self.ramps: dict[int, SoftRamp] = {}
        self.ramp_aborted: set[int] = set()
        self.violations: dict[int, set[str]] = {}
        self.problems: list[Event] = []  # e.g. the state file cannot be written; go out with the next result
        self.memory: Memory = memory.load(self.channels)
        self.outputs_dirty = False
        self.start_events: list[Event] = self.interlock_update(None, online=False)
        if self.memory.problem:
            self.start_events.append(self.event("latch_state", self.memory.problem))

    # --- helpers -------------------------------------------------------------------
    def event(self, kind: str, message: str, channel: int | None = None, **kw: Any) -> Event:
        return Event(self.id, kind, message, channel, **kw)

    def where(self, ch: int) -> str:
        return f"channel {ch} ({self.cfg.channels[ch].name})"

    def latched(self, ch: int) -> set[str]:
        return self.memory.latched.setdefault(ch, set())

    def _latch(self, ch: int, alarm: str) -> None:
        if alarm not in self.latched(ch):
            self.latched(ch).add(alarm)
            self._save()

    def _save(self) -> None:
        try:
            self.memory_file.save(self.memory)
        except OSError as exc:  # the latch holds in memory; say that it would not survive a restart
            self.problems.append(
                self.event(
                    "latch_state",
                    f"cannot write the state file {self.memory_file.path}: {exc.strerror or exc}; "
                    "latched alarms would be lost on a restart",
                )
            )

    def _drain(self, events: list[Event]) -> list[Event]:
        out, self.problems = events + self.problems, []
        return out

    def _remember_outputs(self, ch: int) -> None:
        """What the next run compares with: the commanded output, the instrument's own settings, and where
        the framework ramps, its target and whether a ramp was under way."""
        raw = self.raw.get(ch)
        if not isinstance(raw, (SupplyChannel, ChillerChannel)):
            return
        seen: dict[str, Any] = {"on": self.expect_on.get(ch, raw.on)}
        seen |= {key: getattr(raw, key) for key in self.watched[ch]}
        if ch in self.caps.soft_ramp:
            seen |= {"target": self.targets.get(ch), "ramping": ch in self.ramps}
        if self.memory.outputs.get(ch) != seen:
            self.memory.outputs[ch] = seen
            self.outputs_dirty = True  # written by persist() once per poll, off the command's path

    def persist(self) -> list[Event]:
        """Write the outputs last seen, if they changed (latches are written at once, durably)."""
        if self.outputs_dirty:
            self.outputs_dirty = False
            self._save()
        return self._drain([])

    # --- connection ----------------------------------------------------------------------
    def connected(self, driver: Driver, identity: str, first: bool) -> list[Event]:
        """Look at the instrument as it is, then apply what never switches an output: the power-down mode,
        remembered ramp rates and (at service start only) the channels' `startup` settings, each only where
        the output is off. Call with the link held."""
        kind = "instrument_connected" if first else "instrument_back"
        events = [self.event(kind, f"instrument {'connected' if first else 'back'}: {identity}")]
        events += self.observe(driver.read(self.channels, full=True), self.clock(), cause="seen on connecting")
        try:
            events += self._settings_at_connect(driver, first)
        except (LinkError, InstrumentError):
            self.problems[:0] = events  # what was seen still goes out, with the next result
            raise
        return self._drain(events)

    def _settings_at_connect(self, driver: Driver, first: bool) -> list[Event]:
        events: list[Event] = []
        applied: dict[int, dict[str, float]] = {}
        for ch in self.channels:
            r = self.raw.get(ch)
            if not isinstance(r, (SupplyChannel, ChillerChannel)):
                continue
            wanted = self._wanted_at_connect(ch, first)
            differ = {k: v for k, v in wanted.items() if not self._same(ch, k, getattr(r, k), v)}
            if isinstance(driver, SupplyDriver):  # the power-down mode always; rates only while off
                up, down = (None, None) if r.on else (differ.get("rampup"), differ.get("rampdown"))
                driver.configure_channel(ch, up, down, self.cfg.channels[ch].off_mode)
            if not differ:
                continue
            if r.on:
                names = ", ".join(f"{k} {_fmt(v, '')}" for k, v in differ.items())
                events.append(
                    self.event("setting_skipped", f"{self.where(ch)}: {names} not applied: the output is on", ch)
                )
                continue
            for key, value in list(differ.items()):
                try:
                    if key not in RATES:
                        self.caps.channels[ch][key].action.apply(driver, ch, value)
                except InstrumentError as exc:  # one refused setting must not keep the service from connecting
                    del differ[key]
                    msg = f"{self.where(ch)}: {key} {_fmt(value, '')} refused by the instrument: {exc}"
                    events.append(self.event("setting_applied", msg, ch, severity="major", cause="start-up"))
                    continue
                if key == "vset" and ch in self.caps.soft_ramp:
                    self.targets[ch] = value  # the framework's target is what was set
            applied[ch] = differ
        if applied:
            after = driver.read(sorted(applied), full=True)
            expect = {ch: frozenset(differ) for ch, differ in applied.items()}
            events += self.observe(after, self.clock(), cause="start-up", expect=expect)
            for ch, differ in applied.items():
                events += [self._setting_event(ch, key, value, after[ch]) for key, value in differ.items()]
        return events

    def _wanted_at_connect(self, ch: int, first: bool) -> dict[str, float]:
        wanted: dict[str, float] = {}
        if ch not in self.caps.soft_ramp:  # the framework's rates are not the instrument's
            up, down = self.rates[ch]
            wanted |= {k: v for k, v in (("rampup", up), ("rampdown", down)) if v is not None and k in self.watched[ch]}
        startup = self.cfg.channels[ch].startup
        if first and startup is not None:  # a reconnect must not undo what an operator set since
            wanted |= {k: v for k, v in startup.model_dump().items() if v is not None}
        return wanted

    def _setting_event(self, ch: int, key: str, value: float, r: Reading) -> Event:
        held, unit = getattr(r, key), self.caps.channels[ch][key].action.unit
        if self._same(ch, key, value, held):
            return self.event(
                "setting_applied",
                f"{self.where(ch)}: {key} {_fmt(value, unit)} applied while the output is off",
                ch,
                after=held,
                cause="start-up",
            )
        return self.event(
            "setting_applied",
            f"{self.where(ch)}: {key} {_fmt(value, unit)} sent, but the instrument holds {_fmt(held, unit)}",
            ch,
            severity="major",
            after=held,
            cause="start-up",
        )

    def link_lost(self, reason: str) -> list[Event]:
        events = [self.event("instrument_lost", f"instrument link lost: {reason}")]
        return self._drain(events + self.abort_ramps("the instrument link was lost"))

    # --- readings --------------------------------------------------------------------------
    def observe(
        self,
        readings: Mapping[int, Reading],
        started: float,
        cause: str = "instrument",
        expect: Mapping[int, Expect] | None = None,
    ) -> list[Event]:
        """Take a read of the instrument: overlays, latches, limits and what changed. `expect` names, per
        channel, what our own doing may have changed (a command's read-back, a ramp step)."""
        events: list[Event] = []
        for ch, r in readings.items():
            if self.read_at.get(ch, -math.inf) > started:
                continue  # a command's read-back is newer than this read
            expected = (expect or {}).get(ch, NOTHING) | self._as_sent(ch, r)
            events += self._changes(ch, self.raw.get(ch), r, cause, expected)
            self.raw[ch] = _copy(r)
            self._overlay(ch, r)
            events += self._limits(ch, r)
            self.readings[ch] = r
            self.read_at[ch] = started
            self._remember_outputs(ch)
        return self._drain(events)

    def _as_sent(self, ch: int, r: Reading) -> Expect:
        """Of a command that was sent but never read back, what this look shows as it was sent."""
        sent = self.pending.pop(ch, {})
        return frozenset(k for k, v in sent.items() if k in ("on", *self.watched[ch]) and self._is(ch, k, r, v))

    def _is(self, ch: int, key: str, r: Reading, value: Any) -> bool:
        held = getattr(r, key, None)
        if key == "on" or held is None or value is None:
            return held == value
        return self._same(ch, key, held, value)

    def _changes(self, ch: int, before: Reading | None, r: Reading, cause: str, expected: Expect) -> list[Event]:
        if not isinstance(r, (SupplyChannel, ChillerChannel)):
            return []
        events: list[Event] = []
        if not isinstance(before, (SupplyChannel, ChillerChannel)):
            # first look since start: compare with what the last run saw
            seen = self.memory.outputs.get(ch) or {}
            moving = r.state in (ChannelState.RAMP_UP, ChannelState.RAMP_DOWN)  # a hardware ramp under way
            self.expect_on.setdefault(ch, bool(seen["on"]) if moving and "on" in seen else r.on)
            if ch in self.caps.soft_ramp and seen.get("target") is not None:
                self.targets.setdefault(ch, seen["target"])
            if seen.get("ramping"):  # the service stopped in the middle of a software ramp
                self.ramp_aborted.add(ch)
                msg = (
                    f"{self.where(ch)}: the software ramp was cut short when the service stopped; the output "
                    f"is {'on' if r.on else 'off'} at vset {_fmt(getattr(r, 'vset', None), 'V')}"
                )
                return [self.event("state_changed", msg, ch, severity="major"), *self._trip(ch, None, r)]
            if "on" in seen and bool(seen["on"]) != r.on and not moving and "on" not in expected:
                events += self._output_change(ch, bool(seen["on"]), r, "while the service was not running")
            previous = {k: v for k, v in seen.items() if k in self.watched[ch]}
            events += self._setpoint_changes(ch, previous, r, "while the service was not running", expected)
            return events + self._trip(ch, None, r)
        if r.state is not before.state:
            events.append(
                self.event(
                    "state_changed",
                    f"{self.where(ch)}: {before.state.value} -> {r.state.value}",
                    ch,
                    before=before.state.value,
                    after=r.state.value,
                    cause=cause,
                )
            )
        events += self._trip(ch, before, r)
        if r.on != before.on:
            tripped = r.state is ChannelState.TRIPPED
            if "on" not in expected and not tripped and r.on != self.expect_on.get(ch, before.on):
                events += self._output_change(ch, before.on, r, cause)
            self.expect_on[ch] = r.on
        return events + self._setpoint_changes(
            ch, {k: getattr(before, k) for k in self.watched[ch]}, r, cause, expected
        )

    def _setpoint_changes(
        self, ch: int, before: dict[str, Any], r: Controlled, cause: str, expected: Expect
    ) -> list[Event]:
        """Settings that differ from what they were, or (software-ramped vset) from the framework's target."""
        events = []
        soft = ch in self.caps.soft_ramp
        for key in self.watched[ch]:
            if key in expected or key not in before or (soft and key in RATES):
                continue  # the framework's rates live in the framework
            old = before[key]
            if soft and key == "vset":
                if ch in self.ramps:
                    continue  # stepping: the instrument is not at the target yet
                if ch not in self.ramp_aborted and ch in self.targets:
                    old = self.targets[ch]  # at rest the instrument holds the target; stopped part-way, the last value
            new = getattr(r, key)
            if old is None or new is None or self._same(ch, key, old, new):
                continue
            if soft and key == "vset":
                self.targets[ch] = new  # the instrument holds it: show that, not our old target
            events += self._setpoint_change(ch, key, old, new, cause)
        return events

    def _same(self, ch: int, key: str, a: float, b: float) -> bool:
        cap = self.caps.channels[ch].get(key)
        return cap.same(a, b) if cap else a == b

    def _output_change(self, ch: int, was_on: bool, r: Controlled, cause: str) -> list[Event]:
        alarm = OUTPUT_ON_EXTERNALLY if r.on else OUTPUT_LOST
        self._latch(ch, alarm)
        what = "switched on" if r.on else "went off"
        if not r.on:
            events = self.abort_ramps("the output went off", [ch])
        else:
            events = []
        return events + [
            self.event(
                "output_changed",
                f"{self.where(ch)} {what} without a command ({cause}); {alarm} latched until clear",
                ch,
                before=was_on,
                after=r.on,
                cause=cause,
            )
        ]

    def _setpoint_change(self, ch: int, key: str, old: float, new: float, cause: str) -> list[Event]:
        self._latch(ch, SETPOINT_CHANGED_EXTERNALLY)
        unit = self.caps.channels[ch][key].action.unit if key in self.caps.channels[ch] else ""
        return [
            self.event(
                "setpoint_changed",
                f"{self.where(ch)}: {key} changed from {_fmt(old, unit)} to {_fmt(new, unit)} without a command "
                f"({cause}); {SETPOINT_CHANGED_EXTERNALLY} latched until clear",
                ch,
                before=old,
                after=new,
                cause=cause,
            )
        ]

    def _trip(self, ch: int, before: Reading | None, r: Reading) -> list[Event]:
        if not isinstance(r, SupplyChannel):
            return []
        was = isinstance(before, SupplyChannel) and before.state is ChannelState.TRIPPED
        if r.state is ChannelState.TRIPPED and not was:
            new = TRIP_LATCHED not in self.latched(ch)
            self._latch(ch, TRIP_LATCHED)
            self.expect_on[ch] = False
            events = self.abort_ramps("the channel tripped", [ch])
            if new:
                events.append(
                    self.event(
                        "trip",
                        f"{self.where(ch)} tripped ({', '.join(r.alarms) or 'no flags'}); "
                        "send clear before switching it on again",
                        ch,
                        after=r.alarms,
                    )
                )
            return events
        if was and r.state is not ChannelState.TRIPPED and TRIP_LATCHED in self.latched(ch):
            return [
                self.event(
                    "trip_gone",
                    f"{self.where(ch)}: the instrument no longer shows the trip; the latch holds until clear",
                    ch,
                )
            ]
        return []

    def _overlay(self, ch: int, r: Reading) -> None:
        """What we vouch for on top of the instrument's view: ramp targets, latched alarms."""
        if isinstance(r, SupplyChannel) and ch in self.caps.soft_ramp:
            ramp = self.ramps.get(ch)
            if ch in self.ramp_aborted:
                r.alarms.append("RAMP_ABORTED")  # vset shows what the instrument holds
            else:
                r.vset = self.targets.setdefault(ch, r.vset)
            if ramp is not None and r.state is not ChannelState.TRIPPED:
                r.state = ramp.state
            r.rampup, r.rampdown = self.rates[ch]
        latched = self.latched(ch)
        # only `clear` ends a latched trip: an output off stays TRIPPED even where the instrument forgets
        if isinstance(r, SupplyChannel) and TRIP_LATCHED in latched and not r.on:
            r.state = ChannelState.TRIPPED
        if isinstance(r, (SupplyChannel, ChillerChannel)):
            r.alarms.extend(sorted(a for a in latched if a not in r.alarms))
            if self.interlock_reasons(ch):
                r.alarms.append("INTERLOCKED")  # `on` and raising the voltage are refused: see the events

    def _limits(self, ch: int, r: Reading) -> list[Event]:
        if not isinstance(r, (SupplyChannel, ChillerChannel)):
            return []
        found = self.beyond_limits(ch, r)
        r.alarms.extend(found)
        before = self.violations.get(ch, set())
        self.violations[ch] = set(found)
        events = [
            self.event("limit_violation", f"{self.where(ch)}: {found[a]}", ch, after=a)
            for a in sorted(set(found) - before)
        ]
        events += [
            self.event("limit_ok", f"{self.where(ch)}: {a} gone", ch, before=a) for a in sorted(before - set(found))
        ]
        return events

    def beyond_limits(self, ch: int, r: Controlled) -> dict[str, str]:
        """Settings the instrument holds beyond the configured limits (from the actions' declared limit
        keys), each with what to send instead, by alarm name."""
        c, out = self.cfg.channels[ch], {}
        for cap in self.caps.channels[ch].values():
            a = cap.action
            if not a.reading or (a.name in RATES and ch in self.caps.soft_ramp):
                continue  # software-ramp rates are the framework's, validated when commanded
            value = getattr(r, a.reading)
            if value is None:
                continue
            if a.name == "tset":
                if c.tmin is not None and c.tmax is not None and not c.tmin <= value <= c.tmax:
                    out["TSET_OUTSIDE_LIMITS"] = (
                        f"the instrument holds tset {value:g} °C outside tmin={c.tmin:g}..tmax={c.tmax:g} °C: "
                        "send tset within them first"
                    )
                continue
            limit = getattr(c, a.limit) if a.limit else None
            if limit is not None and value > limit * (1 + 1e-6) + 1e-12:
                out[f"{a.reading.upper()}_ABOVE_{a.limit.upper()}"] = (  # type: ignore[union-attr]
                    f"the instrument holds {a.name} {_fmt(value, a.unit)} above {a.limit}={limit:g} {a.unit}: "
                    f"send {a.name} <= {limit:g} {a.unit} first"
                )
        return out

    # --- commands ------------------------------------------------------------------------
    def execute(self, driver: Driver, cmd: Command, cause: str) -> Outcome:
        """Decide on a fresh read, apply, read back and compare. Call with the link held."""
        events: list[Event] = []
        try:
            return self._execute(driver, cmd, cause, events)
        except LinkError as exc:
            outcome = self._failed(cmd, f"instrument link failed: {exc}", events, cause)
            outcome.link_error = exc
            return outcome

    def _execute(self, driver: Driver, cmd: Command, cause: str, events: list[Event]) -> Outcome:
        ch, cap = cmd.channel, self.caps.channels[cmd.channel][cmd.action]
        try:
            # `on` decides on the held settings too: read them, not the cache of the last full poll
            events += self._look_before(driver, cmd, full=cmd.action == "on")
            current = self.readings.get(ch)
            if self._raises_voltage(cmd, current):  # ... and so does a vset that raises an output's voltage
                events += self._look_before(driver, cmd, full=True)
                current = self.readings.get(ch)
        except InstrumentError as exc:
            return self._failed(
                cmd, f"reading the channel before the command failed ({exc}); not executed", events, cause
            )
        refusal = self.refusal(cmd, current)
        if refusal:
            msg = f"{cmd.action} refused on {self.where(ch)}: {refusal}"
            events.append(self.event("command_refused", msg, ch, after=cmd.value, cause=cause))
            return Outcome(False, refusal, events=self._drain(events))
        before = self._value_of(cap, current)
        own = self._own_keys(cmd)
        # until it is read back, a change to what was sent may be ours (a link lost in between)
        self.pending[ch] = {
            k: (cmd.action == "on" if k == "on" else cmd.value)
            for k in own
            if k != "vset" or ch not in self.caps.soft_ramp
        }
        try:
            events += self._apply(driver, cmd, current)
        except InstrumentError as exc:
            return self._not_taken(driver, cmd, cap, before, own, exc, events, cause)
        if cmd.action in ("on", "off", "kill"):
            self.expect_on[ch] = cmd.action == "on"
        try:
            readback = driver.read([ch], full=True)
        except InstrumentError as exc:
            return self._failed(
                cmd, f"sent, but reading the channel back failed ({exc}): check the channel", events, cause
            )
        # only what the command changes is ours: anything else that changed since is reported
        events += self.observe(readback, self.clock(), cause=cause, expect={ch: own})
        if cmd.action == "clear":
            events += self._acknowledge(ch, cause)
        r = self.readings.get(ch)
        applied = self._value_of(cap, r)
        mismatch = self._mismatch(cap, cmd, applied, r)
        if mismatch and cmd.action in ("on", "off", "kill") and isinstance(r, (SupplyChannel, ChillerChannel)):
            self.expect_on[ch] = r.on  # it did not take: what the instrument shows is the baseline
        what = cmd.action + (f" {_fmt(cmd.value, cap.action.unit)}" if cmd.value is not None else "")
        events.append(
            self.event(
                "command_failed" if mismatch else "command_applied",
                f"{what} on {self.where(ch)}: {mismatch or self._applied_text(cap, cmd, applied, r)}",
                ch,
                before=before,
                after=applied,
                cause=cause,
            )
        )
        return Outcome(mismatch is None, mismatch, applied, self._drain(events), before=before)

    def _not_taken(
        self,
        driver: Driver,
        cmd: Command,
        cap: Capability,
        before: Any,
        own: Expect,
        exc: InstrumentError,
        events: list[Event],
        cause: str,
    ) -> Outcome:
        """The instrument refused the command, or did not take it as sent (a JULABO reads its setpoint back
        itself): the reason, and what the instrument holds now, read back like after any command."""
        ch, applied = cmd.channel, None
        try:
            events += self.observe(driver.read([ch], full=True), self.clock(), cause=cause, expect={ch: own})
            applied = self._value_of(cap, self.readings.get(ch))
        except InstrumentError:
            pass  # the refusal is the reply; the next poll reads the channel again
        msg = f"{cmd.action} on {self.where(ch)}: instrument refused: {exc}"
        events.append(self.event("command_failed", msg, ch, before=before, after=applied, cause=cause))
        return Outcome(False, f"instrument refused: {exc}", applied, self._drain(events), before=before)

    def _look_before(self, driver: Driver, cmd: Command, full: bool) -> list[Event]:
        return self.observe(driver.read([cmd.channel], full=full), self.clock(), "seen before a command")

    def _raises_voltage(self, cmd: Command, r: Reading | None) -> bool:
        return cmd.action == "vset" and isinstance(r, SupplyChannel) and r.on and (cmd.value or 0.0) > r.vset

    def _own_keys(self, cmd: Command) -> Expect:
        """What a command may change on its channel: its own setting, the output for on/off, and the
        voltage where the framework ramps (it sets 0 before `on`, steps, and restores the target)."""
        keys = {cmd.action} if self.caps.channels[cmd.channel][cmd.action].action.reading else set()
        if cmd.action in ("on", "off", "kill"):
            keys.add("on")
        if cmd.channel in self.caps.soft_ramp and cmd.action in ("on", "off", "kill", "vset"):
            keys.add("vset")
        return frozenset(keys)

    def _failed(self, cmd: Command, error: str, events: list[Event], cause: str) -> Outcome:
        msg = f"{cmd.action} on {self.where(cmd.channel)}: {error}"
        events.append(self.event("command_failed", msg, cmd.channel, after=cmd.value, cause=cause))
        return Outcome(False, error, events=self._drain(events))

    def _applied_text(self, cap: Capability, cmd: Command, applied: Any, r: Reading | None) -> str:
        unit = cap.action.unit
        raw = self.raw.get(cmd.channel)
        if cmd.action == "vset" and cmd.channel in self.caps.soft_ramp and isinstance(raw, SupplyChannel):
            return (
                f"target {_fmt(applied, unit)}, reached by the software ramp; the instrument holds "
                f"{_fmt(raw.vset, unit)} now"
            )
        return f"applied, the instrument holds {_fmt(applied, unit)}"

    def _acknowledge(self, ch: int, cause: str) -> list[Event]:
        """`clear`: the operator acknowledges the latched alarms; a trip the instrument still shows stays."""
        raw = self.raw.get(ch)
        still_tripped = isinstance(raw, SupplyChannel) and raw.state is ChannelState.TRIPPED
        cleared = sorted(a for a in self.latched(ch) if not (a == TRIP_LATCHED and still_tripped))
        if not cleared or raw is None:
            return []
        self.memory.latched[ch] = self.latched(ch) - set(cleared)
        self._save()
        shown = _copy(raw)  # the published view again, without what was cleared
        self._overlay(ch, shown)
        if isinstance(shown, (SupplyChannel, ChillerChannel)):
            shown.alarms.extend(self.beyond_limits(ch, shown))
        self.readings[ch] = shown
        msg = f"{self.where(ch)}: {', '.join(cleared)} cleared"
        return [self.event("alarms_cleared", msg, ch, before=cleared, after=sorted(self.latched(ch)), cause=cause)]

    def interlock_update(self, state: Mapping[str, Any] | None, online: bool) -> list[Event]:
        """The interlock process's retained state (None: none seen) and availability. Every rule protecting
        a channel of this device is active unless an online interlock process says it is not."""
        active: dict[str, str] = {}
        rules = (state or {}).get("rules", {}) if online else {}
        for name in sorted({n for names in self.guards.values() for n in names}):
            rule = rules.get(name) if isinstance(rules, dict) else None
            if not online:
                active[name] = "the interlock process is not running"
            elif not isinstance(rule, dict):
                active[name] = "no state from the interlock process yet"
            elif rule.get("active") is not False:
                active[name] = str(rule.get("reason", "active"))
        self.floors = {}
        for name in {n for names in self.cold_sides.values() for n in names}:
            rule = rules.get(name) if isinstance(rules, dict) else None
            floor = rule.get("floor") if isinstance(rule, dict) else None
            self.floors[name] = (
                float(floor) if isinstance(floor, (int, float)) and not isinstance(floor, bool) else None
            )
        events = []
        for name in sorted(set(active) | set(self.interlocks)):
            now, before = active.get(name), self.interlocks.get(name)
            if (now is None) == (before is None):
                continue
            channels = ", ".join(str(ch) for ch, names in sorted(self.guards.items()) if name in names)
            msg = (
                f"interlock {name} blocks channel(s) {channels}: {now}"
                if now is not None
                else f"interlock {name} released channel(s) {channels}"
            )
            events.append(self.event("interlock", msg, after=now is not None, cause="interlock"))
        self.interlocks = active
        return self._drain(events)

    def interlock_reasons(self, ch: int) -> list[str]:
        return [
            f"interlock {name}: {self.interlocks[name]}" for name in self.guards.get(ch, []) if name in self.interlocks
        ]

    def refusal(self, cmd: Command, r: Reading | None) -> str | None:
        """Why a valid command must not run on the channel as it is now, or None. `on`, and a vset that
        raises the voltage of an output that is on, need a channel without blocking alarms and settings
        within the configured limits."""
        if not isinstance(r, (SupplyChannel, ChillerChannel)):
            return None
        ch = cmd.channel
        if cmd.action == "tset" and isinstance(r, ChillerChannel):
            return self._below_floor(ch, cmd.value, r.tset)
        if cmd.action != "on" and not self._raises_voltage(cmd, r):
            return None
        if cmd.action == "on" and (r.state is ChannelState.TRIPPED or TRIP_LATCHED in self.latched(ch)):
            return f"channel {ch} is tripped: send clear first"
        interlocked = self.interlock_reasons(ch)
        if interlocked:
            return "; ".join(interlocked)
        blocking = sorted(self.latched(ch) & BLOCKING)
        if blocking:
            return f"{self.where(ch)} has latched alarm(s) {', '.join(blocking)}: check the channel, then send clear"
        beyond = self.beyond_limits(ch, r)
        if beyond:
            return f"{self.where(ch)}: " + "; ".join(beyond[k] for k in sorted(beyond))
        return None

    def _below_floor(self, ch: int, value: float | None, held: float) -> str | None:
        """A cold-side setpoint below a dewpoint rule's dew point + margin is refused; while that is not
        known (interlock process silent, no humidity reading), any lowering is."""
        for name in self.cold_sides.get(ch, []):
            floor = self.floors.get(name)
            if value is None:
                continue
            if floor is None and value < held:
                return f"interlock {name}: the dew point is not known now: lowering tset is refused"
            if floor is not None and value < floor:
                return f"interlock {name}: tset {value:g} °C is below dew point + margin = {floor:g} °C"
        return None

    def _value_of(self, cap: Capability, r: Reading | None) -> Any:
        if r is None:
            return None
        if cap.action.reading:
            return getattr(r, cap.action.reading, None)
        return getattr(r, "state", ChannelState.OFF).value

    def _mismatch(self, cap: Capability, cmd: Command, applied: Any, r: Reading | None) -> str | None:
        """Why the read-back says the command did not take, or None."""
        unit, ch = cap.action.unit, cmd.channel
        if cmd.value is not None and cap.action.reading:
            if cmd.action in ("vset", *RATES) and ch in self.caps.soft_ramp:
                return None  # the target and rates are the framework's; the instrument gets there step by step
            if applied is None or not cap.same(cmd.value, applied):
                return f"{cmd.action} {cmd.value:g} {unit} was sent but the instrument holds {_fmt(applied, unit)}"
        if not isinstance(r, (SupplyChannel, ChillerChannel)):
            return None
        if cmd.action == "on" and not r.on and ch not in self.ramps and r.state is not ChannelState.TRIPPED:
            return f"on was sent but the instrument shows the output off ({applied})"
        if cmd.action == "off" and r.on and ch not in self.ramps and r.state is not ChannelState.RAMP_DOWN:
            return f"off was sent but the instrument shows the output on ({applied})"
        if cmd.action == "kill" and r.on:
            return f"kill was sent but the instrument shows the output on ({applied})"
        if cmd.action == "clear" and TRIP_LATCHED in self.latched(ch):
            return "clear was sent but the instrument still shows the trip: find its cause, then clear again"
        return None

    # --- applying, software ramps ------------------------------------------------------------
    def _apply(self, driver: Driver, cmd: Command, current: Reading | None) -> list[Event]:
        """Software-ramped channels are stepped by us; everything else goes to the driver as it is."""
        ch, value, now = cmd.channel, cmd.value, self.clock()
        action = self.caps.channels[ch][cmd.action].action
        if ch not in self.caps.soft_ramp:
            action.apply(driver, ch, value)
            if cmd.action in RATES:  # a reconnect re-applies what was commanded last
                self._remember_rate(ch, cmd.action, value)
            return []
        assert isinstance(driver, SupplyDriver) and isinstance(current, SupplyChannel)
        raw = self.raw.get(ch)
        ramp = self.ramps.get(ch)
        switching_off = ramp is not None and ramp.switch_off_at_end
        # a new ramp starts where the instrument is, not where an earlier ramp was going
        programmed = ramp.programmed if ramp else (raw.vset if isinstance(raw, SupplyChannel) else current.vset)
        if cmd.action in ("vset", "on", "off", "kill"):
            self.ramp_aborted.discard(ch)  # a new target: the stopped ramp is history
        if cmd.action == "vset":
            assert value is not None
            self.targets[ch] = value
            if switching_off:
                pass  # the off-ramp goes on; the new target waits for the next "on"
            elif current.on:
                self._ramp(ch, now, programmed).start(value, now)
            else:
                driver.set_voltage(ch, value)  # output off: the instrument just holds the target
        elif cmd.action in RATES:
            self._remember_rate(ch, cmd.action, value)
        elif cmd.action == "on":
            target = self.targets.setdefault(ch, current.vset)
            if ramp is not None and switching_off:
                ramp.switch_off_at_end = False
                ramp.start(target, now)
            elif not current.on:
                driver.set_voltage(ch, 0.0)
                try:
                    driver.switch(ch, True)
                except InstrumentError:
                    driver.set_voltage(ch, target)  # the output stays off, holding the target as before
                    raise
                if not self._same(ch, "vset", 0.0, target):  # a target of 0 V: on, with nothing to ramp
                    self._ramp(ch, now, 0.0).start(target, now)
            elif not self._same(ch, "vset", programmed, target):  # on, but stopped part-way: go on from there
                self._ramp(ch, now, programmed).start(target, now)
        elif cmd.action == "off":
            if current.on and self.cfg.channels[ch].off_mode == "ramp":
                ramp = self._ramp(ch, now, programmed)
                ramp.switch_off_at_end = True
                ramp.start(0.0, now)
            else:
                self.ramps.pop(ch, None)
                driver.switch(ch, False)
                driver.set_voltage(ch, self.targets.get(ch, current.vset))
        elif cmd.action == "kill":  # off now, from wherever a ramp was: the instrument keeps the target
            self.ramps.pop(ch, None)
            driver.switch(ch, False)
            driver.set_voltage(ch, self.targets.get(ch, current.vset))
        elif cmd.action == "clear":
            events = self.abort_ramps("clear was sent", [ch])
            action.apply(driver, ch, value)
            return events
        else:  # iset: the ramp goes on at the new current limit
            action.apply(driver, ch, value)
        return []

    def _remember_rate(self, ch: int, action: str, value: float | None) -> None:
        up, down = self.rates[ch]
        self.rates[ch] = (value, down) if action == "rampup" else (up, value)

    def _ramp(self, ch: int, now: float, start: float) -> SoftRamp:
        """The channel's running ramp, or a new one from `start` (the programmed voltage)."""
        ramp = self.ramps.get(ch)
        if ramp is None:
            ramp = self.ramps[ch] = SoftRamp(
                programmed=start, target=start, up=1.0, down=1.0, max_step=self.cfg.channels[ch].ramp_step, last=now
            )
        up, down = self.rates[ch]
        ramp.up, ramp.down = up or 1.0, down or up or 1.0
        return ramp

    def next_ramp_step(self) -> float:
        """Monotonic time of the next software-ramp step (inf: none running)."""
        return min((r.due(RAMP_TICK) for r in self.ramps.values()), default=math.inf)

    def abort_ramps(self, why: str, channels: list[int] | None = None) -> list[Event]:
        """Stop software ramps where they are (all, or those of `channels`): the status says RAMP_ABORTED."""
        aborted = [ch for ch in self.ramps if channels is None or ch in channels]
        for ch in aborted:
            del self.ramps[ch]
        self.ramp_aborted |= set(aborted)
        if not aborted:
            return []
        msg = f"software ramp of channel(s) {aborted} stopped: {why}; the output stays where the last step left it"
        return [self.event("state_changed", msg, aborted[0] if len(aborted) == 1 else None, severity="major")]

    def step_ramps(self, driver: Driver) -> list[Event]:
        """One step of every due software ramp. Call with the link held; link errors propagate."""
        now = self.clock()
        due = [ch for ch, r in self.ramps.items() if r.due(RAMP_TICK) <= now]
        if not due or not isinstance(driver, SupplyDriver):
            return []
        expect: dict[int, Expect] = {}
        try:
            for ch in due:
                ramp = self.ramps[ch]
                value, grid = ramp.step(now), self.caps.channels[ch]["vset"].step
                if grid and value != ramp.target:  # intermediate steps on the instrument's grid, never past it
                    value = round(value / grid) * grid
                driver.set_voltage(ch, value)
                expect[ch] = frozenset({"vset"})
                if not ramp.active:
                    if ramp.switch_off_at_end:
                        driver.switch(ch, False)
                        driver.set_voltage(ch, self.targets.get(ch, 0.0))
                        self.expect_on[ch] = False
                        expect[ch] = frozenset({"vset", "on"})
                    del self.ramps[ch]
            readings = driver.read(due, full=True)
        except InstrumentError as exc:
            return self.abort_ramps(f"the instrument refused a step ({exc})")
        return self.observe(readings, now, cause="software ramp", expect=expect)


def _copy(r: Reading) -> Reading:
    """A snapshot: later overlays (alarms, ramp targets) must not change what the instrument said."""
    return replace(r, alarms=list(r.alarms)) if isinstance(r, (SupplyChannel, ChillerChannel)) else replace(r)
