"""HMP4040 simulator: SCPI over TCP, CC mode and electronic fuse with a fake clock."""

from __future__ import annotations

import pytest

from slowctl_dummy.sims.hmp4040 import Hmp4040


def q(hmp: Hmp4040, line: str) -> str | None:
    reply = hmp.handle(line)
    if reply is None:
        return None
    assert reply.endswith(b"\n") and not reply.endswith(b"\r\n")
    return reply.decode().removesuffix("\n")


@pytest.fixture
def hmp(clock):
    return Hmp4040(clock=clock, seed=1)


def test_identity_and_common_commands_over_tcp(serve, connect):
    client = connect(serve(Hmp4040(seed=1)))
    assert client.ask("*IDN?") == b"HAMEG,HMP4040,101234,HW50020001/SW2.51\n"
    assert client.ask("*OPC?", term=b"\r\n") == b"1\n"  # CR LF accepted
    client.send("*RST\n*CLS\n")
    assert client.ask("SYST:ERR?") == b'0,"No error"\n'


def test_hmp2030_with_three_channels(serve, connect):
    client = connect(serve(Hmp4040(channels=3, seed=1)))
    assert client.ask("*IDN?").startswith(b"HAMEG,HMP2030,")
    assert client.no_reply("INST:NSEL 4")
    assert client.ask("SYST:ERR?") == b'-222,"Data out of range"\n'


@pytest.mark.parametrize(
    "bad, error",
    [
        ("FOO:BAR 1", '-113,"Undefined header"'),
        ("VOLTA 1", '-113,"Undefined header"'),  # neither short nor long form
        ("MEAS:VOLT", '-113,"Undefined header"'),  # query-only header
        ("VOLT", '-109,"Missing parameter"'),
        ("VOLT abc", '-104,"Data type error"'),
        ("VOLT 32.1", '-222,"Data out of range"'),
        ("CURR 10.5", '-222,"Data out of range"'),
        ("INST:NSEL 5", '-222,"Data out of range"'),
        ("INST OUT9", '-222,"Data out of range"'),
        ("OUTP:SEL MAYBE", '-224,"Illegal parameter value"'),
        ("FUSE:DEL 300", '-222,"Data out of range"'),
    ],
)
def test_errors_give_no_reply_and_go_to_the_queue(serve, connect, bad, error):
    client = connect(serve(Hmp4040(seed=1)))
    assert client.no_reply(bad, wait=0.1)
    assert client.ask("SYST:ERR?") == f"{error}\n".encode()
    assert client.ask("SYSTEM:ERROR?") == b'0,"No error"\n'


def test_error_queue_overflow(hmp):
    for _ in range(12):
        q(hmp, "BOGUS")
    errors = [q(hmp, "SYST:ERR?") for _ in range(11)]
    assert errors[-2] == '-350,"Queue overflow"'
    assert errors[-1] == '0,"No error"'


def test_short_long_forms_and_joined_commands(hmp):
    assert q(hmp, "INSTrument:NSELect 2;:SOURce:VOLTage:LEVel:IMMediate:AMPLitude 5.5;sour:curr 0.25") is None
    assert q(hmp, "inst:nsel?;volt?;CURRENT?") == "2;5.500;0.2500"
    assert q(hmp, "INST OUT3;INST:NSEL?") == "3"
    assert q(hmp, "instrument:select output1;volt MAX;volt?") == "32.050"
    assert q(hmp, "SYST:ERR?") == '0,"No error"'
    # a header error discards the rest of the line
    assert q(hmp, "volt 1;bogus;volt 2") is None
    assert q(hmp, "volt?") == "1.000"


def test_output_switches(hmp):
    q(hmp, "INST:NSEL 1;VOLT 12;CURR 1")
    assert q(hmp, "MEAS:VOLT?") == "0.000"
    q(hmp, "OUTP:SEL ON")
    assert q(hmp, "OUTP:SEL?;OUTP:GEN?;OUTP?") == "1;0;0"
    assert q(hmp, "MEAS:VOLT?") == "0.000"  # armed but master off
    q(hmp, "OUTP:GEN ON")
    assert float(q(hmp, "MEAS:VOLT?")) == pytest.approx(12.0, abs=0.003)
    assert float(q(hmp, "MEAS:CURR?")) == pytest.approx(0.12, abs=0.0003)  # 100 ohm load
    q(hmp, "OUTP OFF")
    assert q(hmp, "OUTP?;OUTP:GEN?") == "0;1"
    q(hmp, "OUTP:GEN OFF;INST:NSEL 2;OUTP ON")  # OUTP ON = arm + master
    assert q(hmp, "OUTP:SEL?;OUTP:GEN?;OUTP?") == "1;1;1"


def test_constant_current_mode(hmp):
    hmp.set_param("load", 10.0, channel=1)
    q(hmp, "INST:NSEL 1;VOLT 5;CURR 0.2;OUTP ON")
    # 5 V into 10 ohm wants 0.5 A > 0.2 A: CC at 0.2 A, 2 V
    assert float(q(hmp, "MEAS:CURR?")) == pytest.approx(0.2, abs=0.0003)
    assert float(q(hmp, "MEAS:VOLT?")) == pytest.approx(2.0, abs=0.003)


def test_fuse_trips_after_delay_and_acknowledge_clears(hmp, clock):
    q(hmp, "INST:NSEL 1;VOLT 5;CURR 0.2;FUSE ON;FUSE:DEL 100;OUTP ON")
    assert q(hmp, "FUSE?;FUSE:DEL?;FUSE:TRIP?") == "1;100;0"
    clock.advance(1.0)  # 100 ohm: 50 mA, no CC, no trip
    assert q(hmp, "FUSE:TRIP?;OUTP?") == "0;1"
    hmp.set_param("load", 1.0, channel=1)  # short: CC
    clock.advance(0.09)
    assert q(hmp, "FUSE:TRIP?;OUTP:SEL?") == "0;1"
    clock.advance(0.02)
    assert q(hmp, "FUSE:TRIP?;OUTP:SEL?;OUTP?") == "1;0;0"
    assert q(hmp, "MEAS:CURR?") == "0.0000"
    q(hmp, "OUTP:SEL OFF")  # acknowledging keeps the output off and clears the flag
    assert q(hmp, "FUSE:TRIP?;OUTP?") == "0;0"
    hmp.set_param("load", 1.0, channel=1)
    clock.advance(0.2)
    assert q(hmp, "FUSE:TRIP?") == "0"  # disarmed: no current, no new trip
    hmp.set_param("load", 100.0, channel=1)
    q(hmp, "OUTP:SEL ON")
    assert q(hmp, "FUSE:TRIP?;OUTP?") == "0;1"


def test_fuse_off_stays_in_cc(hmp, clock):
    hmp.set_param("load", 1.0)
    q(hmp, "VOLT 5;CURR 0.2;OUTP ON")
    clock.advance(10)
    assert q(hmp, "FUSE:TRIP?;OUTP?") == "0;1"


def test_overvoltage_protection(hmp, clock):
    q(hmp, "VOLT:PROT 10;VOLT 12;OUTP ON")
    clock.advance(0.01)
    assert q(hmp, "VOLT:PROT:TRIP?;OUTP?;VOLT:PROT?") == "1;0;10.000"
    q(hmp, "VOLT:PROT:CLE")
    assert q(hmp, "VOLT:PROT:TRIP?") == "0"


def test_rst_restores_defaults_but_keeps_load(hmp):
    hmp.set_param("load", 5.0, channel=2)
    q(hmp, "INST:NSEL 2;VOLT 3;OUTP ON;*RST")
    assert q(hmp, "INST:NSEL?;VOLT?;CURR?;OUTP?;FUSE?") == "1;0.000;1.0000;0;0"
    assert hmp.chan(2).load == 5.0


@pytest.mark.parametrize(
    ("command", "query", "reply", "held"),
    [
        ("VOLT 12.3456", "VOLT?", "12.346", 12.346),  # 1 mV
        ("VOLT 3.3004", "VOLT?", "3.300", 3.3),
        ("CURR 0.12346", "CURR?", "0.1235", 0.1235),  # 0.1 mA up to 1 A
        ("CURR 0.99996", "CURR?", "1.0000", 1.0),
        ("CURR 1.23456", "CURR?", "1.2350", 1.235),  # 1 mA above 1 A
        ("CURR 2.3454", "CURR?", "2.3450", 2.345),
        ("APPL 5.0006,3.0007", "APPL?", "5.001,3.0010", 3.001),
    ],
)
def test_set_values_are_held_at_the_instrument_resolution(hmp, command, query, reply, held):
    assert q(hmp, command) is None and q(hmp, "SYST:ERR?") == '0,"No error"'
    assert q(hmp, query) == reply
    assert (hmp.ch.iset if "CURR" in command or "APPL" in command else hmp.ch.vset) == held
