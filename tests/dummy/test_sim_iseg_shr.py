"""iseg SHR simulator: echo, SCPI replies and errors over TCP, physics with a fake clock."""

from __future__ import annotations

import re

import pytest

from slowctl_dummy.cli import _instrument, _parser
from slowctl_dummy.scenario import parse_scenario
from slowctl_dummy.sims.iseg_shr import IsegShr

POS, ON, RAMP, EMCY, CC, CV, INHIBIT, TRIP = (1 << b for b in (0, 3, 4, 5, 6, 7, 12, 13))
RAMP_UP, RAMP_DOWN = 1 << 19, 1 << 20
ON_TO_OFF, END_OF_RAMP = 1 << 3, 1 << 4
VOLTS = re.compile(r"-?\d\.\d{5}E3V")
AMPS = re.compile(r"-?\d+\.\d{4}E-6A")


def q(sim: IsegShr, line: str) -> str | None:
    """The reply line after the echo (None: echo only)."""
    raw = sim.handle(line)
    assert raw is not None
    lines = raw.decode().split("\r\n")
    assert lines[-1] == "" and lines[0] == line, raw  # every line is echoed first, CR LF terminated
    assert len(lines) in (2, 3), raw
    return lines[1] if len(lines) == 3 else None


def status(sim: IsegShr, ch: int = 0) -> int:
    return int(q(sim, f":READ:CHAN:STATUS? (@{ch})"))


def set_now(sim: IsegShr, name: str, value: object, channel: int | None = None) -> None:
    """A scenario parameter changes now: the physics is first integrated up to now."""
    sim.advance()
    sim.set_param(name, value, channel)


def volts(text: str) -> float:
    assert VOLTS.fullmatch(text), text
    return float(text[:-1])


@pytest.fixture
def hv(clock):
    return IsegShr(clock=clock, seed=1)


def test_echo_then_reply_over_tcp(serve, connect):
    client = connect(serve(IsegShr(seed=1)))
    assert client.ask("*IDN?") == b"*IDN?\r\n"
    assert client.read() == b"iseg Spezialelektronik GmbH,SHR 4060,5200123,1.23\r\n"
    assert client.ask(":VOLT 100,(@1)", term=b"\n") == b":VOLT 100,(@1)\r\n"  # bare LF accepted
    assert client.ask(":SYST:ERR?") == b":SYST:ERR?\r\n"
    assert client.read() == b'-222,"Data out of range"\r\n'  # +100 V on a negative channel
    assert client.no_reply(":VOLT -100,(@1)") is False  # the echo
    assert client.ask(":SYST:ERR?") == b":SYST:ERR?\r\n" and client.read() == b'0,"No error"\r\n'


def test_no_echo_on_the_lan_socket_and_echo_switch(serve, connect):
    sim = IsegShr(seed=1, echo=False)
    client = connect(serve(sim))
    assert client.ask("*IDN?").startswith(b"iseg Spezialelektronik GmbH,")
    assert client.no_reply(":VOLT -100,(@0)")  # a setting says nothing at all
    assert client.ask(":READ:VOLT? (@0)") == b"-0.10000E3V\r\n"
    assert client.no_reply(":CONF:SERIAL:ECHO 1")  # arrived before the echo was on: not echoed
    assert client.ask(":CONF:SERIAL:ECHO?") == b":CONF:SERIAL:ECHO?\r\n" and client.read() == b"1\r\n"


@pytest.mark.parametrize(
    "bad, error",
    [
        (":FOO 1,(@0)", '-113,"Undefined header"'),
        (":MEAS:VOLT (@0)", '-113,"Undefined header"'),  # query-only header
        (":VOLT", '-109,"Missing parameter"'),
        (":VOLT 100", '-109,"Missing parameter"'),  # no channel list
        (":VOLT abc,(@0)", '-104,"Data type error"'),
        (":VOLT -100,(@x)", '-104,"Data type error"'),
        (":VOLT -100,(@4)", '-222,"Data out of range"'),  # a channel the module lacks
        (":VOLT -6001,(@0)", '-222,"Data out of range"'),
        (":VOLT 100,(@0)", '-222,"Data out of range"'),  # sign against the (negative) polarity
        (":CURR 0.005,(@0)", '-222,"Data out of range"'),  # above the nominal 4 mA
        (":CONF:RAMP:VOLT:UP 1201,(@0)", '-222,"Data out of range"'),
        (":CONF:TRIP:ACTION 5,(@0)", '-222,"Data out of range"'),
        (":CONF:TRIP:ACTION 1.5,(@0)", '-224,"Illegal parameter value"'),
        (":CONF:TRIP:TIME 4096,(@0)", '-222,"Data out of range"'),
        (":CONF:OUTP:POL x,(@0)", '-224,"Illegal parameter value"'),
        (":MEAS:VOLT? (@0-4)", '-222,"Data out of range"'),
    ],
)
def test_errors_give_the_echo_only_and_go_to_the_queue(hv, bad, error):
    assert q(hv, bad) is None
    assert q(hv, ":SYST:ERR?") == error
    assert q(hv, ":SYST:ERR?") == '0,"No error"'


def test_header_error_discards_the_rest_of_the_line(hv):
    assert q(hv, ":VOLT -10,(@0);:BOGUS;:VOLT -20,(@0)") is None
    assert q(hv, ":READ:VOLT? (@0)") == "-0.01000E3V"


def test_channel_lists_joined_queries_and_formats(hv):
    q(hv, ":VOLT -500,(@0);:VOLT -1234,(@2);:CURR 1e-4,(@0-3);:CONF:RAMP:VOLT:UP 20,(@0,2)")
    reply = q(hv, ":READ:VOLT? (@0-3);:READ:CURR? (@0,3);:CONF:RAMP:VOLT:UP? (@0-1,2);:MEAS:VOLT? (@1)")
    vset, iset, rup, vmon = reply.split(";")
    assert vset == "-0.50000E3V,0.00000E3V,-1.23400E3V,0.00000E3V"
    assert iset == "100.0000E-6A,100.0000E-6A"
    assert rup == "0.02000E3V/s,0.05000E3V/s,0.02000E3V/s"
    assert vmon == "0.00000E3V"
    assert q(hv, ":READ:VOLT?(@2)") == "-1.23400E3V"  # no space before the list
    assert q(hv, ":READ:VOLT:NOM? (@0);:READ:CURR:NOM? (@0);:CONF:TRIP:TIME? (@0)") == "6.00000E3V;4000.0000E-6A;100ms"
    assert (
        q(hv, ":CONF:RAMP:VOLT:DO 30,(@1);:CONF:RAMP:VOLT:DOWN? (@1);:READ:RAMP:VOLT? (@0)")
        == "0.03000E3V/s;0.02000E3V/s"
    )


def test_ramp_up_and_down_with_status_bits(hv, clock):
    q(hv, ":CONF:RAMP:VOLT:UP 50,(@0);:CONF:RAMP:VOLT:DOWN 100,(@0);:VOLT -500,(@0)")
    assert status(hv) == 0  # negative polarity, off
    q(hv, ":VOLT ON,(@0)")
    clock.advance(4)
    assert volts(q(hv, ":MEAS:VOLT? (@0)")) == pytest.approx(-200, abs=0.2)
    assert status(hv) == ON | RAMP | RAMP_UP
    assert q(hv, ":READ:VOLT:ON? (@0-1)") == "1,0"
    clock.advance(6.5)
    assert volts(q(hv, ":MEAS:VOLT? (@0)")) == pytest.approx(-500, abs=0.2)
    assert status(hv) == ON | CV
    amps = q(hv, ":MEAS:CURR? (@0)")
    assert AMPS.fullmatch(amps) and float(amps[:-1]) == pytest.approx(-5e-6, rel=0.01)  # 500 V on 100 MOhm
    q(hv, ":VOLT OFF,(@0)")
    clock.advance(2)
    assert volts(q(hv, ":MEAS:VOLT? (@0)")) == pytest.approx(-300, abs=0.2)
    assert status(hv) == RAMP | RAMP_DOWN
    clock.advance(3.5)
    assert q(hv, ":MEAS:VOLT? (@0);:MEAS:CURR? (@0)") == "0.00000E3V;0.0000E-6A"
    assert status(hv) == 0


@pytest.mark.parametrize(
    "action, on_after, vout_after",
    [
        (0, True, 10.0),  # flag only: stays on, current limited
        (1, False, 10.0 - 100 * 0.05),  # ramp down at 100 V/s: 50 ms after the trip
        (2, False, 0.0),  # off without ramp
        (3, False, 0.0),  # the whole module off
    ],
)
def test_current_limit_then_delayed_trip(hv, clock, action, on_after, vout_after):
    q(hv, f":CONF:TRIP:ACTION {action},(@0-1);:CONF:TRIP:TIME 200,(@0);:CONF:RAMP:VOLT:DOWN 100,(@0)")
    q(hv, ":VOLT -100,(@0-1);:CURR 1e-5,(@0);:VOLT ON,(@0-1)")
    clock.advance(10)  # both at 100 V
    set_now(hv, "load", 1e6, channel=0)  # 100 V would draw 100 uA > 10 uA
    clock.advance(0.1)
    assert status(hv) == ON | CC
    assert volts(q(hv, ":MEAS:VOLT? (@0)")) == pytest.approx(-10, abs=0.1)  # V = Iset * R
    assert float(q(hv, ":MEAS:CURR? (@0)")[:-1]) == pytest.approx(-10e-6, rel=0.01)  # = Iset
    clock.advance(0.1 + 0.05)  # 200 ms in constant current + 50 ms
    word = status(hv)
    assert bool(word & TRIP) and bool(word & ON) == on_after
    assert int(q(hv, ":READ:CHAN:EVENT:STATUS? (@0)")) & TRIP
    assert abs(volts(q(hv, ":MEAS:VOLT? (@0)"))) == pytest.approx(vout_after, abs=0.1)
    other_on = q(hv, ":READ:VOLT:ON? (@1)") == "1"
    assert other_on == (action != 3)


def test_trip_disabled_stays_in_constant_current(hv, clock):
    q(hv, ":CONF:TRIP:ACTION 4,(@0);:CONF:TRIP:TIME 1,(@0);:VOLT -100,(@0);:CURR 1e-5,(@0);:VOLT ON,(@0)")
    set_now(hv, "load", 1e6, channel=0)
    clock.advance(60)
    assert status(hv) == ON | CC


def test_after_a_trip_the_event_must_be_cleared_before_it_ramps_again(hv, clock):
    q(hv, ":CONF:TRIP:ACTION 1,(@0);:CONF:TRIP:TIME 100,(@0);:VOLT -100,(@0);:CURR 1e-5,(@0);:VOLT ON,(@0)")
    set_now(hv, "load", 1e6, channel=0)
    clock.advance(5)
    assert status(hv) == TRIP
    set_now(hv, "load", 100e6, channel=0)
    q(hv, ":VOLT ON,(@0)")  # ignored while the trip is latched
    clock.advance(1)
    assert status(hv) == TRIP and q(hv, ":MEAS:VOLT? (@0)") == "0.00000E3V"
    q(hv, ":EVENT CLEAR,(@0)")
    assert status(hv) == 0 and q(hv, ":READ:CHAN:EVENT:STATUS? (@0)") == "0"
    q(hv, ":VOLT ON,(@0)")
    clock.advance(1)
    assert status(hv) & ON and volts(q(hv, ":MEAS:VOLT? (@0)")) < -40


def test_event_bits_can_be_reset_one_by_one(hv, clock):
    q(hv, ":CONF:TRIP:ACTION 0,(@0);:VOLT -100,(@0);:CURR 1e-5,(@0);:VOLT ON,(@0)")
    set_now(hv, "load", 1e6, channel=0)
    clock.advance(1)
    assert int(q(hv, ":READ:CHAN:EVENT:STATUS? (@0)")) == TRIP | CC
    q(hv, f":EVENT {CC},(@0)")
    assert int(q(hv, ":READ:CHAN:EVENT:STATUS? (@0)")) == TRIP and status(hv) & TRIP


def test_emergency_off_and_clear(hv, clock):
    q(hv, ":VOLT -100,(@1);:VOLT ON,(@1)")
    clock.advance(5)
    q(hv, ":VOLT EMCY OFF,(@1)")
    assert status(hv, 1) == EMCY and q(hv, ":MEAS:VOLT? (@1)") == "0.00000E3V"  # no ramp
    q(hv, ":VOLT ON,(@1)")  # ignored in emergency off
    clock.advance(1)
    assert status(hv, 1) == EMCY
    q(hv, ":VOLT EMCY CLR,(@1)")
    # the events stay: emergency off, and before it the end of the ramp up and the on-to-off change
    assert status(hv, 1) == 0 and int(q(hv, ":READ:CHAN:EVENT:STATUS? (@1)")) == EMCY | END_OF_RAMP | ON_TO_OFF
    q(hv, ":VOLT ON,(@1)")
    clock.advance(1)
    assert status(hv, 1) & ON


def test_cls_clears_the_error_queue_and_every_channels_events(hv, clock):
    q(hv, ":CONF:TRIP:ACTION 2,(@0-1);:VOLT -100,(@0-1);:CURR 1e-5,(@0-1);:VOLT ON,(@0-1);:BOGUS")
    set_now(hv, "load", 1e6)
    clock.advance(1)
    assert status(hv, 0) == TRIP and status(hv, 1) == TRIP
    q(hv, "*CLS")
    assert q(hv, ":READ:CHAN:STATUS? (@0-1);:READ:CHAN:EVENT:STATUS? (@0-1);:SYST:ERR?") == '0,0;0,0;0,"No error"'


def test_rst_ramps_down_and_resets_set_values(hv, clock):
    q(hv, ":VOLT -100,(@2);:CURR 1e-5,(@2);:VOLT ON,(@2)")
    clock.advance(5)
    q(hv, "*RST")
    assert q(hv, ":READ:VOLT? (@2);:READ:CURR? (@2);:READ:VOLT:ON? (@2);*OPC?") == "0.00000E3V;4000.0000E-6A;0;1"
    assert status(hv, 2) == RAMP | RAMP_DOWN


def test_polarity_switch_only_when_off_and_discharged(hv, clock):
    assert q(hv, ":CONF:OUTP:POL? (@0-1)") == "n,n"
    q(hv, ":CONF:OUTP:POL p,(@1)")
    assert status(hv, 1) == POS
    q(hv, ":VOLT 200,(@1);:VOLT ON,(@1)")
    clock.advance(10)
    assert volts(q(hv, ":MEAS:VOLT? (@1)")) == pytest.approx(200, abs=0.2)
    q(hv, ":CONF:OUTP:POL n,(@1)")
    assert q(hv, ":SYST:ERR?") == '-221,"Settings conflict"'


def test_warmer_sensor_leaks_more_and_breakdown_is_steep(hv, clock):
    q(hv, ":VOLT -100,(@0-1);:VOLT ON,(@0-1)")
    clock.advance(5)
    i20 = abs(float(q(hv, ":MEAS:CURR? (@0)")[:-1]))
    set_now(hv, "temperature", 34.0, channel=0)
    set_now(hv, "breakdown", 110.0, channel=1)
    i34, ibd = (abs(float(x[:-1])) for x in q(hv, ":MEAS:CURR? (@0-1)").split(","))
    assert i34 == pytest.approx(4 * i20, rel=0.02)  # doubles every 7 degC
    assert ibd > 3 * i20  # 100 V close to a 110 V breakdown


def test_inhibit_switches_off_without_ramp(hv, clock):
    q(hv, ":VOLT -100,(@0);:VOLT ON,(@0)")
    clock.advance(5)
    events = parse_scenario({"events": [{"at": hv.now() + 1, "channel": 0, "set": {"inhibit": True}}]}, hv)
    hv.schedule(events)
    clock.advance(1.01)
    assert status(hv) == INHIBIT and q(hv, ":MEAS:VOLT? (@0)") == "0.00000E3V"
    assert int(q(hv, ":READ:CHAN:EVENT:STATUS? (@0)")) & INHIBIT
    q(hv, ":VOLT ON,(@0)")  # refused while inhibited
    assert not status(hv) & ON


def test_scenario_silence_drops_even_the_echo_and_garbage_garbles_it(clock, serve, connect):
    sim = IsegShr(clock=clock, seed=1)
    sim.schedule(parse_scenario({"events": [{"at": 5, "silence": 5}, {"at": 20, "garbage": 5}]}, sim))
    client = connect(serve(sim))
    clock.advance(6)
    assert client.no_reply("*IDN?")
    clock.advance(15)
    line = client.ask("*IDN?")
    assert line.endswith(b"\r\n") and line != b"*IDN?\r\n"
    assert client.no_reply("", wait=0.1)  # one garbled line only: no echo and no reply after it


def test_parameters_and_channels(clock):
    assert IsegShr(channels=8).n_channels == 8
    with pytest.raises(ValueError, match="channels: 9 out of range"):
        IsegShr(channels=9)
    with pytest.raises(ValueError, match="polarity"):
        IsegShr(polarity="+")
    sim = IsegShr(clock=clock, polarity="p", channels=2)
    assert q(sim, ":READ:CHAN:STATUS? (@0-1)") == "1,1"
    assert q(sim, "*IDN?") == "iseg Spezialelektronik GmbH,SHR 2060,5200123,1.23"


def test_cli_option_turns_the_echo_off():
    args = _parser("slowctl sim").parse_args(
        ["iseg-shr", "--tcp", "127.0.0.1:0", "--option", "echo=false", "--channels", "2"]
    )
    inst = _instrument(args)
    assert inst.echo is False and inst.n_channels == 2
    assert inst.handle("*IDN?").startswith(b"iseg")


def test_cli_rejects_an_unknown_option(capsys):
    from slowctl_dummy.cli import main

    assert main(["iseg-shr", "--tcp", "127.0.0.1:0", "--option", "ecko=false"]) == 2
    assert "--option ecko: not an option of iseg-shr" in capsys.readouterr().err
    assert main(["iseg-shr", "--tcp", "127.0.0.1:0", "--option", "echo"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("request_", "query", "reply", "held"),
    [
        # the set voltage is held at 10 mV, what the %.5fE3V reply can show
        (":VOLT 123.454,(@1)", ":READ:VOLT? (@1)", "0.12345E3V", 123.45),
        (":VOLT 123.456,(@1)", ":READ:VOLT? (@1)", "0.12346E3V", 123.46),
        (":VOLT 1234.567,(@1)", ":READ:VOLT? (@1)", "1.23457E3V", 1234.57),
        # ramps from 1 V/s at 10 mV/s, below at 1 mV/s
        (":CONF:RAMP:VOLT:UP 12.344,(@1)", ":CONF:RAMP:VOLT:UP? (@1)", "0.01234E3V/s", 12.34),
        (":CONF:RAMP:VOLT:DOWN 12.346,(@1)", ":CONF:RAMP:VOLT:DOWN? (@1)", "0.01235E3V/s", 12.35),
        (":CONF:RAMP:VOLT 0.1234,(@1)", ":CONF:RAMP:VOLT:UP? (@1)", "123.00000E-3V/s", 0.123),
    ],
)
def test_settings_are_held_at_the_declared_resolution(clock, request_, query, reply, held):
    hv = IsegShr(clock=clock, seed=1, polarity="p")
    assert q(hv, request_) is None
    assert q(hv, query) == reply
    ch = hv.chan(1)
    value = ch.vset if "RAMP" not in request_ else ch.rdown if "DOWN" in request_ else ch.rup
    assert value == held
