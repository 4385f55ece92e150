"""Aim-TTi MX100TP simulator: the TTi command set over TCP, error registers, CV/CC, OVP/OCP trips."""

from __future__ import annotations

import pytest

from slowctl_dummy.cli import main
from slowctl_dummy.scenario import parse_scenario
from slowctl_dummy.sims.tti_mx100tp import TtiMx100tp


def q(tti: TtiMx100tp, line: str) -> str | None:
    reply = tti.handle(line)
    if reply is None:
        return None
    assert reply.endswith(b"\r\n")
    return reply.decode().removesuffix("\r\n")


@pytest.fixture
def tti(clock):
    t = TtiMx100tp(clock=clock, seed=1)
    assert q(t, "*ESR?") == "128"  # power-on bit, cleared by reading
    return t


def test_identity_terminators_and_pon_over_tcp(serve, connect):
    client = connect(serve(TtiMx100tp(seed=1)))
    assert client.ask("*IDN?", term=b"\n") == b"THURLBY THANDAR, MX100TP, 436129, 1.03-1.00-1.02\r\n"
    assert client.ask("*ESR?", term=b"\n") == b"128\r\n"
    assert client.ask("*esr?", term=b"\r\n") == b"0\r\n"  # CR LF and lower case accepted
    client.send("V2 5;I2 0.25\n")
    assert client.ask("V2?;I2?", term=b"\n") == b"V2 5.000\r\n"  # one reply line per query
    assert client.read() == b"I2 0.2500\r\n"
    assert client.ask("*OPC?", term=b"\n") == b"1\r\n"


def test_set_value_and_protection_formats(tti):
    assert q(tti, "V1 12.3456;V1?") == "V1 12.346"  # held at 1 mV
    assert q(tti, "V1V 3.3;V1?") == "V1 3.300"  # set with verify
    assert q(tti, "I3 0.1;I3?") == "I3 0.1000"
    assert q(tti, "I2 4e-3;I2?") == "I2 0.0040"  # NRF with exponent
    assert q(tti, "OVP1?;OCP1?") == "VP1 77.00\r\nCP1 6.600"  # defaults: 1.1 x the range
    assert q(tti, "OVP1 13.5;OCP1 2.5;OVP1?;OCP1?") == "VP1 13.50\r\nCP1 2.500"
    assert q(tti, "*TST?") == "0"
    assert q(tti, "*ESR?;EER?;QER?") == "0\r\n0\r\n0"


@pytest.mark.parametrize(
    "bad, esr, eer",
    [
        ("FOO", 32, 0),
        ("V1", 32, 0),  # value missing
        ("V1? 3", 32, 0),  # value on a query
        ("V1 abc", 32, 0),
        ("TRIPRST 1", 32, 0),
        ("V10 1", 32, 0),
        ("V1 70.5", 16, 100),
        ("V1 -1", 16, 100),
        ("I1 6.1", 16, 100),
        ("OP1 2", 16, 100),
        ("OVP1 0.5", 16, 100),
        ("OCP1 7", 16, 100),
        ("V4 1", 16, 103),  # a three-output supply
        ("V4?", 16, 103),
        ("LSR0?", 16, 103),
    ],
)
def test_errors_give_no_reply_and_set_the_registers(serve, connect, bad, esr, eer):
    inst = TtiMx100tp(seed=1)
    client = connect(serve(inst))
    assert client.ask("*ESR?", term=b"\n") == b"128\r\n"
    assert client.no_reply(bad, wait=0.1)
    assert client.ask("*ESR?", term=b"\n") == f"{esr}\r\n".encode()
    assert client.ask("EER?", term=b"\n") == f"{eer}\r\n".encode()
    assert client.ask("*ESR?;EER?", term=b"\n") == b"0\r\n"  # both cleared by reading
    assert client.read() == b"0\r\n"
    assert inst.chan(1).vset == 0.0 and inst.chan(1).iset == 1.0 and not inst.chan(1).on


def test_command_error_drops_the_rest_of_the_line_execution_error_does_not(tti):
    assert q(tti, "FOO;V1 5") is None
    assert tti.chan(1).vset == 0.0
    assert q(tti, "*ESR?") == "32"
    assert q(tti, "V1 99;V1 5;*ESR?;EER?") == "16\r\n100"
    assert tti.chan(1).vset == 5.0
    q(tti, "V1 99")
    q(tti, "*CLS")
    assert q(tti, "*ESR?;EER?") == "0\r\n0"


def test_constant_voltage_then_constant_current(tti):
    assert q(tti, "V1O?;I1O?") == "0.000V\r\n0.000A"
    q(tti, "V1 5;I1 1;OP1 1")
    assert q(tti, "OP1?") == "1"
    assert float(q(tti, "V1O?")[:-1]) == pytest.approx(5.0, abs=0.003)
    assert q(tti, "I1O?") == "0.050A"  # 5 V on 100 ohm
    assert q(tti, "LSR1?") == "1"  # entered CV
    assert q(tti, "LSR1?") == "0"  # cleared by reading
    tti.set_param("load", 2.0, channel=1)  # 5 V on 2 ohm wants 2.5 A > 1 A
    v, i = q(tti, "V1O?;I1O?").split("\r\n")
    assert float(v[:-1]) == pytest.approx(2.0, abs=0.003) and i == "1.000A"
    assert q(tti, "LSR1?") == "2"  # entered CC
    assert q(tti, "V2O?;I2O?") == "0.000V\r\n0.000A"  # other outputs untouched
    q(tti, "OP1 0")
    assert q(tti, "V1O?;I1O?;OP1?") == "0.000V\r\n0.000A\r\n0"


def test_over_voltage_trip_stays_until_triprst(tti):
    q(tti, "V1 10;OP1 1")
    q(tti, "OVP1 8")  # below the output voltage: trips at once
    assert q(tti, "OP1?;V1O?") == "0\r\n0.000V"
    assert int(q(tti, "LSR1?")) & 0x04
    q(tti, "OVP1 12;OP1 1")
    assert q(tti, "OP1?") == "0"  # still tripped
    assert q(tti, "*ESR?") == "0"  # ... and no error for trying
    q(tti, "TRIPRST")
    assert q(tti, "OP1?") == "0"  # the reset does not switch the output on
    q(tti, "OP1 1")
    assert q(tti, "OP1?") == "1"
    assert float(q(tti, "V1O?")[:-1]) == pytest.approx(10.0, abs=0.003)


def test_over_current_trip_from_a_scenario_load_change(clock):
    tti = TtiMx100tp(clock=clock, seed=1)
    tti.schedule(parse_scenario({"events": [{"at": 30, "channel": 2, "set": {"load": 5}}]}, tti))
    q(tti, "V2 10;I2 1;OCP2 0.5;OP2 1;LSR2?")
    clock.advance(29.9)
    assert q(tti, "OP2?;I2O?") == "1\r\n0.100A"
    clock.advance(0.1)  # 10 V on 5 ohm: 1 A (CC) > OCP 0.5 A
    assert q(tti, "OP2?;I2O?") == "0\r\n0.000A"
    assert int(q(tti, "LSR2?")) & 0x08
    assert q(tti, "OP1?;OP3?") == "0\r\n0"


def test_opall_leaves_a_tripped_output_off(tti):
    q(tti, "V3 10;OVP3 5;OP3 1")  # trips at once
    q(tti, "OPALL 1")
    assert q(tti, "OP1?;OP2?;OP3?") == "1\r\n1\r\n0"
    q(tti, "OPALL 0")
    assert q(tti, "OP1?;OP2?;OP3?") == "0\r\n0\r\n0"


def test_rst_keeps_the_loads(tti):
    tti.set_param("load", 7.0, channel=3)
    q(tti, "V3 3;OP3 1;*RST")
    assert q(tti, "V3?;I3?;OP3?") == "V3 0.000\r\nI3 1.0000\r\n0"
    assert tti.chan(3).load == 7.0


def test_cpx400dp_has_two_outputs_and_its_own_range(clock):
    cpx = TtiMx100tp(clock=clock, seed=1, channels=2)
    assert q(cpx, "*IDN?").startswith("THURLBY THANDAR, CPX400DP, ")
    assert q(cpx, "I1 19.5;I1?") == "I1 19.500"
    assert q(cpx, "V1 61;*ESR?;EER?") == "144\r\n100"  # PON still set, plus the execution error
    assert q(cpx, "V3 1;EER?") == "103"
    ql = TtiMx100tp(clock=clock, seed=1, variant="QL355TP")
    assert q(ql, "*IDN?").split(", ")[1] == "QL355TP" and ql.n_channels == 3
    with pytest.raises(ValueError, match="variant"):
        TtiMx100tp(variant="XYZ")


def test_cli_refuses_four_channels(capsys):
    assert main(["tti-mx100tp", "--tcp", "127.0.0.1:0", "--channels", "4"]) == 2
    assert "--channels: 4 out of range for tti-mx100tp" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("channels", "variant", "requests", "replies"),
    [
        # MX100TP / QL355TP hold 1 mV and 0.1 mA; the reply carries every held digit
        (3, None, "V1 5.0004;I1 0.12345;V1?;I1?", "V1 5.000\r\nI1 0.1234"),
        (3, None, "V1 5.0006;I1 0.12346;V1?;I1?", "V1 5.001\r\nI1 0.1235"),
        (3, "QL355TP", "V2 12.3456;I2 1.23456;V2?;I2?", "V2 12.346\r\nI2 1.2346"),
        # the CPX400DP holds 10 mV and 1 mA
        (2, None, "V1 5.004;I1 0.1234;V1?;I1?", "V1 5.00\r\nI1 0.123"),
        (2, None, "V2 5.006;I2 0.1236;V2?;I2?", "V2 5.01\r\nI2 0.124"),
    ],
)
def test_set_values_are_held_at_the_model_resolution(clock, channels, variant, requests, replies):
    tti = TtiMx100tp(clock=clock, seed=1, channels=channels, variant=variant)
    assert q(tti, requests) == replies
    o = tti.channels[int(requests[1]) - 1]
    vstep, istep = (1e-2, 1e-3) if channels == 2 else (1e-3, 1e-4)
    for value, step in ((o.vset, vstep), (o.iset, istep)):
        assert abs(value / step - round(value / step)) < 1e-9  # the held value itself is on the grid
