"""Dew point from temperature and relative humidity (Magnus formula over water)."""

import math

BETA = 17.62
LAMBDA = 243.12  # °C


def dewpoint(t_celsius: float, rh_percent: float) -> float:
    """Valid for -45..60 °C; RH of 0 has no dew point, so it is floored at 0.01 %."""
    rh = min(max(rh_percent, 0.01), 100.0)
    gamma = math.log(rh / 100.0) + BETA * t_celsius / (LAMBDA + t_celsius)
    return LAMBDA * gamma / (BETA - gamma)
