"""Aim-TTi MX100TP simulator against the manual's command list: every command, its reply format and errors."""

from __future__ import annotations

import pytest

from slowctl_dummy.sims.tti_mx100tp import TtiMx100tp


def q(tti: TtiMx100tp, line: str) -> str | None:
    reply = tti.handle(line)
    return None if reply is None else reply.decode().removesuffix("\r\n")


def errors(tti: TtiMx100tp) -> tuple[int, int]:
    esr, eer = q(tti, "*ESR?;EER?").split("\r\n")
    return int(esr), int(eer)


@pytest.fixture
def tti(clock):
    t = TtiMx100tp(clock=clock, seed=1)
    q(t, "*ESR?")  # the power-on bit
    return t


def test_step_sizes_and_increments(tti):
    assert q(tti, "DELTAV1?;DELTAI1?") == "DV1 0.10\r\nDI1 0.010"
    assert q(tti, "DELTAV2 0.25;DELTAI2 0.005;DELTAV2?;DELTAI2?") == "DV2 0.25\r\nDI2 0.005"
    q(tti, "V2 1;INCV2;INCV2V;V2?")
    assert q(tti, "V2?") == "V2 1.500"
    assert q(tti, "DECV2;V2?") == "V2 1.250"
    assert q(tti, "DECV2V;V2?") == "V2 1.000"
    assert q(tti, "I2 0.1;INCI2;INCI2;DECI2;I2?") == "I2 0.1050"
    assert errors(tti) == (0, 0)


def test_increment_beyond_the_range_is_refused(tti):
    q(tti, "V1 69.95;INCV1")
    assert errors(tti) == (16, 100)
    assert q(tti, "V1?") == "V1 69.950"
    q(tti, "I1 0.005;DECI1")
    assert errors(tti) == (16, 100)
    assert q(tti, "DELTAV1 71") is None
    assert errors(tti) == (16, 100)


@pytest.mark.parametrize(
    "bad, eer",
    [
        ("DELTAV1 -1", 100),
        ("DELTAI1 7", 100),
        ("DELTAV4 1", 103),
        ("LSE1 256", 100),
        ("LSE1 1.5", 100),
        ("*ESE -1", 100),
        ("*SRE 300", 100),
        ("SAV1 10", 100),
        ("RCL1 3", 101),
        ("CONFIG 1", 100),
        ("VRANGE1 4", 100),
        ("VRANGE1 0", 100),
        ("INCV4", 103),
    ],
)
def test_out_of_range_values_are_execution_errors(tti, bad, eer):
    assert q(tti, bad) is None
    assert errors(tti) == (16, eer)


@pytest.mark.parametrize(
    "bad",
    [
        "DELTAV1",
        "DELTAV1? 2",
        "INCV1 1",
        "LSE1",
        "*ESE",
        "*STB? 1",
        "SAV1",
        "CONFIG",
        "IFLOCK 1",
        "VRANGE1",
        "DELTAX1 1",
    ],
)
def test_malformed_commands_are_command_errors(tti, bad):
    assert q(tti, bad + ";V1 5") is None  # the rest of the line is dropped
    assert errors(tti) == (32, 0)
    assert q(tti, "V1?") == "V1 0.000"


def test_status_byte_and_enable_registers(tti):
    assert q(tti, "*STB?;*ESE?;*SRE?;*PRE?;LSE1?") == "0\r\n0\r\n0\r\n0\r\n0"
    q(tti, "LSE2 2;*ESE 48;*SRE 34;*PRE 2")
    assert q(tti, "LSE2?;*ESE?;*SRE?;*PRE?") == "2\r\n48\r\n34\r\n2"
    tti.set_param("load", 1.0, channel=2)
    q(tti, "V2 5;I2 1;OP2 1")  # 5 V on 1 ohm: constant current, LSR2 bit 1
    assert q(tti, "*STB?;*IST?") == "66\r\n1"  # LIM2 (bit 1) and MSS (bit 6)
    q(tti, "FOO")  # command error: ESR bit 5, enabled by *ESE 48
    assert q(tti, "*STB?") == "98"
    q(tti, "*CLS")
    assert q(tti, "*STB?;*IST?") == "0\r\n0"
    q(tti, "*RST")  # enable registers survive a reset
    assert q(tti, "LSE2?;*ESE?") == "2\r\n48"


def test_opc_sets_the_operation_complete_bit(tti):
    q(tti, "*OPC")
    assert q(tti, "*ESR?;*OPC?") == "1\r\n1"


def test_save_and_recall_setups(tti):
    q(tti, "V3 12;I3 2;OVP3 20;OCP3 3;SAV3 7;*RST")
    assert q(tti, "V3?;I3?;OVP3?;OCP3?") == "V3 0.000\r\nI3 1.0000\r\nVP3 77.00\r\nCP3 6.600"
    q(tti, "RCL3 7")
    assert q(tti, "V3?;I3?;OVP3?;OCP3?") == "V3 12.000\r\nI3 2.0000\r\nVP3 20.00\r\nCP3 3.000"
    q(tti, "RCL1 7")  # stores are per output
    assert errors(tti) == (16, 101)


def test_config_voltage_tracking(tti):
    assert q(tti, "CONFIG?") == "2"
    q(tti, "V2 3;CONFIG 0")
    assert q(tti, "CONFIG?;V2?") == "0\r\nV2 0.000"  # output 2 takes output 1's voltage
    q(tti, "V1 7.5")
    assert q(tti, "V1?;V2?") == "V1 7.500\r\nV2 7.500"
    q(tti, "CONFIG 2;V1 1")
    assert q(tti, "V1?;V2?") == "V1 1.000\r\nV2 7.500"


def test_voltage_range_mx100tp_only(tti, clock):
    assert q(tti, "VRANGE1?;VRANGE3?") == "1\r\n1"
    assert q(tti, "VRANGE3 3;VRANGE3?") == "3"
    assert q(TtiMx100tp(clock=clock, channels=2), "VRANGE1?") is None  # CPX400DP: no such command


def test_interface_lock(serve, connect):
    client = connect(serve(TtiMx100tp(seed=1)))
    assert client.ask("IFLOCK?") == b"0\r\n"
    assert client.ask("IFUNLOCK") == b"-1\r\n"
    assert client.ask("IFLOCK") == b"1\r\n"
    assert client.ask("iflock?") == b"1\r\n"
    assert client.ask("IFUNLOCK;IFLOCK?") == b"0\r\n"
    assert client.read() == b"0\r\n"
