"""The Keithley 2410 driver's command formatting and parsing through pyvisa with the pyvisa-sim model we ship."""

from pathlib import Path

import pytest

import slowctl_dummy
from slowctl.drivers.keithley_2410 import Keithley2410
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings, VisaLink, open_link
from slowctl.drivers.readings import ChannelState

YAML = Path(slowctl_dummy.__file__).parent / "visa" / "keithley-2410.yaml"


@pytest.fixture
def open_driver():
    links = []

    def make(resource="GPIB0::24::INSTR", **options):
        link = open_link(resource, LinkSettings(visa_library=f"{YAML}@sim", timeout=0.5))
        assert isinstance(link, VisaLink)
        links.append(link)
        opts = {"polarity": "-", "joined_queries": False, **options}  # pyvisa-sim: one answer per line
        return Keithley2410(link, Keithley2410.parse_options(opts), [0])

    yield make
    for link in links:
        link.close()


def test_identity_and_setup(open_driver):
    drv = open_driver()
    assert drv.connect().startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2410,")


def test_bias_formatting_with_polarity(open_driver):
    drv = open_driver()
    drv.connect()
    drv.set_voltage(0, 150.0)
    drv.set_current(0, 2e-5)
    assert drv.link.query(":SOUR:VOLT?") == "-1.500000E+02"  # the sign went out
    assert drv.link.query(":SENS:CURR:PROT?") == "+2.000000E-05"
    assert (drv.vset[0], drv.iset[0]) == (150.0, 2e-5)  # read back as magnitudes
    drv.switch(0, True)
    r = drv.read([0], full=True)[0]
    assert (r.on, r.state, r.vset, r.iset) == (True, ChannelState.ON, 150.0, 2e-5)
    assert (r.vmon, r.imon) == (100.0, 1.234e-7)  # the model's fixed :READ? answer, as magnitudes
    drv.switch(0, False)
    assert drv.read([0], full=False)[0].state is ChannelState.OFF


def test_2400_variant_switches_a_current_source_to_voltage(open_driver):
    drv = open_driver("GPIB0::25::INSTR", variant="2400", polarity="+")
    assert "MODEL 2400" in drv.connect()
    assert drv.link.query(":SOUR:FUNC?") == "VOLT"
    drv.set_voltage(0, 200.0)
    assert drv.link.query(":SOUR:VOLT?") == "+2.000000E+02"
    with pytest.raises(InstrumentError, match="outside the instrument range 0..210 V"):
        drv.set_voltage(0, 211.0)


def test_variant_mismatch_is_refused(open_driver):
    with pytest.raises(LinkError, match="not the configured variant 2400"):
        open_driver("GPIB0::24::INSTR", variant="2400").connect()


def test_refusal_comes_from_the_error_queue(open_driver):
    drv = open_driver()
    drv.connect()
    with pytest.raises(InstrumentError, match=r'SENS:CURR:PROT 0.*-222,"Data out of range"'):
        drv.set_current(0, 0.0)  # the driver's range starts at 0, the instrument's compliance at 1 nA
    assert drv.iset[0] == 105e-6
