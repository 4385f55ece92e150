"""Keithley 2410 simulator: the 2400-series manual's commands beyond what our driver sends."""

from __future__ import annotations

import pytest

from slowctl_dummy.sims.keithley_2410 import Keithley2410

NAN = "+9.910000E+37"


def q(smu: Keithley2410, line: str) -> str | None:
    reply = smu.handle(line)
    return None if reply is None else reply.decode().removesuffix("\n")


def error(smu: Keithley2410) -> str:
    return q(smu, ":SYST:ERR?")


@pytest.fixture
def smu(clock):
    return Keithley2410(clock=clock, seed=1)


@pytest.mark.parametrize("line", [":MEAS:VOLT?", ":MEASURE:VOLTAGE?", ":meas:volt:dc?", "MEASure:VOLTage:DC?"])
def test_measure_voltage_configures_turns_on_and_reads(smu, line):
    q(smu, ":SOUR:VOLT -50")
    v, i, res, _, stat = q(smu, line).split(",")
    assert float(v) == pytest.approx(-50, abs=0.01)  # measured, settled after the source delay
    assert i == NAN and res == NAN and stat == "+0.000000E+00"  # only VOLT measured, CURR not sourced
    assert q(smu, ":OUTP?;:CONF?") == '1;"VOLT:DC"'  # the output stays on (auto output-off is OFF)


def test_measure_current_and_resistance(smu):
    q(smu, ":SOUR:VOLT 100;:FORM:ELEM VOLT,CURR,RES")
    v, i, res = (float(x) for x in q(smu, ":MEASURE:CURRENT?").split(","))
    assert v == 100.0 and i == pytest.approx(1e-6, rel=0.01)  # VOLT: the programmed source value
    v, i, res = q(smu, ":MEAS:RES?").split(",")
    assert v == "+1.000000E+02" and i == NAN and float(res) == pytest.approx(100e6, rel=0.01)


def test_measure_without_function_uses_the_present_ones(smu):
    q(smu, ':SOUR:VOLT 10;:SENS:FUNC "VOLT","CURR";:FORM:ELEM VOLT,CURR')
    v, i = (float(x) for x in q(smu, ":MEAS?").split(","))
    assert v == pytest.approx(10, abs=0.01) and i == pytest.approx(1e-7, rel=0.01)
    assert q(smu, ":OUTP?") == "1"


def test_measure_refused_by_the_interlock(smu):
    smu.set_param("interlock_open", True)
    assert q(smu, ":MEAS:VOLT?") is None
    assert error(smu) == '802,"OUTPUT blocked by output enable"'


def test_measure_with_auto_output_off_leaves_the_output_off(smu):
    q(smu, ":SOUR:VOLT 20;:SOUR:CLE:AUTO ON")
    assert float(q(smu, ":MEAS:CURR?").split(",")[1]) == pytest.approx(2e-7, rel=0.01)
    assert q(smu, ":OUTP?") == "0"


def test_initiate_and_fetch(smu):
    q(smu, ":FETC?")
    assert error(smu) == '-230,"Data corrupt or stale"'
    q(smu, ":INIT")
    assert error(smu) == '803,"Not permitted with OUTPUT off"'
    q(smu, ":SOUR:VOLT 5;:FORM:ELEM VOLT,CURR;:OUTP ON;:INITIATE:IMMEDIATE")
    first = q(smu, ":FETCH?")
    assert first.startswith("+5.000000E+00,") and q(smu, ":FETC?") == first  # the same reading again
    assert q(smu, ":ABOR;:READ?;:FETC?").split(";")[0] == q(smu, ":FETC?")
    q(smu, "*RST")
    assert q(smu, ":FETC?") is None and error(smu) == '-230,"Data corrupt or stale"'


def test_sourcing_current(smu, clock):
    q(smu, ":SOUR:FUNC CURR;:SOUR:CURR 1e-7;:FORM:ELEM VOLT,CURR;:SENS:FUNC:OFF:ALL;:OUTP ON")
    assert q(smu, ":SOUR:FUNC:MODE?;:SOURCE:CURRENT:LEVEL:IMMEDIATE:AMPLITUDE?") == "CURR;+1.000000E-07"
    v, i = (float(x) for x in q(smu, ":READ?").split(","))
    assert i == 1e-7  # not measured but sourced: the programmed value
    assert v == 9.91e37  # neither measured nor sourced
    q(smu, ':SENS:FUNC "VOLT"')
    v, _ = (float(x) for x in q(smu, ":READ?").split(","))
    assert v == pytest.approx(10, abs=0.01)  # 100 nA through 100 MOhm
    q(smu, ":SENS:VOLT:PROT 5")
    v, i = (float(x) for x in q(smu, ":READ?").split(","))
    assert v == pytest.approx(5, abs=0.01) and q(smu, ":SENS:VOLT:PROT:TRIP?;:SENS:VOLT:PROT?") == "1;+5.000000E+00"
    q(smu, ":SOUR:CURR 1.06")
    assert error(smu) == '-222,"Data out of range"'
    q(smu, ":SENS:VOLT:PROT 100;:SOUR:CURR 0.5")  # 2410: above 21 V at most 21 mA
    assert error(smu) == '-221,"Settings conflict"'


def test_source_voltage_range(smu):
    assert q(smu, ":SOUR:VOLT:RANG?;:SOUR:VOLT:RANG:AUTO?") == "+2.000000E-01;1"
    q(smu, ":SOUR:VOLT 15")
    assert q(smu, ":SOURCE:VOLTAGE:RANGE?") == "+2.000000E+01"  # auto: the range holding the level
    q(smu, ":SOUR:VOLT:RANG 2")
    assert q(smu, ":SYST:ERR?") == '-221,"Settings conflict"'  # 15 V does not fit
    q(smu, ":SOUR:VOLT 1;:SOUR:VOLT:RANG 2")
    assert q(smu, ":SOUR:VOLT:RANG?;:SOUR:VOLT:RANG:AUTO?") == "+2.000000E+00;0"
    q(smu, ":SOUR:VOLT 2.2")
    assert error(smu) == '-222,"Data out of range"'  # above 105 % of the fixed range
    q(smu, ":SOUR:VOLT:RANG 1100;:SOUR:VOLT 1100")
    assert q(smu, ":SOUR:VOLT:RANG?;:SOUR:VOLT?;:SYST:ERR?") == '+1.000000E+03;+1.100000E+03;0,"No error"'
    q(smu, ":SOUR:VOLT:RANG 1101")
    assert error(smu) == '-222,"Data out of range"'


def test_current_measure_range_limits_the_compliance(smu, clock):
    q(smu, ":SOUR:VOLT 100;:SENS:CURR:PROT 1e-3;:FORM:ELEM CURR;:OUTP ON")
    assert q(smu, ":SENS:CURR:RANG:AUTO?;:SENS:CURR:RANG?") == "1;+1.000000E-03"
    smu.set_param("load", 1e6)  # 100 V would draw 100 uA
    q(smu, ":SENS:CURR:RANG 1e-5")
    assert float(q(smu, ":READ?")) == pytest.approx(1.05e-5, rel=0.01)  # range compliance
    assert q(smu, ":SENSE:CURRENT:DC:RANGE:UPPER?;:SENS:CURR:RANG:AUTO?") == "+1.000000E-05;0"
    q(smu, ":SENS:CURR:RANG:AUTO ON")
    assert float(q(smu, ":READ?")) == pytest.approx(1e-4, rel=0.01)


def test_source_delay(smu):
    assert q(smu, ":SOUR:DEL:AUTO?;:SOUR:DEL?") == "1;+3.000000E-03"
    q(smu, ":SOURCE:DELAY 0.5")
    assert q(smu, ":SOUR:DEL?;:SOUR:DEL:AUTO?") == "+5.000000E-01;0"  # a value turns auto delay off
    q(smu, ":SOUR:DEL 10000")
    assert error(smu) == '-222,"Data out of range"'
    q(smu, ":SOUR:DEL:AUTO ON")
    assert q(smu, ":SOUR:DEL?") == "+3.000000E-03"


def test_nplc_and_system_commands(smu):
    q(smu, ":SENS:CURR:NPLC 0.1")
    assert q(smu, ":SENS:VOLT:NPLC?;:SENSE:CURRENT:DC:NPLCYCLES?") == "+1.000000E-01;+1.000000E-01"
    q(smu, ":SENS:CURR:NPLC 11")
    assert q(smu, ":SYST:ERR:COUN?;:SYST:ERR:CODE?;:SYST:ERR:COUN?") == "1;-222;0"
    q(smu, ":BOGUS")
    q(smu, ":SOUR:VOLT 2000")
    assert q(smu, ":SYST:ERR:ALL?") == '-113,"Undefined header",-222,"Data out of range"'
    assert q(smu, ":SYST:ERR:ALL?;:SYST:VERS?;*TST?") == '0,"No error";1996.0;0'
    q(smu, ":SYST:REM;:SYST:LOC;:SYST:RWL;:BOGUS")
    q(smu, ":SYST:ERR:CLE")
    assert q(smu, ":SYST:ERR:NEXT?") == '0,"No error"'
