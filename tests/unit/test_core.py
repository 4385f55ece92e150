"""The device policy core on its own: no broker, no threads, a scripted instrument."""

import itertools
import json
from dataclasses import replace

import pytest

from slowctl.config import DeviceConfig
from slowctl.device.capabilities import Capabilities, CommandError
from slowctl.device.commands import Command, Request
from slowctl.device.core import OUTPUT_LOST, SETPOINT_CHANGED_EXTERNALLY, TRIP_LATCHED, DeviceCore
from slowctl.device.memory import UNREADABLE, MemoryFile
from slowctl.drivers import DRIVERS, kind_of
from slowctl.drivers.base import SupplyDriver
from slowctl.drivers.link import InstrumentError, LinkError
from slowctl.drivers.readings import ChannelState, SupplyChannel

from .conftest import BENCH_DEVICE

SETPOINT, TRIP = SETPOINT_CHANGED_EXTERNALLY, TRIP_LATCHED


class FakeSupply(SupplyDriver):
    """Holds what it is sent, rounded to `grid` like an instrument that rounds (the bug we guard against).
    `ramp_down`: `off` leaves the output ramping down (on, RAMP_DOWN) until `settle()`, as a CAEN does."""

    model = "fake"

    def __init__(self, channels, grid=None, ramp_down=False, cached=False, **initial):  # no link, no wire
        base = dict(
            on=False, vset=0.0, vmon=0.0, iset=1e-5, imon=0.0, state=ChannelState.OFF, rampup=20.0, rampdown=40.0
        )
        base.update(initial)
        self.held = {ch: SupplyChannel(**base) for ch in channels}
        self.grid, self.ramp_down, self.cached = grid, ramp_down, cached
        self.settings = {}  # `cached`: settings as last read in full, as drivers cache them between full polls
        self.calls = []
        self.fail_read = None  # an exception for the next read

    def connect(self):
        return "fake"

    def read(self, channels, full):
        if self.fail_read:
            exc, self.fail_read = self.fail_read, None
            raise exc
        out = {ch: replace(self.held[ch], alarms=list(self.held[ch].alarms)) for ch in channels}
        for ch, r in out.items():
            if self.cached and (full or ch not in self.settings):
                self.settings[ch] = {k: getattr(r, k) for k in ("vset", "iset", "rampup", "rampdown")}
            if self.cached:
                for k, v in self.settings[ch].items():
                    setattr(r, k, v)
        return out

    def _hold(self, ch, key, value):
        self.calls.append((key, ch, value))
        setattr(self.held[ch], key, round(value / self.grid) * self.grid if self.grid else value)

    def set_voltage(self, ch, v):
        self._hold(ch, "vset", v)

    def set_current(self, ch, a):
        self._hold(ch, "iset", a)

    def set_ramp(self, ch, up=None, down=None):
        if up is not None:
            self._hold(ch, "rampup", up)
        if down is not None:
            self._hold(ch, "rampdown", down)

    def switch(self, ch, on):
        self.calls.append(("switch", ch, on))
        if not on and self.ramp_down and self.held[ch].on:
            self.held[ch].state = ChannelState.RAMP_DOWN
            return
        self.held[ch].on = on
        self.held[ch].state = ChannelState.ON if on else ChannelState.OFF

    def settle(self, ch):
        if self.held[ch].state is ChannelState.RAMP_DOWN:
            self.held[ch].on, self.held[ch].state = False, ChannelState.OFF

    def trip(self, ch):
        self.held[ch].on, self.held[ch].state, self.held[ch].alarms = False, ChannelState.TRIPPED, ["TRIP"]

    def clear(self, ch):
        self.calls.append(("clear", ch, None))
        if self.held[ch].state is ChannelState.TRIPPED:
            self.held[ch].state, self.held[ch].alarms = ChannelState.OFF, []

    def configure_channel(self, ch, up, down, off_mode):
        self.calls.append(("configure", ch, (up, down, off_mode)))
        self.set_ramp(ch, up, down)


def hv_config(**channel):
    ch = {"name": "sensor", "vmax": 600, "imax": 100e-6, "ramp_max": 50, "rampup": 20, "rampdown": 40, **channel}
    return DeviceConfig(model="caen-n1470", address="socket://x:1", channels={0: ch, 1: {**ch, "name": "other"}})


def soft_config(**channel):
    """An HMP4040 channel ramped by the framework: 10 V/s, 1 V steps."""
    ch = {"name": "bias", "vmax": 30, "imax": 1.0, "ramp_max": 20, "rampup": 10, "rampdown": 10, **channel}
    return DeviceConfig(model="hmp4040", address="socket://x:1", channels={0: ch})


class Clock:
    """Monotonic time the test moves; each look also moves it a little, as real reads take time."""

    def __init__(self):
        self.now, self._tick = 100.0, itertools.count()

    def __call__(self):
        return self.now + next(self._tick) * 1e-6

    def advance(self, seconds):
        self.now += seconds


def make_core(cfg=None, path=None, clock=None):
    cfg = cfg or hv_config()
    return DeviceCore("hv", cfg, Capabilities.build(cfg), MemoryFile(path), clock or Clock())


def look(core, drv, channels=(0, 1), full=True):
    """A poll as the adapter makes it."""
    return core.observe(drv.read(list(channels), full), core.clock())


def ramp_to_end(core, drv, clock, seconds):
    events = []
    for _ in range(int(seconds / 0.2) + 2):
        clock.advance(0.2)
        events += core.step_ramps(drv)
    return events


def cmd(action, channel=0, value=None):
    return Command(action, channel, value, Request(action=action, channel=channel, value=value))


def kinds(events):
    return [e.kind for e in events]


# --- honest setpoints ----------------------------------------------------------------------------


def test_reply_carries_the_read_back_value():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    out = core.execute(drv, cmd("vset", 0, 120.0), "test")
    assert out.ok and out.applied == 120.0 and out.error is None
    assert kinds(out.events)[-1] == "command_applied"


def test_instrument_holding_something_else_is_not_ok():
    """An instrument that rounds 12.3 V to 12 V (coarser than declared): never ok while it holds something else."""
    core, drv = make_core(), FakeSupply([0, 1], grid=1.0)
    core.connected(drv, "fake", first=True)
    out = core.execute(drv, cmd("vset", 0, 12.3), "test")
    assert not out.ok and out.applied == pytest.approx(12.0)
    assert out.error == "vset 12.3 V was sent but the instrument holds 12 V"
    assert out.events[-1].kind == "command_failed" and out.events[-1].severity == "major"


class CheckingSupply(FakeSupply):
    """Reads a setting back itself and raises when it holds another value (as the JULABO driver does)."""

    unreadable_after_set = None  # an exception for the first read after the next setting

    def _hold(self, ch, key, value):
        super()._hold(ch, key, value)
        self.fail_read, self.unreadable_after_set = self.unreadable_after_set, None
        if getattr(self.held[ch], key) != value:
            raise InstrumentError(f"{key} {value:g} was not taken: reads {getattr(self.held[ch], key):g}")


def test_instrument_refusal_carries_what_the_instrument_holds():
    core, drv = make_core(), CheckingSupply([0, 1], grid=1.0, vset=10.0)
    core.connected(drv, "fake", first=True)
    out = core.execute(drv, cmd("vset", 0, 12.3), "test")
    assert not out.ok and out.error == "instrument refused: vset 12.3 was not taken: reads 12"
    assert out.applied == pytest.approx(12.0) and out.before == pytest.approx(10.0)
    failed = out.events[-1]
    assert failed.kind == "command_failed" and (failed.before, failed.after) == (10.0, 12.0)
    assert SETPOINT not in core.latched(0), "what the instrument holds after our command is not a change behind us"
    drv.unreadable_after_set = InstrumentError("no answer")  # not readable afterwards: the refusal alone
    out = core.execute(drv, cmd("vset", 0, 14.3), "test")
    assert not out.ok and out.error == "instrument refused: vset 14.3 was not taken: reads 14" and out.applied is None
    assert drv.calls[-1] == ("vset", 0, 14.3)


@pytest.mark.parametrize("model", sorted(m for m, cls in DRIVERS.items() if kind_of(cls) != "sensor"))
def test_values_finer_than_the_instrument_step_are_refused(stack_config, model):
    """Every settable parameter of every model with settable parameters (the climate box has none)."""
    device = BENCH_DEVICE[model]
    caps = Capabilities.build(stack_config.devices[device])
    settable = [
        cap
        for ch in caps.channels.values()
        for cap in ch.values()
        if cap.action.takes_value and not (cap.channel in caps.soft_ramp and cap.name in ("rampup", "rampdown"))
    ]  # framework rates
    assert settable
    for cap in settable:
        assert cap.step, f"{device}: {cap.name} declares no resolution"
        lo, hi = cap.bounds
        on_grid = round(((lo or 0) + (hi if hi is not None else 10)) / 2 / cap.step) * cap.step
        assert cap.check(on_grid) == on_grid
        with pytest.raises(CommandError, match="is finer than the .* step"):
            cap.check(on_grid + cap.step * 0.4)


def test_climate_box_has_nothing_to_set(stack_config):
    caps = Capabilities.build(stack_config.devices["climate"])
    assert all(not ch for ch in caps.channels.values())


def test_sub_resolution_message_names_the_step():
    cap = Capabilities.build(hv_config()).channels[0]["vset"]
    with pytest.raises(CommandError) as info:
        cap.check(12.34)
    assert "vset 12.34 V is finer than the caen-n1470's 0.1 V step" in str(info.value)


# --- safe start-up -------------------------------------------------------------------------------


def test_on_is_refused_while_the_instrument_holds_a_setting_beyond_the_limits():
    # no rates configured: the instrument keeps its own, which exceed ramp_max
    core, drv = make_core(hv_config(rampup=None, rampdown=None)), FakeSupply([0, 1], iset=4e-3, rampup=100.0)
    events = core.connected(drv, "fake", first=True)
    assert "limit_violation" in kinds(events)
    out = core.execute(drv, cmd("on"), "test")
    assert not out.ok and ("switch", 0, True) not in drv.calls
    assert "iset" in out.error and "imax=0.0001" in out.error and "send iset <= 0.0001 A first" in out.error
    assert "rampup" in out.error and "ramp_max=50" in out.error
    assert out.events[-1].kind == "command_refused"


def test_startup_settings_apply_only_while_off_and_never_switch():
    cfg = hv_config(startup={"iset": 20e-6})
    core, drv = make_core(cfg), FakeSupply([0, 1], iset=4e-3)
    drv.held[1].on, drv.held[1].state = True, ChannelState.ON
    events = core.connected(drv, "fake", first=True)
    assert drv.held[0].iset == pytest.approx(20e-6)
    assert drv.held[1].iset == 4e-3, "an output that is on keeps its settings"
    assert not [c for c in drv.calls if c[0] == "switch"]
    assert "setting_applied" in kinds(events) and "setting_skipped" in kinds(events)
    assert core.readings[0].alarms == [] and "ISET_ABOVE_IMAX" in core.readings[1].alarms
    assert core.execute(drv, cmd("on", 0), "test").ok


def test_startup_settings_are_checked_at_load(tmp_path):
    from slowctl.config import ConfigError, parse_config

    raw = {
        "devices": {
            "hv": {
                "model": "caen-n1470",
                "address": "socket://x:1",
                "channels": {
                    0: {"name": "a", "vmax": 100, "imax": 1e-5, "startup": {"iset": 2e-5}},
                    1: {"name": "b", "vmax": 100, "imax": 1e-4, "startup": {"vset": 12.34}},
                },
            }
        }
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    text = "\n".join(info.value.errors)
    assert "devices.hv.channels.0" in text and "startup.iset" in text and "imax" in text
    assert "devices.hv.channels.1.startup.vset: 12.34 is finer than" in text


# --- changes without a command ------------------------------------------------------------------


def test_power_cycle_is_reported_and_latched():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    assert core.execute(drv, cmd("vset", 0, 300.0), "test").ok
    assert core.execute(drv, cmd("on", 0), "test").ok
    core.link_lost("timeout")
    fresh = FakeSupply([0, 1])  # the instrument came back with its defaults: off at 0 V
    events = core.connected(fresh, "fake", first=False)
    assert kinds(events)[0] == "instrument_back"
    lost = [e for e in events if e.kind == "output_changed"]
    assert lost and lost[0].before is True and lost[0].after is False and OUTPUT_LOST in lost[0].message
    changed = [e for e in events if e.kind == "setpoint_changed"]
    assert changed and changed[0].before == 300.0 and changed[0].after == 0.0
    assert {OUTPUT_LOST, SETPOINT} <= set(core.readings[0].alarms)
    out = core.execute(fresh, cmd("on", 0), "test")
    assert not out.ok and OUTPUT_LOST in out.error and "clear" in out.error
    out = core.execute(fresh, cmd("clear", 0), "test")
    assert out.ok and "alarms_cleared" in kinds(out.events) and core.readings[0].alarms == []


def test_front_panel_setpoint_change_is_reported():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    drv.held[0].vset = 42.0  # front panel
    events = look(core, drv)
    assert kinds(events) == ["setpoint_changed"] and events[0].channel == 0 and events[0].after == 42.0
    assert SETPOINT in core.readings[0].alarms
    assert look(core, drv) == [], "reported once"


def test_own_commands_are_not_external_changes():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    out = core.execute(drv, cmd("vset", 0, 50.0), "test")
    assert "setpoint_changed" not in kinds(out.events)
    out = core.execute(drv, cmd("on", 0), "test")
    assert "output_changed" not in kinds(out.events) and "state_changed" in kinds(out.events)
    drv.held[0].on, drv.held[0].state = False, ChannelState.OFF  # hardware ramp down after `off`
    core.execute(drv, cmd("off", 0), "test")
    assert "output_changed" not in kinds(look(core, drv, [0]))


def test_trip_latch_and_a_trip_that_clears_itself():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    drv.held[0].state, drv.held[0].alarms = ChannelState.TRIPPED, ["TRIP"]
    events = look(core, drv, [0], full=False)
    assert "trip" in kinds(events)
    drv.held[0].state, drv.held[0].alarms = ChannelState.OFF, []
    events = look(core, drv, [0], full=False)
    assert "trip_gone" in kinds(events)
    assert core.readings[0].state is ChannelState.TRIPPED and TRIP in core.readings[0].alarms
    out = core.execute(drv, cmd("on", 0), "test")
    assert not out.ok and out.error == "channel 0 is tripped: send clear first"


def test_limit_violation_seen_and_gone():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    drv.held[0].iset = 1e-3
    assert "limit_violation" in kinds(look(core, drv, [0]))
    drv.held[0].iset = 1e-5
    assert "limit_ok" in kinds(look(core, drv, [0]))


# --- the latch survives a restart ------------------------------------------------------------------


def test_latched_alarms_survive_a_restart(tmp_path):
    path = tmp_path / "hv.json"
    core, drv = make_core(path=path), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    drv.held[1].state = ChannelState.TRIPPED
    look(core, drv, [1], full=False)
    drv.held[1].state = ChannelState.OFF  # the instrument forgets (a register cleared by reading it)
    assert json.loads(path.read_text())["latched"] == {"1": [TRIP]}
    again = make_core(path=path)
    again.connected(drv, "fake", first=True)
    assert again.readings[1].state is ChannelState.TRIPPED and TRIP in again.readings[1].alarms
    assert not again.execute(drv, cmd("on", 1), "test").ok


def test_output_changed_while_the_service_was_down(tmp_path):
    path = tmp_path / "hv.json"
    core, drv = make_core(path=path), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    assert core.execute(drv, cmd("on", 0), "test").ok
    core.persist()  # the adapter does this after each reply and each poll
    drv.switch(0, False)  # while no service was running
    events = make_core(path=path).connected(drv, "fake", first=True)
    lost = [e for e in events if e.kind == "output_changed"]
    assert lost and "while the service was not running" in lost[0].message


@pytest.mark.parametrize(
    "content", ["{not json", '{"version": 99}', '{"version": 1, "latched": {"0": 5}, "outputs": {}}', ""]
)
def test_unreadable_latch_file_keeps_every_channel_latched(tmp_path, content):
    path = tmp_path / "hv.json"
    path.write_text(content)
    core, drv = make_core(path=path), FakeSupply([0, 1])
    assert kinds(core.start_events) == ["latch_state"] and str(path) in core.start_events[0].message
    core.connected(drv, "fake", first=True)
    for ch in (0, 1):
        assert UNREADABLE in core.readings[ch].alarms
        out = core.execute(drv, cmd("on", ch), "test")
        assert not out.ok and UNREADABLE in out.error
    assert core.execute(drv, cmd("clear", 0), "test").ok
    assert core.execute(drv, cmd("on", 0), "test").ok
    assert json.loads(path.read_text())["latched"] == {"1": [UNREADABLE]}, "rewritten, channel 1 still latched"


# --- one declaration ---------------------------------------------------------------------------------


def test_capabilities_payload_and_docs_come_from_the_declaration(stack_config):
    from pathlib import Path

    from slowctl.device.capabilities import actions_table

    desc = Capabilities.build(stack_config.devices["hv"]).describe()
    vset = desc["channels"][0]["actions"]["vset"]
    assert vset["unit"] == "V" and vset["max"] == 600 and vset["min"] == 0 and vset["step"]
    docs = (Path(__file__).parents[2] / "docs" / "mqtt.md").read_text()
    assert actions_table() in docs, "docs/mqtt.md: paste the output of `slowctl actions`"


def test_a_ramp_rate_changed_without_a_command_is_latched():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    look(core, drv)
    drv.held[0].rampup = 5.0  # the front panel
    events = look(core, drv)
    assert kinds(events) == ["setpoint_changed"] and "rampup changed from 20 V/s to 5 V/s" in events[0].message
    assert SETPOINT in core.latched(0)


def test_the_layers_below_read_the_same_declaration():
    """config and drivers may not import slowctl.device: they read limit keys and rates from slowctl.drivers.actions,
    as ACTIONS does, and every name there is an action and a config key."""
    from slowctl.config import ChannelConfig, StartupSettings
    from slowctl.device.capabilities import ACTIONS
    from slowctl.drivers.actions import LIMIT_KEY, RATES, SUPPLY_ACTIONS

    assert {n: a.limit for n, a in ACTIONS.items() if a.limit} == dict(LIMIT_KEY)
    assert set(LIMIT_KEY.values()) | set(RATES) <= set(ChannelConfig.model_fields)
    assert set(StartupSettings.model_fields) <= set(LIMIT_KEY)
    assert {n for n, a in ACTIONS.items() if "supply" in a.kinds} >= set(SUPPLY_ACTIONS) | set(RATES)
    assert all(ACTIONS[r].positive for r in RATES)


def test_every_model_is_described(stack_config):
    assert {d.model for d in stack_config.devices.values()} == set(DRIVERS)


# --- findings of the review: each reproduced first, then fixed -------------------------------------


def soft_core(clock, path=None):
    core = make_core(soft_config(), path=path, clock=clock)
    drv = FakeSupply([0], iset=0.5)
    core.connected(drv, "fake", first=True)
    return core, drv


def test_software_ramp_restarts_from_where_the_instrument_is():
    clock = Clock()
    core, drv = soft_core(clock)
    assert core.execute(drv, cmd("vset", 0, 20.0), "t").ok
    assert core.execute(drv, cmd("on"), "t").ok
    for _ in range(5):  # 1 s at 10 V/s
        clock.advance(0.2)
        core.step_ramps(drv)
    assert 8 <= drv.held[0].vset <= 12
    events = core.link_lost("timeout")
    assert "RAMP" not in str(drv.calls[-1]) and any("stopped" in e.message for e in events)
    core.connected(drv, "fake", first=False)
    assert "RAMP_ABORTED" in core.readings[0].alarms
    assert core.execute(drv, cmd("off"), "t").ok
    clock.advance(0.2)
    core.step_ramps(drv)
    sent = [v for k, _, v in drv.calls if k == "vset"][-1]
    assert sent < 12, f"the off-ramp must start at the instrument's ~10 V, not the old 20 V target (sent {sent})"


def test_iset_during_a_software_ramp_keeps_the_ramp():
    clock = Clock()
    core, drv = soft_core(clock)
    core.execute(drv, cmd("vset", 0, 20.0), "t")
    core.execute(drv, cmd("on"), "t")
    clock.advance(0.4)
    core.step_ramps(drv)
    assert core.execute(drv, cmd("iset", 0, 0.25), "t").ok
    assert 0 in core.ramps, "the ramp goes on at the new current limit"
    ramp_to_end(core, drv, clock, 3)
    assert drv.held[0].vset == 20.0 and core.readings[0].state is ChannelState.ON


def test_front_panel_vset_on_a_software_ramped_channel_is_reported_and_shown():
    clock = Clock()
    core, drv = soft_core(clock)
    core.execute(drv, cmd("vset", 0, 5.0), "t")
    core.execute(drv, cmd("on"), "t")
    ramp_to_end(core, drv, clock, 1)
    drv.held[0].vset = 25.0  # front panel
    events = look(core, drv, [0])
    assert kinds(events) == ["setpoint_changed"] and events[0].before == 5.0 and events[0].after == 25.0
    assert core.readings[0].vset == 25.0, "the status shows what the instrument holds"
    assert look(core, drv, [0]) == []


def test_a_software_ramp_step_does_not_hide_an_output_that_went_off():
    clock = Clock()
    core, drv = soft_core(clock)
    core.execute(drv, cmd("vset", 0, 20.0), "t")
    core.execute(drv, cmd("on"), "t")
    clock.advance(0.4)
    core.step_ramps(drv)
    drv.held[0].on, drv.held[0].state = False, ChannelState.OFF  # an interlock of the instrument
    clock.advance(0.2)
    events = core.step_ramps(drv)
    assert "output_changed" in kinds(events) and OUTPUT_LOST in core.latched(0)
    assert 0 not in core.ramps, "no more steps for an output that is off"


def test_only_clear_ends_a_latched_trip():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    drv.trip(0)
    look(core, drv)
    drv.held[0].state, drv.held[0].alarms = ChannelState.OFF, []  # reset at the front panel ...
    drv.switch(0, True)  # ... and switched on there
    events = look(core, drv)
    assert "output_changed" in kinds(events) and TRIP in core.latched(0)
    drv.switch(0, False)
    out = core.execute(drv, cmd("on"), "t")
    assert not out.ok and "tripped" in out.error


def test_raising_the_voltage_is_refused_while_a_held_setting_is_beyond_the_limits():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    assert core.execute(drv, cmd("vset", 0, 100.0), "t").ok
    assert core.execute(drv, cmd("on"), "t").ok
    drv.held[0].rampup = 500.0  # front panel
    look(core, drv)
    out = core.execute(drv, cmd("vset", 0, 600.0), "t")
    assert not out.ok and "rampup" in out.error and ("vset", 0, 600.0) not in drv.calls
    assert core.execute(drv, cmd("vset", 0, 50.0), "t").ok, "lowering stays possible"


def test_an_ignored_off_is_not_ok():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    core.execute(drv, cmd("on"), "t")
    drv.switch = lambda ch, on: None  # the instrument ignores it (local mode, a fault)
    out = core.execute(drv, cmd("off"), "t")
    assert not out.ok and "off was sent but the instrument shows the output on" in out.error


def test_own_off_with_a_hardware_ramp_down_is_no_output_change():
    core, drv = make_core(), FakeSupply([0, 1], ramp_down=True)
    core.connected(drv, "fake", first=True)
    core.execute(drv, cmd("vset", 0, 100.0), "t")
    core.execute(drv, cmd("on"), "t")
    out = core.execute(drv, cmd("off"), "t")
    assert out.ok and out.applied == "RAMP_DOWN"
    drv.settle(0)
    events = look(core, drv)
    assert "output_changed" not in kinds(events) and core.latched(0) == set()


def test_clear_while_the_instrument_still_shows_the_trip_keeps_the_latch():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    drv.trip(0)
    look(core, drv)
    drv.clear = lambda ch: None  # the cause is still there
    out = core.execute(drv, cmd("clear"), "t")
    assert not out.ok and "still shows the trip" in out.error and TRIP in core.latched(0)
    drv.held[0].state, drv.held[0].alarms = ChannelState.OFF, []  # gone by itself later
    look(core, drv)
    assert not core.execute(drv, cmd("on"), "t").ok, "a second clear is needed"


def test_an_unwritable_state_file_is_said_and_loses_no_event(tmp_path, monkeypatch):
    core, drv = make_core(path=tmp_path / "hv.json"), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(core.memory_file, "save", full)
    drv.trip(0)
    events = look(core, drv)
    assert "trip" in kinds(events)
    problem = next(e for e in events if e.kind == "latch_state")
    assert "No space left on device" in problem.message and "lost on a restart" in problem.message


def test_a_link_lost_between_a_command_and_its_read_back_is_no_false_alarm():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    drv.fail_read = None
    original = drv.set_voltage

    def set_then_fail(ch, v):
        original(ch, v)
        drv.fail_read = LinkError("timeout")

    drv.set_voltage = set_then_fail
    out = core.execute(drv, cmd("vset", 0, 100.0), "t")
    assert not out.ok and out.link_error is not None and "link failed" in out.error
    core.link_lost("timeout")
    events = core.connected(drv, "fake", first=False)
    assert "setpoint_changed" not in kinds(events) and SETPOINT not in core.latched(0)


def test_startup_settings_only_at_service_start():
    core, drv = make_core(hv_config(startup={"iset": 20e-6})), FakeSupply([0, 1], iset=50e-6)
    core.connected(drv, "fake", first=True)
    assert drv.held[0].iset == pytest.approx(20e-6)
    assert core.execute(drv, cmd("iset", 0, 80e-6), "t").ok  # an operator's choice
    core.link_lost("blip")
    core.connected(drv, "fake", first=False)
    assert drv.held[0].iset == pytest.approx(80e-6), "a reconnect must not undo what an operator set"


def test_rates_are_reapplied_only_while_off_and_front_panel_rates_are_reported():
    core, drv = make_core(), FakeSupply([0, 1], rampup=5.0)
    drv.held[1].on, drv.held[1].state = True, ChannelState.ON
    events = core.connected(drv, "fake", first=True)
    assert drv.held[0].rampup == 20.0 and drv.held[1].rampup == 5.0
    assert "setting_skipped" in kinds(events)
    drv.held[0].rampdown = 7.0  # front panel
    changed = [e for e in look(core, drv) if e.kind == "setpoint_changed"]
    assert changed and changed[0].channel == 0 and "rampdown" in changed[0].message


# --- findings of the second review ----------------------------------------------------------------


def test_a_power_cycle_during_a_command_is_still_reported():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    core.execute(drv, cmd("vset", 0, 100.0), "t")
    core.execute(drv, cmd("on"), "t")
    original = drv.set_voltage

    def set_then_lose(ch, v):
        original(ch, v)
        drv.fail_read = LinkError("timeout")

    drv.set_voltage = set_then_lose
    assert core.execute(drv, cmd("vset", 0, 120.0), "t").link_error is not None
    core.link_lost("timeout")
    fresh = FakeSupply([0, 1])  # came back off at 0 V: a power cycle, not our vset
    events = core.connected(fresh, "fake", first=False)
    assert "output_changed" in kinds(events) and OUTPUT_LOST in core.latched(0)


def test_a_raise_is_decided_on_fresh_settings_and_a_read_back_reports_other_changes():
    core, drv = make_core(), FakeSupply([0, 1], cached=True)
    core.connected(drv, "fake", first=True)
    core.execute(drv, cmd("vset", 0, 100.0), "t")
    core.execute(drv, cmd("on"), "t")
    drv.held[0].iset = 1e-3  # front panel, not yet seen by a full poll
    out = core.execute(drv, cmd("vset", 0, 300.0), "t")
    assert not out.ok and "iset" in out.error and ("vset", 0, 300.0) not in drv.calls
    assert "setpoint_changed" in kinds(out.events)


def test_a_read_back_does_not_swallow_another_setting_changed_at_the_front_panel():
    core, drv = make_core(), FakeSupply([0, 1], cached=True)
    core.connected(drv, "fake", first=True)
    drv.held[0].iset = 5e-5  # front panel
    out = core.execute(drv, cmd("vset", 0, 10.0), "t")  # off: not a raise, decided on the cache
    assert out.ok and "setpoint_changed" in kinds(out.events) and SETPOINT in core.latched(0)


def test_a_refused_startup_setting_does_not_keep_the_service_from_connecting():
    core, drv = make_core(hv_config(startup={"iset": 20e-6})), FakeSupply([0, 1], iset=50e-6)

    def refuse(ch, a):
        raise InstrumentError("ISET: value out of range (VAL:ERR)")

    drv.set_current = refuse
    events = core.connected(drv, "fake", first=True)
    refused = [e for e in events if e.kind == "setting_applied" and e.severity == "major"]
    assert len(refused) == 2 and "VAL:ERR" in refused[0].message


def test_events_seen_at_connect_survive_a_failure_later_in_connecting():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    core.execute(drv, cmd("on"), "t")
    core.link_lost("x")
    fresh = FakeSupply([0, 1])

    def broken(*_):
        raise LinkError("timeout")

    fresh.configure_channel = broken
    with pytest.raises(LinkError):
        core.connected(fresh, "fake", first=False)
    later = core.link_lost("timeout")
    assert "output_changed" in kinds(later), "what connecting saw goes out with the next result"


def test_on_resumes_a_software_ramp_that_stopped_part_way():
    clock = Clock()
    core, drv = soft_core(clock)
    core.execute(drv, cmd("vset", 0, 20.0), "t")
    core.execute(drv, cmd("on"), "t")
    clock.advance(0.6)
    core.step_ramps(drv)
    core.abort_ramps("test")
    held = drv.held[0].vset
    assert core.execute(drv, cmd("on"), "t").ok and 0 in core.ramps
    assert "RAMP_ABORTED" not in core.readings[0].alarms
    ramp_to_end(core, drv, clock, 3)
    assert held < drv.held[0].vset == 20.0 and look(core, drv, [0]) == []


def test_on_at_zero_volts_is_on_not_ramping():
    clock = Clock()
    core, drv = soft_core(clock)
    core.execute(drv, cmd("vset", 0, 0.0), "t")
    out = core.execute(drv, cmd("on"), "t")
    assert out.ok and out.applied == "ON" and 0 not in core.ramps


def test_a_refused_switch_on_a_software_ramped_channel_leaves_the_target():
    clock = Clock()
    core, drv = soft_core(clock)
    core.execute(drv, cmd("vset", 0, 20.0), "t")

    def refuse(ch, on):
        raise InstrumentError("output locked")

    drv.switch = refuse
    assert not core.execute(drv, cmd("on"), "t").ok
    assert drv.held[0].vset == 20.0 and look(core, drv, [0]) == []


def test_a_failed_read_before_a_command_is_a_reply_not_a_crash():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    drv.fail_read = InstrumentError("bad reply")
    out = core.execute(drv, cmd("vset", 0, 10.0), "t")
    assert not out.ok and "reading the channel before the command failed" in out.error
    assert out.events[-1].kind == "command_failed" and ("vset", 0, 10.0) not in drv.calls


def test_restart_in_the_middle_of_a_software_ramp(tmp_path):
    clock, path = Clock(), tmp_path / "lv.json"
    core, drv = soft_core(clock, path)
    core.execute(drv, cmd("vset", 0, 20.0), "t")
    core.execute(drv, cmd("on"), "t")
    clock.advance(0.6)
    core.step_ramps(drv)
    core.persist()
    again = make_core(soft_config(), path=path, clock=clock)
    events = again.connected(drv, "fake", first=True)
    assert "setpoint_changed" not in kinds(events) and "output_changed" not in kinds(events)
    assert any("cut short" in e.message for e in events) and "RAMP_ABORTED" in again.readings[0].alarms
    assert again.readings[0].vset == drv.held[0].vset, "the status shows where the instrument is"


def test_restart_during_a_hardware_ramp_down_is_no_false_alarm(tmp_path):
    path = tmp_path / "hv.json"
    core, drv = make_core(path=path), FakeSupply([0, 1], ramp_down=True)
    core.connected(drv, "fake", first=True)
    core.execute(drv, cmd("vset", 0, 100.0), "t")
    core.execute(drv, cmd("on"), "t")
    core.execute(drv, cmd("off"), "t")
    core.persist()
    again = make_core(path=path)
    assert "output_changed" not in kinds(again.connected(drv, "fake", first=True))
    drv.settle(0)
    assert "output_changed" not in kinds(look(again, drv)) and again.latched(0) == set()


# --- interlocks, as the device enforces them ------------------------------------------------------


def test_a_protected_channel_is_blocked_until_an_online_interlock_releases_it():
    cfg = hv_config()
    core = DeviceCore("hv", cfg, Capabilities.build(cfg), MemoryFile(None), Clock(), guards={0: ["lv-first"]})
    drv = FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    out = core.execute(drv, cmd("on", 0), "t")
    assert not out.ok and out.error == "interlock lv-first: the interlock process is not running"
    assert "INTERLOCKED" in core.readings[0].alarms and core.execute(drv, cmd("on", 1), "t").ok
    state = {"rules": {"lv-first": {"active": False, "reason": "lv.0 on and ok"}}}
    core.interlock_update(state, online=False)
    assert core.interlocks == {"lv-first": "the interlock process is not running"}, "offline: its state is void"
    events = core.interlock_update(state, online=True)
    assert kinds(events) == ["interlock"] and "released" in events[0].message
    assert core.execute(drv, cmd("on", 0), "t").ok
    assert core.execute(drv, cmd("vset", 0, 10.0), "t").ok
    blocked = {"rules": {"lv-first": {"active": True, "reason": "lv.0 is not on and ok (state OFF)"}}}
    core.interlock_update(blocked, online=True)
    out = core.execute(drv, cmd("vset", 0, 50.0), "t")
    assert not out.ok and "interlock lv-first: lv.0 is not on" in out.error, "raising an output that is on"
    assert core.execute(drv, cmd("vset", 0, 5.0), "t").ok, "lowering stays possible"
    assert core.execute(drv, cmd("off", 0), "t").ok, "so does switching off"
    core.interlock_update({"rules": {}}, online=True)
    assert not core.execute(drv, cmd("on", 0), "t").ok, "a rule missing from the state counts as active"


def test_a_chiller_setpoint_below_dew_point_plus_margin_is_refused():
    from slowctl.drivers.readings import ChillerChannel

    cfg = DeviceConfig(model="julabo", address="socket://x:1", channels={0: {"name": "bath", "tmin": -30, "tmax": 40}})
    core = DeviceCore("chiller", cfg, Capabilities.build(cfg), MemoryFile(None), Clock(), cold_sides={0: ["dew"]})
    held = ChillerChannel(on=True, tset=15.0, temperature=15.0, state=ChannelState.ON)
    core.observe({0: held}, core.clock())
    tset = lambda v: Command("tset", 0, v, Request(action="tset", channel=0, value=v))  # noqa: E731
    assert "the dew point is not known now" in core.refusal(tset(10.0), held)
    assert core.refusal(tset(18.0), held) is None, "raising the bath is always allowed"
    core.interlock_update({"rules": {"dew": {"active": False, "floor": 11.0}}}, online=True)
    assert core.refusal(tset(10.5), held) == "interlock dew: tset 10.5 °C is below dew point + margin = 11 °C"
    assert core.refusal(tset(11.0), held) is None


def test_kill_on_a_software_ramped_channel_stops_the_ramp_and_switches_off():
    clock = Clock()
    core, drv = soft_core(clock)
    core.execute(drv, cmd("vset", 0, 20.0), "t")
    core.execute(drv, cmd("on"), "t")
    clock.advance(0.6)
    core.step_ramps(drv)
    out = core.execute(drv, cmd("kill"), "t")
    assert out.ok and out.applied == "OFF" and 0 not in core.ramps and not drv.held[0].on
    assert drv.held[0].vset == 20.0, "the instrument holds the target again, for the next on"
    assert look(core, drv, [0]) == []


def test_kill_that_leaves_the_output_on_is_not_ok():
    core, drv = make_core(), FakeSupply([0, 1])
    core.connected(drv, "fake", first=True)
    core.execute(drv, cmd("on"), "t")
    drv.kill = lambda ch: None
    out = core.execute(drv, cmd("kill"), "t")
    assert not out.ok and "kill was sent but the instrument shows the output on" in out.error
