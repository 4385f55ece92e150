"""Keithley 2410 / 2400 SourceMeter biasing one sensor (``variant="2400"``: 210 V).

SCPI over RS-232 (or a raw socket).  The terminator is a front-panel setting
of the real instrument: ``terminator="LF"`` (default), ``"CRLF"`` or ``"CR"``
(LF CR is not simulated); requests end with the same (with CRLF a bare LF is
accepted).  Short/long forms, optional ``:SOURce``/``:SENSe`` roots and
``;``-joined commands as in ``scpi.py``; the answers of one line are joined by
``;``.  Errors give no reply and go to the error queue (``:SYST:ERR?``,
``0,"No error"`` when empty): ``-113,"Undefined header"``, ``-109,"Missing
parameter"``, ``-104,"Data type error"``, ``-222,"Data out of range"``,
``-224,"Illegal parameter value"``, ``-221,"Settings conflict"`` (compliance
above the power envelope of the source range, below), ``803,"Not permitted
with OUTPUT off"`` (``:READ?`` while off), ``802,"OUTPUT blocked by output
enable"`` (``:OUTP ON`` with the interlock open).

Commands and reply formats (numbers ``%+.6E``: ``+1.000000E+02``)::

    *IDN?   KEITHLEY INSTRUMENTS INC.,MODEL 2410,4123456,C33   Mar 31 2015 09:32:39/A02  /S/K
    *RST, *CLS, *OPC? -> 1, :SYST:ERR?
    :SOUR:FUNC VOLT|CURR | ?  -> VOLT          (CURR sources 0 A: not simulated further)
    :SOUR:VOLT <V> | ?        2410: -1100..1100 V, 2400: -210..210 V (auto range)
    :SENS:CURR:PROT <A> | ?   compliance 1e-9..1.05 A; above 21 V at most 21 mA (2410)
                              or 105 mA (2400): otherwise -221 (also for :SOUR:VOLT)
    :SENS:CURR:PROT:TRIP? -> 1 in compliance, 0 not
    :OUTP ON|OFF | ? -> 1|0;  :SOUR:CLE turns the output off
    :SOUR:CLE:AUTO ON|OFF | ? auto output-off: with ON, :READ? while the output is
                              off switches the source on for the measurement (!)
    :SENS:FUNC "VOLT","CURR" | :SENS:FUNC:OFF "VOLT" | :SENS:FUNC:OFF:ALL | ?
                              -> "VOLT:DC","CURR:DC"; :SENS:FUNC:CONC ON|OFF | ?
    :FORM:ELEM VOLT,CURR | ?  elements of :READ? (VOLT, CURR, RES, TIME, STAT)
    :READ?                    e.g. +1.000000E+02,+1.234000E-07 ; an element whose
                              function is not measured reads +9.910000E+37

After ``*RST`` (and at power-up): output off, source VOLT 0 V, compliance
105 uA, only CURR measured, all five elements, auto output-off OFF.

Physics: with the output on the source settles to the programmed voltage
within a few ms (time constant 2 ms).  The sensor leaks I = V/load *
2**((T-20)/7), times 1/(1-(V/Vbd)**4) with a ``breakdown`` voltage.  When I
would exceed the compliance the current clamps at the compliance and the
voltage sags to where the sensor draws exactly that (compliance flag set,
STAT element bit 3).  Nothing latches: compliance ends when the load lets go.
Output off: 0 V, no current.  Scenario parameters: ``load`` (ohm, default
100e6), ``temperature`` (degC, 20), ``breakdown`` (V, none), and the
instrument parameter ``interlock_open`` (true: the output goes off and
``:OUTP ON`` is refused with 802).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..base import MAX_STEP, Param
from ..scpi import ScpiError, ScpiInstrument, boolean, number, scpi

VARIANTS = {"2410": 1100.0, "2400": 210.0}  # V, highest source level
ENVELOPE = {"2410": 0.021, "2400": 0.105}  # A, highest compliance above 21 V
TERMINATORS = {"LF": (b"\n", b"\n"), "CRLF": (b"\r\n", b"\r\n"), "CR": (b"\r", b"\r")}
NOT_MEASURED = 9.91e37
ELEMENTS = ("VOLT", "CURR", "RES", "TIME", "STAT")
FUNCTIONS = {"VOLT": "VOLT", "VOLTAGE": "VOLT", "CURR": "CURR", "CURRENT": "CURR", "RES": "RES",
             "RESISTANCE": "RES"}
TAU = 0.002  # s, source settling time constant


@dataclass
class Sensor:
    load: float = 100e6  # ohm at 20 degC
    temperature: float = 20.0  # degC
    breakdown: float = math.inf  # V

    def leakage(self, v: float) -> float:
        """Current (A) at |v| volts."""
        if v >= self.breakdown:
            return math.inf
        return v / self.load * 2 ** ((self.temperature - 20.0) / 7.0) / (1.0 - (v / self.breakdown) ** 4)

    def v_limit(self, current: float) -> float:
        """Voltage at which the sensor draws `current`."""
        if math.isinf(self.breakdown):
            return current / self.leakage(1.0)
        lo, hi = 0.0, self.breakdown
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.leakage(mid) < current else (lo, mid)
        return lo


def _fmt(value: float) -> str:
    return f"{value:+.6E}"


def _names(arg: str | None) -> list[str]:
    """'"VOLT:DC","CURR"' -> ['VOLT', 'CURR']."""
    if arg is None or not arg.strip():
        raise ScpiError(-109, "Missing parameter")
    items = [a.strip() for a in arg.split(",")]
    out = []
    for item in items:
        m = re.fullmatch(r"""(["'])([A-Za-z]+)(?::DC)?\1""", item, re.IGNORECASE)
        if not m or m.group(2).upper() not in FUNCTIONS:
            raise ScpiError(-224, "Illegal parameter value")
        out.append(FUNCTIONS[m.group(2).upper()])
    return out


class Keithley2410(ScpiInstrument):
    model = "keithley-2410"
    first_channel = 0
    default_channels, min_channels, max_channels = 1, 1, 1
    params = {
        "load": Param("number", lo=0, nonzero=True),
        "temperature": Param("number", lo=-60, hi=100),
        "breakdown": Param("number", lo=0, nonzero=True),
        "interlock_open": Param("bool", per_channel=False),
    }

    def __init__(
        self,
        *,
        variant: str = "2410",
        terminator: str = "LF",
        serial: str = "4123456",
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channels=channels, seed=seed, clock=clock)
        variant, terminator = str(variant), str(terminator).upper()  # --option variant=2400 gives an int
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
        if terminator not in TERMINATORS:
            raise ValueError(f"terminator: expected one of {', '.join(TERMINATORS)}, got {terminator!r}")
        self.variant, self.serial = variant, serial
        self.request_terminator, self.reply_terminator = TERMINATORS[terminator]
        self.channels = [Sensor()]
        self.interlock_open = False
        self.vout = 0.0  # V, signed, the source before the compliance clamp
        self._reset()

    def _reset(self) -> None:
        self.output = False
        self.function = "VOLT"
        self.vset = 0.0  # V, signed
        self.compliance = 105e-6  # A
        self.auto_clear = False
        self.sense = {"CURR"}
        self.concurrent = True
        self.elements = list(ELEMENTS)

    @property
    def sensor(self) -> Sensor:
        return self.channels[0]

    # --- physics -------------------------------------------------------------------
    @property
    def target(self) -> float:
        return self.vset if self.output and self.function == "VOLT" else 0.0

    def step(self, dt: float) -> None:
        if self.interlock_open:
            self.output = False
        target = self.target
        self.vout = target + (self.vout - target) * math.exp(-dt / TAU)
        if abs(self.vout - target) < 1e-6:
            self.vout = target

    def max_step(self) -> float:
        return math.inf if self.vout == self.target and not (self.interlock_open and self.output) else MAX_STEP

    def terminals(self, source: float | None = None) -> tuple[float, float, bool]:
        """(V, I, in compliance) at the terminals; `source` overrides the settled source voltage."""
        v = abs(self.vout if source is None else source)
        if v == 0:
            return 0.0, 0.0, False
        sign = 1.0 if (self.vout if source is None else source) > 0 else -1.0
        limit = self.sensor.v_limit(self.compliance)
        clamped = v > limit
        v = min(v, limit)
        i = self.compliance if clamped else self.sensor.leakage(v)
        return sign * v, sign * i, clamped

    def _envelope(self, volts: float) -> float:
        return ENVELOPE[self.variant] if abs(volts) > 21.0 else 1.05

    # --- commands -------------------------------------------------------------------------
    @scpi("*IDN?")
    def _idn(self, arg: str | None) -> str:
        return f"KEITHLEY INSTRUMENTS INC.,MODEL {self.variant},{self.serial},C33   Mar 31 2015 09:32:39/A02  /S/K"

    @scpi("*RST")
    def _rst(self, arg: str | None) -> None:
        self._reset()

    @scpi("SOURce[1]:FUNCtion[:MODE]")
    def _sour_func(self, arg: str | None) -> None:
        word = (arg or "").strip().upper()
        if not word:
            raise ScpiError(-109, "Missing parameter")
        if word not in ("VOLT", "VOLTAGE", "CURR", "CURRENT"):
            raise ScpiError(-224, "Illegal parameter value")
        self.function = word[:4]

    @scpi("SOURce[1]:FUNCtion[:MODE]?")
    def _sour_func_q(self, arg: str | None) -> str:
        return self.function

    @scpi("[SOURce[1]:]VOLTage[:LEVel][:IMMediate][:AMPLitude]")
    def _volt(self, arg: str | None) -> None:
        vmax = VARIANTS[self.variant]
        v = number(arg, -vmax, vmax)
        if self.compliance > self._envelope(v) + 1e-12:
            raise ScpiError(-221, "Settings conflict")
        self.vset = v

    @scpi("[SOURce[1]:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def _volt_q(self, arg: str | None) -> str:
        return _fmt(self.vset)

    @scpi("[SENSe[1]:]CURRent[:DC]:PROTection[:LEVel]")
    def _prot(self, arg: str | None) -> None:
        i = number(arg, 1e-9, 1.05)
        if i > self._envelope(self.vset) + 1e-12:
            raise ScpiError(-221, "Settings conflict")
        self.compliance = i

    @scpi("[SENSe[1]:]CURRent[:DC]:PROTection[:LEVel]?")
    def _prot_q(self, arg: str | None) -> str:
        return _fmt(self.compliance)

    @scpi("[SENSe[1]:]CURRent[:DC]:PROTection:TRIPped?")
    def _prot_trip_q(self, arg: str | None) -> str:
        return str(int(self.output and self.terminals()[2]))

    @scpi("OUTPut[1][:STATe]")
    def _outp(self, arg: str | None) -> None:
        on = boolean(arg)
        if on and self.interlock_open:
            raise ScpiError(802, "OUTPUT blocked by output enable")
        self.output = on

    @scpi("OUTPut[1][:STATe]?")
    def _outp_q(self, arg: str | None) -> str:
        return str(int(self.output))

    @scpi("SOURce[1]:CLEar[:IMMediate]")
    def _sour_clear(self, arg: str | None) -> None:
        self.output = False

    @scpi("SOURce[1]:CLEar:AUTO")
    def _auto_clear(self, arg: str | None) -> None:
        self.auto_clear = boolean(arg)

    @scpi("SOURce[1]:CLEar:AUTO?")
    def _auto_clear_q(self, arg: str | None) -> str:
        return str(int(self.auto_clear))

    @scpi("[SENSe[1]:]FUNCtion[:ON]")
    def _func_on(self, arg: str | None) -> None:
        names = _names(arg)
        self.sense = (self.sense | set(names)) if self.concurrent else {names[-1]}

    @scpi("[SENSe[1]:]FUNCtion:OFF")
    def _func_off(self, arg: str | None) -> None:
        self.sense -= set(_names(arg))

    @scpi("[SENSe[1]:]FUNCtion:OFF:ALL")
    def _func_off_all(self, arg: str | None) -> None:
        self.sense = set()

    @scpi("[SENSe[1]:]FUNCtion[:ON]?")
    def _func_q(self, arg: str | None) -> str:
        order = [f for f in ("VOLT", "CURR", "RES") if f in self.sense]
        return ",".join(f'"{f}:DC"' if f != "RES" else '"RES"' for f in order)

    @scpi("[SENSe[1]:]FUNCtion:CONCurrent")
    def _conc(self, arg: str | None) -> None:
        self.concurrent = boolean(arg)

    @scpi("[SENSe[1]:]FUNCtion:CONCurrent?")
    def _conc_q(self, arg: str | None) -> str:
        return str(int(self.concurrent))

    @scpi("FORMat:ELEMents[:SENSe[1]]")
    def _elements(self, arg: str | None) -> None:
        if arg is None or not arg.strip():
            raise ScpiError(-109, "Missing parameter")
        names = [a.strip().upper() for a in arg.split(",")]
        names = [{"VOLTAGE": "VOLT", "CURRENT": "CURR", "RESISTANCE": "RES", "STATUS": "STAT"}.get(n, n)
                 for n in names]
        if any(n not in ELEMENTS for n in names) or len(set(names)) != len(names):
            raise ScpiError(-224, "Illegal parameter value")
        self.elements = [e for e in ELEMENTS if e in names]  # always sent in this order

    @scpi("FORMat:ELEMents[:SENSe[1]]?")
    def _elements_q(self, arg: str | None) -> str:
        return ",".join(self.elements)

    @scpi("READ?")
    def _read(self, arg: str | None) -> str:
        if self.output:
            v, i, clamped = self.terminals()
        elif self.auto_clear:  # the source comes on for the measurement: a real hazard
            v, i, clamped = self.terminals(self.vset if self.function == "VOLT" else 0.0)
        else:
            raise ScpiError(803, "Not permitted with OUTPUT off")
        values = {
            "VOLT": v + self.noise(2e-4) if "VOLT" in self.sense else NOT_MEASURED,
            "CURR": i * (1 + self.noise(5e-4)) + self.noise(2e-12) if "CURR" in self.sense else NOT_MEASURED,
            "RES": NOT_MEASURED,
            "TIME": self.t,
            "STAT": float(8 if clamped else 0),
        }
        return ",".join(_fmt(values[e]) for e in self.elements)
