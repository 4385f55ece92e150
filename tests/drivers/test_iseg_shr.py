"""iseg SHR driver against the iseg simulator over TCP (socket:// through open_link, echo on)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from drvkit import SHORT_TIMEOUT, link_error_message, measure_poll, record_poll_cost, settings_for, tcp

from slowctl.config import ChannelConfig
from slowctl.drivers.iseg_shr import IsegShr as IsegDriver
from slowctl.drivers.iseg_shr import channel_list, channel_state, parse_number
from slowctl.drivers.link import InstrumentError, LinkError, SerialLink, open_link
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl_dummy.scenario import parse_scenario
from slowctl_dummy.sims.iseg_shr import IsegShr as IsegSim
from slowctl_dummy.sims.keithley_2410 import Keithley2410 as KeithleySim

CHANNELS = [0, 1, 2, 3]


def set_now(sim, name, value, channel=None):
    sim.advance()
    sim.set_param(name, value, channel)


@pytest.fixture
def hv(clock):
    return IsegSim(clock=clock, seed=1)


@pytest.fixture
def server(hv, serve):
    return serve(hv)


@pytest.fixture
def iseg(server, make_driver):
    """A connected, configured driver factory: iseg(**options) -> driver with a reset request log."""

    def make(channels=CHANNELS, off_mode="ramp", timeout=1.0, **options):
        drv = make_driver(IsegDriver, tcp(server), channels, options, timeout=timeout)
        drv.connect()
        for ch in channels:
            drv.configure_channel(ch, 50.0, 100.0, off_mode)
        drv.link.reset()
        return drv

    return make


# --- number format and status words (no I/O) ------------------------------------------
@pytest.mark.parametrize(
    "text, unit, value",
    [
        ("1.23400E3V", "V", 1234.0),
        ("-1.0E-6A", "A", -1e-6),
        ("5.000E1V/s", "V/s", 50.0),
        ("12.3456E-6A", "A", 12.3456e-6),
        ("1.23456EA", "A", 1.23456),
        ("-0.50000E3V", "V", -500.0),
        ("0.00000E3V", "V", 0.0),
        ("500", "V", 500.0),
        (" 2.5E+2 V ", "V", 250.0),
        ("4.0E3v", "V", 4000.0),
        ("100ms", "ms", 100.0),
        (".5E1V", "V", 5.0),
    ],
)
def test_numbers_with_optional_exponent_and_unit(text, unit, value):
    assert parse_number(text, unit) == value


@pytest.mark.parametrize(
    "text, unit", [("1.0E3A", "V"), ("abc", "V"), ("1.0E+V", "V"), ("", "V"), ("1.0E3V,", "V"), ("1.0E3V/s", "V")]
)
def test_garbled_numbers_are_refused(text, unit):
    with pytest.raises(ValueError):
        parse_number(text, unit)


@pytest.mark.parametrize(
    "status, event, state, alarms",
    [
        (0, 0, ChannelState.OFF, []),
        (1 << 3 | 1 << 7, 0, ChannelState.ON, []),
        (1 << 3 | 1 << 4 | 1 << 19, 0, ChannelState.RAMP_UP, []),
        (1 << 4 | 1 << 20, 0, ChannelState.RAMP_DOWN, []),
        (1 << 3 | 1 << 4 | 1 << 20, 0, ChannelState.RAMP_DOWN, []),  # on, Vset lowered
        (1 << 3 | 1 << 6, 0, ChannelState.COMPLIANCE, ["CC"]),
        (1 << 3 | 1 << 14, 0, ChannelState.COMPLIANCE, ["I_LIMIT"]),
        (1 << 3 | 1 << 6 | 1 << 13, 0, ChannelState.TRIPPED, ["CC", "TRIP"]),
        (0, 1 << 13, ChannelState.TRIPPED, ["TRIP"]),  # the latched event alone
        (1 << 5, 0, ChannelState.OFF, ["EMCY"]),
        (1 << 3 | 1 << 1, 0, ChannelState.ERROR, ["ARC"]),
        (1 << 2, 0, ChannelState.ERROR, ["INPUT_ERROR"]),
        (1 << 12, 0, ChannelState.ERROR, ["INHIBIT"]),
        (1 << 3 | 1 << 15 | 1 << 0, 0, ChannelState.ON, ["V_LIMIT"]),
    ],
)
def test_status_word_to_state_and_alarms(status, event, state, alarms):
    assert channel_state(status, event) == (state, alarms)


def test_channel_lists():
    assert [channel_list(c) for c in ([0], [0, 1, 2, 3], [1, 2], [0, 2, 3])] == ["(@0)", "(@0-3)", "(@1-2)", "(@0,2,3)"]


# --- connect ----------------------------------------------------------------------------------
def test_connect_identity_and_settings(server, make_driver):
    drv = make_driver(IsegDriver, tcp(server), CHANNELS)
    assert drv.connect() == "iseg Spezialelektronik GmbH,SHR 4060,5200123,1.23"
    assert drv.link.queries == ["*IDN?", ":SYST:ERR?", ":READ:CHAN:STATUS? (@0-3);:SYST:ERR?"]
    s = settings_for(IsegDriver, tcp(server), timeout=0.7)
    assert (s.write_termination, s.read_termination, s.echo, s.baudrate, s.timeout) == ("\r\n", "\r\n", True, 9600, 0.7)


def test_connect_refuses_another_instrument(clock, serve, make_driver):
    server = serve(KeithleySim(clock=clock, seed=1, terminator="CRLF"))
    drv = make_driver(IsegDriver, tcp(server), CHANNELS, link={"echo": False})
    with pytest.raises(LinkError, match="not an iseg module"):
        drv.connect()


def test_echo_expected_but_missing_is_a_link_error(clock, serve, make_driver):
    server = serve(IsegSim(clock=clock, seed=1, echo=False))
    drv = make_driver(IsegDriver, tcp(server), CHANNELS)  # the driver's serial default: echo on
    with pytest.raises(LinkError, match="expected echo"):
        drv.connect()


def test_connect_refuses_channels_the_module_lacks(clock, serve, make_driver):
    server = serve(IsegSim(clock=clock, seed=1, channels=2))
    drv = make_driver(IsegDriver, tcp(server), CHANNELS)
    with pytest.raises(InstrumentError, match=r"\(@0-3\) not all on this module.*-222"):
        drv.connect()
    assert drv.link.query(":SYST:ERR?").startswith("0,"), "the error queue was read to its end"


def test_connect_drains_stale_errors_and_never_clears_events(hv, server, iseg, clock):
    raw = open_link(tcp(server), settings_for(IsegDriver, tcp(server)))
    try:
        raw.write(":NO:SUCH:COMMAND")
        raw.write(":VOLT 5,(@0)")  # wrong sign: a second stale error
    finally:
        raw.close()
    hv.channels[2].tripped, hv.channels[2].events = True, 1 << 13  # a trip from before the restart
    drv = iseg()
    assert not hv.errors
    drv.set_voltage(0, 50.0)  # a valid setting is not refused for an old error
    r = drv.read(CHANNELS, full=True)
    assert r[2].state is ChannelState.TRIPPED, "connect must not clear latched trips (*CLS would)"
    assert not any("*CLS" in q for _, q in drv.link.log)


# --- reading ----------------------------------------------------------------------------------
@pytest.mark.parametrize("full", [True, False])
def test_read_every_channel_in_si_magnitudes(iseg, hv, clock, full):
    drv = iseg()
    drv.set_voltage(1, 500.0)
    drv.set_current(1, 1e-4)
    drv.switch(1, True)
    clock.advance(20)
    r = drv.read(CHANNELS, full=full)
    assert sorted(r) == CHANNELS
    for ch, c in r.items():
        assert isinstance(c, SupplyChannel)
        for name in ("vset", "vmon", "iset", "imon", "rampup", "rampdown"):
            assert type(getattr(c, name)) is float and getattr(c, name) >= 0, (ch, name)
    on = r[1]
    assert (on.on, on.state, on.alarms) == (True, ChannelState.ON, [])
    assert (on.vset, on.iset, on.rampup, on.rampdown) == (500.0, 1e-4, 50.0, 100.0)
    assert on.vmon == pytest.approx(500, abs=0.1) and on.imon == pytest.approx(5e-6, rel=0.01)  # negative channel
    assert (r[0].on, r[0].state, r[0].vmon, r[0].imon, r[0].iset) == (False, ChannelState.OFF, 0.0, 0.0, 4e-3)


def test_one_round_trip_per_poll_two_with_set_values(iseg, hv):
    drv = iseg()
    drv.read(CHANNELS, full=True)
    assert len(drv.link.queries) == 2
    drv.link.reset()
    hv.channels[3].vset = 123.0  # changed at the front panel
    r = drv.read(CHANNELS, full=False)
    assert drv.link.queries == [
        ":MEAS:VOLT? (@0-3);:MEAS:CURR? (@0-3);:READ:CHAN:STATUS? (@0-3);:READ:CHAN:EVENT:STATUS? (@0-3)"
    ]
    assert r[3].vset == 0.0  # cached
    assert drv.read(CHANNELS, full=True)[3].vset == 123.0
    assert not drv.link.writes


@pytest.mark.parametrize(
    "options, trips",
    [
        ({"channel_lists": False}, 4),  # one joined line per channel
        ({"joined_queries": False}, 4),  # one query per parameter, channel lists
        ({"joined_queries": False, "channel_lists": False}, 16),
    ],
)
def test_fallbacks_read_the_same(iseg, clock, options, trips):
    drv = iseg(**options)
    drv.set_voltage(2, 100.0)
    drv.switch(2, True)
    clock.advance(10)
    drv.read(CHANNELS, full=True)
    drv.link.reset()
    r = drv.read(CHANNELS, full=False)
    assert len(drv.link.queries) == trips
    assert r[2].state is ChannelState.ON and r[2].vmon == pytest.approx(100, abs=0.1) and r[2].vset == 100.0


def test_subset_of_channels_uses_a_comma_list(iseg):
    drv = iseg(channels=[0, 2])
    assert sorted(drv.read([0, 2], full=False)) == [0, 2]
    assert all("(@0,2)" in q for q in drv.link.queries)


# --- actions ----------------------------------------------------------------------------------
def test_vset_takes_the_sign_of_the_polarity(iseg, hv):
    hv.channels[3].polarity = "p"
    drv = iseg()
    drv.set_voltage(0, 250.0)
    drv.set_voltage(3, 250.0)
    drv.set_voltage(1, 0.0)
    assert hv.channels[0].vset == 250.0 and hv.channels[3].vset == 250.0
    assert drv.link.writes == [":VOLT -250,(@0)", ":VOLT 250,(@3)", ":VOLT 0,(@1)"]
    assert drv.link.queries == [":SYST:ERR?"] * 3  # each setting is confirmed by the error queue
    r = drv.read([0, 3], full=True)
    assert r[0].vset == 250.0 and r[3].vset == 250.0  # magnitudes


def test_polarity_unknown_is_read_before_the_first_vset(server, make_driver, hv):
    drv = make_driver(IsegDriver, tcp(server), [1], {"error_queue": False, "joined_queries": False})
    drv.connect()
    drv.link.reset()
    drv.set_voltage(1, 30.0)
    assert drv.link.log == [
        ("query", ":READ:CHAN:STATUS? (@1)"),
        ("query", ":READ:CHAN:EVENT:STATUS? (@1)"),
        ("write", ":VOLT -30,(@1)"),
    ]
    assert hv.channels[1].vset == 30.0


def test_set_current_ramps_and_configure_channel(iseg, hv):
    drv = iseg(trip_action=2, trip_time_ms=250)
    assert [(c.rup, c.rdown, c.trip_action, c.trip_time) for c in hv.channels] == [(50.0, 100.0, 2, 250.0)] * 4
    drv.set_current(2, 2.5e-5)
    drv.set_ramp(2, up=10.0, down=20.0)
    assert (hv.channels[2].iset, hv.channels[2].rup, hv.channels[2].rdown) == (2.5e-5, 10.0, 20.0)
    r = drv.read([2], full=True)[2]
    assert (r.iset, r.rampup, r.rampdown) == (2.5e-5, 10.0, 20.0)
    assert drv.link.log[:2] == [("write", ":CURR 0.000025,(@2)"), ("query", ":SYST:ERR?")]


def test_ramp_up_on_then_ramp_down_off(iseg, hv, clock):
    drv = iseg()
    drv.set_voltage(0, 200.0)
    drv.switch(0, True)
    clock.advance(2)
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.RAMP_UP and r.on and r.vmon == pytest.approx(100, abs=0.5)
    clock.advance(3)
    assert drv.read([0], full=False)[0].state is ChannelState.ON
    drv.switch(0, False)
    clock.advance(1)
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.RAMP_DOWN and not r.on and r.vmon == pytest.approx(100, abs=0.5)
    clock.advance(2)
    r = drv.read([0], full=False)[0]
    assert (r.state, r.vmon) == (ChannelState.OFF, 0.0)


def test_off_mode_kill_is_emergency_off_and_on_recovers(iseg, hv, clock):
    drv = iseg(off_mode="kill")
    drv.set_voltage(1, 300.0)
    drv.switch(1, True)
    clock.advance(10)
    drv.switch(1, False)
    assert ":VOLT EMCY OFF,(@1)" in drv.link.writes
    r = drv.read([1], full=False)[1]
    assert (r.state, r.alarms, r.vmon, r.on) == (ChannelState.OFF, ["EMCY"], 0.0, False)  # no ramp
    drv.switch(1, True)  # our own emergency off: cleared on the way
    clock.advance(1)
    r = drv.read([1], full=False)[1]
    assert r.state is ChannelState.RAMP_UP and r.alarms == []


def test_someone_elses_emergency_off_needs_clear(iseg, hv, clock):
    drv = iseg()
    hv.handle(":VOLT EMCY OFF,(@2)")  # front panel / another client
    r = drv.read([2], full=False)[2]
    assert (r.state, r.alarms) == (ChannelState.OFF, ["EMCY"])
    with pytest.raises(InstrumentError, match="emergency off.*clear first"):
        drv.switch(2, True)
    assert hv.channels[2].emcy
    drv.clear(2)
    assert not hv.channels[2].emcy and hv.channels[2].events == 0
    drv.set_voltage(2, 10.0)
    drv.switch(2, True)
    clock.advance(1)
    assert drv.read([2], full=False)[2].state is ChannelState.ON


def test_overcurrent_trips_then_clear_then_on_again(iseg, hv, clock):
    drv = iseg(trip_time_ms=200)  # trip_action 1 (ramp down) by default
    drv.set_voltage(0, 100.0)
    drv.set_current(0, 1e-5)
    drv.switch(0, True)
    clock.advance(5)
    set_now(hv, "load", 1e6, channel=0)  # 100 V would draw 100 uA
    clock.advance(0.1)
    r = drv.read([0], full=False)[0]
    assert (r.state, r.alarms, r.on) == (ChannelState.COMPLIANCE, ["CC"], True)
    assert r.vmon == pytest.approx(10, abs=0.1) and r.imon == pytest.approx(1e-5, rel=0.01)
    clock.advance(0.2)
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.TRIPPED and "TRIP" in r.alarms and not r.on
    with pytest.raises(InstrumentError, match="tripped: send clear first"):
        drv.switch(0, True)
    set_now(hv, "load", 100e6, channel=0)
    drv.clear(0)
    assert ":EVENT CLEAR,(@0)" in drv.link.writes
    clock.advance(1)
    assert drv.read([0], full=False)[0].state is ChannelState.OFF
    drv.switch(0, True)
    clock.advance(5)
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.ON and r.vmon == pytest.approx(100, abs=0.1)


def test_trip_flag_only_stays_on_and_clear_gives_compliance(iseg, hv, clock):
    drv = iseg(trip_action=0, trip_time_ms=100)
    drv.set_voltage(3, 100.0)
    drv.set_current(3, 1e-5)
    drv.switch(3, True)
    clock.advance(5)
    set_now(hv, "load", 1e6, channel=3)
    clock.advance(1)
    r = drv.read([3], full=False)[3]
    assert (r.state, r.on) == (ChannelState.TRIPPED, True)
    drv.clear(3)
    r = drv.read([3], full=False)[3]
    assert (r.state, r.alarms) == (ChannelState.COMPLIANCE, ["CC"])


def test_inhibit_is_an_error_with_alarm(iseg, hv, clock):
    drv = iseg()
    hv.schedule(parse_scenario({"events": [{"at": hv.now() + 1, "channel": 1, "set": {"inhibit": True}}]}, hv))
    clock.advance(2)
    r = drv.read([1], full=False)[1]
    assert (r.state, r.alarms) == (ChannelState.ERROR, ["INHIBIT"])


def test_polarity_option_flags_a_wrong_channel(iseg, hv):
    hv.channels[2].polarity = "p"
    drv = iseg(polarity="n")
    r = drv.read(CHANNELS, full=False)
    assert (r[2].state, r[2].alarms) == (ChannelState.ERROR, ["POLARITY"])
    assert r[1].state is ChannelState.OFF


@pytest.mark.parametrize(
    "action, args, options",
    [
        ("set_voltage", (0, 6000.1), {}),
        ("set_voltage", (0, -1.0), {}),
        ("set_voltage", (0, math.nan), {}),
        ("set_voltage", (0, 3001.0), {"vnom": 3000}),
        ("set_current", (0, 0.021), {}),
        ("set_current", (0, 0.0011), {"inom": 1e-3}),
        ("set_ramp", (0, 0.0), {}),
        ("set_ramp", (0, 1201.0), {}),
    ],
)
def test_beyond_instrument_range_raises_before_sending(iseg, hv, action, args, options):
    drv = iseg(**options)
    before = dataclasses.replace(hv.channels[0])
    with pytest.raises(InstrumentError, match="outside the instrument range|finite"):
        getattr(drv, action)(*args)
    assert drv.link.sent == 0, drv.link.log
    assert hv.channels[0] == before


def test_instrument_refusal_is_read_from_the_error_queue(iseg, hv):
    drv = iseg()
    with pytest.raises(InstrumentError, match=r"instrument refused ':CURR 0.01,\(@0\)': -222,\"Data out of range\""):
        drv.set_current(0, 0.01)  # the driver's generic range allows it; this module's 4 mA does not
    assert hv.channels[0].iset == 4e-3 and not hv.errors
    drv.set_current(0, 1e-3)
    assert hv.channels[0].iset == 1e-3
    with pytest.raises(InstrumentError, match='-113,"Undefined header"'):  # a command this firmware lacks:
        drv._command(":CONF:NO:SUCH 1,(@0)", ":VOLT -5,(@0)")  # a refusal, not a dead link
    assert hv.channels[0].vset == 0.0  # the rest of that line was discarded


def test_no_echo_on_a_lan_socket(clock, serve, make_driver):
    sim = IsegSim(clock=clock, seed=1, echo=False)
    drv = make_driver(IsegDriver, tcp(serve(sim)), CHANNELS, link={"echo": False})
    drv.connect()
    drv.set_voltage(0, 10.0)
    drv.switch(0, True)
    clock.advance(1)
    assert drv.read(CHANNELS, full=True)[0].state is ChannelState.ON


def test_config_checks():
    ch = {0: ChannelConfig(name="a", vmax=3500, imax=2e-3), 5: ChannelConfig(name="b", vmax=100, imax=1e-4)}
    errors = IsegDriver.check_config({"vnom": 3000, "inom": 1e-3, "channels": 4}, ch)
    assert errors == [
        "channels.5: iseg-shr has channels 0..3",
        "channels.0.vmax: 3500 outside the iseg-shr range 0..3000",
        "channels.0.imax: 0.002 outside the iseg-shr range 0..0.001",
    ]
    assert IsegDriver.check_config({"trip_action": 5, "trip_time_ms": 0, "echo": True}, {}) == [
        "options.trip_action: Input should be less than or equal to 4",
        "options.trip_time_ms: Input should be greater than or equal to 1",
        "options.echo: unknown option",
    ]
    assert IsegDriver.actions() == {"on", "off", "kill", "vset", "iset", "rampup", "rampdown", "clear"}


# --- link faults ------------------------------------------------------------------------------


def test_silence_garbage_and_recovery(iseg, hv, clock):
    drv = iseg(timeout=SHORT_TIMEOUT)
    hv.schedule(
        parse_scenario({"events": [{"at": hv.now() + 1, "silence": 5}, {"at": hv.now() + 10, "garbage": 5}]}, hv)
    )
    clock.advance(2)
    assert "timeout" in link_error_message(lambda: drv.read(CHANNELS, full=False))
    link_error_message(lambda: drv.set_voltage(0, 1.0))
    clock.advance(9)
    for _ in range(3):
        link_error_message(lambda: drv.read(CHANNELS, full=True))
    link_error_message(lambda: drv.switch(0, True))
    clock.advance(5)
    assert sorted(drv.read(CHANNELS, full=True)) == CHANNELS


def test_stopped_simulator_then_a_new_driver_connects(hv, server, serve, iseg):
    drv = iseg(timeout=SHORT_TIMEOUT)
    port = server.port
    server.stop()
    link_error_message(lambda: drv.read(CHANNELS, full=False))
    with pytest.raises(LinkError, match="cannot open"):
        open_link(tcp(server), settings_for(IsegDriver, tcp(server)))
    assert serve(hv, port=port).port == port  # the simulator is back on the same port
    drv2 = iseg(timeout=SHORT_TIMEOUT)
    drv2.set_voltage(1, 2.0)
    assert drv2.read([1], full=True)[1].vset == 2.0


def test_over_the_pty(clock, serve, make_driver):
    sim = IsegSim(clock=clock, seed=1)
    server = serve(sim, pty=True)
    drv = make_driver(IsegDriver, server.pty_path, CHANNELS)
    assert isinstance(drv.link.inner, SerialLink)
    assert drv.connect().startswith("iseg Spezialelektronik GmbH,")
    drv.set_voltage(1, 12.5)
    drv.switch(1, True)
    clock.advance(1)
    r = drv.read(CHANNELS, full=True)[1]
    assert r.vset == 12.5 and r.state is ChannelState.ON and sim.channels[1].vset == 12.5


def test_poll_cost_at_9600_baud(iseg, server, clock):
    drv = iseg()
    cost = measure_poll(drv, server, CHANNELS)  # bytes counted with the echo
    trips, nbytes, seconds = cost.partial, cost.wire_bytes, cost.seconds
    theory = cost.wire
    record_poll_cost(
        "iseg-shr",
        f"4 channels: {trips} round trip per poll (2 with full=True); read(full=False) "
        f"at 9600 baud took {seconds * 1000:.0f} ms; wire time {theory * 1000:.0f} ms "
        f"({nbytes} bytes incl. echo)",
    )
    assert trips == 1
    assert seconds >= theory * 0.9


def test_configured_polarity_is_enforced_not_just_reported(iseg, hv):
    """A positive channel where the config says negative would forward-bias the sensor."""
    set_now(hv, "polarity", "p", 0)
    drv = iseg(polarity="n")
    with pytest.raises(InstrumentError, match="polarity 'p', the config expects 'n'"):
        drv.set_voltage(0, 100.0)
    with pytest.raises(InstrumentError, match="polarity 'p'"):
        drv.switch(0, True)
    assert hv.channels[0].vset == 0.0 and not hv.channels[0].on
    drv.set_voltage(1, 100.0)  # channel 1 is negative, as configured
    r = drv.read([0], full=True)[0]
    assert r.state is ChannelState.ERROR and "POLARITY" in r.alarms


def test_kill_is_emergency_off_whatever_the_off_mode(iseg, hv, clock):
    drv = iseg()  # off_mode ramp
    drv.set_voltage(0, 300.0)
    drv.switch(0, True)
    clock.advance(20)
    drv.kill(0)
    assert ":VOLT EMCY OFF,(@0)" in drv.link.writes
    r = drv.read([0], full=False)[0]
    assert (r.state, r.vmon, r.on) == (ChannelState.OFF, 0.0, False)
    drv.switch(0, True)  # our own emergency off is cleared on the way back on
    clock.advance(1)
    assert drv.read([0], full=False)[0].state is ChannelState.RAMP_UP
