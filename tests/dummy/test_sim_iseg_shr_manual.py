"""iseg SHR simulator: the manual's command table beyond what our driver sends (short/long forms, formats, errors)."""

from __future__ import annotations

import pytest

from slowctl_dummy.sims.iseg_shr import IsegShr

ON, EMCY, VBOUNDS, ILIM, VLIM = 1 << 3, 1 << 5, 1 << 11, 1 << 14, 1 << 15


def q(sim: IsegShr, line: str) -> str | None:
    """The reply line after the echo (None: echo only)."""
    lines = sim.handle(line).decode().split("\r\n")
    assert lines[0] == line and lines[-1] == ""
    return lines[1] if len(lines) == 3 else None


def error(sim: IsegShr) -> str:
    return q(sim, ":SYST:ERR?")


@pytest.fixture
def hv(clock):
    return IsegShr(clock=clock, seed=1)


@pytest.mark.parametrize("event", [":EV CLEAR,(@0)", ":EVENT CLEAR,(@0)", ":event clear,(@0)", "ev clear,(@0)"])
def test_event_short_and_long_form(hv, event):
    q(hv, ":VOLT -10,(@0);:VOLT ON,(@0)")
    hv.clock.advance(1)
    assert q(hv, ":READ:CHAN:EV:STAT? (@0)") != "0"
    assert q(hv, event) is None and error(hv) == '0,"No error"'
    assert q(hv, ":READ:CHANNEL:EVENT:STATUS? (@0);:READ:CHAN:EV:ST? (@0)") == "0;0"


def test_event_mask_and_module_event_summary(hv):
    assert q(hv, ":READ:CHAN:EV:MASK? (@0-1);:READ:MOD:EV:CHANSTAT?;:READ:MOD:EV:CHANMASK?") == "0,0;0;0"
    q(hv, ":EV:MASK 32,(@1);:CONF:EV:CHANMASK 15;:VOLT EMCY OFF,(@1)")
    assert q(hv, ":READ:CHANNEL:EVENT:MASK? (@1);:READ:MODULE:EVENT:CHANSTATUS?") == "32;2"
    assert int(q(hv, ":READ:MOD:STAT?")) & (1 << 11)  # event active
    q(hv, ":EVENT:MASK 0,(@1)")
    assert not int(q(hv, ":READ:MODULE:STATUS?")) & (1 << 11)
    q(hv, ":EV:MASK -1,(@1)")
    assert error(hv) == '-222,"Data out of range"'
    q(hv, ":CONF:EV:CHANMASK 16")  # a 4-channel module has bits 0..3
    assert error(hv) == '-222,"Data out of range"'


def test_module_queries(hv):
    assert q(hv, ":READ:MODule:CHANnelnumber?") == "4"
    assert q(hv, ":read:mod:chan?;:READ:MODULE:CHANNELNUMBER?") == "4;4"
    assert IsegShr(channels=2).handle(":READ:MOD:CHAN?") == b":READ:MOD:CHAN?\r\n2\r\n"
    status = int(q(hv, ":READ:MOD:STATUS?"))
    assert status == (1 << 9) | (1 << 10) | (1 << 12) | (1 << 13) | (1 << 14)  # no ramp, all good
    assert q(hv, ":READ:MOD:EV:STAT?;:READ:MOD:EV:MASK?") == "0;0"
    q(hv, ":CONF:EV:MASK 1024;:CONF:EV CLEAR;:CONF:EVENT 8")
    assert q(hv, ":READ:MOD:EV:MASK?;:SYST:ERR?") == '1024;0,"No error"'
    assert float(q(hv, ":READ:MODULE:TEMPERATURE?").removesuffix("C")) == pytest.approx(31.0, abs=0.5)
    for rail, volts in (("P24V", 24.0), ("N24V", -24.0), ("P5V", 5.0), ("P3V", 3.3), ("P12V", 12), ("N12V", -12)):
        reply = q(hv, f":READ:MOD:SUP:{rail}?")
        assert reply.endswith("V") and float(reply[:-1]) == pytest.approx(volts, rel=0.01)
        assert q(hv, f":READ:MODULE:SUPPLY:{rail}?") is not None
    assert q(hv, ":READ:MOD:CHAN? (@0)") is None and error(hv) == '-108,"Parameter not allowed"'


def test_module_status_follows_the_channels(hv, clock):
    q(hv, ":VOLT -100,(@0);:VOLT ON,(@0)")
    clock.advance(0.5)
    assert int(q(hv, ":READ:MOD:STAT?")) & ((1 << 3) | (1 << 9)) == 1 << 3  # HV on, ramping
    clock.advance(5)
    assert int(q(hv, ":READ:MOD:STAT?")) & ((1 << 3) | (1 << 9)) == (1 << 3) | (1 << 9)


def test_combined_ramp_sets_up_and_down(hv):
    assert q(hv, ":CONFigure:RAMP:VOLTage 25,(@0-1)") is None
    assert (
        q(hv, ":CONF:RAMP:VOLT:UP? (@0-1);:CONF:RAMP:VOLT:DOWN? (@0-1);:CONF:RAMP:VOLT? (@0)")
        == "0.02500E3V/s,0.02500E3V/s;0.02500E3V/s,0.02500E3V/s;0.02500E3V/s"
    )
    q(hv, ":conf:ramp:volt 40V/s,(@2);:CONFIGURE:RAMP:VOLTAGE:DOWN 60,(@2)")
    assert q(hv, ":READ:RAMP:VOLT? (@2);:CONF:RAMP:DOWN? (@2)") == "0.04000E3V/s;0.06000E3V/s"
    q(hv, ":CONF:RAMP:VOLT 1201,(@0)")
    assert error(hv) == '-222,"Data out of range"'
    q(hv, ":CONF:RAMP:VOLT 10")
    assert error(hv) == '-109,"Missing parameter"'


def test_ramp_speed_limits(hv):
    assert (
        q(hv, ":READ:RAMP:VOLT:MIN? (@0);:READ:RAMP:VOLTAGE:MAXIMUM? (@0-1)")
        == "1.00000E-3V/s;1.20000E3V/s,1.20000E3V/s"
    )
    q(hv, ":CONF:RAMP:VOLT:UP MIN,(@0)")
    assert q(hv, ":CONF:RAMP:VOLT:UP? (@0)") == "1.00000E-3V/s"


def test_limits_nominal_and_bounds_readback(clock):
    hv = IsegShr(clock=clock, vlimit=3000, ilimit=2e-3, seed=1)
    assert q(hv, ":READ:VOLT:LIM? (@0-1);:READ:VOLTAGE:LIMIT? (@0)") == "3.00000E3V,3.00000E3V;3.00000E3V"
    assert q(hv, ":READ:CURR:LIM? (@0);:READ:CURR:NOM? (@0)") == "2000.0000E-6A;4000.0000E-6A"
    assert q(hv, ":READ:VOLT:BOU? (@0);:READ:CURR:BOU? (@0)") == "0.00000E3V;0.0000E-6A"
    q(hv, ":VOLT:BOU 10,(@0);:CURRENT:BOUNDS 1e-6,(@0)")
    assert q(hv, ":READ:VOLT:BOUNDS? (@0);:READ:CURR:BOU? (@0)") == "0.01000E3V;1.0000E-6A"
    q(hv, ":VOLT:BOU 6001,(@0)")
    assert error(hv) == '-222,"Data out of range"'
    with pytest.raises(ValueError, match="vlimit"):
        IsegShr(vlimit=7000)


def test_hardware_voltage_limit_holds_the_output(clock):
    hv = IsegShr(clock=clock, vlimit=100, seed=1)
    q(hv, ":VOLT -200,(@0);:CONF:RAMP:VOLT 100,(@0);:VOLT ON,(@0)")
    clock.advance(5)
    assert float(q(hv, ":MEAS:VOLT? (@0)")[:-1]) == pytest.approx(-100, abs=0.2)
    assert int(q(hv, ":READ:CHAN:STAT? (@0)")) & VLIM
    assert int(q(hv, ":READ:CHAN:EV:STAT? (@0)")) & VLIM


def test_hardware_current_limit_below_iset(clock):
    hv = IsegShr(clock=clock, ilimit=1e-5, seed=1)
    hv.set_param("load", 1e6)
    q(hv, ":CONF:TRIP:ACT 4,(@0);:VOLT -100,(@0);:VOLT ON,(@0)")  # Iset stays at the nominal 4 mA
    clock.advance(5)
    assert float(q(hv, ":MEAS:CURR? (@0)")[:-1]) == pytest.approx(-1e-5, rel=0.01)
    assert int(q(hv, ":READ:CHAN:STAT? (@0)")) & ILIM


def test_voltage_bounds_flag(hv, clock):
    q(hv, ":VOLT -100,(@0);:VOLT:BOU 5,(@0);:CONF:TRIP:ACT 4,(@0);:VOLT ON,(@0)")
    clock.advance(5)
    assert not int(q(hv, ":READ:CHAN:STAT? (@0)")) & VBOUNDS
    hv.advance()
    hv.set_param("load", 1e6, channel=0)  # current limited at 4 mA: 100 V still fits; lower the limit
    q(hv, ":CURR 1e-5,(@0)")
    clock.advance(0.1)
    assert int(q(hv, ":READ:CHAN:STAT? (@0)")) & VBOUNDS  # sagged to 10 V, 90 V off the set value


def test_emergency_and_control_queries(hv):
    q(hv, ":VOLT ON,(@1)")
    assert q(hv, ":READ:VOLT:EMCY? (@0-1);:READ:CHAN:CONTROL? (@0-1)") == f"0,0;0,{ON}"
    q(hv, ":VOLT EMCY OFF,(@1)")
    assert q(hv, ":READ:VOLTAGE:EMCY? (@1);:READ:CHAN:CONT? (@1)") == f"1;{EMCY}"


def test_trip_nodes_short_and_long(hv):
    q(hv, ":CONFIGURE:TRIP:ACTION 2,(@0);:CONF:TRIP:TIM 250,(@0)")
    assert q(hv, ":CONF:TRIP:ACT? (@0);:CONFIGURE:TRIP:TIME? (@0)") == "2;250ms"
    q(hv, ":CONF:TRIP:TIME 0,(@0)")
    assert error(hv) == '-222,"Data out of range"'


def test_ieee488_status_registers(hv):
    assert q(hv, "*ESR?;*STB?") == "0;0"
    q(hv, ":BOGUS")
    assert q(hv, "*STB?") == "4"  # error queue not empty
    assert q(hv, "*ESR?;*ESR?") == "32;0"  # command error, cleared by reading
    q(hv, "*ESE 16;:VOLT 1e9,(@0)")  # execution error, enabled: ESB
    assert q(hv, "*ESE?;*STB?") == "16;36"
    q(hv, "*SRE 32")
    assert q(hv, "*SRE?;*STB?") == "32;100"  # MSS
    q(hv, "*CLS;*OPC")
    assert q(hv, "*ESR?;*STB?;*ESE?") == "1;0;16"  # *CLS keeps the enable masks
    q(hv, "*ESE 256")
    assert error(hv) == '-222,"Data out of range"'
