"""slowctl climate box: N temperature/humidity sensors (SHT85-like) behind a line protocol.

Protocol (our own; the climate driver is written from this text)
  Link: serial 9600 8N1, no handshake (or raw TCP).  ASCII.  Requests end LF
  (CR LF accepted), replies end LF.  Commands are case-insensitive; the
  argument is separated by one or more spaces.  One reply per request.

  ``*IDN?``       -> ``SLOWCTL,CLIMATE,<serial>,1.0``
  ``NSENS?``      -> number of sensors, e.g. ``2``
  ``READ?``       -> every sensor as ``T,RH`` joined by ``;``, sensor 1 first:
                     ``21.53,45.20;22.01,38.77``
  ``READ? <n>``   -> sensor n (1..NSENS) only: ``21.53,45.20``

  T in degC, RH in %RH, both ``%.2f`` (T may be negative: ``-5.20``).
  Errors (the whole reply):
  ``ERR 1 unknown command``             unknown command word
  ``ERR 2 bad argument``                unexpected, non-integer or out-of-range argument
  ``ERR 3 sensor <n> not responding``   sensor n is faulty; ``READ?`` reports the
                                        lowest-numbered faulty sensor and no values

Physics: each sensor's temperature and humidity relax exponentially toward
their targets (scenario ``temperature``, default 20 degC; ``humidity``,
default 40 %RH) with time constant ``tau`` (default 10 s), plus a slow random
drift (Ornstein-Uhlenbeck, ~10 min correlation) and reading noise
(sigma 0.02 degC, 0.1 %RH); RH is clamped to 0..100.  Scenario ``fault: true``
makes a sensor stop responding.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..base import Instrument, Param

DRIFT_TAU = 600.0  # s, drift correlation time
DRIFT_T, DRIFT_RH = 0.05, 0.3  # steady-state drift sigma: degC, %RH
NOISE_T, NOISE_RH = 0.02, 0.1  # per-reading noise sigma


@dataclass
class Sensor:
    temperature: float = 20.0  # target, degC
    humidity: float = 40.0  # target, %RH
    tau: float = 10.0  # s
    fault: bool = False
    t: float = 20.0  # true values
    rh: float = 40.0
    drift_t: float = 0.0
    drift_rh: float = 0.0


class ClimateBox(Instrument):
    model = "climate"
    first_channel = 1
    default_channels, min_channels, max_channels = 2, 1, 16
    params = {
        "temperature": Param("number", lo=-60, hi=120),
        "humidity": Param("number", lo=0, hi=100),
        "tau": Param("number", lo=0, nonzero=True),
        "fault": Param("bool"),
    }

    def __init__(
        self,
        *,
        serial: str = "0001",
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channels=channels, seed=seed, clock=clock)
        self.serial = serial
        self.channels = [Sensor() for _ in range(self.n_channels)]

    def step(self, dt: float) -> None:
        # exact solutions: any dt is fine, so max_step() may be unlimited
        decay = math.exp(-dt / DRIFT_TAU)
        kick = math.sqrt(1.0 - decay * decay)
        for s in self.channels:
            k = 1.0 - math.exp(-dt / s.tau)
            s.t += (s.temperature - s.t) * k
            s.rh += (s.humidity - s.rh) * k
            s.drift_t = s.drift_t * decay + self.noise(DRIFT_T) * kick
            s.drift_rh = s.drift_rh * decay + self.noise(DRIFT_RH) * kick

    def max_step(self) -> float:
        return math.inf

    def reading(self, n: int) -> str:
        s = self.chan(n)
        t = s.t + s.drift_t + self.noise(NOISE_T)
        rh = min(100.0, max(0.0, s.rh + s.drift_rh + self.noise(NOISE_RH)))
        return f"{t:.2f},{rh:.2f}"

    def respond(self, line: str) -> str | None:
        cmd, *args = line.split() or [""]
        cmd = cmd.upper()
        if cmd not in ("*IDN?", "NSENS?", "READ?"):
            return "ERR 1 unknown command"
        if len(args) > (cmd == "READ?"):
            return "ERR 2 bad argument"
        if cmd == "*IDN?":
            return f"SLOWCTL,CLIMATE,{self.serial},1.0"
        if cmd == "NSENS?":
            return str(self.n_channels)
        wanted = list(self.channel_numbers)
        if args:
            if not re.fullmatch(r"[0-9]{1,3}", args[0]) or int(args[0]) not in self.channel_numbers:
                return "ERR 2 bad argument"
            wanted = [int(args[0])]
        for n in wanted:
            if self.chan(n).fault:
                return f"ERR 3 sensor {n} not responding"
        return ";".join(self.reading(n) for n in wanted)
