"""The iseg SHR driver's command formatting and parsing through pyvisa with the pyvisa-sim model we ship."""

from pathlib import Path

import pytest

import slowctl_dummy
from slowctl.drivers.iseg_shr import IsegShr
from slowctl.drivers.link import InstrumentError, LinkSettings, VisaLink, open_link
from slowctl.drivers.readings import ChannelState

YAML = Path(slowctl_dummy.__file__).parent / "visa" / "iseg-shr.yaml"
RESOURCE = "TCPIP::iseg-shr.sim::10001::SOCKET"
# pyvisa-sim answers every ';'-part on its own line and knows no channel lists
OPTIONS = {"joined_queries": False, "channel_lists": False}


@pytest.fixture
def iseg():
    settings = LinkSettings(
        write_termination="\r\n", read_termination="\r\n", echo=False, visa_library=f"{YAML}@sim", timeout=0.5
    )
    link = open_link(RESOURCE, settings)
    assert isinstance(link, VisaLink)
    driver = IsegShr(link, IsegShr.parse_options(OPTIONS), [0, 1, 2, 3])
    assert driver.connect() == "iseg Spezialelektronik GmbH,SHR 4060,5200123,1.23"
    yield driver
    link.close()


def test_set_values_land_on_their_channel_with_units_parsed(iseg):
    iseg.set_voltage(1, 1234.5)
    iseg.set_current(2, 2.5e-5)
    iseg.set_ramp(3, up=12.5, down=7)
    assert (iseg.vset[1], iseg.vset[0]) == (1234.5, 0.0)  # '1.23450E+03V' -> V
    assert (iseg.iset[2], iseg.iset[1]) == (2.5e-5, 0.004)  # '2.5000E-05A' -> A
    assert (iseg.rampup[3], iseg.rampdown[3], iseg.rampup[0]) == (12.5, 7.0, 50.0)  # 'V/s'


def test_read_through_visa(iseg):
    iseg.set_voltage(0, 5.0)  # a single digit, sent as '5'
    r = iseg.read([0, 1, 2, 3], full=True)
    assert sorted(r) == [0, 1, 2, 3]
    assert (r[0].vset, r[0].iset, r[0].rampup, r[0].state, r[0].on) == (5.0, 0.004, 50.0, ChannelState.OFF, False)
    assert (r[0].vmon, r[0].imon) == (0.0, 0.0)


def test_configure_switch_and_clear_are_accepted(iseg):
    for ch in range(4):
        iseg.configure_channel(ch, 20.0, 40.0, "kill" if ch == 3 else "ramp")
    assert iseg.link.query(":CONF:TRIP:ACTION? (@2)") == "1"
    assert iseg.rampdown[3] == 40.0
    iseg.switch(0, True)  # each of these would raise InstrumentError on a queued error
    iseg.switch(0, False)
    iseg.switch(3, False)  # kill: emergency off
    iseg.clear(3)


def test_out_of_range_is_refused_before_sending(iseg):
    with pytest.raises(InstrumentError, match="outside the instrument range 0..6000 V"):
        iseg.set_voltage(0, 6500.0)
    assert iseg.vset[0] == 0.0


def test_module_refusal_comes_from_the_error_queue(iseg):
    with pytest.raises(InstrumentError, match=r'instrument refused .:CURR 0.01,\(@0\).: -222,"Data out of range"'):
        iseg.set_current(0, 0.01)  # within the family range, above this module's 4 mA
    assert iseg.iset[0] == 0.004
    iseg.set_current(0, 0.001)  # the queue was drained: the next setting is clean
    assert iseg.iset[0] == 0.001
