"""Keithley 2410 / 2400 driver against the SourceMeter simulator over TCP (socket:// through open_link)."""

from __future__ import annotations

import math

import pytest
from drvkit import SHORT_TIMEOUT, link_error_message, measure_poll, record_poll_cost, settings_for, tcp

from slowctl.config import ChannelConfig
from slowctl.drivers.keithley_2410 import Keithley2410 as KeithleyDriver
from slowctl.drivers.link import InstrumentError, LinkError, SerialLink, open_link
from slowctl.drivers.readings import ChannelState
from slowctl_dummy.scenario import parse_scenario
from slowctl_dummy.sims.iseg_shr import IsegShr as IsegSim
from slowctl_dummy.sims.keithley_2410 import Keithley2410 as KeithleySim

NEG = {"polarity": "-"}


def set_now(sim, name, value):
    sim.advance()
    sim.set_param(name, value)


@pytest.fixture
def smu(clock):
    return KeithleySim(clock=clock, seed=1)


@pytest.fixture
def server(smu, serve):
    return serve(smu)


@pytest.fixture
def k2410(server, make_driver):
    """A connected driver factory: k2410(**options) -> driver with a reset request log."""

    def make(timeout=1.0, **options):
        drv = make_driver(KeithleyDriver, tcp(server), [0], {**NEG, **options}, timeout=timeout)
        drv.connect()
        drv.link.reset()
        return drv

    return make


def bias(drv, volts=100.0, compliance=1e-5):
    drv.set_current(0, compliance)
    drv.set_voltage(0, volts)
    drv.switch(0, True)


# --- connect ----------------------------------------------------------------------------------
def test_connect_identifies_and_prepares_without_touching_the_output(server, smu, make_driver):
    smu.auto_clear, smu.elements = True, ["VOLT", "CURR", "RES", "TIME", "STAT"]
    smu.handle(":SOUR:VOLT -50;:OUTP ON")
    drv = make_driver(KeithleyDriver, tcp(server), [0], NEG)
    assert drv.connect().startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2410,4123456,")
    assert drv.link.log == [
        ("query", "*IDN?"),
        ("query", ":SOUR:FUNC?;:OUTP?"),
        ("write", '*CLS;:SOUR:CLE:AUTO OFF;:SENS:FUNC:CONC ON;:SENS:FUNC "VOLT","CURR";:FORM:ELEM VOLT,CURR'),
        ("query", ":SYST:ERR?"),
    ]
    assert (smu.auto_clear, smu.sense, smu.elements) == (False, {"VOLT", "CURR"}, ["VOLT", "CURR"])
    assert (smu.output, smu.vset) == (True, -50.0)
    s = settings_for(KeithleyDriver, tcp(server), timeout=0.7)
    assert (s.write_termination, s.read_termination, s.echo, s.baudrate, s.timeout) == ("\n", "\n", False, 9600, 0.7)


def test_connect_refuses_another_instrument_and_another_variant(clock, serve, make_driver):
    iseg = serve(IsegSim(clock=clock, seed=1, echo=False))
    with pytest.raises(LinkError, match="not a Keithley SourceMeter"):
        make_driver(KeithleyDriver, tcp(iseg), [0], NEG).connect()
    k2400 = serve(KeithleySim(clock=clock, seed=1, variant="2400"))
    with pytest.raises(LinkError, match="'MODEL 2400' is not the configured variant 2410"):
        make_driver(KeithleyDriver, tcp(k2400), [0], NEG).connect()
    drv = make_driver(KeithleyDriver, tcp(k2400), [0], {**NEG, "variant": "2400"})
    assert "MODEL 2400" in drv.connect()


def test_current_source_is_switched_to_voltage_only_while_off(smu, server, make_driver):
    smu.handle(":SOUR:FUNC CURR")
    drv = make_driver(KeithleyDriver, tcp(server), [0], NEG)
    drv.connect()
    assert smu.function == "VOLT"
    smu.handle(":SOUR:FUNC CURR;:OUTP ON")
    drv2 = make_driver(KeithleyDriver, tcp(server), [0], NEG)
    with pytest.raises(InstrumentError, match="sources CURR with the output on"):
        drv2.connect()
    assert (smu.function, smu.output) == ("CURR", True)


# --- reading and actions ----------------------------------------------------------------------
def test_off_poll_is_one_short_line(k2410):
    drv = k2410()
    r = drv.read([0], full=True)[0]
    assert drv.link.queries == [":SOUR:VOLT?;:SENS:CURR:PROT?;:SENS:FUNC?;:OUTP?"]
    assert (r.on, r.state, r.vset, r.iset, r.vmon, r.imon, r.alarms) == (
        False,
        ChannelState.OFF,
        0.0,
        105e-6,
        0.0,
        0.0,
        [],
    )
    assert (r.rampup, r.rampdown) == (None, None)
    drv.link.reset()
    drv.read([0], full=False)
    assert drv.link.queries == [":OUTP?"]


def test_bias_is_sent_with_the_polarity_and_read_as_magnitudes(k2410, smu, clock):
    drv = k2410()
    bias(drv, 150.0, 2e-5)
    assert drv.link.writes == ["*CLS;:SENS:CURR:PROT 0.00002", "*CLS;:SOUR:VOLT -150", "*CLS;:OUTP ON"]
    assert drv.link.queries == [":SYST:ERR?"] * 3
    assert (smu.vset, smu.compliance, smu.output) == (-150.0, 2e-5, True)
    clock.advance(0.1)
    drv.read([0], full=True)
    drv.link.reset()
    r = drv.read([0], full=False)[0]
    assert drv.link.queries == [":OUTP?;:READ?;:SENS:CURR:PROT:TRIP?"]  # one round trip while on
    assert (r.on, r.state, r.alarms, r.vset, r.iset) == (True, ChannelState.ON, [], 150.0, 2e-5)
    assert r.vmon == pytest.approx(150, abs=0.01) and r.imon == pytest.approx(1.5e-6, rel=0.01)
    assert drv.vset[0] == 150.0 and drv.iset[0] == 2e-5
    drv.switch(0, False)
    r = drv.read([0], full=False)[0]
    assert (r.on, r.state, r.vmon, r.imon) == (False, ChannelState.OFF, 0.0, 0.0)


def test_positive_polarity(k2410, smu, clock):
    drv = k2410(polarity="+")
    bias(drv, 20.0)
    clock.advance(0.1)
    assert smu.vset == 20.0
    r = drv.read([0], full=True)[0]
    assert r.state is ChannelState.ON and r.vmon == pytest.approx(20, abs=0.01)


def test_compliance_state_and_recovery(k2410, smu, clock):
    drv = k2410()
    bias(drv, 200.0, 1e-5)
    clock.advance(0.1)
    set_now(smu, "load", 1e6)  # 200 V would draw 200 uA
    r = drv.read([0], full=False)[0]
    assert (r.state, r.alarms, r.on) == (ChannelState.COMPLIANCE, ["COMPLIANCE"], True)
    assert r.imon == pytest.approx(1e-5, rel=0.01) and r.vmon == pytest.approx(10, abs=0.01)  # sagged
    drv.clear(0)  # nothing latched: clear changes nothing at the output
    assert smu.output and drv.link.writes[-1] == "*CLS"
    set_now(smu, "load", 100e6)
    r = drv.read([0], full=False)[0]
    assert (r.state, r.alarms) == (ChannelState.ON, []) and r.vmon == pytest.approx(200, abs=0.01)


def test_output_switched_behind_the_drivers_back(k2410, smu, clock):
    drv = k2410()
    drv.set_voltage(0, 30.0)
    drv.read([0], full=False)
    smu.handle(":OUTP ON")  # front panel
    clock.advance(0.1)
    drv.link.reset()
    r = drv.read([0], full=False)[0]
    assert drv.link.queries == [":OUTP?", ":READ?;:SENS:CURR:PROT:TRIP?"]
    assert r.on and r.vmon == pytest.approx(30, abs=0.01)
    smu.handle(":OUTP OFF")
    drv.link.reset()
    r = drv.read([0], full=False)[0]  # its :READ? is refused (803): one answer fewer, no error
    assert drv.link.queries == [":OUTP?;:READ?;:SENS:CURR:PROT:TRIP?"]
    assert (r.on, r.state, r.vmon) == (False, ChannelState.OFF, 0.0)


def test_a_value_not_measured_is_not_available(k2410, smu, clock):
    drv = k2410()
    bias(drv, 50.0)
    smu.handle(':SENS:FUNC:OFF "CURR"')  # someone reconfigured the measurement
    clock.advance(0.1)
    r = drv.read([0], full=False)[0]
    # CURR neither measured nor sourced: +9.91e37; VOLT is still sensed: a measurement
    assert r.imon is None and r.vmon == pytest.approx(50.0, abs=0.01)


def test_a_sourced_voltage_is_not_reported_as_measured(k2410, smu, clock):
    drv = k2410()
    bias(drv, 50.0)
    clock.advance(0.1)
    assert drv.read([0], full=True)[0].vmon == pytest.approx(50.0, abs=0.01)  # sensed: a measurement
    smu.handle(':SENS:FUNC:OFF "VOLT"')  # someone turned voltage sensing off at the front panel
    assert smu.handle(":FORM:ELEM VOLT,CURR;:READ?").startswith(b"-5.000000E+01,")  # the programmed value
    r = drv.read([0], full=True)[0]  # a full read asks :SENS:FUNC? with the settings
    assert r.vmon is None and r.imon == pytest.approx(5e-7, rel=0.01) and r.vset == 50.0
    assert drv.read([0], full=False)[0].vmon is None  # remembered until the next full read
    smu.handle(':SENS:FUNC "VOLT"')
    assert drv.read([0], full=True)[0].vmon == pytest.approx(50.0, abs=0.01)


def test_wrong_polarity_is_an_error_state(k2410, smu, clock):
    drv = k2410()
    smu.handle(":SOUR:VOLT 40;:OUTP ON")  # +40 V on a channel configured "-"
    clock.advance(0.1)
    r = drv.read([0], full=True)[0]
    assert (r.state, r.alarms, r.vset) == (ChannelState.ERROR, ["POLARITY"], 40.0)


@pytest.mark.parametrize(
    "action, args, options",
    [
        ("set_voltage", (0, 1100.5), {}),
        ("set_voltage", (0, 210.5), {"variant": "2400"}),
        ("set_voltage", (0, -5.0), {}),
        ("set_voltage", (0, math.inf), {}),
        ("set_current", (0, 1.06), {}),
    ],
)
def test_beyond_instrument_range_raises_before_sending(clock, serve, make_driver, action, args, options):
    sim = KeithleySim(clock=clock, seed=1, variant=options.get("variant", "2410"))
    drv = make_driver(KeithleyDriver, tcp(serve(sim)), [0], {**NEG, **options})
    drv.connect()
    drv.link.reset()
    with pytest.raises(InstrumentError, match="outside the instrument range|finite"):
        getattr(drv, action)(*args)
    assert drv.link.sent == 0 and (sim.vset, sim.compliance) == (0.0, 105e-6)


def test_instrument_refusals_name_the_error(k2410, smu):
    drv = k2410()
    drv.set_voltage(0, 500.0)
    with pytest.raises(InstrumentError, match=r'SENS:CURR:PROT 0.05.*-221,"Settings conflict"'):
        drv.set_current(0, 0.05)  # above 21 mA at 500 V: the 2410's power envelope
    assert smu.compliance == 105e-6
    set_now(smu, "interlock_open", True)
    with pytest.raises(InstrumentError, match=r'OUTP ON.*802,"OUTPUT blocked by output enable"'):
        drv.switch(0, True)
    set_now(smu, "interlock_open", False)
    drv.switch(0, True)  # the old error does not stick to the next command
    assert smu.output
    with pytest.raises(InstrumentError, match='-113,"Undefined header"'):  # a refusal, not a dead link
        drv._command(":SOUR:VOLT:NO:SUCH 1")


def test_stale_error_is_not_blamed_on_the_next_command(k2410, smu):
    drv = k2410()
    smu.handle(":READ?")  # 803 left in the queue
    assert smu.errors
    drv.set_voltage(0, 10.0)
    assert smu.vset == -10.0


@pytest.mark.parametrize(
    "terminator, link",
    [
        ("CRLF", {}),  # the trailing CR is stripped
        ("CR", {"write_termination": "\r", "read_termination": "\r"}),
    ],
)
def test_terminators(clock, serve, make_driver, terminator, link):
    sim = KeithleySim(clock=clock, seed=1, terminator=terminator)
    drv = make_driver(KeithleyDriver, tcp(serve(sim)), [0], NEG, link=link)
    drv.connect()
    bias(drv, 5.0)
    clock.advance(0.1)
    r = drv.read([0], full=True)[0]
    assert r.state is ChannelState.ON and r.vmon == pytest.approx(5, abs=0.01)


def test_one_query_per_round_trip_fallback(k2410, clock):
    drv = k2410(joined_queries=False)
    bias(drv, 60.0)
    clock.advance(0.1)
    drv.link.reset()
    r = drv.read([0], full=True)[0]
    assert drv.link.queries == [
        ":SOUR:VOLT?",
        ":SENS:CURR:PROT?",
        ":SENS:FUNC?",
        ":OUTP?",
        ":READ?",
        ":SENS:CURR:PROT:TRIP?",
    ]
    assert r.vmon == pytest.approx(60, abs=0.01) and r.vset == 60.0


def test_config_checks():
    ok = {0: ChannelConfig(name="sensor", vmax=200, imax=1e-4, rampup=10, ramp_step=5)}
    assert KeithleyDriver.check_config(NEG, ok) == []
    assert KeithleyDriver.check_config(NEG, {0: ChannelConfig(name="s", vmax=1200, imax=1, rampup=1)}) == [
        "channels.0.vmax: 1200 outside the keithley-2410 range 0..1100"
    ]  # said once
    assert KeithleyDriver.check_config({}, ok) == ["options.polarity: Field required"]
    bad = {0: ChannelConfig(name="sensor", vmax=500, imax=1.1), 1: ChannelConfig(name="x", vmax=1, imax=1, rampup=1)}
    assert KeithleyDriver.check_config({**NEG, "variant": "2400"}, bad) == [
        "channels.1: keithley-2410 has channels 0..0",
        "channels.0.vmax: 500 outside the keithley-2410 range 0..210",
        "channels.0.imax: 1.1 outside the keithley-2410 range 0..1.05",
        "channels.0.rampup: required: the 2400 has no hardware ramp, without a software ramp every vset is "
        "a step (set rampup and ramp_step)",
    ]
    assert KeithleyDriver.actions() == {"on", "off", "kill", "vset", "iset", "clear"}  # ramps: the software ramp's
    assert not KeithleyDriver.hardware_ramp


# --- link faults ------------------------------------------------------------------------------


def test_silence_garbage_and_recovery(k2410, smu, clock):
    drv = k2410(timeout=SHORT_TIMEOUT)
    smu.schedule(
        parse_scenario({"events": [{"at": smu.now() + 1, "silence": 5}, {"at": smu.now() + 10, "garbage": 5}]}, smu)
    )
    clock.advance(2)
    assert "timeout" in link_error_message(lambda: drv.read([0], full=False))
    link_error_message(lambda: drv.set_voltage(0, 1.0))
    clock.advance(9)
    for _ in range(3):
        link_error_message(lambda: drv.read([0], full=True))
    clock.advance(5)
    assert drv.read([0], full=True)[0].state is ChannelState.OFF


def test_stopped_simulator_then_a_new_driver_connects(smu, server, serve, k2410):
    drv = k2410(timeout=SHORT_TIMEOUT)
    port = server.port
    server.stop()
    link_error_message(lambda: drv.read([0], full=False))
    with pytest.raises(LinkError, match="cannot open"):
        open_link(tcp(server), settings_for(KeithleyDriver, tcp(server)))
    assert serve(smu, port=port).port == port
    drv2 = k2410(timeout=SHORT_TIMEOUT)
    drv2.set_voltage(0, 2.0)
    assert drv2.read([0], full=True)[0].vset == 2.0


def test_over_the_pty(clock, serve, make_driver):
    sim = KeithleySim(clock=clock, seed=1)
    server = serve(sim, pty=True)
    drv = make_driver(KeithleyDriver, server.pty_path, [0], NEG)
    assert isinstance(drv.link.inner, SerialLink)
    assert "MODEL 2410" in drv.connect()
    bias(drv, 12.5)
    clock.advance(0.1)
    r = drv.read([0], full=True)[0]
    assert r.vset == 12.5 and r.state is ChannelState.ON and sim.vset == -12.5


def test_poll_cost_at_9600_baud(k2410, server, clock):
    drv = k2410()
    bias(drv, 100.0)
    clock.advance(0.1)
    cost = measure_poll(drv, server, [0])
    trips, nbytes, seconds = cost.partial, cost.wire_bytes, cost.seconds
    theory = cost.wire
    record_poll_cost(
        "keithley-2410",
        f"1 channel, output on: {trips} round trip per poll (1 with full=True, "
        f"output off: ':OUTP?' only); read(full=False) at 9600 baud took "
        f"{seconds * 1000:.0f} ms; wire time {theory * 1000:.0f} ms ({nbytes} bytes)",
    )
    assert trips == 1
    assert seconds >= theory * 0.9


def test_no_step_through_zero_when_the_front_panel_set_the_other_sign(k2410, smu):
    """Config '-', but someone set +100 V at the panel with the output on: a ramp step to -x would jump 100+x V."""
    drv = k2410()
    smu.vset, smu.output = 100.0, True
    r = drv.read([0], full=True)[0]
    assert "POLARITY" in r.alarms
    with pytest.raises(InstrumentError, match="opposite to the configured polarity '-': switch it off first"):
        drv.set_voltage(0, 95.0)
    assert smu.vset == 100.0
    drv.switch(0, False)  # switching off is always allowed
    assert not smu.output


def test_without_joined_lines_every_setting_travels_alone(k2410, smu):
    drv = k2410(joined_queries=False)
    drv.set_voltage(0, 5.0)
    assert drv.link.writes == ["*CLS", ":SOUR:VOLT -5"] and not any(";" in q for q in drv.link.queries)
    assert smu.vset == -5.0
