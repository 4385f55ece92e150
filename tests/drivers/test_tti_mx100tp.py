"""Aim-TTi MX100TP driver against the TTi simulator over TCP (socket:// through open_link), and one pty run."""

from __future__ import annotations

import dataclasses
import math

import pytest
from drvkit import SHORT_TIMEOUT, link_error_message, measure_poll, record_poll_cost, settings_for, tcp

from slowctl.config import ChannelConfig
from slowctl.drivers.link import InstrumentError, LinkError, SerialLink, open_link
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl.drivers.tti_mx100tp import TtiMx100tp as TtiDriver
from slowctl_dummy.scenario import parse_scenario
from slowctl_dummy.sims.climate import ClimateBox as ClimateSim
from slowctl_dummy.sims.tti_mx100tp import TtiMx100tp as TtiSim

CHANNELS = [0, 1, 2]  # driver channel n is output n+1


@pytest.fixture
def lv(clock):
    return TtiSim(clock=clock, seed=1)


@pytest.fixture
def server(lv, serve):
    return serve(lv)


@pytest.fixture
def tti(server, make_driver):
    """A connected driver factory: tti(**options) -> driver with a reset request log.

    The driver's own link settings, except the 10 ms pause between requests (kept in
    test_poll_cost and test_over_the_pty): the simulator does not need it, the tests run faster.
    """

    def make(channels=CHANNELS, timeout=1.0, **options):
        drv = make_driver(TtiDriver, tcp(server), channels, options, timeout=timeout, link={"min_interval": 0.0})
        drv.connect()
        drv.link.reset()
        return drv

    return make


def test_connect_identity_and_stale_errors(server, make_driver, lv):
    drv = make_driver(TtiDriver, tcp(server), CHANNELS)
    assert drv.connect() == "THURLBY THANDAR, MX100TP, 436129, 1.03-1.00-1.02"
    assert drv.link.queries == ["*IDN?", "*ESR?", "EER?"]  # reading clears both registers
    assert not drv.link.writes  # no *CLS: it would clear the limit status registers too
    assert lv.esr == 0


def test_link_settings_are_the_drivers(server):
    s = settings_for(TtiDriver, tcp(server), timeout=0.7)
    assert (s.write_termination, s.read_termination, s.xonxoff, s.rtscts) == ("\n", "\r\n", True, False)
    assert (s.baudrate, s.bytesize, s.parity, s.min_interval, s.timeout) == (9600, 8, "N", 0.01, 0.7)
    s = settings_for(TtiDriver, tcp(server), serial={"baudrate": 19200})  # baud unconfirmed: configurable
    assert s.baudrate == 19200 and s.xonxoff


def test_connect_refuses_another_instrument(clock, serve, make_driver, monkeypatch):
    server = serve(ClimateSim(clock=clock, seed=1))  # replies end LF only: no complete reply
    drv = make_driver(TtiDriver, tcp(server), CHANNELS, timeout=SHORT_TIMEOUT)
    with pytest.raises(LinkError):
        drv.connect()
    monkeypatch.setattr(TtiSim, "_idn", lambda self: "HAMEG,HMP4040,101234,HW50020001/SW2.51")
    other = TtiSim(clock=clock, seed=1)  # answers like a TTi, but another maker's identity
    drv = make_driver(TtiDriver, tcp(serve(other)), CHANNELS)
    with pytest.raises(LinkError, match="not an Aim-TTi supply: 'HAMEG,HMP4040"):
        drv.connect()


def test_connect_refuses_another_variant_and_too_few_outputs(clock, serve, make_driver):
    server = serve(TtiSim(clock=clock, seed=1, channels=2))  # a CPX400DP
    drv = make_driver(TtiDriver, tcp(server), CHANNELS, {"variant": "MX100TP"})
    with pytest.raises(LinkError, match="expected a MX100TP, found CPX400DP"):
        drv.connect()
    drv = make_driver(TtiDriver, tcp(server), CHANNELS, {"outputs": 3})
    with pytest.raises(InstrumentError, match="CPX400DP has 2 outputs, the config expects 3"):
        drv.connect()
    drv = make_driver(TtiDriver, tcp(server), [0, 1], {"outputs": 2, "variant": "CPX400DP"})
    assert "CPX400DP" in drv.connect()
    assert sorted(drv.read([0, 1], full=True)) == [0, 1]


def test_read_returns_every_channel(tti, lv):
    drv = tti()
    drv.set_voltage(0, 5.0)
    drv.set_current(0, 0.5)
    drv.set_voltage(2, 12.0)
    drv.switch(0, True)
    for full in (True, False):  # the second read takes the set values from the cache
        _check_read(drv.read(CHANNELS, full=full))


def _check_read(r):
    assert sorted(r) == CHANNELS
    for ch, c in r.items():
        assert isinstance(c, SupplyChannel)
        for name in ("vset", "vmon", "iset", "imon"):
            assert type(getattr(c, name)) is float, (ch, name)
        assert c.rampup is None and c.rampdown is None  # no hardware ramp
    assert r[0].on and r[0].state is ChannelState.ON and r[0].alarms == []
    assert (r[0].vset, r[0].iset) == (5.0, 0.5)
    assert r[0].vmon == pytest.approx(5.0, abs=0.003) and r[0].imon == pytest.approx(0.05, abs=0.001)
    assert (r[2].vset, r[2].iset, r[2].on, r[2].vmon) == (12.0, 1.0, False, 0.0)
    assert (r[1].state, r[2].state) == (ChannelState.OFF, ChannelState.OFF)


def test_settings_are_cached_between_full_reads(tti, lv):
    drv = tti()
    drv.read(CHANNELS, full=False)  # nothing cached yet: set values are read too
    assert sum(q.startswith("V") and q.endswith("?") and "O" not in q for q in drv.link.queries) == 3
    drv.link.reset()
    drv.read(CHANNELS, full=True)
    full_trips = len(drv.link.queries)
    drv.link.reset()
    lv.chan(2).vset = 7.5  # changed at the front panel
    partial = drv.read(CHANNELS, full=False)
    assert (full_trips, len(drv.link.queries)) == (6 * 3, 4 * 3)
    assert drv.link.queries[:4] == ["V1O?", "I1O?", "OP1?", "LSR1?"]
    assert partial[1].vset == 0.0  # cached
    assert drv.read(CHANNELS, full=True)[1].vset == 7.5
    drv.set_voltage(1, 2.5)  # a setting of our own is never shown stale
    assert drv.read(CHANNELS, full=False)[1].vset == 2.5


def test_settings_commands_and_their_error_check(tti, lv):
    drv = tti()
    drv.set_voltage(1, 3.3)
    drv.set_current(1, 3e-4)
    assert (lv.chan(2).vset, lv.chan(2).iset) == (3.3, 3e-4)
    assert (lv.chan(1).vset, lv.chan(1).iset) == (0.0, 1.0)
    assert drv.link.log == [("write", "V2 3.3"), ("query", "*ESR?"), ("write", "I2 0.0003"), ("query", "*ESR?")]
    with pytest.raises(InstrumentError, match=r"instrument refused 'VX 1': command error \(not understood\)$"):
        drv._command("VX 1")
    with pytest.raises(InstrumentError, match=r"'V9 1': execution error 103 \(no such output\)$"):
        drv._command("V9 1")


def test_switch_on_and_off(tti, lv):
    drv = tti()
    drv.set_voltage(1, 5.0)
    drv.switch(1, True)
    assert lv.chan(2).on and not lv.chan(1).on
    assert drv.link.log[-3:] == [("write", "OP2 1"), ("query", "*ESR?"), ("query", "OP2?")]
    r = drv.read(CHANNELS, full=False)
    assert r[1].on and r[1].state is ChannelState.ON and r[1].vmon == pytest.approx(5.0, abs=0.003)
    drv.switch(1, False)
    assert not lv.chan(2).on
    r = drv.read(CHANNELS, full=False)
    assert not r[1].on and r[1].state is ChannelState.OFF and r[1].vmon == 0.0


def test_constant_current_is_compliance(tti, lv):
    drv = tti()
    lv.set_param("load", 2.0, channel=1)
    drv.set_voltage(0, 5.0)
    drv.set_current(0, 1.0)
    drv.switch(0, True)
    r = drv.read([0], full=True)[0]
    assert r.state is ChannelState.COMPLIANCE and r.alarms == ["CC"] and r.on
    assert r.imon == pytest.approx(1.0, abs=0.002) and r.vmon == pytest.approx(2.0, abs=0.003)
    lv.set_param("load", 100.0, channel=1)
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.ON and r.alarms == []


def test_over_current_trip_then_clear(tti, lv, clock):
    drv = tti()
    drv.set_voltage(0, 10.0)
    drv.set_current(0, 1.0)
    drv.ocp[0] = 0.5
    drv.switch(0, True)
    lv.schedule(parse_scenario({"events": [{"at": 5, "channel": 1, "set": {"load": 5}}]}, lv))
    clock.advance(5)  # 10 V on 5 ohm: 1 A > OCP 0.5 A
    r = drv.read(CHANNELS, full=False)
    assert r[0].state is ChannelState.TRIPPED and r[0].alarms == ["OCP"] and not r[0].on
    assert r[1].state is ChannelState.OFF
    r = drv.read(CHANNELS, full=False)  # LSR1? read 0 now: the driver keeps the trip
    assert r[0].state is ChannelState.TRIPPED and r[0].alarms == ["OCP"]
    with pytest.raises(InstrumentError, match="output 1 did not switch on .*tripped"):
        drv.switch(0, True)
    lv.set_param("load", 100.0, channel=1)
    drv.clear(0)
    assert ("write", "TRIPRST") in drv.link.log
    r = drv.read([0], full=False)[0]
    assert r.state is ChannelState.OFF and r.alarms == [] and not r.on
    drv.switch(0, True)
    assert drv.read([0], full=False)[0].state is ChannelState.ON


def test_trip_from_before_connect_then_reset_at_the_front_panel(tti, lv):
    lv.handle("V3 10;OP3 1;OVP3 5")  # tripped while nobody was connected
    drv = tti()
    r = drv.read([2], full=True)[2]
    assert r.state is ChannelState.TRIPPED and r.alarms == ["OVP"]  # connect left the LSR alone
    lv.handle("TRIPRST")
    lv.handle("OVP3 20")
    assert drv.read([2], full=False)[2].state is ChannelState.TRIPPED  # no way to tell yet
    lv.handle("OP3 1")
    r = drv.read([2], full=False)[2]
    assert r.state is ChannelState.ON and r.alarms == []


def test_protection_levels_from_the_options(tti, lv):
    drv = tti(ovp={0: 12.5, 2: 30}, ocp={0: 0.8})
    for ch in CHANNELS:
        drv.configure_channel(ch, None, None, "ramp")
    assert (lv.chan(1).ovp, lv.chan(1).ocp, lv.chan(3).ovp) == (12.5, 0.8, 30.0)
    assert lv.chan(2).ovp == 77.0  # not configured: left alone
    assert not any(on for on in (lv.chan(n).on for n in (1, 2, 3)))
    drv = tti(ovp={1: 8.0})
    lv.handle("V2 10;OP2 1")
    with pytest.raises(InstrumentError, match="ovp 8 of output 2 is not above its present output"):
        drv.configure_channel(1, None, None, "ramp")
    assert lv.chan(2).on and lv.chan(2).ovp == 77.0  # not tripped by our start-up


def test_beyond_instrument_range_raises_before_sending(tti, lv):
    drv = tti()
    before = dataclasses.asdict(lv.chan(1))
    for action, value in [
        ("set_voltage", 70.01),
        ("set_voltage", -0.1),
        ("set_voltage", math.inf),
        ("set_voltage", math.nan),
        ("set_current", -0.1),
        ("set_current", 6.01),
    ]:  # MX100TP (from *IDN?): 6 A, not the generic 20 A
        with pytest.raises(InstrumentError, match="outside the instrument range|finite"):
            getattr(drv, action)(0, value)
        assert drv.link.sent == 0, (action, value, drv.link.log)
    assert dataclasses.asdict(lv.chan(1)) == before


def test_variant_option_sets_the_range_before_connect(clock, serve, make_driver):
    server = serve(TtiSim(clock=clock, seed=1, channels=2))
    drv = make_driver(TtiDriver, tcp(server), [0, 1], {"outputs": 2, "variant": "CPX400DP"})
    with pytest.raises(InstrumentError, match="vset 61 V outside the instrument range 0..60 V"):
        drv.set_voltage(0, 61.0)
    assert drv.link.sent == 0
    drv.connect()
    drv.set_current(1, 19.0)  # CPX400DP: up to 20 A
    assert drv.read([1], full=True)[1].iset == 19.0


@pytest.mark.parametrize(
    "error_check, message",
    [
        ("esr", r"instrument refused 'V1 65': execution error 100 \(range error"),
        ("eer", r"instrument refused 'V1 65': error 100 \(range error"),
    ],
)
def test_refused_value_is_read_from_the_error_registers(clock, serve, make_driver, error_check, message):
    lv = TtiSim(clock=clock, seed=1, variant="QL355TP")  # 35 V, unknown to the driver as a range
    drv = make_driver(TtiDriver, tcp(serve(lv)), CHANNELS, {"error_check": error_check})
    drv.connect()
    drv._range = (70.0, 20.0)  # pretend *IDN? had not told the range: the instrument refuses
    with pytest.raises(InstrumentError, match=message):
        drv.set_voltage(0, 65.0)
    assert lv.chan(1).vset == 0.0
    drv.set_voltage(0, 4.0)  # the registers were cleared by reading: the next command is clean
    assert lv.chan(1).vset == 4.0 and lv.eer == 0 and (lv.esr == 0 or error_check == "eer")


def test_stale_errors_are_not_blamed_on_the_next_command(lv, server, tti):
    raw = open_link(tcp(server), settings_for(TtiDriver, tcp(server)))
    try:
        raw.write("NO:SUCH:COMMAND")
        raw.write("V1 99")
        assert raw.query("*OPC?") == "1"
    finally:
        raw.close()
    assert lv.esr and lv.eer
    drv = tti()
    drv.set_voltage(0, 5.0)
    assert lv.chan(1).vset == 5.0


def test_setpoint_reply_without_header_option(tti, lv, monkeypatch):
    drv = tti(setpoint_header=False)
    real = drv.link.inner.query
    monkeypatch.setattr(drv.link.inner, "query", lambda r: real(r).split(" ")[-1] if r == "V1?" else real(r))
    assert drv.vset[0] == 0.0
    drv2 = tti()  # with the header expected, a bare number is a garbled reply
    monkeypatch.setattr(drv2.link.inner, "query", lambda r: "5.00" if r == "V1?" else real(r))
    with pytest.raises(LinkError, match="unexpected reply '5.00' to V1"):
        drv2.read([0], full=True)


def test_check_config():
    ch = {0: ChannelConfig(name="a", vmax=65, imax=10), 1: ChannelConfig(name="b", vmax=5, imax=1)}
    assert TtiDriver.check_config({}, ch) == []
    errors = TtiDriver.check_config({"variant": "MX100TP", "outputs": 3, "ovp": {0: 90, 3: 5}, "ocp": {1: 2}}, ch)
    assert errors == [
        "channels.0.imax: 10 outside the MX100TP range 0..6",
        "options.ovp.0: 90 outside the tti-mx100tp range 0..80",
        "options.ovp.3: channel 3 is not configured",
    ]
    errors = TtiDriver.check_config(
        {"outputs": 2, "variant": "CPX400DP", "trip_bits": {"OVP": 9}}, {2: ChannelConfig(name="c", vmax=5, imax=1)}
    )
    assert errors == ["options.trip_bits.OVP: Input should be less than or equal to 7"]
    errors = TtiDriver.check_config({"outputs": 2}, {2: ChannelConfig(name="c", vmax=80, imax=1)})
    assert errors == [
        "channels.2: tti-mx100tp has channels 0..1",
        "channels.2.vmax: 80 outside the tti-mx100tp range 0..70",
    ]


# --- link faults ---------------------------------------------------------------------


def test_silence_is_a_link_error_then_recovery(tti, lv, clock):
    drv = tti(timeout=SHORT_TIMEOUT)
    lv.schedule(parse_scenario({"events": [{"at": 10, "silence": 5}]}, lv))
    clock.advance(11)
    assert "timeout" in link_error_message(lambda: drv.read(CHANNELS, full=False))
    assert "timeout" in link_error_message(lambda: drv.set_voltage(0, 1.0))
    clock.advance(5)
    assert sorted(drv.read(CHANNELS, full=True)) == CHANNELS


def test_garbage_is_a_link_error(tti, lv, clock):
    drv = tti(timeout=SHORT_TIMEOUT)
    lv.schedule(parse_scenario({"events": [{"at": 10, "garbage": 5}]}, lv))
    clock.advance(11)
    for _ in range(5):
        link_error_message(lambda: drv.read(CHANNELS, full=True))
    link_error_message(lambda: drv.set_voltage(0, 1.0))
    link_error_message(lambda: drv.connect())
    clock.advance(5)
    assert sorted(drv.read(CHANNELS, full=True)) == CHANNELS


def test_stopped_simulator_then_a_new_driver_connects(lv, server, serve, tti):
    drv = tti(timeout=SHORT_TIMEOUT)
    port = server.port
    server.stop()
    link_error_message(lambda: drv.read(CHANNELS, full=False))
    with pytest.raises(LinkError, match="cannot open"):
        open_link(tcp(server), settings_for(TtiDriver, tcp(server)))
    again = serve(lv, port=port)
    drv2 = tti(timeout=SHORT_TIMEOUT)
    assert again.port == port
    drv2.set_voltage(1, 2.0)
    assert drv2.read([1], full=True)[1].vset == 2.0


# --- transports and cost -----------------------------------------------------------------


def test_over_the_pty(lv, serve, make_driver):
    server = serve(lv, pty=True)
    drv = make_driver(TtiDriver, server.pty_path, CHANNELS)
    assert isinstance(drv.link.inner, SerialLink)
    assert drv.connect().startswith("THURLBY THANDAR, MX100TP")
    drv.set_voltage(1, 12.5)
    drv.switch(1, True)
    r = drv.read(CHANNELS, full=True)
    assert r[1].vset == 12.5 and r[1].on and lv.chan(2).on


def test_poll_cost(lv, server, make_driver):
    drv = make_driver(TtiDriver, tcp(server), CHANNELS)  # the driver's own settings, 10 ms pauses too
    drv.connect()
    cost = measure_poll(drv, server, CHANNELS)
    full, partial, seconds, wire = cost.full, cost.partial, cost.seconds, cost.wire
    assert partial == 4 * len(CHANNELS) < full
    assert seconds >= wire * 0.9 + partial * 0.01  # the line, and 10 ms between requests
    record_poll_cost(
        "tti-mx100tp",
        f"{len(CHANNELS)} channels: {partial} round trips per poll ({full} with "
        f"full=True); read(full=False) at 9600 baud took {seconds * 1000:.0f} ms (10 ms between "
        f"requests), wire time {wire * 1000:.0f} ms ({cost.wire_bytes} bytes)",
    )


def test_start_up_protection_never_below_what_a_live_output_is_set_to(tti, lv):
    """In constant current the output sits below its set value: OVP between the two would trip it later."""
    drv = tti()
    lv.set_param("load", 1.0, channel=1)  # 10 V on 1 Ω wants 10 A: constant current at 0.4 A -> 0.4 V
    drv.set_current(0, 0.4)
    drv.set_voltage(0, 10.0)
    drv.switch(0, True)
    drv2 = tti(ovp={0: 6.0})
    with pytest.raises(InstrumentError, match="ovp 6 of output 1 is not above"):
        drv2.configure_channel(0, None, None, "ramp")
