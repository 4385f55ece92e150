"""Dew point (Magnus over water, b=17.62, c=243.12 °C)."""

import math

import pytest

from slowctl.drivers.humidity import dewpoint


@pytest.mark.parametrize(
    "t,rh,expected",
    [
        (20.0, 50.0, 9.26),
        (25.0, 100.0, 25.0),
        (0.0, 100.0, 0.0),
        (30.0, 80.0, 26.17),
        (25.0, 60.0, 16.69),
        (-10.0, 50.0, -18.47),
        (10.0, 20.0, -11.99),
    ],
)
def test_reference_values(t, rh, expected):
    assert dewpoint(t, rh) == pytest.approx(expected, abs=0.02)


def test_dew_point_below_temperature_when_not_saturated():
    for t in (-20, 0, 21.5, 45):
        for rh in (5, 30, 70, 99):
            assert dewpoint(t, rh) < t


def test_monotonic_in_humidity():
    values = [dewpoint(22.0, rh) for rh in range(1, 101)]
    assert all(b > a for a, b in zip(values, values[1:]))


def test_rh_zero_does_not_crash():
    dp = dewpoint(20.0, 0.0)
    assert math.isfinite(dp) and dp < -40
    assert dewpoint(20.0, -5.0) == dp  # floored the same way


def test_rh_above_100_is_capped():
    assert dewpoint(20.0, 120.0) == pytest.approx(20.0)
