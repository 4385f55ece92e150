"""Climate box driver against the climate simulator over TCP (socket:// through open_link)."""

from __future__ import annotations

import math

import pytest
from drvkit import settings_for, tcp

from slowctl.drivers.climate import ClimateBox as ClimateDriver
from slowctl.drivers.link import InstrumentError
from slowctl.drivers.readings import SensorChannel
from slowctl_dummy.sims.climate import ClimateBox as ClimateSim

CHANNELS = [0, 1]  # driver channel n is sensor n+1


def magnus(t: float, rh: float) -> float:
    """Dew point, written out here independently of slowctl.drivers.humidity (instruments.md)."""
    g = math.log(rh / 100) + 17.62 * t / (243.12 + t)
    return 243.12 * g / (17.62 - g)


@pytest.fixture
def box(clock):
    return ClimateSim(clock=clock, seed=1)


@pytest.fixture
def server(box, serve):
    return serve(box)


@pytest.fixture
def climate(server, make_driver):
    def make(channels=CHANNELS, **options):
        drv = make_driver(ClimateDriver, tcp(server), channels, options)
        drv.connect()
        drv.link.reset()
        return drv

    return make


def test_connect_identity(box, server, make_driver):
    box.serial = "0042"
    drv = make_driver(ClimateDriver, tcp(server), CHANNELS)
    assert drv.connect() == "SLOWCTL,CLIMATE,0042,1.0"
    assert drv.link.queries == ["*IDN?", "NSENS?"]


def test_link_settings_are_the_drivers(server):
    s = settings_for(ClimateDriver, tcp(server), timeout=0.7)
    assert (s.write_termination, s.read_termination, s.timeout) == ("\n", "\n", 0.7)


def test_connect_refuses_a_box_with_fewer_sensors(server, make_driver):
    drv = make_driver(ClimateDriver, tcp(server), [0, 1, 2], {"sensors": 3})
    with pytest.raises(InstrumentError, match="2 sensors, config expects 3"):
        drv.connect()


@pytest.mark.parametrize("full", [True, False])
def test_read_temperature_humidity_dewpoint(climate, full):
    drv = climate()
    r = drv.read(CHANNELS, full=full)
    assert sorted(r) == CHANNELS
    for c in r.values():
        assert isinstance(c, SensorChannel)
        assert all(type(v) is float for v in (c.temperature, c.humidity, c.dewpoint))
        assert c.temperature == pytest.approx(20.0, abs=0.3) and c.humidity == pytest.approx(40.0, abs=1.5)
        assert c.dewpoint < c.temperature
        assert c.dewpoint == pytest.approx(magnus(c.temperature, c.humidity), abs=0.011)
    assert drv.link.queries == ["READ?"]  # one round trip per poll


def test_readings_follow_the_simulator_per_sensor(climate, box, clock):
    drv = climate()
    box.set_param("temperature", 30.0, channel=2)
    box.set_param("humidity", 70.0, channel=2)
    box.set_param("temperature", -10.0, channel=1)
    clock.advance(200)  # 20 time constants
    r = drv.read(CHANNELS, full=False)
    assert r[0].temperature == pytest.approx(-10.0, abs=0.3) and r[0].humidity == pytest.approx(40.0, abs=1.5)
    assert r[1].temperature == pytest.approx(30.0, abs=0.3) and r[1].humidity == pytest.approx(70.0, abs=1.5)
    assert r[1].dewpoint == pytest.approx(magnus(r[1].temperature, r[1].humidity), abs=0.011)
    assert r[1].dewpoint < r[1].temperature and r[0].dewpoint < r[0].temperature
    assert r[1].dewpoint == pytest.approx(23.9, abs=0.6)  # 30 °C, 70 %RH
    assert sorted(drv.read([1], full=False)) == [1]


def test_faulty_sensor_is_an_instrument_error(climate, box):
    drv = climate()
    box.set_param("fault", True, channel=2)
    with pytest.raises(InstrumentError, match="sensor 2 not responding"):
        drv.read(CHANNELS, full=False)
    box.set_param("fault", False, channel=2)
    assert sorted(drv.read(CHANNELS, full=False)) == CHANNELS


def test_no_actions():
    assert ClimateDriver.actions() == frozenset()
