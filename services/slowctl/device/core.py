"""The device policy core: every decision about one device's channels, without MQTT and without threads.

Built from the device config and its driver's declarations (capabilities.py). It decides commands on a
fresh read, runs software ramps, latches trips and unexpected changes, checks limits and held settings,
remembers ramp rates, and detects what changed without a command. Every method returns what happened
(events, an outcome); the MQTT adapter (service.py) publishes it. The adapter serialises all calls and
holds the instrument link while a method talks to the driver.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from slowctl.config import ChannelConfig, DeviceConfig
from slowctl.device.capabilities import Capabilities, Capability
from slowctl.device.commands import Command
from slowctl.device.events import Event
from slowctl.device.memory import UNREADABLE, Memory, MemoryFile
from slowctl.device.ramp import SoftRamp
from slowctl.drivers import Driver, SupplyDriver
from slowctl.drivers.link import InstrumentError
from slowctl.drivers.readings import ChannelState, ChillerChannel, Reading, SupplyChannel

RAMP_TICK = 0.2  # s between software-ramp steps
TRIP = "TRIP_LATCHED"
OUTPUT_LOST = "OUTPUT_LOST"
OUTPUT_ON = "OUTPUT_ON_EXTERNALLY"
SETPOINT = "SETPOINT_CHANGED_EXTERNALLY"
# latched alarms that forbid `on` until an operator clears them
BLOCKING = frozenset({TRIP, OUTPUT_LOST, UNREADABLE})
HELD = {"supply": ("vset", "iset"), "chiller": ("tset",)}  # settings watched for changes without a command


@dataclass
class Outcome:
    """A command's result: one reply, and the events it caused."""

    ok: bool
    error: str | None = None
    applied: Any = None
    events: list[Event] = field(default_factory=list)


def _fmt(value: Any, unit: str) -> str:
    return f"{value:g} {unit}".strip() if isinstance(value, float) else str(value)


class DeviceCore:
    def __init__(
        self, device: str, cfg: DeviceConfig, caps: Capabilities, memory: MemoryFile, clock: Callable[[], float]
    ) -> None:
        self.id, self.cfg, self.caps, self.memory_file = device, cfg, caps, memory
        self.clock = clock  # monotonic seconds (ramps); events carry wall time
        self.channels = sorted(cfg.channels)
        self.rates: dict[int, tuple[float | None, float | None]] = {
            ch: (c.rampup, c.rampdown or c.rampup) for ch, c in cfg.channels.items()
        }
        self.readings: dict[int, Reading] = {}  # as published: the instrument's view with policy overlays
        self.raw: dict[int, Reading] = {}  # the instrument's view, for change detection
        self.read_at: dict[int, float] = {}
        self.expect_on: dict[int, bool] = {}  # what the last command (or the first look) left each output at
        self.targets: dict[int, float] = {}  # user vset of software-ramped channels
        self.ramps: dict[int, SoftRamp] = {}
        self.ramp_aborted: set[int] = set()
        self.violations: dict[int, set[str]] = {}
        self.memory: Memory = memory.load(self.channels)
        self.outputs_dirty = False
        self.start_events: list[Event] = []
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
            self.memory_file.save(self.memory)

    def _remember_outputs(self, ch: int, r: Reading) -> None:
        seen = {"on": r.on} if isinstance(r, (SupplyChannel, ChillerChannel)) else {}
        for key in HELD.get(self.caps.kind, ()):
            seen[key] = self.targets.get(ch, getattr(r, key)) if key == "vset" else getattr(r, key)
        if seen and self.memory.outputs.get(ch) != seen:
            self.memory.outputs[ch] = seen
            self.outputs_dirty = True  # written by persist(), off the command's path

    def persist(self) -> None:
        """Write the outputs last seen, if they changed (latches are written at once, durably)."""
        if self.outputs_dirty:
            self.outputs_dirty = False
            self.memory_file.save(self.memory, durable=False)

    # --- connection ----------------------------------------------------------------------
    def connected(self, driver: Driver, identity: str, first: bool) -> list[Event]:
        """Start-up settings that never switch an output: remembered ramp rates, power-down mode, and the
        channels' `startup` settings while their output is off. Call with the link held."""
        events = [
            self.event(
                "instrument_connected" if first else "instrument_back",
                f"instrument {'connected' if first else 'back'}: {identity}",
            )
        ]
        if isinstance(driver, SupplyDriver):
            for ch in self.channels:
                up, down = self.rates[ch] if ch not in self.caps.soft_ramp else (None, None)
                driver.configure_channel(ch, up, down, self.cfg.channels[ch].off_mode)
        now = self.clock()
        current = driver.read(self.channels, full=True)
        events += self.observe(current, now, cause="seen on connecting")
        for ch in self.channels:
            events += self._apply_startup(driver, ch, current.get(ch))
        return events

    def _apply_startup(self, driver: Driver, ch: int, r: Reading | None) -> list[Event]:
        settings = self.cfg.channels[ch].startup
        if settings is None or r is None or not isinstance(r, (SupplyChannel, ChillerChannel)):
            return []
        wanted = {k: v for k, v in settings.model_dump().items() if v is not None}
        caps = self.caps.channels[ch]
        differ = {k: v for k, v in wanted.items() if not caps[k].same(getattr(r, k), v)}
        if not differ:
            return []
        if r.on:
            return [
                self.event(
                    "setting_skipped",
                    f"{self.where(ch)}: start-up settings {', '.join(differ)} not applied: the output is on",
                    ch,
                    cause="start-up",
                )
            ]
        events = []
        for key, value in differ.items():
            caps[key].action.apply(driver, ch, value)
            if key == "vset" and ch in self.caps.soft_ramp:
                self.targets[ch] = value
            events.append(
                self.event(
                    "setting_applied",
                    f"{self.where(ch)}: {key} {_fmt(value, caps[key].action.unit)} applied at start-up (output off)",
                    ch,
                    before=getattr(r, key),
                    after=value,
                    cause="start-up",
                )
            )
        self.observe(driver.read([ch], full=True), self.clock(), cause="start-up", expected=True)
        return events

    def link_lost(self, reason: str) -> list[Event]:
        events = [self.event("instrument_lost", f"instrument link lost: {reason}")]
        aborted, self.ramps = self.ramps, {}  # a new link must not continue an old ramp
        if aborted:
            self.ramp_aborted |= set(aborted)
            events.append(
                self.event(
                    "state_changed",
                    f"software ramp of channel(s) {sorted(aborted)} aborted: "
                    "the output stays where the last step left it",
                    severity="major",
                )
            )
        return events

    # --- readings --------------------------------------------------------------------------
    def observe(
        self, readings: Mapping[int, Reading], started: float, cause: str = "instrument", expected: bool = False
    ) -> list[Event]:
        """Take a read of the instrument: overlays, latches, limits and what changed. `expected`: the read
        follows our own command, so changed settings and outputs are its effect, not an external change."""
        events: list[Event] = []
        for ch, r in readings.items():
            if self.read_at.get(ch, -math.inf) > started:
                continue  # a command's read-back is newer than this poll
            events += self._changes(ch, self.raw.get(ch), r, cause, expected)
            self.raw[ch] = _copy(r)
            self._overlay(ch, r)
            events += self._limits(ch, r)
            self.readings[ch] = r
            self.read_at[ch] = started
            self._remember_outputs(ch, r)
        return events

    def _changes(self, ch: int, before: Reading | None, r: Reading, cause: str, expected: bool) -> list[Event]:
        if not isinstance(r, (SupplyChannel, ChillerChannel)):
            return []
        events: list[Event] = []
        if before is None or not isinstance(before, (SupplyChannel, ChillerChannel)):
            # first look since start: compare with what the last run saw
            seen = self.memory.outputs.get(ch) or {}
            self.expect_on.setdefault(ch, r.on)
            if seen.get("on") is not None and bool(seen["on"]) != r.on and not expected:
                events += self._output_change(ch, bool(seen["on"]), r, "while the service was not running")
            for key in HELD.get(self.caps.kind, ()):
                soft = key == "vset" and ch in self.caps.soft_ramp  # the framework's target, not the instrument's
                if key in seen and not soft and not expected and not self._same(ch, key, seen[key], getattr(r, key)):
                    events += self._setpoint_change(
                        ch, key, seen[key], getattr(r, key), "while the service was not running"
                    )
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
            if expected:
                self.expect_on[ch] = r.on
            elif r.state is not ChannelState.TRIPPED and r.on != self.expect_on.get(ch, before.on):
                events += self._output_change(ch, before.on, r, cause)
            self.expect_on[ch] = r.on
        for key in HELD.get(self.caps.kind, ()):
            if key == "vset" and ch in self.caps.soft_ramp:
                continue  # the framework steps it; the target is what counts
            old, new = getattr(before, key), getattr(r, key)
            if not expected and not self._same(ch, key, old, new):
                events += self._setpoint_change(ch, key, old, new, cause)
        return events

    def _same(self, ch: int, key: str, a: float, b: float) -> bool:
        cap = self.caps.channels[ch].get(key)
        return cap.same(a, b) if cap else a == b

    def _output_change(self, ch: int, was_on: bool, r: SupplyChannel | ChillerChannel, cause: str) -> list[Event]:
        alarm = OUTPUT_ON if r.on else OUTPUT_LOST
        self._latch(ch, alarm)
        what = "switched on" if r.on else "went off"
        return [
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
        self._latch(ch, SETPOINT)
        unit = self.caps.channels[ch][key].action.unit if key in self.caps.channels[ch] else ""
        return [
            self.event(
                "setpoint_changed",
                f"{self.where(ch)}: {key} changed from {_fmt(old, unit)} to "
                f"{_fmt(new, unit)} without a command ({cause}); {SETPOINT} latched until clear",
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
            new = TRIP not in self.latched(ch)
            self._latch(ch, TRIP)
            self.expect_on[ch] = False
            if new:
                return [
                    self.event(
                        "trip",
                        f"{self.where(ch)} tripped ({', '.join(r.alarms) or 'no flags'}); "
                        "send clear before switching it on again",
                        ch,
                        after=r.alarms,
                    )
                ]
        elif was and r.state is not ChannelState.TRIPPED and TRIP in self.latched(ch):
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
        latched: set[str] = self.latched(ch)
        if isinstance(r, SupplyChannel) and TRIP in latched:
            if r.on and r.state is not ChannelState.TRIPPED:
                latched.discard(TRIP)  # running again (switched on at the front panel): OUTPUT_ON says so
                self.memory_file.save(self.memory)
            elif r.state is not ChannelState.TRIPPED:
                r.state = ChannelState.TRIPPED
        if isinstance(r, (SupplyChannel, ChillerChannel)):
            r.alarms.extend(sorted(a for a in latched if a not in r.alarms))

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

    def beyond_limits(self, ch: int, r: SupplyChannel | ChillerChannel) -> dict[str, str]:
        """Settings the instrument holds beyond the configured limits, each with what to send instead."""
        c: ChannelConfig = self.cfg.channels[ch]
        out: dict[str, str] = {}

        def over(name: str, value: float | None, limit: float | None, key: str, action: str, unit: str) -> None:
            if value is not None and limit is not None and value > limit * (1 + 1e-6) + 1e-12:
                out[name] = (
                    f"the instrument holds {key.replace('max', 'set') if key != 'ramp_max' else action} "
                    f"{_fmt(value, unit)} above {key}={limit:g} {unit}: send {action} <= {limit:g} "
                    f"{unit} first"
                )

        if isinstance(r, SupplyChannel):
            over("VSET_ABOVE_VMAX", r.vset, c.vmax, "vmax", "vset", "V")
            over("ISET_ABOVE_IMAX", r.iset, c.imax, "imax", "iset", "A")
            if ch not in self.caps.soft_ramp:
                over("RAMPUP_ABOVE_RAMP_MAX", r.rampup, c.ramp_max, "ramp_max", "rampup", "V/s")
                over("RAMPDOWN_ABOVE_RAMP_MAX", r.rampdown, c.ramp_max, "ramp_max", "rampdown", "V/s")
        elif c.tmin is not None and c.tmax is not None and not c.tmin <= r.tset <= c.tmax:
            out["TSET_OUTSIDE_LIMITS"] = (
                f"the instrument holds tset {r.tset:g} °C outside tmin={c.tmin:g}.."
                f"tmax={c.tmax:g} °C: send tset within them first"
            )
        return out

    # --- commands ------------------------------------------------------------------------
    def execute(self, driver: Driver, cmd: Command, cause: str) -> Outcome:
        """Decide on a fresh read, apply, read back and compare. Call with the link held; link errors
        propagate (the adapter handles a lost link)."""
        ch, cap = cmd.channel, self.caps.channels[cmd.channel][cmd.action]
        started = self.clock()
        # `on` decides on the held settings too: read them, not the cache of the last full poll
        fresh = driver.read([ch], full=cmd.action == "on")
        events = self.observe(dict(fresh), started, cause="seen before a command")
        current = self.readings.get(ch)
        refusal = self.refusal(cmd, current)
        if refusal:
            events.append(
                self.event(
                    "command_refused",
                    f"{cmd.action} refused on {self.where(ch)}: {refusal}",
                    ch,
                    after=cmd.value,
                    cause=cause,
                )
            )
            return Outcome(False, refusal, events=events)
        before = self._value_of(cap, current)
        try:
            self._apply(driver, cmd, current)
        except InstrumentError as exc:
            error = f"instrument refused: {exc}"
            events.append(
                self.event(
                    "command_failed", f"{cmd.action} on {self.where(ch)}: {error}", ch, after=cmd.value, cause=cause
                )
            )
            return Outcome(False, error, events=events)
        if cmd.action == "clear":
            cleared = sorted(self.latched(ch))
            if cleared:
                self.memory.latched[ch] = set()
                self.memory_file.save(self.memory)
                events.append(
                    self.event(
                        "alarms_cleared",
                        f"{self.where(ch)}: {', '.join(cleared)} cleared",
                        ch,
                        before=cleared,
                        after=[],
                        cause=cause,
                    )
                )
        if cmd.action in ("on", "off"):
            self.expect_on[ch] = cmd.action == "on"
        self.ramp_aborted.discard(ch)
        readback = driver.read([ch], full=True)
        events += self.observe(dict(readback), self.clock(), cause=cause, expected=True)
        applied = self._value_of(cap, self.readings.get(ch))
        mismatch = self._mismatch(cap, cmd, applied)
        what = cmd.action + (f" {_fmt(cmd.value, cap.action.unit)}" if cmd.value is not None else "")
        events.append(
            self.event(
                "command_failed" if mismatch else "command_applied",
                f"{what} on {self.where(ch)}: "
                + (mismatch or f"applied, the instrument holds {_fmt(applied, cap.action.unit)}"),
                ch,
                before=before,
                after=applied,
                cause=cause,
            )
        )
        return Outcome(mismatch is None, mismatch, applied, events)

    def refusal(self, cmd: Command, r: Reading | None) -> str | None:
        """Why a valid command must not run on the channel as it is now, or None."""
        if cmd.action != "on" or r is None:
            return None
        ch = cmd.channel
        if getattr(r, "state", None) is ChannelState.TRIPPED or TRIP in self.latched(ch):
            return f"channel {ch} is tripped: send clear first"
        blocking = sorted(self.latched(ch) & BLOCKING)
        if blocking:
            return f"{self.where(ch)} has latched alarm(s) {', '.join(blocking)}: check the channel, then send clear"
        if isinstance(r, (SupplyChannel, ChillerChannel)):
            beyond = self.beyond_limits(ch, r)
            if beyond:
                return f"{self.where(ch)}: " + "; ".join(beyond[k] for k in sorted(beyond))
        return None

    def _value_of(self, cap: Capability, r: Reading | None) -> Any:
        if r is None:
            return None
        if cap.action.reading:
            return getattr(r, cap.action.reading, None)
        return getattr(r, "state", ChannelState.OFF).value

    def _mismatch(self, cap: Capability, cmd: Command, applied: Any) -> str | None:
        """Why the read-back says the command did not take, or None."""
        unit = cap.action.unit
        if cmd.value is not None and cap.action.reading:
            if cmd.action == "vset" and cmd.channel in self.caps.soft_ramp:
                return None  # the target is ours; the instrument gets there step by step
            if applied is None or not cap.same(cmd.value, applied):
                return (
                    f"{cmd.action} {cmd.value:g} {unit} was sent but the instrument holds "
                    f"{_fmt(applied, unit)}; requested {cmd.value:g} {unit}, applied {_fmt(applied, unit)}"
                )
        if cmd.action == "on":
            r = self.readings.get(cmd.channel)
            if r is not None and not getattr(r, "on", True) and cmd.channel not in self.ramps and applied != "TRIPPED":
                return f"on was sent but the instrument shows the output off ({applied})"
        return None

    # --- applying, software ramps ------------------------------------------------------------
    def _apply(self, driver: Driver, cmd: Command, current: Reading | None) -> None:
        """Software-ramped channels are stepped by us; everything else goes to the driver as it is."""
        ch, value, now = cmd.channel, cmd.value, self.clock()
        action = self.caps.channels[ch][cmd.action].action
        if ch not in self.caps.soft_ramp:
            action.apply(driver, ch, value)
            if cmd.action in ("rampup", "rampdown"):  # a reconnect re-applies what was commanded last
                self._remember_rate(ch, cmd.action, value)
            return
        assert isinstance(driver, SupplyDriver) and isinstance(current, SupplyChannel)
        ramp = self.ramps.get(ch)
        switching_off = ramp is not None and ramp.switch_off_at_end
        programmed = ramp.programmed if ramp else self.targets.get(ch, current.vset)
        if cmd.action == "vset":
            assert value is not None
            self.targets[ch] = value
            if switching_off:
                pass  # the off-ramp goes on; the new target waits for the next "on"
            elif current.on:
                self._ramp(ch, now, programmed).start(value, now)
            else:
                driver.set_voltage(ch, value)  # output off: the instrument just holds the target
        elif cmd.action in ("rampup", "rampdown"):
            self._remember_rate(ch, cmd.action, value)
        elif cmd.action == "on":
            target = self.targets.setdefault(ch, current.vset)
            if ramp is not None and switching_off:
                ramp.switch_off_at_end = False
                ramp.start(target, now)
            elif not current.on:
                driver.set_voltage(ch, 0.0)
                driver.switch(ch, True)
                self._ramp(ch, now, 0.0).start(target, now)
        elif cmd.action == "off":
            if current.on and self.cfg.channels[ch].off_mode == "ramp":
                ramp = self._ramp(ch, now, programmed)
                ramp.switch_off_at_end = True
                ramp.start(0.0, now)
            else:
                self.ramps.pop(ch, None)
                driver.switch(ch, False)
                driver.set_voltage(ch, self.targets.get(ch, current.vset))
        else:
            self.ramps.pop(ch, None)
            action.apply(driver, ch, value)

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

    def abort_ramps(self, why: str) -> list[Event]:
        aborted, self.ramps = self.ramps, {}
        self.ramp_aborted |= set(aborted)
        return (
            [
                self.event(
                    "state_changed",
                    f"software ramp of channel(s) {sorted(aborted)} stopped: {why}; "
                    "the output stays where the last step left it",
                    severity="major",
                )
            ]
            if aborted
            else []
        )

    def step_ramps(self, driver: Driver) -> list[Event]:
        """One step of every due software ramp. Call with the link held; link errors propagate."""
        now = self.clock()
        due = [ch for ch, r in self.ramps.items() if r.due(RAMP_TICK) <= now]
        if not due or not isinstance(driver, SupplyDriver):
            return []
        try:
            for ch in due:
                ramp = self.ramps[ch]
                value, grid = ramp.step(now), self.caps.channels[ch]["vset"].step
                if grid and value != ramp.target:  # intermediate steps on the instrument's grid, never past it
                    value = round(value / grid) * grid
                driver.set_voltage(ch, value)
                if not ramp.active:
                    if ramp.switch_off_at_end:
                        driver.switch(ch, False)
                        driver.set_voltage(ch, self.targets.get(ch, 0.0))
                    self.ramps.pop(ch, None)
                readings: dict[int, Reading] = dict(driver.read(due, full=True))
        except InstrumentError as exc:
            return self.abort_ramps(f"the instrument refused a step ({exc})")
        return self.observe(readings, now, cause="software ramp", expected=True)


def _copy(r: Reading) -> Reading:
    """A snapshot: later overlays (alarms, ramp targets) must not change what the instrument said."""
    return replace(r, alarms=list(r.alarms)) if isinstance(r, (SupplyChannel, ChillerChannel)) else replace(r)
