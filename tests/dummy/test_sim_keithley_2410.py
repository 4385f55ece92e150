"""Keithley 2410 / 2400 simulator: SCPI replies and errors over TCP, compliance physics with a fake clock."""

from __future__ import annotations

import re

import pytest

from slowctl_dummy.cli import _instrument, _parser
from slowctl_dummy.sims.keithley_2410 import Keithley2410

NUMBER = re.compile(r"[+-]\d\.\d{6}E[+-]\d\d")
SETUP = ':SOUR:CLE:AUTO OFF;:SENS:FUNC:CONC ON;:SENS:FUNC "VOLT","CURR";:FORM:ELEM VOLT,CURR'


def q(smu: Keithley2410, line: str) -> str | None:
    reply = smu.handle(line)
    if reply is None:
        return None
    assert reply.endswith(smu.reply_terminator)
    return reply[: -len(smu.reply_terminator)].decode()


def reading(smu: Keithley2410) -> tuple[float, float]:
    text = q(smu, ":READ?")
    assert text is not None
    v, i = text.split(",")
    assert NUMBER.fullmatch(v) and NUMBER.fullmatch(i), text
    return float(v), float(i)


def reading_after(smu: Keithley2410, line: str) -> tuple[float, float]:
    v, i = q(smu, line).split(",")
    return float(v), float(i)


def set_now(smu: Keithley2410, name: str, value: object) -> None:
    smu.advance()
    smu.set_param(name, value)


@pytest.fixture
def smu(clock):
    return Keithley2410(clock=clock, seed=1)


@pytest.mark.parametrize("terminator, term", [("LF", b"\n"), ("CRLF", b"\r\n"), ("CR", b"\r")])
def test_identity_and_terminators_over_tcp(serve, connect, terminator, term):
    client = connect(serve(Keithley2410(seed=1, terminator=terminator)))
    assert (
        client.ask("*IDN?")
        == b"KEITHLEY INSTRUMENTS INC.,MODEL 2410,4123456,C33   Mar 31 2015 09:32:39/A02  /S/K" + term
    )
    assert client.ask(":OUTP?;:SOUR:FUNC?") == b"0;VOLT" + term


def test_the_2400_variant(serve, connect):
    smu = Keithley2410(seed=1, variant="2400")
    client = connect(serve(smu))
    assert b"MODEL 2400," in client.ask("*IDN?")
    assert client.no_reply(":SOUR:VOLT 211")
    assert client.ask(":SYST:ERR?") == b'-222,"Data out of range"\n'
    assert client.no_reply(":SOUR:VOLT -210")
    assert smu.vset == -210.0


@pytest.mark.parametrize(
    "bad, error",
    [
        (":FOO", '-113,"Undefined header"'),
        (":SOUR:VOLTAG 1", '-113,"Undefined header"'),
        (":SOUR:VOLT", '-109,"Missing parameter"'),
        (":SOUR:VOLT abc", '-104,"Data type error"'),
        (":SOUR:VOLT 1100.1", '-222,"Data out of range"'),
        (":SOUR:VOLT -1101", '-222,"Data out of range"'),
        (":SENS:CURR:PROT 1.06", '-222,"Data out of range"'),
        (":SENS:CURR:PROT 0", '-222,"Data out of range"'),
        (":SOUR:FUNC WATT", '-224,"Illegal parameter value"'),
        (":FORM:ELEM VOLT,WATT", '-224,"Illegal parameter value"'),
        (':SENS:FUNC "WATT"', '-224,"Illegal parameter value"'),
        (":OUTP MAYBE", '-224,"Illegal parameter value"'),
        (":SENS:CURR:PROT 0.05;:SOUR:VOLT 100", '-221,"Settings conflict"'),  # 2410: 21 mA above 21 V
        (":READ?", '803,"Not permitted with OUTPUT off"'),
    ],
)
def test_errors_give_no_reply_and_go_to_the_queue(serve, connect, bad, error):
    client = connect(serve(Keithley2410(seed=1)))
    assert client.no_reply(bad, wait=0.1)
    assert client.ask(":SYST:ERR?") == f"{error}\n".encode()
    assert client.ask(":SYST:ERR?") == b'0,"No error"\n'


def test_power_envelope_conflicts_both_ways(smu):
    q(smu, ":SOUR:VOLT 500;:SENS:CURR:PROT 0.05")
    assert q(smu, ":SYST:ERR?") == '-221,"Settings conflict"'
    q(smu, ":SENS:CURR:PROT 0.021;:SYST:ERR?")
    assert q(smu, ":SENS:CURR:PROT?") == "+2.100000E-02"
    smu2400 = Keithley2410(variant="2400")
    assert q(smu2400, ":SOUR:VOLT 200;:SENS:CURR:PROT 0.1;:SENS:CURR:PROT?;:SYST:ERR?") == '+1.000000E-01;0,"No error"'


def test_reset_state_and_setup(smu):
    assert (
        q(smu, ":SOUR:FUNC?;:SOUR:VOLT?;:SENS:CURR:PROT?;:OUTP?;:SOUR:CLE:AUTO?")
        == "VOLT;+0.000000E+00;+1.050000E-04;0;0"
    )
    assert q(smu, ":SENS:FUNC?;:SENS:FUNC:CONC?;:FORM:ELEM?") == '"CURR:DC";1;VOLT,CURR,RES,TIME,STAT'
    q(smu, SETUP)
    assert q(smu, ":SENS:FUNC?;:FORM:ELEM?;:SYST:ERR?") == '"VOLT:DC","CURR:DC";VOLT,CURR;0,"No error"'
    q(smu, ":SOUR:VOLT 5;:OUTP ON;*RST")
    assert q(smu, ":SOUR:VOLT?;:OUTP?;:FORM:ELEM?") == "+0.000000E+00;0;VOLT,CURR,RES,TIME,STAT"


def test_read_elements_and_not_measured_values(smu, clock):
    q(smu, ":SOUR:VOLT -100;:SENS:CURR:PROT 1e-5;:OUTP ON")
    clock.advance(0.1)
    v, i, res, t, stat = q(smu, ":READ?").split(",")  # after reset: all five, only CURR measured
    assert v == "-1.000000E+02"  # sourced, not measured: the programmed source value (2410 manual)
    assert res == "+9.910000E+37"  # neither measured nor sourced
    assert float(i) == pytest.approx(-1e-6, rel=0.01)  # 100 V on 100 MOhm
    assert float(t) == pytest.approx(smu.now() + 0.003) and stat == "+0.000000E+00"  # after the 3 ms auto delay
    q(smu, ':SENS:FUNC "VOLT";:FORM:ELEM CURR,VOLT')
    v, i = reading(smu)  # always in the order VOLT, CURR
    assert v == pytest.approx(-100, abs=0.01) and i == pytest.approx(-1e-6, rel=0.01)
    q(smu, ':SENS:FUNC:OFF "CURR"')
    assert q(smu, ":READ?").endswith(",+9.910000E+37")


def test_reading_is_taken_after_the_source_delay(smu, clock):
    q(smu, SETUP + ";:SOUR:VOLT 1000;:SENS:CURR:PROT 1e-3")
    assert reading_after(smu, ":OUTP ON;:READ?")[0] == pytest.approx(1000, abs=0.01)  # settled, not a transient
    q(smu, ":OUTP OFF;:SOUR:DEL 0")  # no settling period: the reading catches the source on its way
    clock.advance(1)
    q(smu, ":OUTP ON")
    clock.advance(0.0002)  # one time constant
    assert reading(smu)[0] == pytest.approx(1000 * (1 - 0.3679), rel=0.01)
    clock.advance(0.05)
    assert reading(smu)[0] == pytest.approx(1000, abs=0.01)


def test_compliance_clamps_the_current_and_the_voltage_sags(smu, clock):
    q(smu, SETUP + ";:SOUR:VOLT -200;:SENS:CURR:PROT 1e-5;:OUTP ON")
    clock.advance(1)
    assert reading(smu) == pytest.approx((-200, -2e-6), rel=0.01)
    assert q(smu, ":SENS:CURR:PROT:TRIP?") == "0"
    set_now(smu, "load", 1e6)  # 200 V would draw 200 uA
    v, i = reading(smu)
    assert i == pytest.approx(-1e-5, rel=0.01) and v == pytest.approx(-10, abs=0.01)
    assert q(smu, ":SENS:CURR:PROT:TRIP?") == "1"
    q(smu, ":FORM:ELEM STAT")
    assert q(smu, ":READ?") == "+8.000000E+00"  # compliance bit
    set_now(smu, "load", 100e6)  # nothing latches
    q(smu, ":FORM:ELEM VOLT,CURR")
    assert reading(smu)[0] == pytest.approx(-200, abs=0.01) and q(smu, ":SENS:CURR:PROT:TRIP?") == "0"


def test_temperature_and_breakdown(smu, clock):
    q(smu, SETUP + ";:SOUR:VOLT 100;:SENS:CURR:PROT 1e-3;:OUTP ON")
    clock.advance(1)
    i20 = reading(smu)[1]
    set_now(smu, "temperature", 27.0)
    assert reading(smu)[1] == pytest.approx(2 * i20, rel=0.01)
    set_now(smu, "breakdown", 105.0)
    assert reading(smu)[1] > 5 * i20


def test_output_off_reads_nothing_and_auto_clear_is_a_hazard(smu, clock):
    q(smu, SETUP + ";:SOUR:VOLT 300;:SENS:CURR:PROT 1e-4")
    assert q(smu, ":READ?") is None and q(smu, ":SYST:ERR?") == '803,"Not permitted with OUTPUT off"'
    q(smu, ":SOUR:CLE:AUTO ON")
    v, _ = reading(smu)  # the source came on by itself for this measurement
    assert v == pytest.approx(300, abs=0.01)
    assert q(smu, ":OUTP?") == "0"


def test_interlock_blocks_and_drops_the_output(smu, clock):
    q(smu, ":SOUR:VOLT 10;:OUTP ON")
    clock.advance(0.1)
    set_now(smu, "interlock_open", True)
    clock.advance(0.01)
    assert q(smu, ":OUTP?") == "0"
    q(smu, ":OUTP ON")
    assert q(smu, ":SYST:ERR?;:OUTP?") == '802,"OUTPUT blocked by output enable";0'
    set_now(smu, "interlock_open", False)
    q(smu, ":OUTP ON;:SOUR:CLE")
    assert q(smu, ":OUTP?") == "0"


def test_current_source_function_gives_no_voltage(smu, clock):
    q(smu, SETUP + ";:SOUR:VOLT 50;:SOUR:FUNC CURR;:OUTP ON")
    clock.advance(0.1)
    assert q(smu, ":SOUR:FUNC?") == "CURR" and reading(smu) == (pytest.approx(0, abs=0.01), pytest.approx(0, abs=1e-9))


def test_parameters():
    with pytest.raises(ValueError, match="variant"):
        Keithley2410(variant="2420")
    with pytest.raises(ValueError, match="terminator"):
        Keithley2410(terminator="LFCR")
    with pytest.raises(ValueError, match="channels: 2 out of range"):
        Keithley2410(channels=2)


def test_cli_options_for_variant_and_terminator():
    args = _parser("slowctl sim").parse_args(
        ["keithley-2410", "--tcp", "127.0.0.1:0", "--option", "variant=2400", "--option", "terminator=crlf"]
    )
    inst = _instrument(args)
    assert inst.variant == "2400" and inst.reply_terminator == b"\r\n"
    assert b"MODEL 2400" in inst.handle("*IDN?")


@pytest.mark.parametrize(
    ("variant", "commands", "query", "held"),
    [
        # auto range: the lowest range that holds the level (105 % of its name) gives the step
        ("2410", ":SOUR:VOLT 0.1234567", ":SOUR:VOLT?", 0.123455),  # 200 mV range, 5 uV
        ("2410", ":SOUR:VOLT 1.2345678", ":SOUR:VOLT?", 1.23455),  # 2 V range, 50 uV
        ("2410", ":SOUR:VOLT 20.1234", ":SOUR:VOLT?", 20.1235),  # 20 V range up to 21 V, 500 uV
        ("2410", ":SOUR:VOLT -150.01", ":SOUR:VOLT?", -150.0),  # 1000 V range, 50 mV
        ("2410", ":SOUR:VOLT 150.03", ":SOUR:VOLT?", 150.05),
        ("2400", ":SOUR:VOLT 150.0076", ":SOUR:VOLT?", 150.01),  # 200 V range, 5 mV
        # a fixed range keeps its own (coarser) step for a small level
        ("2410", ":SOUR:VOLT:RANG 1000;:SOUR:VOLT 1.234", ":SOUR:VOLT?", 1.25),
        ("2410", ":SOUR:FUNC CURR;:SOUR:CURR 1.23456e-6", ":SOUR:CURR?", 1.2345e-6),  # 10 uA range, 500 pA
        ("2400", ":SOUR:FUNC CURR;:SOUR:CURR 0.0123456", ":SOUR:CURR?", 0.012345),  # 100 mA range, 5 uA
        ("2410", ":SENS:CURR:PROT 1.23456e-5", ":SENS:CURR:PROT?", 1.2345e-5),  # 100 uA range, 5 nA
    ],
)
def test_source_levels_are_held_at_the_programming_resolution(clock, variant, commands, query, held):
    smu = Keithley2410(clock=clock, seed=1, variant=variant)
    assert q(smu, commands) is None
    assert q(smu, ":SYST:ERR?") == '0,"No error"'
    assert float(q(smu, query)) == pytest.approx(held, rel=1e-12)
