"""CAEN N1470 driver against the CAEN simulator over TCP (socket:// through open_link)."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
from drvkit import SHORT_TIMEOUT, tcp

from slowctl.drivers.caen_n1470 import CaenN1470 as CaenDriver
from slowctl.drivers.link import InstrumentError, LinkError
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl_dummy.sims.caen_n1470 import CaenN1470 as CaenSim

CHANNELS = [0, 1, 2, 3]
SETTING_PARS = ("PAR:VSET", "PAR:ISET", "PAR:RUP", "PAR:RDW")


@pytest.fixture
def hv(clock):
    return CaenSim(clock=clock, seed=1)


@pytest.fixture
def server(hv, serve):
    return serve(hv)


@pytest.fixture
def caen(server, make_driver):
    """A connected driver factory: caen(**options) -> driver with a reset request log."""

    def make(channels=CHANNELS, timeout=1.0, **options):
        drv = make_driver(CaenDriver, tcp(server), channels, options, timeout=timeout)
        drv.connect()
        drv.link.reset()
        return drv

    return make


def test_connect_identity(hv, server, make_driver):
    hv.serial, hv.firmware = "04711", "2.03"
    drv = make_driver(CaenDriver, tcp(server), CHANNELS)
    assert drv.connect() == "CAEN N1470 serial 04711 firmware 2.03"
    assert [q.split("PAR:")[1] for q in drv.link.queries] == ["BDNAME", "BDSNUM", "BDFREL"]


def test_link_settings_are_the_drivers(server):
    from drvkit import settings_for

    s = settings_for(CaenDriver, tcp(server), timeout=0.7)
    assert (s.write_termination, s.read_termination, s.xonxoff, s.timeout) == ("\r\n", "\r\n", True, 0.7)


@pytest.mark.parametrize("full", [True, False])
def test_read_returns_every_channel_in_si_units(caen, hv, clock, full):
    drv = caen()
    drv.set_voltage(0, 100.0)
    drv.set_current(2, 250e-6)
    drv.switch(0, True)
    clock.advance(10)  # 50 V/s: long settled
    r = drv.read(CHANNELS, full=full)
    assert sorted(r) == CHANNELS
    for ch, c in r.items():
        assert isinstance(c, SupplyChannel)
        for name in ("vset", "vmon", "iset", "imon", "rampup", "rampdown"):
            assert type(getattr(c, name)) is float, (ch, name)
        assert type(c.on) is bool and isinstance(c.state, ChannelState) and isinstance(c.alarms, list)
        assert 0 <= c.iset < 1e-2, "currents must be in A, not µA"
        assert (c.rampup, c.rampdown) == (50.0, 50.0)
    on = r[0]
    assert on.on and on.state is ChannelState.ON and on.alarms == []
    assert on.vset == 100.0 and on.vmon == pytest.approx(100.0, abs=0.2)
    assert on.iset == pytest.approx(100e-6, rel=1e-9)  # simulator default 100 µA
    assert on.imon == pytest.approx(1e-6, abs=0.05e-6)  # 100 V on 100 MΩ = 1 µA = 1e-6 A
    assert r[2].iset == pytest.approx(250e-6, rel=1e-9)
    for ch in (1, 2, 3):
        assert (r[ch].on, r[ch].state, r[ch].vmon, r[ch].imon) == (False, ChannelState.OFF, 0.0, 0.0)


def test_settings_are_cached_between_full_reads(caen, hv):
    drv = caen()
    first = drv.read(CHANNELS, full=False)  # nothing cached yet: settings are read too
    assert first[1].vset == 0.0 and first[1].iset == pytest.approx(1e-4)
    assert sum(any(p in q for p in SETTING_PARS) for q in drv.link.queries) == 4 * len(CHANNELS)

    drv.link.reset()
    drv.read(CHANNELS, full=True)
    full_trips = len(drv.link.queries)
    drv.link.reset()
    hv.channels[1].vset = 321.0  # changed behind the driver's back
    partial = drv.read(CHANNELS, full=False)
    partial_trips = len(drv.link.queries)
    assert not any(p in q for q in drv.link.queries for p in SETTING_PARS)
    assert partial_trips < full_trips
    assert (full_trips, partial_trips) == (7 * len(CHANNELS), 3 * len(CHANNELS))
    assert partial[1].vset == 0.0  # cached
    assert drv.read(CHANNELS, full=True)[1].vset == 321.0


def test_set_voltage_and_current(caen, hv):
    drv = caen()
    drv.set_voltage(1, 1234.5)
    drv.set_current(1, 42e-6)
    assert hv.channels[1].vset == 1234.5
    assert hv.channels[1].iset == pytest.approx(42.0)  # µA on the wire
    r = drv.read([1], full=True)[1]
    assert r.vset == 1234.5 and r.iset == pytest.approx(42e-6, rel=1e-9)
    assert hv.channels[0].vset == 0.0 and hv.channels[0].iset == 100.0  # others untouched


def test_set_ramp_and_configure_channel(caen, hv):
    drv = caen()
    drv.set_ramp(0, up=20, down=40)
    assert (hv.channels[0].rup, hv.channels[0].rdw) == (20.0, 40.0)
    drv.set_ramp(0, down=45)
    assert (hv.channels[0].rup, hv.channels[0].rdw) == (20.0, 45.0)
    drv.configure_channel(1, 25, 35, "kill")
    assert (hv.channels[1].rup, hv.channels[1].rdw, hv.channels[1].pdwn) == (25.0, 35.0, "KILL")
    drv.configure_channel(2, None, None, "ramp")
    assert (hv.channels[2].rup, hv.channels[2].rdw, hv.channels[2].pdwn) == (50.0, 50.0, "RAMP")
    r = drv.read(CHANNELS, full=True)
    assert (r[0].rampup, r[0].rampdown) == (20.0, 45.0)
    assert (r[1].rampup, r[1].rampdown) == (25.0, 35.0)


def test_ramp_up_on_ramp_down_off(caen, hv, clock):
    drv = caen()
    drv.set_ramp(0, up=20, down=40)
    drv.set_voltage(0, 100)
    drv.switch(0, True)
    assert hv.channels[0].on
    clock.advance(2.0)  # 20 V/s -> 40 V
    r = drv.read([0], full=True)[0]
    assert r.state is ChannelState.RAMP_UP and r.on
    assert r.vmon == pytest.approx(40.0, abs=0.5)
    clock.advance(3.5)
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.ON and r.vmon == pytest.approx(100.0, abs=0.2)
    drv.switch(0, False)
    assert not hv.channels[0].on
    clock.advance(1.0)  # 40 V/s -> 60 V
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.RAMP_DOWN and not r.on
    assert r.vmon == pytest.approx(60.0, abs=0.5)
    clock.advance(2.0)
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.OFF and r.vmon == 0.0 and r.alarms == []


def test_off_mode_kill_drops_at_once(caen, hv, clock):
    drv = caen()
    drv.configure_channel(0, None, None, "kill")
    drv.set_voltage(0, 100)
    drv.switch(0, True)
    clock.advance(5)
    assert drv.read([0], full=False)[0].state is ChannelState.ON
    drv.switch(0, False)
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.OFF and r.vmon == 0.0


def test_overcurrent_trips_then_clear_gives_off(caen, hv, clock):
    drv = caen()
    hv.set_param("load", 1e6, channel=0)  # 1 µA per volt
    drv.set_current(0, 10e-6)  # limit reached at 10 V
    drv.set_voltage(0, 100)
    drv.switch(0, True)
    clock.advance(0.5)
    r = drv.read([0], full=True)[0]
    assert "OVC" in r.alarms and r.on
    assert r.vmon == pytest.approx(10.0, abs=0.2) and r.imon == pytest.approx(10e-6, rel=0.02)
    clock.advance(2.0)  # > TRIP time (1 s) in over-current
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.TRIPPED and "TRIP" in r.alarms and not r.on
    assert hv.channels[0].tripped and hv.alarm & 1
    drv.clear(0)
    assert not hv.channels[0].tripped and hv.alarm == 0
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.OFF and r.alarms == [] and not r.on and r.vmon == 0.0


@pytest.mark.parametrize(
    "action, args",
    [
        ("set_voltage", (0, 8000.5)),
        ("set_voltage", (0, -1.0)),
        ("set_voltage", (0, math.nan)),
        ("set_current", (0, 3.5e-3)),
        ("set_current", (0, -1e-6)),
        ("set_ramp", (0, 0.5, None)),
        ("set_ramp", (0, None, 501)),
    ],
)
def test_beyond_instrument_range_raises_before_sending(caen, hv, action, args):
    drv = caen()
    before = dataclasses.replace(hv.channels[0])
    with pytest.raises(InstrumentError, match="outside the instrument range|finite"):
        getattr(drv, action)(*args)
    assert drv.link.sent == 0, drv.link.log
    assert hv.channels[0] == before


def test_vset_above_maxv_is_refused_with_val_err(caen, hv):
    drv = caen()
    hv.channels[0].maxv = 1000.0  # instrument's software limit below the driver's 8 kV range
    with pytest.raises(InstrumentError, match=r"VSET: value out of range \(VAL:ERR\)"):
        drv.set_voltage(0, 1500)
    assert hv.channels[0].vset == 0.0
    drv.set_voltage(0, 999)  # the link is still in step
    assert drv.read([0], full=True)[0].vset == 999.0


def test_local_mode_is_refused_with_loc_err(caen, hv):
    drv = caen()
    hv.set_param("local", True)
    with pytest.raises(InstrumentError, match="LOCAL"):
        drv.switch(0, True)
    assert not hv.channels[0].on
    assert drv.read([0], full=True)[0].state is ChannelState.OFF  # reads still work


def _comparable(r: SupplyChannel) -> dict:
    d = dataclasses.asdict(r)
    d.pop("vmon"), d.pop("imon")
    return d


@pytest.mark.parametrize("channels", [CHANNELS, [1, 3]])
def test_all_channels_query_gives_identical_readings(caen, hv, clock, channels):
    one_by_one, all_at_once = caen(all_channels_query=False), caen(all_channels_query=True)
    one_by_one.set_voltage(0, 100)
    one_by_one.set_voltage(1, 200)
    one_by_one.set_current(1, 150e-6)
    one_by_one.set_ramp(2, up=30, down=60)
    one_by_one.set_voltage(3, 300)
    hv.set_param("load", 1e6, channel=3)  # channel 3 will trip
    for ch in (0, 1, 3):
        one_by_one.switch(ch, True)
    clock.advance(20)
    for full in (True, False):
        a = one_by_one.read(channels, full=full)
        b = all_at_once.read(channels, full=full)
        assert sorted(a) == sorted(b) == channels
        for ch in channels:
            assert _comparable(a[ch]) == _comparable(b[ch]), ch
            assert a[ch].vmon == pytest.approx(b[ch].vmon, abs=0.2)
            assert a[ch].imon == pytest.approx(b[ch].imon, rel=0.01, abs=0.05e-6)
    r = all_at_once.read(CHANNELS, full=True)
    assert r[1].vset == 200.0 and r[1].iset == pytest.approx(150e-6) and r[1].state is ChannelState.ON
    assert (r[2].rampup, r[2].rampdown) == (30.0, 60.0)
    assert r[3].state is ChannelState.TRIPPED
    all_at_once.link.reset()
    all_at_once.read(CHANNELS, full=False)
    assert len(all_at_once.link.queries) == 3
    assert all(",CH:4," in q for q in all_at_once.link.queries)


def test_wrong_board_address_times_out(caen):
    start = time.monotonic()
    with pytest.raises(LinkError, match="timeout"):
        caen(board=3, timeout=SHORT_TIMEOUT)
    assert time.monotonic() - start < SHORT_TIMEOUT + 0.7


def test_other_board_address_is_used(clock, serve, make_driver):
    server = serve(CaenSim(clock=clock, seed=1, board=7))
    drv = make_driver(CaenDriver, tcp(server), [0], {"board": 7})
    assert drv.connect().startswith("CAEN N1470")
    assert all(q.startswith("$BD:07,") for q in drv.link.queries)
    assert sorted(drv.read([0], full=True)) == [0]


def test_settings_travel_with_the_decimals_of_their_resolution(caen, hv):
    """The manual's DEC of each parameter (VDEC 1, ISDEC 2, RUPDEC / RDWDEC 0): fixed decimals, exact."""
    drv = caen(channels=[1])
    drv.set_voltage(1, 100.0)
    drv.set_voltage(1, 1234.5)
    drv.set_current(1, 5e-6)
    drv.set_current(1, 1.23e-6)
    drv.set_ramp(1, up=20.0, down=7.0)
    values = [q.split(",PAR:")[1].split("\r")[0] for q in drv.link.queries if "CMD:SET" in q]
    assert values == [
        "VSET,VAL:100.0",
        "VSET,VAL:1234.5",
        "ISET,VAL:5.00",
        "ISET,VAL:1.23",
        "RUP,VAL:20",
        "RDW,VAL:7",
    ]
    ch = hv.channels[1]
    assert (ch.vset, ch.iset, ch.rup, ch.rdw) == (1234.5, 1.23, 20.0, 7.0)
    r = drv.read([1], full=True)[1]
    assert (r.vset, r.iset, r.rampup, r.rampdown) == (1234.5, 1.23e-6, 20.0, 7.0)


def test_the_simulator_holds_each_parameter_at_its_decimals(hv):
    for request, attr, held in (
        ("PAR:VSET,VAL:100.04", "vset", 100.0),
        ("PAR:VSET,VAL:100.06", "vset", 100.1),
        ("PAR:ISET,VAL:1.234", "iset", 1.23),
        ("PAR:RUP,VAL:20.4", "rup", 20.0),
        ("PAR:RDW,VAL:7.6", "rdw", 8.0),
    ):
        assert hv.handle(f"$BD:00,CMD:SET,CH:0,{request}") == b"#BD:00,CMD:OK\r\n"
        assert getattr(hv.channels[0], attr) == held


def test_kill_drops_at_once_and_leaves_the_power_down_mode_as_configured(caen, hv, clock):
    drv = caen()
    drv.configure_channel(0, None, None, "ramp")
    drv.set_voltage(0, 100)
    drv.switch(0, True)
    clock.advance(6)
    drv.kill(0)
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.OFF and r.vmon == 0.0, "no ramp down"
    assert hv.channels[0].pdwn == "RAMP", "the channel's own off_mode is back for the next off"
