"""JULABO recirculating chiller (FP50 / CF series serial command set), one bath.

Line protocol, ASCII.  Requests end CR (CF series; the default) or LF (FP50:
construct with ``eol="lf"``, on the command line ``--option eol=lf``); CR LF
is accepted in both modes.  Replies end CR LF.
Commands are case-insensitive; a value follows after one space.

Requests and replies::

    version          JULABO FP50-HE VERSION 4.0
    status           03 REMOTE START      (two-digit code, space, text; see below)
    in_pv_00         21.53                bath temperature, degC, %.2f (may be negative: -5.20)
    in_sp_00         20.00                setpoint, degC, %.2f
    in_sp_06         0                    temperature unit: 0 degC (always 0 here)
    in_mode_05       1                    1 running (started), 0 stopped
    out_sp_00 <T>    (no reply)           set the setpoint
    out_mode_05 1|0  (no reply)           start / stop

``out_`` commands never reply: a client reads the value back with ``in_``.
A request the chiller cannot use gets no reply either; the next ``status``
reports why, once, then the status shows the operating state again:
unknown command, an argument on an ``in_`` command, or a missing or unreadable
value -> ``-08 INVALID COMMAND``; a setpoint below / above the range
(default -50..200 degC, scenario ``sp_min`` / ``sp_max``) or a mode other
than 0/1 -> ``-10 VALUE TOO SMALL`` / ``-11 VALUE TOO LARGE`` (value not taken).

Status codes: ``00 MANUAL STOP``, ``01 MANUAL START`` (before any remote
command), ``02 REMOTE STOP``, ``03 REMOTE START`` (after an ``out_`` command),
and negative codes for alarms and warnings (``-01 LOW LEVEL ALARM``,
``-14 EXCESS TEMPERATURE PROTECTOR ALARM``, ... below).  The texts follow the
JULABO manuals as far as known (unconfirmed wording).  A scenario ``alarm``
(negative code, 0 = none) stays until the scenario clears it; an alarm stops
the chiller and ``out_mode_05 1`` is ignored while it lasts; a warning
(``-03``, ``-04``, ``-13``) keeps it running.

Physics: the bath relaxes exponentially toward the setpoint while running
(scenario ``tau``, default 60 s) and toward ``ambient`` (default 22 degC)
when stopped (``tau_ambient``, default 600 s); readings carry 0.01 degC noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

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
INVALID, TOO_SMALL, TOO_LARGE = -8, -10, -11


def status_line(code: int) -> str:
    text = ERRORS.get(code, "ALARM") if code < 0 else OPERATING[code]
    return f"{'-' if code < 0 else ''}{abs(code):02d} {text}"


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
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channels=channels, seed=seed, clock=clock)
        terminator = EOLS.get(eol.lower() if isinstance(eol, str) else eol)
        if terminator is None:
            raise ValueError(f"eol: expected cr or lf, got {eol!r}")
        self.request_terminator = terminator  # type: ignore[misc]  # the server reads it per instance
        self.version = version
        self.tau, self.tau_ambient, self.ambient = 60.0, 600.0, 22.0
        self.sp_min, self.sp_max = -50.0, 200.0
        self.alarm = 0.0  # scenario: negative code, 0 = none
        self.setpoint = 20.0
        self.bath = self.ambient
        self.running = False
        self.remote = False
        self.pending = 0  # a command error the next `status` reports once

    # --- physics ------------------------------------------------------------------
    @property
    def alarm_code(self) -> int:
        return int(self.alarm)

    def _stopped_by_alarm(self) -> bool:
        return self.alarm_code < 0 and self.alarm_code not in WARNINGS

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
        queries = {
            "version": lambda: self.version,
            "status": self._status,
            "in_pv_00": lambda: f"{self.bath + self.noise(0.01):.2f}",
            "in_sp_00": lambda: f"{self.setpoint:.2f}",
            "in_sp_06": lambda: "0",
            "in_mode_05": lambda: str(int(self.running)),
        }
        if cmd in queries and not arg:
            return queries[cmd]()
        if cmd == "out_sp_00":
            self._out_setpoint(arg)
        elif cmd == "out_mode_05":
            self._out_mode(arg)
        else:
            self.pending = INVALID
        return None

    def _status(self) -> str:
        if self.alarm_code < 0:
            return status_line(self.alarm_code)
        if self.pending:
            code, self.pending = self.pending, 0
            return status_line(code)
        return status_line(2 * self.remote + self.running)

    def _number(self, arg: str) -> float | None:
        try:
            value = float(arg)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            self.pending = INVALID
            return None
        return value

    def _out_setpoint(self, arg: str) -> None:
        value = self._number(arg)
        if value is None:
            return
        if not self.sp_min <= round(value, 2) <= self.sp_max:
            self.pending = TOO_SMALL if value < self.sp_min else TOO_LARGE
            return
        self.setpoint = round(value, 2)  # 0.01 degC resolution
        self.remote = True

    def _out_mode(self, arg: str) -> None:
        value = self._number(arg)
        if value is None:
            return
        if value not in (0.0, 1.0):
            self.pending = TOO_SMALL if value < 0 else TOO_LARGE if value > 1 else INVALID
            return
        self.remote = True
        self.running = value == 1.0 and not self._stopped_by_alarm()
