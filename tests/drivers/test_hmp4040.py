"""HMP4040 driver against the HMP4040 simulator over TCP (socket:// through open_link)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from drvkit import settings_for, tcp

from slowctl.drivers.hmp4040 import Hmp4040 as HmpDriver
from slowctl.drivers.link import InstrumentError, LinkError, open_link
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl_dummy.sims.climate import ClimateBox as ClimateSim
from slowctl_dummy.sims.hmp4040 import Hmp4040 as HmpSim

CHANNELS = [0, 1, 2, 3]  # driver channel n is OUT(n+1), simulator channel n+1


@pytest.fixture
def lv(clock):
    return HmpSim(clock=clock, seed=1)


@pytest.fixture
def server(lv, serve):
    return serve(lv)


@pytest.fixture
def hmp(server, make_driver):
    """A connected driver factory: hmp(**options) -> driver with a reset request log."""

    def make(channels=CHANNELS, **options):
        drv = make_driver(HmpDriver, tcp(server), channels, options)
        drv.connect()
        drv.link.reset()
        return drv

    return make


def test_connect_identity(server, make_driver):
    drv = make_driver(HmpDriver, tcp(server), CHANNELS)
    assert drv.connect() == "HAMEG,HMP4040,101234,HW50020001/SW2.51"
    assert drv.link.queries == ["*IDN?"]


def test_link_settings_are_the_drivers(server):
    s = settings_for(HmpDriver, tcp(server), timeout=0.7)
    assert (s.write_termination, s.read_termination, s.rtscts, s.timeout) == ("\n", "\n", True, 0.7)


def test_connect_refuses_another_instrument(clock, serve, make_driver):
    server = serve(ClimateSim(clock=clock, seed=1))
    drv = make_driver(HmpDriver, tcp(server), CHANNELS)
    with pytest.raises(LinkError, match="not an HMP supply"):
        drv.connect()


@pytest.mark.parametrize("full", [True, False])
def test_read_returns_every_channel(hmp, lv, full):
    drv = hmp()
    drv.set_voltage(0, 5.0)
    drv.set_current(0, 0.5)
    drv.set_voltage(2, 12.0)
    drv.switch(0, True)
    r = drv.read(CHANNELS, full=full)
    assert sorted(r) == CHANNELS
    for ch, c in r.items():
        assert isinstance(c, SupplyChannel)
        for name in ("vset", "vmon", "iset", "imon"):
            assert type(getattr(c, name)) is float, (ch, name)
        assert type(c.on) is bool and isinstance(c.state, ChannelState)
        assert c.rampup is None and c.rampdown is None  # no hardware ramp
    on = r[0]
    assert on.on and on.state is ChannelState.ON and on.alarms == []
    assert (on.vset, on.iset) == (5.0, 0.5)
    assert on.vmon == pytest.approx(5.0, abs=0.01) and on.imon == pytest.approx(0.05, abs=0.001)  # 5 V on 100 Ω
    assert r[2].vset == 12.0 and r[2].iset == 1.0  # simulator default 1 A
    for ch in (1, 2, 3):
        assert (r[ch].on, r[ch].state, r[ch].vmon, r[ch].imon) == (False, ChannelState.OFF, 0.0, 0.0)


def test_settings_are_cached_between_full_reads(hmp, lv):
    drv = hmp()
    first = drv.read(CHANNELS, full=False)  # nothing cached yet: settings are read too
    assert first[3].iset == 1.0
    assert sum("SOUR:VOLT?" in q for q in drv.link.queries) == len(CHANNELS)
    drv.link.reset()
    drv.read(CHANNELS, full=True)
    full_trips = len(drv.link.queries)
    drv.link.reset()
    lv.chan(2).vset = 7.5  # changed behind the driver's back
    partial = drv.read(CHANNELS, full=False)
    partial_trips = len(drv.link.queries)
    assert not any("SOUR:" in q for q in drv.link.queries)
    assert (full_trips, partial_trips) == (1 + 2 * len(CHANNELS), 1 + len(CHANNELS))
    assert partial[1].vset == 0.0  # cached
    assert drv.read(CHANNELS, full=True)[1].vset == 7.5


def test_set_voltage_and_current(hmp, lv):
    drv = hmp()
    drv.set_voltage(1, 3.3)
    drv.set_current(1, 0.25)
    assert (lv.chan(2).vset, lv.chan(2).iset) == (3.3, 0.25)
    assert (lv.chan(1).vset, lv.chan(1).iset) == (0.0, 1.0)  # others untouched
    r = drv.read([1], full=True)[1]
    assert (r.vset, r.iset) == (3.3, 0.25)


def test_switch_on_and_off_with_general_output(hmp, lv):
    drv = hmp()
    drv.set_voltage(1, 5.0)
    drv.switch(1, True)
    assert lv.general and lv.chan(2).armed
    r = drv.read(CHANNELS, full=False)
    assert r[1].on and r[1].state is ChannelState.ON and r[1].vmon == pytest.approx(5.0, abs=0.01)
    drv.switch(1, False)
    assert not lv.chan(2).armed
    r = drv.read(CHANNELS, full=False)
    assert not r[1].on and r[1].state is ChannelState.OFF and r[1].vmon == 0.0


def test_second_channel_on_keeps_the_first_on(hmp, lv):
    drv = hmp()
    drv.switch(0, True)
    drv.switch(3, True)
    assert lv.general and lv.chan(1).armed and lv.chan(4).armed
    drv.switch(3, False)
    r = drv.read(CHANNELS, full=False)
    assert r[0].on and not r[3].on


def test_switch_on_disarms_other_armed_channels_while_general_is_off(hmp, lv):
    drv = hmp()
    lv.chan(3).vset = 12.0
    lv.chan(3).armed = True  # armed from the front panel, master switch off
    assert not lv.general
    drv.switch(0, True)
    assert lv.general and lv.chan(1).armed
    assert not lv.chan(3).armed, "general ON must not switch the other armed channel on"
    writes = drv.link.writes
    assert writes.index("*CLS;INST:NSEL 3;OUTP:SEL OFF") < writes.index("*CLS;OUTP:GEN ON")  # disarmed first
    r = drv.read(CHANNELS, full=False)
    assert r[0].on and not r[2].on and r[2].vmon == 0.0


def test_fuse_trips_then_clear_gives_off(hmp, lv, clock):
    drv = hmp(fuse=True, fuse_delay_ms=50)
    for ch in CHANNELS:
        drv.configure_channel(ch, None, None, "ramp")
    assert (lv.chan(1).fuse, lv.chan(1).fuse_delay) == (True, 50.0)
    lv.set_param("load", 1.0, channel=1)  # 5 V on 1 Ω wants 5 A > 1 A: constant current
    drv.set_voltage(0, 5.0)
    drv.switch(0, True)
    r = drv.read([0], full=True)[0]
    assert r.state is ChannelState.ON and r.imon == pytest.approx(1.0, abs=0.001)
    clock.advance(0.2)  # > 50 ms in constant current
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.TRIPPED and r.alarms == ["FUSE"] and not r.on
    assert lv.chan(1).fuse_tripped
    drv.clear(0)
    assert not lv.chan(1).fuse_tripped and not lv.chan(1).armed
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.OFF and r.alarms == [] and not r.on and r.vmon == 0.0


@pytest.mark.parametrize(
    "action, args",
    [
        ("set_voltage", (0, 32.1)),
        ("set_voltage", (0, -0.1)),
        ("set_voltage", (0, math.inf)),
        ("set_current", (0, 10.01)),
        ("set_current", (0, -0.1)),
    ],
)
def test_beyond_instrument_range_raises_before_sending(hmp, lv, action, args):
    drv = hmp()
    before = dataclasses.replace(lv.chan(1))
    with pytest.raises(InstrumentError, match="outside the instrument range|finite"):
        getattr(drv, action)(*args)
    assert drv.link.sent == 0, drv.link.log
    assert lv.chan(1) == before


def test_refused_value_is_read_from_the_error_queue(hmp, lv, monkeypatch):
    # pretend the driver's range were wider than the instrument's: the instrument refuses
    monkeypatch.setattr(HmpDriver.vset, "limits", (0.0, 100.0))
    drv = hmp()
    with pytest.raises(InstrumentError, match=r'SOUR:VOLT 40\b.*-222,"Data out of range"'):
        drv.set_voltage(0, 40.0)
    assert lv.chan(1).vset == 0.0
    drv.set_voltage(0, 4.0)  # the error was taken off the queue: the next command is clean
    assert lv.chan(1).vset == 4.0 and not lv.errors


def test_stale_error_in_the_queue_is_not_blamed_on_the_next_command(lv, server, hmp):
    # an earlier session left an error in the instrument's queue
    raw = open_link(tcp(server), settings_for(HmpDriver, tcp(server)))
    try:
        raw.write("NO:SUCH:COMMAND")
        assert raw.query("*OPC?") == "1"
    finally:
        raw.close()
    assert lv.errors
    drv = hmp()  # connect() should start from a clean error queue (*CLS)
    drv.set_voltage(0, 5.0)  # a valid setting, and the instrument takes it ...
    assert lv.chan(1).vset == 5.0  # ... so it must not raise "instrument refused"


def test_hmp2030_with_three_channels(clock, serve, make_driver):
    server = serve(HmpSim(clock=clock, seed=1, channels=3))
    drv = make_driver(HmpDriver, tcp(server), [0, 1, 2], {"channels": 3})
    assert "HMP2030" in drv.connect()
    drv.switch(2, True)
    assert sorted(drv.read([0, 1, 2], full=True)) == [0, 1, 2]
    assert all("NSEL 4" not in q for _, q in drv.link.log)


def test_channel_the_instrument_lacks_is_not_read_silently(clock, serve, make_driver):
    sim = HmpSim(clock=clock, seed=1, channels=3)  # an HMP2030 ...
    server = serve(sim)
    drv = make_driver(HmpDriver, tcp(server), CHANNELS, {"channels": 4})  # ... configured as HMP4040
    sim.chan(3).vset = 24.0
    with pytest.raises((InstrumentError, LinkError)):
        drv.connect()
        r = drv.read(CHANNELS, full=True)
        # OUT4 does not exist: INST:NSEL 4 fails and the queries answer for another output
        same = [f"OUT{n}" for n in (1, 2, 3) if sim.chan(n).vset == r[3].vset]
        pytest.fail(f"connect() took an HMP2030 as 4 channels, and OUT4 read as another output ({same}): {r[3]}")


def test_unconfigured_output_is_disarmed_too(server, make_driver, lv):
    """Only OUT1..OUT3 configured on a 4-output HMP4040: an armed OUT4 must not go live either."""
    drv = make_driver(HmpDriver, tcp(server), [0, 1, 2], {"channels": 3})
    drv.connect()
    lv.chan(4).vset = 12.0
    lv.chan(4).armed = True
    drv.switch(0, True)
    assert lv.general and lv.chan(1).armed
    assert not lv.chan(4).armed, "the master switch must not bring OUT4 up"


def test_over_voltage_trip_is_tripped_and_clear_acknowledges_it(hmp, lv):
    drv = hmp()
    drv.set_voltage(1, 10.0)
    drv.switch(1, True)
    lv.chan(2).ovp = 5.0  # protection below the set voltage: the output trips
    lv.chan(2).ovp_tripped, lv.chan(2).armed = True, False
    r = drv.read([1], full=True)[1]
    assert r.state is ChannelState.TRIPPED and r.alarms == ["OVP"] and not r.on
    drv.clear(1)
    r = drv.read([1], full=True)[1]
    assert r.state is ChannelState.OFF and r.alarms == []


def test_clear_leaves_an_untripped_output_alone(hmp, lv):
    drv = hmp()
    drv.set_voltage(2, 3.0)
    drv.switch(2, True)
    drv.clear(2)
    assert lv.chan(3).armed and drv.read([2], full=False)[2].on


def test_small_current_limits_are_not_rounded_away(hmp, lv):
    drv = hmp()
    drv.set_current(0, 3e-4)
    assert lv.chan(1).iset == pytest.approx(3e-4)
    assert drv.read([0], full=True)[0].iset == pytest.approx(3e-4)
