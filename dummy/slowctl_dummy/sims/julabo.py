"""JULABO recirculating chiller (FP50 / CF series serial command set), one bath.

Line protocol, ASCII.  Requests end CR (CF series; the default) or LF (FP50:
construct with ``eol="lf"``, on the command line ``--option eol=lf``); CR LF
is accepted in both modes.  Replies end CR LF.
Commands are case-insensitive; a value follows after one space.

Requests and replies (``in_`` replies: ``%.2f`` temperatures, integers for modes, stages and powers)::

    version              JULABO FP50-HE VERSION 4.0
    status               03 REMOTE START      (two-digit code, space, text; see below)
    in_pv_00             21.53     bath temperature, degC (may be negative: -5.20)
    in_pv_01             35        heating (+) / cooling (-) power in use, %
    in_pv_02             21.53     external Pt100 sensor, degC (simulated in the bath)
    in_pv_03             21.55     safety sensor, degC
    in_pv_04             220.00    excess temperature protector setting (SafeTemp), degC
    in_sp_00 .. in_sp_02 20.00     setpoints 1..3, degC           out_sp_00 .. out_sp_02 <T>  (sp_min..sp_max)
    in_sp_03, in_sp_04   200.00    high / low temperature warning limits   out_sp_03, out_sp_04 <T>
    in_sp_06             0         temperature unit: 0 degC (always 0 here)
    in_sp_07             2         pump pressure stage             out_sp_07 1..4
    in_mode_01           0         selected setpoint 0..2 (sp_00..sp_02)   out_mode_01 0..2
    in_mode_02           0         selftuning 0 off, 1 once, 2 always      out_mode_02 0..2
    in_mode_03           0         external programmer input 0 voltage, 1 current   out_mode_03 0|1
    in_mode_04           0         control on 0 internal, 1 external Pt100 sensor   out_mode_04 0|1
    in_mode_05           1         1 running (started), 0 stopped          out_mode_05 1|0 start / stop
    in_mode_08           1         control dynamics 0 aperiodic, 1 standard         out_mode_08 0|1
    in_hil_00            -100      max cooling power, % (negative)  out_hil_00 -100..0
    in_hil_01            100       max heating power, %             out_hil_01 10..100
    in_par_06 .. 08      5.0 / 60 / 10   internal controller Xp (K), Tn (s), Tv (s)  out_par_06 .. 08

Setpoint resolution (constructor ``setpoint_resolution``, ``--option setpoint_resolution=0.1``): 0.01 degC
(default, FP50 / CF series) or 0.1 degC (models with a one-decimal display).  The temperature settings
(``sp_00`` .. ``sp_04``) are held rounded to it and their ``in_`` replies carry its decimals
(``20.00`` or ``20.0``); measured temperatures keep ``%.2f``.  Which models hold 0.1 is unconfirmed: the
driver has the same option.

``out_`` commands never reply: a client reads the value back with ``in_``.
A request the chiller cannot use gets no reply either; the next ``status``
reports why, once, then the status shows the operating state again:
unknown command, an argument on an ``in_`` command, or a missing, unreadable or
(for modes, stages, powers, Tn, Tv) non-integer value -> ``-08 INVALID COMMAND``;
a value below / above its range (the setpoint range is -50..200 degC, scenario
``sp_min`` / ``sp_max``) -> ``-10 VALUE TOO SMALL`` / ``-11 VALUE TOO LARGE``
(value not taken).  A setpoint outside the warning limits is taken and reported once as
``-13 WARNING : VALUE EXCEEDS TEMPERATURE LIMITS``; while the bath is above / below the
warning limits the status shows ``-03`` / ``-04`` (warnings: the chiller keeps running).

Sources: the command table and status texts follow the JULABO CF41 manual (1.951.4871-V3) as transcribed
in the Cronin group's public JULABO_CF41 driver, and public FP50 clients (in_hil_00 / in_hil_01 are the
maximum cooling / heating power, not temperature limits: the limits are in_sp_03 / in_sp_04).
Unconfirmed: the defaults of every setting, the integer format of in_pv_01 / in_hil_xx / in_mode_xx,
which in_par_xx exist on a given model (only Xp / Tn / Tv are simulated), the -13 rule applying to
every setpoint, the 220 degC SafeTemp default (constructor ``safe_temp``).

Status codes: ``00 MANUAL STOP``, ``01 MANUAL START`` (before any remote
command), ``02 REMOTE STOP``, ``03 REMOTE START`` (after an ``out_`` command),
and negative codes for alarms and warnings (``-01 LOW LEVEL ALARM``,
``-14 EXCESS TEMPERATURE PROTECTOR ALARM``, ... below).  The texts follow the
JULABO manuals as far as known (unconfirmed wording).  A scenario ``alarm``
(negative code, 0 = none) stays until the scenario clears it; an alarm stops
the chiller and ``out_mode_05 1`` is ignored while it lasts; a warning
(``-03``, ``-04``, ``-13``) keeps it running.

Physics: the bath relaxes exponentially toward the selected setpoint while running
(scenario ``tau``, default 60 s) and toward ``ambient`` (default 22 degC)
when stopped (``tau_ambient``, default 600 s); readings carry 0.01 degC noise.
The power in use is proportional over the band Xp (100 % at Xp kelvin below the setpoint), capped by
in_hil_00 / in_hil_01; the external-sensor mode is stored only (the bath is controlled on its own sensor).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..base import Instrument, Param

OPERATING = {0: "MANUAL STOP", 1: "MANUAL START", 2: "REMOTE STOP", 3: "REMOTE START"}
ERRORS = {
    -1: "LOW LEVEL ALARM",
    -3: "EXCESS TEMPERATURE WARNING",
    -4: "LOW TEMPERATURE WARNING",
    -5: "TEMPERATURE MEASUREMENT ALARM",
    -6: "SENSOR DIFFERENCE ALARM",
    -7: "I2C-BUS ERROR",
    -8: "INVALID COMMAND",
    -9: "COMMAND NOT ALLOWED IN CURRENT OPERATING MODE",
    -10: "VALUE TOO SMALL",
    -11: "VALUE TOO LARGE",
    -12: "TEMPERATURE MEASUREMENT ALARM",
    -13: "WARNING : VALUE EXCEEDS TEMPERATURE LIMITS",
    -14: "EXCESS TEMPERATURE PROTECTOR ALARM",
    -33: "SAFETY SENSOR ALARM",
}
WARNINGS = frozenset({-3, -4, -13})
EOLS = {"cr": b"\r", "lf": b"\n", "\r": b"\r", "\n": b"\n", b"\r": b"\r", b"\n": b"\n"}
INVALID, TOO_SMALL, TOO_LARGE, WARN_LIMITS_CODE = -8, -10, -11, -13


def status_line(code: int) -> str:
    text = ERRORS.get(code, "ALARM") if code < 0 else OPERATING[code]
    return f"{'-' if code < 0 else ''}{abs(code):02d} {text}"


@dataclass(frozen=True)
class Setting:
    """An ``in_<name>`` / ``out_<name>`` pair: default, range (a number or a chiller attribute), reply format."""

    default: float
    lo: float | str
    hi: float | str
    fmt: str = "{:.2f}"
    integer: bool = False


SETTINGS: dict[str, Setting] = {
    "sp_00": Setting(20.0, "sp_min", "sp_max"),  # setpoints 1..3 (working temperature)
    "sp_01": Setting(20.0, "sp_min", "sp_max"),
    "sp_02": Setting(20.0, "sp_min", "sp_max"),
    "sp_03": Setting(200.0, "sp_min", "sp_max"),  # high temperature warning limit (OverTemp)
    "sp_04": Setting(-50.0, "sp_min", "sp_max"),  # low temperature warning limit (SubTemp)
    "sp_07": Setting(2, 1, 4, "{:.0f}", True),  # pump pressure stage
    "mode_01": Setting(0, 0, 2, "{:.0f}", True),  # selected setpoint: 0..2 = sp_00..sp_02
    "mode_02": Setting(0, 0, 2, "{:.0f}", True),  # selftuning off / once / always
    "mode_03": Setting(0, 0, 1, "{:.0f}", True),  # external programmer input: 0 voltage, 1 current
    "mode_04": Setting(0, 0, 1, "{:.0f}", True),  # control on 0 internal / 1 external Pt100 sensor
    "mode_08": Setting(1, 0, 1, "{:.0f}", True),  # control dynamics: 0 aperiodic, 1 standard
    "hil_00": Setting(-100, -100, 0, "{:.0f}", True),  # max cooling power, %, sent negative
    "hil_01": Setting(100, 10, 100, "{:.0f}", True),  # max heating power, %
    "par_06": Setting(5.0, 0.1, 99.9, "{:.1f}"),  # Xp, proportional band of the internal controller, K
    "par_07": Setting(60, 3, 9999, "{:.0f}", True),  # Tn, integral time, s
    "par_08": Setting(10, 0, 999, "{:.0f}", True),  # Tv, derivative time, s
}
WARN_LIMITS = ("sp_04", "sp_03")  # a setpoint outside them is taken, with warning -13
TEMPERATURES = frozenset({"sp_00", "sp_01", "sp_02", "sp_03", "sp_04"})  # held at setpoint_resolution


class Julabo(Instrument):
    model = "julabo"
    request_terminator = b"\r"
    reply_terminator = b"\r\n"
    params = {
        "tau": Param("number", per_channel=False, lo=0, nonzero=True),
        "tau_ambient": Param("number", per_channel=False, lo=0, nonzero=True),
        "ambient": Param("number", per_channel=False, lo=-40, hi=60),
        "alarm": Param("number", per_channel=False, lo=-99, hi=0),
        "sp_min": Param("number", per_channel=False, lo=-100, hi=400),
        "sp_max": Param("number", per_channel=False, lo=-100, hi=400),
    }

    def __init__(
        self,
        *,
        eol: str | bytes = "cr",
        version: str = "JULABO FP50-HE VERSION 4.0",
        safe_temp: float = 220.0,
        setpoint_resolution: float = 0.01,
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channels=channels, seed=seed, clock=clock)
        terminator = EOLS.get(eol.lower() if isinstance(eol, str) else eol)
        if terminator is None:
            raise ValueError(f"eol: expected cr or lf, got {eol!r}")
        self.request_terminator = terminator  # the server reads it per instance
        self.version = version
        if setpoint_resolution not in (0.01, 0.1):
            raise ValueError(f"setpoint_resolution: expected 0.01 or 0.1, got {setpoint_resolution!r}")
        self.setpoint_resolution = setpoint_resolution
        self.sp_format = "{:.2f}" if setpoint_resolution == 0.01 else "{:.1f}"
        self.safe_temp = safe_temp  # excess temperature protector dial (in_pv_04)
        self.tau, self.tau_ambient, self.ambient = 60.0, 600.0, 22.0
        self.sp_min, self.sp_max = -50.0, 200.0
        self.alarm = 0.0  # scenario: negative code, 0 = none
        self.values = {name: float(s.default) for name, s in SETTINGS.items()}
        self.bath = self.ambient
        self.running = False
        self.remote = False
        self.pending = 0  # a command error the next `status` reports once
        self.queries: dict[str, Callable[[], str]] = {
            "version": lambda: self.version,
            "status": self._status,
            "in_pv_00": lambda: f"{self.bath + self.noise(0.01):.2f}",
            "in_pv_01": lambda: f"{self.power():.0f}",
            "in_pv_02": lambda: f"{self.bath + self.noise(0.01):.2f}",  # external Pt100, in the bath here
            "in_pv_03": lambda: f"{self.bath + self.noise(0.02):.2f}",  # safety sensor
            "in_pv_04": lambda: f"{self.safe_temp:.2f}",
            "in_sp_06": lambda: "0",  # temperature unit: degC
            "in_mode_05": lambda: str(int(self.running)),
            **{f"in_{name}": self._reply(name) for name in SETTINGS},
        }

    def _reply(self, name: str) -> Callable[[], str]:
        """The `in_<name>` query: temperatures with the decimals of the setpoint resolution."""
        fmt = self.sp_format if name in TEMPERATURES else SETTINGS[name].fmt
        return lambda: fmt.format(self.values[name])

    @property
    def setpoint(self) -> float:
        """The working setpoint: the one in_mode_01 selects."""
        return self.values[f"sp_0{int(self.values['mode_01'])}"]

    @setpoint.setter
    def setpoint(self, value: float) -> None:
        self.values[f"sp_0{int(self.values['mode_01'])}"] = value

    # --- physics ------------------------------------------------------------------
    @property
    def alarm_code(self) -> int:
        if int(self.alarm):
            return int(self.alarm)
        lo, hi = (self.values[n] for n in WARN_LIMITS)
        return -3 if self.bath > hi else -4 if self.bath < lo else 0  # bath outside the warning limits

    def _stopped_by_alarm(self) -> bool:
        return self.alarm_code < 0 and self.alarm_code not in WARNINGS

    def power(self) -> float:
        """Heating (+) or cooling (-) power in %: proportional over the band Xp, capped by hil_00 / hil_01."""
        if not self.running:
            return 0.0
        p = 100.0 * (self.setpoint - self.bath) / self.values["par_06"]
        return max(self.values["hil_00"], min(self.values["hil_01"], p))

    def step(self, dt: float) -> None:
        if self._stopped_by_alarm():
            self.running = False
        target, tau = (self.setpoint, self.tau) if self.running else (self.ambient, self.tau_ambient)
        self.bath += (target - self.bath) * (1.0 - math.exp(-dt / tau))  # exact: any dt will do

    def max_step(self) -> float:
        return math.inf

    # --- requests -------------------------------------------------------------------
    def respond(self, line: str) -> str | None:
        if self._stopped_by_alarm():
            self.running = False  # an alarm set at this very instant
        cmd, _, arg = line.strip().partition(" ")
        cmd, arg = cmd.lower(), arg.strip()
        if cmd in self.queries and not arg:
            return self.queries[cmd]()
        name = cmd.removeprefix("out_")
        if cmd == "out_mode_05":
            self._out_mode(arg)
        elif cmd.startswith("out_") and name in SETTINGS:
            self._out(name, arg)
        else:
            self.pending = INVALID
        return None  # out_ commands never reply

    def _status(self) -> str:
        if self.alarm_code < 0:
            return status_line(self.alarm_code)
        if self.pending:
            code, self.pending = self.pending, 0
            return status_line(code)
        return status_line(2 * self.remote + self.running)

    def _checked(self, arg: str, lo: float, hi: float, integer: bool) -> float | None:
        """The value, or None with the error pending: -08 unreadable / not an integer, -10 / -11 out of range."""
        try:
            value = float(arg)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            self.pending = INVALID
        elif round(value, 2) < lo or round(value, 2) > hi:
            self.pending = TOO_SMALL if value < lo else TOO_LARGE
        elif integer and value != int(value):
            self.pending = INVALID
        else:
            return round(value, 2)  # 0.01 degC resolution
        return None

    def _out(self, name: str, arg: str) -> None:
        s = SETTINGS[name]
        bound = [getattr(self, b) if isinstance(b, str) else b for b in (s.lo, s.hi)]
        value = self._checked(arg, bound[0], bound[1], s.integer)
        if value is None:
            return
        if name in TEMPERATURES:  # held at the chiller's setpoint resolution
            step = self.setpoint_resolution
            value = float(f"{round(value / step) * step:.{2 if step == 0.01 else 1}f}")
        self.values[name] = value
        self.remote = True
        lo, hi = (self.values[n] for n in WARN_LIMITS)
        if name in ("sp_00", "sp_01", "sp_02") and not lo <= value <= hi:
            self.pending = WARN_LIMITS_CODE  # taken, but outside the warning limits

    def _out_mode(self, arg: str) -> None:
        value = self._checked(arg, 0, 1, True)
        if value is None:
            return
        self.remote = True
        self.running = value == 1.0 and not self._stopped_by_alarm()
