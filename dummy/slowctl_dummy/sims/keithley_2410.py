"""Keithley 2410 / 2400 SourceMeter biasing one sensor (``variant="2400"``: 210 V).

SCPI over RS-232 (or a raw socket).  The terminator is a front-panel setting
of the real instrument: ``terminator="LF"`` (default), ``"CRLF"`` or ``"CR"``
(LF CR is not simulated); requests end with the same (with CRLF a bare LF is
accepted).  Short/long forms in any case, optional ``[..]`` nodes (``:SOURce``,
``:SENSe``, ``:LEVel`` ...) and ``;``-joined commands as in ``scpi.py``; the
answers of one line are joined by ``;``.  Errors give no reply and go to the
error queue (``:SYST:ERR?``, ``0,"No error"`` when empty):
``-113,"Undefined header"``, ``-109,"Missing parameter"``, ``-104,"Data type
error"``, ``-222,"Data out of range"``, ``-224,"Illegal parameter value"``,
``-221,"Settings conflict"`` (a compliance above the power envelope of the
source level, below), ``-230,"Data corrupt or stale"`` (``:FETCh?`` with no
reading), ``803,"Not permitted with OUTPUT off"`` (``:READ?``/``:INIT`` while
off), ``802,"OUTPUT blocked by output enable"`` (output on with the interlock
open).  IEEE 488.2 status (``*ESE``, ``*ESR?``, ``*SRE``, ``*STB?``, ``*OPC``): scpi.py.

Commands and reply formats (numbers ``%+.6E``: ``+1.000000E+02``)::

    *IDN?   KEITHLEY INSTRUMENTS INC.,MODEL 2410,4123456,C33   Mar 31 2015 09:32:39/A02  /S/K
    *RST, *CLS, *OPC? -> 1, *OPC, *WAI, *TST? -> 0
    :SYST:ERR[:NEXT]?  :SYST:ERR:ALL?  :SYST:ERR:COUN?  :SYST:ERR:CODE[:NEXT]? -> -113  :SYST:ERR:CLE
    :SYST:VERS? -> 1996.0;  :SYST:LOC, :SYST:REM, :SYST:RWL (accepted; RS-232 remote state only)
    :SOUR:FUNC[:MODE] VOLT|CURR | ?  -> VOLT
    :SOUR:VOLT[:LEV][:IMM][:AMPL] <V>|MIN|MAX | ?   2410: -1100..1100 V, 2400: -210..210 V
    :SOUR:VOLT:RANG <V>|MIN|MAX | ?  (-> +2.000000E+01)  :SOUR:VOLT:RANG:AUTO ON|OFF | ?
                              ranges 0.2, 2, 20, 1000 V (2400: 200 V); a level above 105 % of a
                              fixed range (the top range: the variant's limit) is -222
    :SOUR:CURR[:LEV][:IMM][:AMPL] <A> | ?   -1.05..1.05 A;  :SOUR:CURR:RANG[:AUTO] like VOLT
                              (ranges 1 uA .. 1 A in decades, 2410: 20 mA instead of 10 mA)
    :SOUR:DEL <s> (0..9999.999) | ? ;  :SOUR:DEL:AUTO ON|OFF | ?   (auto: 3 ms)
    :SENS:CURR[:DC]:PROT[:LEV] <A> | ?   current compliance 1e-9..1.05 A; above 21 V at most
                              21 mA (2410) or 105 mA (2400): otherwise -221 (also for :SOUR:VOLT)
    :SENS:CURR[:DC]:PROT:TRIP? -> 1 in compliance, 0 not
    :SENS:VOLT[:DC]:PROT[:LEV] <V> | ?   voltage compliance when sourcing current (*RST 21 V);
                              :SENS:VOLT[:DC]:PROT:TRIP?
    :SENS:CURR[:DC]:RANG[:UPP] <A> | ?;  :SENS:CURR:RANG:AUTO ON|OFF | ?   with a fixed range
                              the compliance is the lesser of PROT and 105 % of the range
    :SENS:CURR:NPLC, :SENS:VOLT:NPLC, :SENS:RES:NPLC <0.01..10> | ?   (stored; no timing)
    :OUTP[:STAT] ON|OFF | ? -> 1|0;  :SOUR:CLE[:IMM] turns the output off
    :SOUR:CLE:AUTO ON|OFF | ? auto output-off: with ON, :READ?/:INIT while the output is
                              off switch the source on for the measurement, and off after it
    :SENS:FUNC[:ON] "VOLT","CURR" | :SENS:FUNC:OFF "VOLT" | :SENS:FUNC:OFF:ALL | ?
                              -> "VOLT:DC","CURR:DC";  :SENS:FUNC:CONC ON|OFF | ?
    :FORM:ELEM[:SENS] VOLT,CURR | ?  elements of a reading (VOLT, CURR, RES, TIME, STAT)
    :INIT[:IMM]               take a reading (source, delay, measure) into the sample buffer
    :FETC?                    the last reading (-230 when there is none; *RST clears it)
    :READ?                    :INIT then :FETC?, e.g. +1.000000E+02,+1.234000E-07
    :CONF:<function> | :CONF? one-shot setup: only <function> (VOLT, CURR, RES) is measured,
                              the output turns on (802 with the interlock open)
    :MEAS[:<function>]?       :CONF:<function> (none: the present functions) then :READ?

A reading lists the :FORM:ELEM elements in the fixed order VOLT, CURR, RES,
TIME, STAT.  VOLT and CURR are measured values when that function is measured;
otherwise the sourced one reads its programmed source value (VOLT while
sourcing voltage, CURR while sourcing current), and only an element neither
measured nor sourced reads +9.910000E+37 (the 2410 Quick Results Guide, "Data
string").  RES is V/I when RES is measured.  TIME is the time of the
measurement in s, STAT bit 3 the compliance flag.

Programming resolution (2400-series manual, specifications): a source level is held on the grid of its
range (the fixed one, or with auto range the lowest that holds it: 105 % of its name), voltage 5 uV
(200 mV), 50 uV (2 V), 500 uV (20 V), 5 mV (200 V, 2400), 50 mV (1000 V, 2410); current 50 pA (1 uA) ..
50 uA (1 A), 500 nA on the 10 mA (2400) / 20 mA (2410) range.  A finer value is rounded to it:
``:SOUR:VOLT 150.01`` holds 150.00 V on a 2410.  The current compliance is held on the grid of the
current source range that holds it (assumed; the driver declares the same).

Source-delay-measure: the source delay is the settling period between the
source action and the measurement (2400 manual, trigger model), so a reading
describes the output the delay after the request: ``:OUTP ON;:READ?`` returns
the settled level with the default auto delay.  The auto-delay value of the
real instrument depends on the range and is unconfirmed here (3 ms).

After ``*RST`` (and at power-up): output off, source VOLT 0 V (CURR 0 A), auto
ranges, current compliance 105 uA, voltage compliance 21 V, only CURR
measured, concurrent ON, all five elements, auto output-off OFF, auto delay ON.

Physics: with the output on the source settles to the programmed level with a
time constant of 0.2 ms.  The output biases a silicon sensor
(``slowctl_dummy.sensor``): a bulk generation current rising as
sqrt(V/``depletion``) up to ``bulk`` at full depletion, plus the ohmic path
V/``load``, scaled with ``temperature``, times 1/(1-(V/Vbd)**4) with a
``breakdown`` voltage (the model works on |V|; the current has the sign of
V, so a negative bias reads a negative current).  Sourcing voltage, when I would
exceed the compliance the current clamps at the compliance and the voltage sags
to where the sensor draws exactly that; sourcing current, the voltage is what
the sensor needs for that current, clamped at the voltage compliance (compliance
flag set, STAT bit 3).  Nothing latches: compliance ends when the load lets go.
Output off: 0 V, no current.  Scenario parameters: ``load`` (ohm, default
100e6), ``temperature`` (degC, 20), ``breakdown`` (V, none), ``depletion``
(V, 100), ``bulk`` (A, 0), and the instrument parameter ``interlock_open`` (true: the output goes off and
output on is refused with 802).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

from ..base import MAX_STEP, Param
from ..scpi import ScpiError, ScpiInstrument, boolean, number, scpi
from ..sensor import SiliconSensor, sensor_params

VARIANTS = {"2410": 1100.0, "2400": 210.0}  # V, highest source level
ENVELOPE = {"2410": 0.021, "2400": 0.105}  # A, highest compliance above 21 V
TERMINATORS = {"LF": (b"\n", b"\n"), "CRLF": (b"\r\n", b"\r\n"), "CR": (b"\r", b"\r")}
NOT_MEASURED = 9.91e37
ELEMENTS = ("VOLT", "CURR", "RES", "TIME", "STAT")
FUNCTIONS = {"VOLT": "VOLT", "VOLTAGE": "VOLT", "CURR": "CURR", "CURRENT": "CURR", "RES": "RES", "RESISTANCE": "RES"}
TAU = 0.0002  # s, source settling time constant
AUTO_DELAY = 0.003  # s, source delay with :SOUR:DEL:AUTO ON (unconfirmed value)
V_RANGES = {"2410": (0.2, 2.0, 20.0, 1000.0), "2400": (0.2, 2.0, 20.0, 200.0)}
I_RANGES = {"2410": (1e-6, 1e-5, 1e-4, 1e-3, 2e-2, 1e-1, 1.0), "2400": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)}
IMAX = 1.05  # A, highest current source level and compliance
# source programming resolution per range (2400-series manual, specifications appendix): a level is held on
# its range's grid (auto range: the lowest range that holds it); the compliance on that of the current
# source range that holds it (assumed, as the driver does)
STEPS = {
    "VOLT": {0.2: 5e-6, 2.0: 50e-6, 20.0: 500e-6, 200.0: 5e-3, 1000.0: 50e-3},
    "CURR": {1e-6: 50e-12, 1e-5: 500e-12, 1e-4: 5e-9, 1e-3: 50e-9, 1e-2: 500e-9, 2e-2: 500e-9, 1e-1: 5e-6, 1.0: 50e-6},
}
VLOW = 21.0  # V, the envelope corner: above it the current is limited to ENVELOPE


def _function(word: str | None) -> str:
    """VOLT, CURR (sourcing functions) from a parameter."""
    word = (word or "").strip().upper()
    if not word:
        raise ScpiError(-109, "Missing parameter")
    if word not in ("VOLT", "VOLTAGE", "CURR", "CURRENT"):
        raise ScpiError(-224, "Illegal parameter value")
    return word[:4]


def _range(ranges: tuple[float, ...], value: float) -> float:
    """The lowest range that holds value (the top one when none does)."""
    return next((r for r in ranges if abs(value) <= r * 1.05), ranges[-1])


def _held(value: float, step: float) -> float:
    """The programmed value: the nearest whole number of steps, without binary noise."""
    return float(f"{round(value / step) * step:.12g}")


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
        **sensor_params(),
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
        self.channels = [SiliconSensor()]  # the one output's load
        self.interlock_open = False
        self.src = 0.0  # the source output (V or A, signed) before the compliance clamp
        self._reset()

    def _reset(self) -> None:
        self.output = False
        self.function = "VOLT"
        self.vset = 0.0  # V, signed
        self.iset = 0.0  # A, signed
        self.level_range: dict[str, float | None] = {"VOLT": None, "CURR": None}  # fixed source range; None: auto
        self.compliance = 105e-6  # A
        self.vcompliance = 21.0  # V
        self.meas_range: float | None = None  # fixed current measurement range; None: auto
        self.nplc = {"VOLT": 1.0, "CURR": 1.0, "RES": 1.0}
        self.delay = AUTO_DELAY
        self.auto_delay = True
        self.auto_clear = False
        self.sense = {"CURR"}
        self.concurrent = True
        self.elements = list(ELEMENTS)
        self.sample: str | None = None  # the last reading, for :FETCh?

    @property
    def sensor(self) -> SiliconSensor:
        return self.channels[0]

    # --- physics -------------------------------------------------------------------
    @property
    def target(self) -> float:
        if not self.output:
            return 0.0
        return self.vset if self.function == "VOLT" else self.iset

    def step(self, dt: float) -> None:
        if self.interlock_open:
            self.output = False
        target = self.target
        self.src = target + (self.src - target) * math.exp(-dt / TAU)
        if abs(self.src - target) < 1e-12 + 1e-9 * abs(target):
            self.src = target

    def max_step(self) -> float:
        return math.inf if self.src == self.target and not (self.interlock_open and self.output) else MAX_STEP

    @property
    def i_compliance(self) -> float:
        """The real compliance or, with a fixed measurement range below it, the range compliance."""
        return self.compliance if self.meas_range is None else min(self.compliance, 1.05 * self.meas_range)

    def terminals(self, source: float) -> tuple[float, float, bool]:
        """(V, I, in compliance) at the terminals with the source at `source` (V or A)."""
        if source == 0:
            return 0.0, 0.0, False
        sign = 1.0 if source > 0 else -1.0
        if self.function == "CURR":
            v = self.sensor.voltage_at(abs(source))
            if v > self.vcompliance:
                return sign * self.vcompliance, sign * self.sensor.current(self.vcompliance), True
            return sign * v, source, False
        limit = self.sensor.voltage_at(self.i_compliance)
        if abs(source) > limit:
            return sign * limit, sign * self.i_compliance, True
        return source, sign * self.sensor.current(abs(source)), False

    def settled(self, source: float) -> float:
        """The source level one source delay from now."""
        target = self.target
        return target + (source - target) * math.exp(-self.delay / TAU)

    def _envelope(self, volts: float) -> float:
        return ENVELOPE[self.variant] if abs(volts) > VLOW else IMAX

    # --- measurement -------------------------------------------------------------------
    def _measure(self) -> str:
        """One source-delay-measure cycle: the reading as :FETCh? returns it."""
        if not self.output:
            if not self.auto_clear:
                raise ScpiError(803, "Not permitted with OUTPUT off")
            self._switch_on()  # auto output-off: the source comes on for the measurement, a real hazard
        v, i, clamped = self.terminals(self.settled(self.src))
        if self.auto_clear:
            self.output = False  # ... and goes off after it
        sourced = {"VOLT": self.vset, "CURR": self.iset}
        values = {
            "VOLT": v + self.noise(2e-4) if "VOLT" in self.sense else NOT_MEASURED,
            "CURR": i * (1 + self.noise(5e-4)) + self.noise(2e-12) if "CURR" in self.sense else NOT_MEASURED,
            "RES": abs(v / i) if "RES" in self.sense and i else NOT_MEASURED,
            "TIME": self.t + self.delay,
            "STAT": float(8 if clamped else 0),
        }
        for name in ("VOLT", "CURR"):  # not measured but sourced: the programmed source value
            if name not in self.sense and self.function == name:
                values[name] = sourced[name]
        self.sample = ",".join(_fmt(values[e]) for e in self.elements)
        return self.sample

    # --- common and system commands --------------------------------------------------------
    @scpi("*IDN?")
    def _idn(self, arg: str | None) -> str:
        return f"KEITHLEY INSTRUMENTS INC.,MODEL {self.variant},{self.serial},C33   Mar 31 2015 09:32:39/A02  /S/K"

    @scpi("*RST")
    def _rst(self, arg: str | None) -> None:
        self._reset()

    @scpi("*TST?")
    def _tst(self, arg: str | None) -> str:
        return "0"

    @scpi("SYSTem:ERRor:ALL?")
    def _err_all(self, arg: str | None) -> str:
        errors = [str(e) for e in self.errors] or ['0,"No error"']
        self.errors.clear()
        return ",".join(errors)

    @scpi("SYSTem:ERRor:COUNt?")
    def _err_count(self, arg: str | None) -> str:
        return str(len(self.errors))

    @scpi("SYSTem:ERRor:CODE[:NEXT]?")
    def _err_code(self, arg: str | None) -> str:
        return str(self.errors.popleft().code) if self.errors else "0"

    @scpi("SYSTem:ERRor:CLEar")
    def _err_clear(self, arg: str | None) -> None:
        self.errors.clear()

    @scpi("SYSTem:VERSion?")
    def _version(self, arg: str | None) -> str:
        return "1996.0"

    @scpi("SYSTem:LOCal")
    @scpi("SYSTem:REMote")
    @scpi("SYSTem:RWLock")
    def _remote_state(self, arg: str | None) -> None:
        return None  # the front-panel lock of an RS-232 session has nothing to simulate

    # --- source -------------------------------------------------------------------------------
    @scpi("SOURce[1]:FUNCtion[:MODE]")
    def _sour_func(self, arg: str | None) -> None:
        self.function = _function(arg)

    @scpi("SOURce[1]:FUNCtion[:MODE]?")
    def _sour_func_q(self, arg: str | None) -> str:
        return self.function

    def _level(self, function: str, arg: str | None) -> float:
        """A source level within the fixed range (or the variant's limit)."""
        top = VARIANTS[self.variant] if function == "VOLT" else IMAX
        fixed = self.level_range[function]
        hi = top if fixed is None or fixed == self._ranges(function)[-1] else fixed * 1.05
        return number(arg, -hi, hi)

    def _programmed(self, function: str, level: float) -> float:
        """A source level as held: on the grid of the fixed range, or of the lowest range that holds it."""
        r = self.level_range[function] or _range(self._ranges(function), level)
        return _held(level, STEPS[function][r])

    def _ranges(self, function: str) -> tuple[float, ...]:
        return V_RANGES[self.variant] if function == "VOLT" else I_RANGES[self.variant]

    @scpi("[SOURce[1]:]VOLTage[:LEVel][:IMMediate][:AMPLitude]")
    def _volt(self, arg: str | None) -> None:
        v = self._level("VOLT", arg)
        if self.compliance > self._envelope(v) + 1e-12:
            raise ScpiError(-221, "Settings conflict")
        self.vset = self._programmed("VOLT", v)

    @scpi("[SOURce[1]:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def _volt_q(self, arg: str | None) -> str:
        return _fmt(self.vset)

    @scpi("[SOURce[1]:]CURRent[:LEVel][:IMMediate][:AMPLitude]")
    def _curr(self, arg: str | None) -> None:
        i = self._level("CURR", arg)
        if abs(i) > ENVELOPE[self.variant] + 1e-12 and self.vcompliance > VLOW:
            raise ScpiError(-221, "Settings conflict")
        self.iset = self._programmed("CURR", i)

    @scpi("[SOURce[1]:]CURRent[:LEVel][:IMMediate][:AMPLitude]?")
    def _curr_q(self, arg: str | None) -> str:
        return _fmt(self.iset)

    def _set_range(self, function: str, arg: str | None) -> None:
        ranges = self._ranges(function)
        top = VARIANTS[self.variant] if function == "VOLT" else IMAX
        word = (arg or "").strip().upper()
        r = ranges[0] if word in ("MIN", "MINIMUM") else _range(ranges, number(arg, -top, top))
        level = self.vset if function == "VOLT" else self.iset
        if abs(level) > (r * 1.05 if r != ranges[-1] else math.inf):
            raise ScpiError(-221, "Settings conflict")  # the programmed level does not fit
        self.level_range[function] = r

    def _range_q(self, function: str) -> str:
        fixed = self.level_range[function]
        level = self.vset if function == "VOLT" else self.iset
        return _fmt(_range(self._ranges(function), level) if fixed is None else fixed)

    @scpi("[SOURce[1]:]VOLTage:RANGe")
    def _vrange(self, arg: str | None) -> None:
        self._set_range("VOLT", arg)

    @scpi("[SOURce[1]:]VOLTage:RANGe?")
    def _vrange_q(self, arg: str | None) -> str:
        return self._range_q("VOLT")

    @scpi("[SOURce[1]:]CURRent:RANGe")
    def _irange(self, arg: str | None) -> None:
        self._set_range("CURR", arg)

    @scpi("[SOURce[1]:]CURRent:RANGe?")
    def _irange_q(self, arg: str | None) -> str:
        return self._range_q("CURR")

    @scpi("[SOURce[1]:]VOLTage:RANGe:AUTO")
    def _vrange_auto(self, arg: str | None) -> None:
        self._range_auto("VOLT", arg)

    @scpi("[SOURce[1]:]CURRent:RANGe:AUTO")
    def _irange_auto(self, arg: str | None) -> None:
        self._range_auto("CURR", arg)

    def _range_auto(self, function: str, arg: str | None) -> None:
        if boolean(arg):
            self.level_range[function] = None
        elif self.level_range[function] is None:  # auto off keeps the range in use
            level = self.vset if function == "VOLT" else self.iset
            self.level_range[function] = _range(self._ranges(function), level)

    @scpi("[SOURce[1]:]VOLTage:RANGe:AUTO?")
    def _vrange_auto_q(self, arg: str | None) -> str:
        return str(int(self.level_range["VOLT"] is None))

    @scpi("[SOURce[1]:]CURRent:RANGe:AUTO?")
    def _irange_auto_q(self, arg: str | None) -> str:
        return str(int(self.level_range["CURR"] is None))

    @scpi("SOURce[1]:DELay")
    def _delay(self, arg: str | None) -> None:
        self.delay, self.auto_delay = number(arg, 0.0, 9999.999), False  # a value turns auto delay off

    @scpi("SOURce[1]:DELay?")
    def _delay_q(self, arg: str | None) -> str:
        return _fmt(self.delay)

    @scpi("SOURce[1]:DELay:AUTO")
    def _delay_auto(self, arg: str | None) -> None:
        self.auto_delay = boolean(arg)
        if self.auto_delay:
            self.delay = AUTO_DELAY

    @scpi("SOURce[1]:DELay:AUTO?")
    def _delay_auto_q(self, arg: str | None) -> str:
        return str(int(self.auto_delay))

    # --- compliance and measurement range --------------------------------------------------------
    @scpi("[SENSe[1]:]CURRent[:DC]:PROTection[:LEVel]")
    def _prot(self, arg: str | None) -> None:
        i = number(arg, 1e-9, IMAX)
        if i > self._envelope(self.vset) + 1e-12:
            raise ScpiError(-221, "Settings conflict")
        self.compliance = _held(i, STEPS["CURR"][_range(self._ranges("CURR"), i)])

    @scpi("[SENSe[1]:]CURRent[:DC]:PROTection[:LEVel]?")
    def _prot_q(self, arg: str | None) -> str:
        return _fmt(self.compliance)

    @scpi("[SENSe[1]:]CURRent[:DC]:PROTection:TRIPped?")
    def _prot_trip_q(self, arg: str | None) -> str:
        return str(int(self.output and self.function == "VOLT" and self.terminals(self.settled(self.src))[2]))

    @scpi("[SENSe[1]:]VOLTage[:DC]:PROTection[:LEVel]")
    def _vprot(self, arg: str | None) -> None:
        v = number(arg, 0.2, VARIANTS[self.variant])
        if v > VLOW and abs(self.iset) > ENVELOPE[self.variant] + 1e-12:
            raise ScpiError(-221, "Settings conflict")
        self.vcompliance = v

    @scpi("[SENSe[1]:]VOLTage[:DC]:PROTection[:LEVel]?")
    def _vprot_q(self, arg: str | None) -> str:
        return _fmt(self.vcompliance)

    @scpi("[SENSe[1]:]VOLTage[:DC]:PROTection:TRIPped?")
    def _vprot_trip_q(self, arg: str | None) -> str:
        return str(int(self.output and self.function == "CURR" and self.terminals(self.settled(self.src))[2]))

    @scpi("[SENSe[1]:]CURRent[:DC]:RANGe[:UPPer]")
    def _meas_range(self, arg: str | None) -> None:
        self.meas_range = _range(I_RANGES[self.variant], number(arg, 0.0, IMAX))

    @scpi("[SENSe[1]:]CURRent[:DC]:RANGe[:UPPer]?")
    def _meas_range_q(self, arg: str | None) -> str:
        auto = _range(I_RANGES[self.variant], self.compliance)  # auto range follows the compliance
        return _fmt(auto if self.meas_range is None else self.meas_range)

    @scpi("[SENSe[1]:]CURRent[:DC]:RANGe:AUTO")
    def _meas_range_auto(self, arg: str | None) -> None:
        on = boolean(arg)
        if on:
            self.meas_range = None
        elif self.meas_range is None:
            self.meas_range = _range(I_RANGES[self.variant], self.compliance)

    @scpi("[SENSe[1]:]CURRent[:DC]:RANGe:AUTO?")
    def _meas_range_auto_q(self, arg: str | None) -> str:
        return str(int(self.meas_range is None))

    @scpi("[SENSe[1]:]CURRent[:DC]:NPLCycles")
    @scpi("[SENSe[1]:]VOLTage[:DC]:NPLCycles")
    @scpi("[SENSe[1]:]RESistance:NPLCycles")
    def _nplc(self, arg: str | None) -> None:
        value = number(arg, 0.01, 10.0)
        for name in self.nplc:  # one integration time for all functions, as on the 2400
            self.nplc[name] = value

    @scpi("[SENSe[1]:]CURRent[:DC]:NPLCycles?")
    @scpi("[SENSe[1]:]VOLTage[:DC]:NPLCycles?")
    @scpi("[SENSe[1]:]RESistance:NPLCycles?")
    def _nplc_q(self, arg: str | None) -> str:
        return _fmt(self.nplc["CURR"])

    # --- output ----------------------------------------------------------------------------------
    def _switch_on(self) -> None:
        if self.interlock_open:
            raise ScpiError(802, "OUTPUT blocked by output enable")
        self.output = True

    @scpi("OUTPut[1][:STATe]")
    def _outp(self, arg: str | None) -> None:
        if boolean(arg):
            self._switch_on()
        else:
            self.output = False

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

    # --- sense functions and format ------------------------------------------------------------------
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
    @scpi("CONFigure?")
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
        names = [{"VOLTAGE": "VOLT", "CURRENT": "CURR", "RESISTANCE": "RES", "STATUS": "STAT"}.get(n, n) for n in names]
        if any(n not in ELEMENTS for n in names) or len(set(names)) != len(names):
            raise ScpiError(-224, "Illegal parameter value")
        self.elements = [e for e in ELEMENTS if e in names]  # always sent in this order

    @scpi("FORMat:ELEMents[:SENSe[1]]?")
    def _elements_q(self, arg: str | None) -> str:
        return ",".join(self.elements)

    # --- signal-oriented measurement commands -----------------------------------------------------------
    @scpi("INITiate[:IMMediate]")
    def _init(self, arg: str | None) -> None:
        self._measure()

    @scpi("ABORt")
    def _abort(self, arg: str | None) -> None:
        return None  # every reading completes within its request: always idle

    @scpi("FETCh?")
    def _fetch(self, arg: str | None) -> str:
        if self.sample is None:
            raise ScpiError(-230, "Data corrupt or stale")
        return self.sample

    @scpi("READ?")
    def _read(self, arg: str | None) -> str:
        return self._measure()

    def _configure(self, function: str) -> None:
        """:CONFigure:<function>: one-shot setup of that function, output on."""
        self._switch_on()
        self.sense, self.sample = {function}, None

    @scpi("CONFigure:VOLTage[:DC]")
    def _conf_volt(self, arg: str | None) -> None:
        self._configure("VOLT")

    @scpi("CONFigure:CURRent[:DC]")
    def _conf_curr(self, arg: str | None) -> None:
        self._configure("CURR")

    @scpi("CONFigure:RESistance")
    def _conf_res(self, arg: str | None) -> None:
        self._configure("RES")

    @scpi("MEASure?")
    def _meas(self, arg: str | None) -> str:
        self._switch_on()  # :MEASure? turns the output on by itself
        return self._measure()

    @scpi("MEASure:VOLTage[:DC]?")
    def _meas_volt(self, arg: str | None) -> str:
        self._configure("VOLT")
        return self._measure()

    @scpi("MEASure:CURRent[:DC]?")
    def _meas_curr(self, arg: str | None) -> str:
        self._configure("CURR")
        return self._measure()

    @scpi("MEASure:RESistance?")
    def _meas_res(self, arg: str | None) -> str:
        self._configure("RES")
        return self._measure()
