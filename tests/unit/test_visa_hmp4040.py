"""The HMP4040 driver's command formatting through pyvisa with the pyvisa-sim model we ship."""

from pathlib import Path

import pytest

import slowctl_dummy
from slowctl.drivers.hmp4040 import Hmp4040, HmpOptions
from slowctl.drivers.link import InstrumentError, LinkSettings, VisaLink, open_link

YAML = Path(slowctl_dummy.__file__).parent / "visa" / "hmp4040.yaml"
RESOURCE = "TCPIP::hmp4040.sim::5025::SOCKET"


@pytest.fixture
def hmp():
    link = open_link(RESOURCE, LinkSettings(visa_library=f"{YAML}@sim", timeout=0.5))
    assert isinstance(link, VisaLink)
    driver = Hmp4040(link, HmpOptions(), [0, 1, 2, 3])
    yield driver
    link.close()


def test_identity_through_visa(hmp):
    assert hmp.connect().startswith("HAMEG,HMP4040,")


def test_set_values_land_on_the_selected_output(hmp):
    hmp.connect()
    hmp.set_voltage(1, 5.5)
    hmp.set_current(2, 0.25)
    assert (hmp.vset[1], hmp.vset[0]) == (5.5, 0.0)  # OUT2 got it, OUT1 did not
    assert (hmp.iset[2], hmp.iset[1]) == (0.25, 0.1)


def test_small_values_are_sent_exactly(hmp):
    hmp.connect()
    hmp.set_current(0, 3e-4)  # as 0.0003, never rounded to 0
    assert hmp.iset[0] == pytest.approx(3e-4)
    with pytest.raises(InstrumentError, match="finer than the instrument's 0.0001 A step"):
        hmp.set_current(0, 4e-5)


def test_out_of_range_is_refused_by_the_driver_before_sending(hmp):
    hmp.connect()
    with pytest.raises(InstrumentError, match="outside the instrument range"):
        hmp.set_voltage(0, 40.0)
    assert hmp.vset[0] == 0.0


def test_error_queue_refusal_is_reported(hmp):
    hmp.connect()
    with pytest.raises(InstrumentError, match='-222,"Data out of range"'):
        hmp._command("INST:NSEL 1;SOUR:VOLT 40")  # what a wrong driver range would let through


def test_switch_on_arms_the_output_and_the_master_switch(hmp):
    hmp.connect()
    hmp.switch(3, True)
    assert hmp.armed[3] and hmp.link.query("OUTP:GEN?") == "ON"
    assert not hmp.armed[0]
    hmp.switch(3, False)
    assert not hmp.armed[3]
