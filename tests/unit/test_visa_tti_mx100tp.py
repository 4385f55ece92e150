"""The Aim-TTi driver's command formatting and parsing through pyvisa with the pyvisa-sim model we ship."""

from pathlib import Path

import pytest

import slowctl_dummy
from slowctl.drivers.link import InstrumentError, LinkSettings, VisaLink, open_link
from slowctl.drivers.readings import ChannelState
from slowctl.drivers.tti_mx100tp import TtiMx100tp, TtiOptions

YAML = Path(slowctl_dummy.__file__).parent / "visa" / "tti-mx100tp.yaml"


@pytest.fixture(params=["TCPIP::mx100tp.sim::9221::SOCKET", "ASRL1::INSTR"])
def tti(request):
    settings = TtiMx100tp.link_settings
    link = open_link(
        request.param,
        LinkSettings(
            write_termination=settings.write_termination,
            read_termination=settings.read_termination,
            visa_library=f"{YAML}@sim",
            timeout=0.5,
        ),
    )
    assert isinstance(link, VisaLink)
    driver = TtiMx100tp(link, TtiOptions(), [0, 1, 2])
    yield driver
    link.close()


def test_identity_through_visa(tti):
    assert tti.connect() == "THURLBY THANDAR, MX100TP, 436129, 1.03-1.00-1.02"


def test_set_values_land_on_their_output(tti):
    tti.connect()
    tti.set_voltage(1, 5.5)
    tti.set_current(2, 0.25)
    assert (tti.vset[1], tti.vset[0], tti.vset[2]) == (5.5, 0.0, 0.0)  # "V2 5.50" parsed, header checked
    assert (tti.iset[2], tti.iset[1]) == (0.25, 1.0)


def test_numbers_go_as_plain_decimals(tti):
    tti.connect()
    tti.set_current(0, 3e-4)  # "I1 0.0003": the instrument model would refuse "3e-04"
    tti.set_voltage(0, 12.346)
    # the model reads set values back at the MX100TP's 0.1 mA / 1 mV: what was set, digit for digit
    assert tti.link.query("I1?") == "I1 0.0003" and tti.link.query("V1?") == "V1 12.346"
    assert (tti.iset[0], tti.vset[0]) == (3e-4, 12.346)
    with pytest.raises(InstrumentError, match="vset 12.3457 V is finer than the instrument's 0.001 V step"):
        tti.set_voltage(0, 12.3456789)


def test_read_parses_monitors_and_flags(tti):
    tti.connect()
    tti.set_voltage(2, 3.0)
    tti.switch(2, True)
    r = tti.read([0, 1, 2], full=True)
    assert (r[2].on, r[2].vset, r[2].iset, r[2].vmon, r[2].imon) == (True, 3.0, 1.0, 0.0, 0.0)
    assert r[2].state is ChannelState.ON and r[0].state is ChannelState.OFF
    tti.switch(2, False)
    assert not tti.read([2], full=False)[2].on


def test_out_of_range_is_refused_by_the_driver_before_sending(tti):
    tti.connect()
    with pytest.raises(InstrumentError, match="outside the instrument range 0..70"):
        tti.set_voltage(0, 71.0)
    assert tti.vset[0] == 0.0


def test_refusal_by_the_instrument_is_reported(tti):
    tti.connect()  # the model's outputs stop at 60 V, the MX100TP range is 70 V
    with pytest.raises(InstrumentError, match=r"instrument refused 'V1 65': command error"):
        tti.set_voltage(0, 65.0)
    assert tti.vset[0] == 0.0
    tti.set_voltage(0, 6.0)  # *ESR? was cleared by reading it
    assert tti.vset[0] == 6.0


def test_protection_levels_and_clear(tti):
    tti.connect()
    tti.ovp[1] = 13.5
    tti.ocp[1] = 2.5
    assert tti.link.query("OVP2?") == "VP2 13.50" and tti.link.query("OCP2?") == "CP2 2.500"
    tti.clear(1)  # TRIPRST is accepted: no error bit
    assert tti.link.query("*ESR?") == "0"
