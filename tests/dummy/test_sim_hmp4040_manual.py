"""HMP4040 simulator: the manual's command table beyond what our driver sends (forms, formats, errors)."""

from __future__ import annotations

import pytest

from slowctl_dummy.sims.hmp4040 import Hmp4040


def q(hmp: Hmp4040, line: str) -> str | None:
    reply = hmp.handle(line)
    return None if reply is None else reply.decode().removesuffix("\n")


@pytest.fixture
def hmp(clock):
    return Hmp4040(clock=clock, seed=1)


def test_instrument_select_query_and_forms(hmp):
    assert q(hmp, "INST?") == "OUTP1"
    q(hmp, "instrument:select OUTPUT3")
    assert q(hmp, "INSTRUMENT?;INST:NSEL?") == "OUTP3;3"
    q(hmp, "INST OUT5")
    assert q(hmp, "SYST:ERR?") == '-222,"Data out of range"'


def test_min_max_queries_and_settings(hmp):
    assert (
        q(hmp, "VOLT? MIN;VOLT? MAX;CURR? MAX;SOUR:VOLT:PROT? MAX;FUSE:DEL? MAX") == "0.000;32.050;10.0000;33.000;250"
    )
    q(hmp, "CURR MIN;VOLT:PROT MIN;FUSE:DEL MAX")
    assert q(hmp, "CURR?;VOLT:PROT?;FUSE:DEL?") == "0.0000;0.000;250"
    q(hmp, "VOLT? MIDDLE")
    assert q(hmp, "SYST:ERR?") == '-224,"Illegal parameter value"'


def test_up_down_by_step(hmp):
    assert q(hmp, "VOLT:STEP?;CURR:STEP?") == "1.000;0.1000"
    q(hmp, "VOLT 5;VOLT UP;VOLT UP")
    assert q(hmp, "VOLT?") == "7.000"
    q(hmp, "SOURCE:VOLTAGE:LEVEL:IMMEDIATE:STEP:INCREMENT 0.25;VOLT DOWN")
    assert q(hmp, "VOLT?;SOUR:VOLT:STEP?") == "6.750;0.250"
    q(hmp, "CURR 1;CURR:STEP 0.5;CURR DOWN;CURR DOWN;CURR DOWN")  # the third step would go below 0
    assert q(hmp, "CURR?;SYST:ERR?") == '0.0000;-222,"Data out of range"'
    q(hmp, "VOLT 32;VOLT:STEP 1;VOLT UP")
    assert q(hmp, "VOLT?;SYST:ERR?") == '32.000;-222,"Data out of range"'


def test_apply_sets_both_and_reads_back(hmp):
    q(hmp, "INST OUT2;APPL 12.5,0.35")
    assert q(hmp, "APPL?;VOLT?;CURR?") == "12.500,0.3500;12.500;0.3500"
    q(hmp, "APPLY 5, 0.1")
    assert q(hmp, "APPLY?") == "5.000,0.1000"
    q(hmp, "APPL 40,0.1")  # refused as a whole: the current stays too
    assert q(hmp, "SYST:ERR?;APPL?") == '-222,"Data out of range";5.000,0.1000'
    q(hmp, "APPL 5")
    assert q(hmp, "SYST:ERR?") == '-109,"Missing parameter"'


def test_long_measure_forms(hmp):
    q(hmp, "APPL 10,1;OUTP ON")
    assert float(q(hmp, "MEASURE:SCALAR:VOLTAGE:DC?")) == pytest.approx(10, abs=0.003)
    assert float(q(hmp, "meas:scal:curr:dc?")) == pytest.approx(0.1, abs=0.0003)


def test_linked_fuses_trip_together(hmp, clock):
    for n in (1, 2, 3):
        q(hmp, f"INST OUT{n};APPL 5,1;OUTP:SEL ON")
    q(hmp, "OUTP:GEN ON;INST OUT1;FUSE ON;FUSE:DEL 10;FUSE:LINK 2")
    assert q(hmp, "FUSE:LINK? 2;FUSE:LINK? 3") == "1;0"
    hmp.set_param("load", 1.0, channel=1)  # CC on channel 1
    clock.advance(0.02)
    q(hmp, "INST OUT1")
    assert q(hmp, "FUSE:TRIP?;OUTP?") == "1;0"
    assert q(hmp, "INST OUT2;FUSE:TRIP?;OUTP?") == "1;0"  # linked: off with it
    assert q(hmp, "INST OUT3;FUSE:TRIP?;OUTP?") == "0;1"
    q(hmp, "INST OUT1;FUSE:UNL 2")
    assert q(hmp, "FUSE:LINK? 2") == "0"
    q(hmp, "FUSE:LINK 1")
    assert q(hmp, "SYST:ERR?") == '-221,"Settings conflict"'  # not to itself
    q(hmp, "FUSE:LINK 5")
    assert q(hmp, "SYST:ERR?") == '-222,"Data out of range"'


def test_system_and_common_commands(hmp):
    assert q(hmp, "SYST:VERS?;SYSTEM:VERSION?;*TST?") == "1999.0;1999.0;0"
    assert q(hmp, "SYST:REM;SYST:RWL;SYST:BEEP;SYST:MIX;SYST:LOC;SYST:ERR?") == '0,"No error"'
    q(hmp, "VOLT 99")
    assert q(hmp, "*ESR?;*ESR?") == "16;0"  # execution error
    q(hmp, "*OPC")
    assert q(hmp, "*ESR?") == "1"


@pytest.mark.parametrize(
    "line, error",
    [
        ("APPL abc,1", '-104,"Data type error"'),
        ("VOLT:STEP -1", '-222,"Data out of range"'),
        ("FUSE:LINK?", '-109,"Missing parameter"'),
        ("FUSE:LINK 1.5", '-224,"Illegal parameter value"'),
    ],
)
def test_malformed_inputs(hmp, line, error):
    assert q(hmp, line) is None
    assert q(hmp, "SYST:ERR?") == error
