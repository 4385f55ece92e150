"""JULABO chiller driver against the JULABO simulator over TCP (socket:// through open_link), and one pty run."""

from __future__ import annotations

import math
import time

import pytest
from drvkit import SHORT_TIMEOUT, link_error_message, measure_poll, record_poll_cost, settings_for, tcp

from slowctl.config import ChannelConfig
from slowctl.drivers.julabo import Julabo as JulaboDriver
from slowctl.drivers.link import InstrumentError, LinkError, SerialLink, open_link
from slowctl.drivers.readings import ChannelState, ChillerChannel
from slowctl_dummy.scenario import parse_scenario
from slowctl_dummy.sims.climate import ClimateBox as ClimateSim
from slowctl_dummy.sims.julabo import Julabo as JulaboSim

FAST = {"link": {"min_interval": 0.0}}  # most tests: no pauses between requests (the simulator needs none)
FP50 = {
    "serial": {"baudrate": 9600, "bytesize": 8, "parity": "N", "rtscts": True},
    "link": {"write_termination": "\n", "min_interval": 0.01},
}  # the FP50 example of the docs


@pytest.fixture
def bath(clock):
    return JulaboSim(clock=clock, seed=1)


@pytest.fixture
def server(bath, serve):
    return serve(bath)


@pytest.fixture
def julabo(server, make_driver):
    """A connected driver factory without pauses: julabo(**options) -> driver with a reset request log."""

    def make(timeout=1.0, **options):
        drv = make_driver(JulaboDriver, tcp(server), [0], {"out_interval": 0.0, **options}, timeout=timeout, **FAST)
        drv.connect()
        drv.link.reset()
        return drv

    return make


def test_default_settings_are_the_cf_series(server):
    s = settings_for(JulaboDriver, tcp(server), timeout=0.7)
    assert (s.write_termination, s.read_termination, s.min_interval) == ("\r", "\n", 0.25)
    assert (s.baudrate, s.bytesize, s.parity, s.stopbits, s.rtscts, s.xonxoff) == (4800, 7, "E", 1, False, False)
    s = settings_for(JulaboDriver, tcp(server), **FP50)
    assert (s.write_termination, s.read_termination, s.min_interval) == ("\n", "\n", 0.01)
    assert (s.baudrate, s.bytesize, s.parity, s.rtscts) == (9600, 8, "N", True)


def test_connect_and_read_with_the_default_pauses(server, make_driver, bath):
    drv = make_driver(JulaboDriver, tcp(server), [0])
    start = time.monotonic()
    assert drv.connect() == "JULABO FP50-HE VERSION 4.0"
    assert drv.link.queries == ["version", "status", "in_mode_01"]
    drv.link.reset()
    drv.set_temperature(0, 15.0)  # the active setpoint, out_sp_00, then in_sp_00 250 ms later
    elapsed = time.monotonic() - start
    assert drv.link.log == [("query", "in_mode_01"), ("write", "out_sp_00 15.00"), ("query", "in_sp_00")]
    assert elapsed >= 5 * 0.25 * 0.95  # five pauses of 250 ms between six requests
    assert bath.setpoint == 15.0


def test_fp50_settings_against_an_lf_chiller(clock, serve, make_driver):
    bath = JulaboSim(clock=clock, seed=1, eol=b"\n")
    drv = make_driver(JulaboDriver, tcp(serve(bath)), [0], {"out_interval": 0.0}, **FP50)
    assert drv.connect().startswith("JULABO")
    drv.switch(0, True)
    r = drv.read([0], full=True)[0]
    assert r.on and r.state is ChannelState.ON and (r.status_code, r.status) == (3, "REMOTE START")


def test_connect_refuses_another_instrument(clock, serve, make_driver):
    server = serve(ClimateSim(clock=clock, seed=1))  # an LF instrument: it answers with FP50 settings
    drv = make_driver(JulaboDriver, tcp(server), [0], {"out_interval": 0.0}, **FP50)
    with pytest.raises(LinkError, match="not a JULABO: 'ERR 1 unknown command'"):
        drv.connect()


def test_first_query_after_opening_may_go_unanswered(bath, server, make_driver, monkeypatch):
    real, seen = bath.handle, []

    def first_lost(line):
        seen.append(line)
        return None if len(seen) == 1 else real(line)

    monkeypatch.setattr(bath, "handle", first_lost)
    drv = make_driver(JulaboDriver, tcp(server), [0], {"out_interval": 0.0}, timeout=SHORT_TIMEOUT, **FAST)
    assert drv.connect().startswith("JULABO")
    assert seen[:2] == ["version", "version"]
    seen.clear()
    drv = make_driver(JulaboDriver, tcp(server), [0], {"connect_attempts": 1}, timeout=SHORT_TIMEOUT, **FAST)
    with pytest.raises(LinkError, match="timeout"):
        drv.connect()


def test_read(julabo, bath):
    bath.handle("bogus")  # a command error left by an earlier session: connect reads it off the status
    drv = julabo()
    r = drv.read([0], full=False)  # nothing cached yet: the setpoint is read too
    assert sorted(r) == [0] and isinstance(r[0], ChillerChannel)
    c = r[0]
    assert type(c.tset) is float and type(c.temperature) is float and type(c.on) is bool
    assert (c.on, c.tset, c.state, c.status_code, c.status, c.alarms) == (
        False,
        20.0,
        ChannelState.OFF,
        0,
        "MANUAL STOP",
        [],
    )
    assert c.temperature == pytest.approx(22.0, abs=0.05)
    assert drv.link.queries == ["in_mode_01", "in_sp_00", "in_pv_00", "in_mode_05", "status"]


def test_setpoint_is_cached_between_full_reads(julabo, bath):
    drv = julabo()
    drv.read([0], full=True)
    drv.link.reset()
    bath.setpoint = 33.0  # changed at the keypad
    assert drv.read([0], full=False)[0].tset == 20.0
    assert drv.link.queries == ["in_pv_00", "in_mode_05", "status"]
    assert drv.read([0], full=True)[0].tset == 33.0


def test_tset_on_off_and_the_bath_follows(julabo, bath, clock):
    drv = julabo()
    drv.set_temperature(0, -10.0)
    assert drv.link.log == [("query", "in_mode_01"), ("write", "out_sp_00 -10.00"), ("query", "in_sp_00")]
    drv.switch(0, True)
    assert drv.link.log[-2:] == [("write", "out_mode_05 1"), ("query", "in_mode_05")]
    r = drv.read([0], full=True)[0]
    assert (r.on, r.tset, r.state, r.status_code, r.status) == (True, -10.0, ChannelState.ON, 3, "REMOTE START")
    clock.advance(60)
    assert drv.read([0], full=False)[0].temperature == pytest.approx(-10 + 32 * math.exp(-1), abs=0.05)
    drv.switch(0, False)
    r = drv.read([0], full=False)[0]
    assert (r.on, r.state, r.status) == (False, ChannelState.OFF, "REMOTE STOP") and not bath.running


def test_setpoint_the_chiller_does_not_take_is_refused(julabo, bath):
    drv = julabo()
    with pytest.raises(
        InstrumentError,
        match=r"out_sp_00 250.00 was not taken: in_sp_00 reads 20; "
        r"status -11 VALUE TOO LARGE",
    ):
        drv.set_temperature(0, 250.0)  # inside the driver's range, above the chiller's 200
    assert bath.setpoint == 20.0
    r = drv.read([0], full=True)[0]
    assert r.state is ChannelState.OFF and r.tset == 20.0  # the error was reported once, with the refusal
    with pytest.raises(InstrumentError, match="tset 12.344 °C is finer than the instrument's 0.01 °C step: refused"):
        drv.set_temperature(0, 12.344)  # never rounded to 12.34 behind the operator's back
    assert bath.setpoint == 20.0
    drv.set_temperature(0, 12.34)
    assert bath.setpoint == 12.34
    bath.sp_max = 12.0
    drv = julabo(setpoint_resolution=1.0)
    with pytest.raises(InstrumentError, match="not taken"):
        drv.set_temperature(0, 13.0)  # 12.34 is not within 0.5 of 13


def test_beyond_instrument_range_raises_before_sending(julabo, bath):
    drv = julabo()
    for value in (400.01, -95.5, math.nan, math.inf):
        with pytest.raises(InstrumentError, match="outside the instrument range|finite"):
            drv.set_temperature(0, value)
    assert drv.link.sent == 0
    assert bath.setpoint == 20.0


def test_alarm_is_error_and_start_is_refused(julabo, bath, clock):
    drv = julabo()
    drv.switch(0, True)
    bath.schedule(parse_scenario({"events": [{"at": 5, "set": {"alarm": -14}}]}, bath))
    clock.advance(5)
    r = drv.read([0], full=False)[0]
    assert (r.state, r.on, r.status_code, r.status, r.alarms) == (
        ChannelState.ERROR,
        False,
        -14,
        "EXCESS TEMPERATURE PROTECTOR ALARM",
        ["EXCESS TEMPERATURE PROTECTOR ALARM"],
    )
    with pytest.raises(
        InstrumentError,
        match="out_mode_05 1 was not taken: in_mode_05 reads 0; status -14 EXCESS TEMPERATURE PROTECTOR ALARM",
    ):
        drv.switch(0, True)
    bath.set_param("alarm", 0.0)
    drv.switch(0, True)
    assert drv.read([0], full=False)[0].state is ChannelState.ON
    bath.set_param("alarm", -13.0)  # a warning: still running, still an error
    r = drv.read([0], full=False)[0]
    assert (r.state, r.on, r.status_code) == (ChannelState.ERROR, True, -13)
    assert r.alarms == ["WARNING : VALUE EXCEEDS TEMPERATURE LIMITS"]


class FahrenheitSim(JulaboSim):
    def respond(self, line: str) -> str | None:
        return "1" if line.strip().lower() == "in_sp_06" else super().respond(line)


def test_unit_check(julabo, clock, serve, make_driver):
    address = tcp(serve(FahrenheitSim(clock=clock, seed=1)))
    drv = make_driver(JulaboDriver, address, [0], **FAST)
    assert drv.connect().startswith("JULABO")  # not checked by default (unconfirmed query)
    drv = make_driver(JulaboDriver, address, [0], {"unit_check": True}, **FAST)
    with pytest.raises(InstrumentError, match="works in °F"):
        drv.connect()
    drv = julabo(unit_check=True)  # a °C chiller passes
    assert drv.read([0], full=True)[0].tset == 20.0


def test_check_config():
    ok = {0: ChannelConfig(name="bath", tmin=-20, tmax=40)}
    assert JulaboDriver.check_config({}, ok) == []
    assert JulaboDriver.check_config({"out_interval": 9}, ok) == [
        "options.out_interval: Input should be less than or equal to 5"
    ]
    errors = JulaboDriver.check_config(
        {}, {0: ChannelConfig(name="a", tmin=-100, tmax=20), 1: ChannelConfig(name="b", tmax=20)}
    )
    assert errors == [
        "channels.1: julabo has channels 0..0",
        "channels.0.tmin: -100 outside the julabo range -95..400",
        "channels.1.tmin: required for a chiller channel",
    ]


# --- link faults ---------------------------------------------------------------------


def test_silence_is_a_link_error_then_recovery(julabo, bath, clock):
    drv = julabo(timeout=SHORT_TIMEOUT)
    bath.schedule(parse_scenario({"events": [{"at": 10, "silence": 5}]}, bath))
    clock.advance(11)
    assert "timeout" in link_error_message(lambda: drv.read([0], full=False))
    assert "timeout" in link_error_message(lambda: drv.set_temperature(0, 5.0))
    clock.advance(5)
    assert drv.read([0], full=True)[0].tset == 20.0  # lost with the silence, not taken


def test_garbage_is_a_link_error(julabo, bath, clock):
    drv = julabo(timeout=SHORT_TIMEOUT)
    bath.schedule(parse_scenario({"events": [{"at": 10, "garbage": 5}]}, bath))
    clock.advance(11)
    for _ in range(5):
        link_error_message(lambda: drv.read([0], full=True))
    link_error_message(lambda: drv.switch(0, True))
    link_error_message(lambda: drv.connect())
    clock.advance(5)
    assert drv.read([0], full=True)[0].on  # executed, only the read-back was garbled


def test_stopped_simulator_then_a_new_driver_connects(bath, server, serve, julabo):
    drv = julabo(timeout=SHORT_TIMEOUT)
    port = server.port
    server.stop()
    link_error_message(lambda: drv.read([0], full=False))
    with pytest.raises(LinkError, match="cannot open"):
        open_link(tcp(server), settings_for(JulaboDriver, tcp(server)))
    assert serve(bath, port=port).port == port
    drv2 = julabo(timeout=SHORT_TIMEOUT)
    drv2.set_temperature(0, 5.0)
    assert drv2.read([0], full=True)[0].tset == 5.0


# --- transports and cost -----------------------------------------------------------------


def test_over_the_pty(bath, serve, make_driver):
    server = serve(bath, pty=True)
    drv = make_driver(JulaboDriver, server.pty_path, [0], {"out_interval": 0.0}, **FAST)
    assert isinstance(drv.link.inner, SerialLink)
    assert drv.connect().startswith("JULABO")
    drv.set_temperature(0, 30.5)
    assert drv.read([0], full=True)[0].tset == 30.5 == bath.setpoint


def test_poll_cost(bath, server, make_driver):
    drv = make_driver(JulaboDriver, tcp(server), [0])  # the driver's own settings: 250 ms pauses
    drv.connect()
    # as in the service, where polls are a poll period apart: no pause before the first request
    cost = measure_poll(drv, server, [0], settle=0.25)
    full, partial, seconds = cost.full, cost.partial, cost.seconds
    assert (partial, full) == (3, 5)
    wire_bytes = cost.wire_bytes + partial  # replies end CR LF: the CR before the read terminator LF
    wire = wire_bytes * 10 / 9600  # 7E1 is 10 bits a character too
    assert 2 * 0.25 + wire * 0.9 <= seconds < 3 * 0.25  # the line, and 250 ms between requests
    record_poll_cost(
        "julabo",
        f"1 channel: {partial} round trips per poll ({full} with full=True); "
        f"read(full=False) at 9600 baud took {seconds * 1000:.0f} ms (250 ms between "
        f"requests), wire time {wire * 1000:.0f} ms ({wire_bytes} bytes)",
    )


def test_the_active_setpoint_is_read_and_set(julabo, bath):
    """in_mode_01 selects which of sp_00..sp_02 the chiller works to: the driver follows it."""
    bath.handle("out_sp_01 12.5")
    bath.handle("out_mode_01 1")  # setpoint 2 selected at the front panel
    drv = julabo()
    assert drv.read([0], full=True)[0].tset == 12.5  # in_sp_01, not sp_00's 20
    drv.set_temperature(0, 7.25)
    assert drv.link.log[-3:] == [("query", "in_mode_01"), ("write", "out_sp_01 7.25"), ("query", "in_sp_01")]
    assert (bath.values["sp_00"], bath.values["sp_01"], bath.setpoint) == (20.0, 7.25, 7.25)
    bath.handle("out_mode_01 2")  # another one selected between reads: a change goes to it
    drv.set_temperature(0, -3.0)
    assert (bath.values["sp_01"], bath.values["sp_02"], bath.setpoint) == (7.25, -3.0, -3.0)
    assert drv.read([0], full=True)[0].tset == -3.0


def test_a_chiller_holding_tenths(clock, serve, make_driver):
    """A 0.1 °C model (simulator option setpoint_resolution) with the driver option to match."""
    sim = JulaboSim(clock=clock, seed=1, setpoint_resolution=0.1)
    drv = make_driver(JulaboDriver, tcp(serve(sim)), [0], {"out_interval": 0.0, "setpoint_resolution": 0.1}, **FAST)
    drv.connect()
    drv.set_temperature(0, 12.3)
    assert drv.link.log[-2:] == [("write", "out_sp_00 12.3"), ("query", "in_sp_00")]
    assert drv.read([0], full=True)[0].tset == 12.3 and sim.setpoint == 12.3
    with pytest.raises(InstrumentError, match="finer than the instrument's 0.1 °C step"):
        drv.set_temperature(0, 12.34)
