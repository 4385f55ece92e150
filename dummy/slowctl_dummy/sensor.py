"""A reverse-biased silicon sensor as the HV simulators' load (one model shared by them all).

The current drawn at bias voltage V (the model works on |V|; the sign is the supply's polarity)::

    I(V, T) = M(V) * ( I_gen(V) * g(T)  +  V / load * 2**((T - 20) / 7) )

    I_gen(V) = bulk * sqrt(min(V, Vdep) / Vdep)                       bulk generation current
    g(T)     = (T / T0)**2 * exp(-E_eff / (2 k) * (1 / T - 1 / T0))   T in K, T0 = 293.15 K (20 degC)
    M(V)     = 1 / (1 - (V / Vbd)**4)  below Vbd, infinite at and above  avalanche multiplication

Parameters (each one a scenario parameter, ``set: {bulk: 1.5e-6}``):

    bulk         A    generation current of the fully depleted sensor at 20 degC (default 0: none)
    depletion    V    full depletion voltage Vdep (default 100; only matters with bulk > 0)
    load         ohm  ohmic path (default 100e6: 1 uA at 100 V)
    temperature  degC sensor temperature (default 20)
    breakdown    V    avalanche breakdown voltage Vbd (default none)

With the defaults (``bulk`` 0, no breakdown) the sensor is the plain ohmic load the simulators always
had, so scenarios written for it (``set: {load: 10000}`` to provoke a trip) behave as before.

Physics and sources:

* Generation current: thermal generation in the depleted volume, J_gen = q n_i W / (2 tau_g)
  (Shockley-Read-Hall; S. M. Sze, K. K. Ng, Physics of Semiconductor Devices, 3rd ed., Wiley 2007,
  sec. 2.4).  The depletion depth grows as W = sqrt(2 eps V / (q N_eff)) until it reaches the sensor
  thickness d at the full depletion voltage Vdep = q N_eff d**2 / (2 eps); above Vdep the depleted
  volume, and so the current, no longer grows (G. Lutz, Semiconductor Radiation Detectors, Springer
  1999, ch. 7; the "sqrt rise then plateau" of every sensor IV curve).
* Temperature: I ~ T**2 exp(-E_eff / (2 k T)) with E_eff = 1.21 eV (A. Chilingarov, "Temperature
  dependence of the current generated in Si bulk", JINST 8 (2013) P10003; the scaling used by RD50
  and the LHC trackers).  Around 20 degC it is x1.8 per 7 K, close to the "x2 per 7 K" rule of thumb.
* Ohmic path: keeps the rule of thumb 2**((T - 20) / 7) it always had in these simulators, so that
  existing scenarios and tests (``hv-warm-box``: 20 -> 34 degC is "leakage x4") keep their numbers;
  it stands for the lumped surface/edge leakage, whose temperature law the bulk formula does not claim.
* Avalanche: Miller's empirical multiplication factor M = 1 / (1 - (V / V_BD)**n), n = 2..6 for
  silicon (S. L. Miller, "Avalanche breakdown in germanium", Phys. Rev. 99 (1955) 1234; Sze sec. 2.4.4);
  n = 4 as before.  It multiplies every carrier crossing the high-field region, so both terms.  At and
  beyond Vbd the current is unbounded: only the supply's current limit or compliance holds it, which
  is what the simulators do with ``voltage_at`` (the voltage sags to where the sensor draws the limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .base import Param

E_EFF = 1.21  # eV, effective band gap of the generation current (Chilingarov 2013)
K_B = 8.617333262e-5  # eV/K, Boltzmann constant
T_REF = 20.0  # degC, the temperature the currents are given at
KELVIN = 273.15
AVALANCHE_EXPONENT = 4  # Miller's n


def generation_scale(temperature: float, reference: float = T_REF) -> float:
    """g(T): the generation current at `temperature` relative to `reference` (both degC)."""
    t, t0 = temperature + KELVIN, reference + KELVIN
    return (t / t0) ** 2 * math.exp(-E_EFF / (2 * K_B) * (1 / t - 1 / t0))


def ohmic_scale(temperature: float, reference: float = T_REF) -> float:
    """The ohmic path's rule of thumb: doubles every 7 K (kept from the earlier model)."""
    return 2 ** ((temperature - reference) / 7.0)


@dataclass
class SiliconSensor:
    """One sensor on one supply output; SI units (V, A, ohm), degC."""

    load: float = 100e6  # ohm: the ohmic path at 20 degC
    temperature: float = 20.0  # degC
    breakdown: float = math.inf  # V
    depletion: float = 100.0  # V, full depletion
    bulk: float = 0.0  # A, generation current at full depletion and 20 degC
    # the last voltage_at answer: the simulators ask for the same limit at every physics step
    _last: tuple[tuple[float, ...], float] | None = field(default=None, init=False, repr=False, compare=False)

    def generation(self, v: float) -> float:
        """Bulk generation current (A) at |v| and 20 degC: it grows with the depleted depth ~ sqrt(V)."""
        return self.bulk * math.sqrt(min(abs(v), self.depletion) / self.depletion)

    def multiplication(self, v: float) -> float:
        """Avalanche factor M at |v|: 1 far below breakdown, infinite at and beyond it."""
        if abs(v) >= self.breakdown:
            return math.inf
        return 1.0 / (1.0 - (abs(v) / self.breakdown) ** AVALANCHE_EXPONENT)

    def current(self, v: float) -> float:
        """The current (A, >= 0) the sensor draws at bias |v|; inf at and beyond breakdown."""
        v = abs(v)
        if v == 0:
            return 0.0
        m = self.multiplication(v)
        if math.isinf(m):
            return math.inf
        gen = self.generation(v) * generation_scale(self.temperature)
        ohmic = v / self.load * ohmic_scale(self.temperature)
        return m * (gen + ohmic)

    def voltage_at(self, current: float) -> float:
        """The bias (V, >= 0) at which the sensor draws `current` (A): where a current limit holds it.

        current(V) rises monotonically from 0, so bisect.  The upper end: the least of the breakdown
        voltage and the voltages at which the ohmic path alone, or the generation current alone, would
        draw `current` (the whole current is at least either).  Returns the low end, where the sensor
        draws at most `current`, to a relative 1e-12.
        """
        if current <= 0:
            return 0.0
        key = (current, self.load, self.temperature, self.breakdown, self.depletion, self.bulk)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        hi = min(self.breakdown, current * self.load / ohmic_scale(self.temperature))
        full = self.bulk * generation_scale(self.temperature)  # generation current at full depletion
        if current < full:
            hi = min(hi, self.depletion * (current / full) ** 2)
        lo = 0.0
        for _ in range(200):  # ~40 halvings to 1e-12 plus a few while lo is 0; a bound, never reached
            if hi - lo <= 1e-12 * hi:
                break
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.current(mid) < current else (lo, mid)
        self._last = (key, lo)
        return lo


def sensor_params(prefix: str = "") -> dict[str, Param]:
    """The sensor's scenario parameters, on the attribute `prefix` + name of a channel (e.g. "sensor.")."""
    return {
        "load": Param("number", lo=0, nonzero=True, attr=f"{prefix}load"),
        "temperature": Param("number", lo=-60, hi=100, attr=f"{prefix}temperature"),
        "breakdown": Param("number", lo=0, nonzero=True, attr=f"{prefix}breakdown"),
        "depletion": Param("number", lo=0, hi=10000, nonzero=True, attr=f"{prefix}depletion"),
        "bulk": Param("number", lo=0, hi=0.01, attr=f"{prefix}bulk"),
    }
