"""Shared simulator machinery: simulated time, scenario events, silence/garbage.

An instrument subclass only declares its wire terminators, its scenario
parameters and channel numbering, and implements two methods:

* ``step(dt)``       advance the physics by ``dt`` simulated seconds;
* ``respond(line)``  answer one request line (reply text without terminator,
                     or ``None`` for no reply).

Physics is integrated lazily: every request first advances the model from the
last update to ``clock()`` in sub-steps of at most ``MAX_STEP`` seconds,
applying scenario events exactly at their times.  Time is read from an
injectable ``clock`` so unit tests can drive it by hand without sleeping.
"""

from __future__ import annotations

import math
import random
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

MAX_STEP = 0.05  # s; finest physics sub-step
_GARBAGE_CHARS = string.ascii_letters + string.digits + string.punctuation


@dataclass(frozen=True)
class Param:
    """A scenario-settable model parameter (``set: {name: value}``).

    ``per_channel`` parameters live on the channel objects (attribute ``attr``
    or ``name``; a dotted ``attr`` such as ``sensor.load`` reaches into a part of
    the channel); board parameters live on the instrument itself.
    """

    kind: str  # "number", "bool" or "choice"
    per_channel: bool = True
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    attr: str | None = None
    nonzero: bool = False  # reject lo itself (e.g. a load of 0 ohm)

    def convert(self, value: Any) -> Any:
        """Return the checked value or raise ValueError with a readable reason."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if str(value) not in self.choices:
                raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
            return str(value)
        if isinstance(value, str):  # YAML 1.1 reads 1.0e4 (no sign) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"expected a number, got {value!r}")
        lo_bad = self.lo is not None and (value < self.lo or (self.nonzero and value == self.lo))
        if lo_bad or (self.hi is not None and value > self.hi):
            lo = "" if self.lo is None else f"{'>' if self.nonzero else '>='} {self.lo:g}"
            hi = "" if self.hi is None else f"<= {self.hi:g}"
            raise ValueError(f"expected a number {' and '.join(s for s in (lo, hi) if s)}, got {value!r}")
        return float(value)


@dataclass(frozen=True)
class Event:
    """One scenario action at simulated time ``at`` (seconds since sim start)."""

    at: float
    action: str  # "set", "silence" or "garbage"
    values: dict[str, Any] | None = None  # for "set"
    channel: int | None = None  # for "set"; None = every channel
    duration: float = 0.0  # for "silence" / "garbage"


class ManualClock:
    """Simulated time that only moves when told to: give it to an instrument in tests."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Instrument:
    """Base class of all simulated instruments."""

    model: ClassVar[str]  # registry key, e.g. "climate"
    # the wire terminators: a class declares them; an instance may change them (a front-panel setting)
    request_terminator: bytes = b"\n"
    reply_terminator: bytes = b"\n"
    params: ClassVar[dict[str, Param]] = {}
    first_channel: ClassVar[int] = 1  # native channel numbering
    default_channels: ClassVar[int] = 1
    min_channels: ClassVar[int] = 1
    max_channels: ClassVar[int] = 1

    def __init__(
        self,
        *,
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        n = self.default_channels if channels is None else channels
        if not self.min_channels <= n <= self.max_channels:
            raise ValueError(
                f"channels: {n} out of range for {self.model} (expected {self.min_channels}..{self.max_channels})"
            )
        self.n_channels = n
        self.rng = random.Random(seed)
        self.clock = clock
        self._t0 = clock()
        self.t = 0.0  # simulated time the physics has been integrated to
        self.silent_until = -math.inf
        self.garbage_until = -math.inf
        self._events: list[Event] = []
        self.channels: list[Any] = []  # filled by subclasses

    # --- channels -----------------------------------------------------------
    @property
    def channel_numbers(self) -> range:
        return range(self.first_channel, self.first_channel + self.n_channels)

    def chan(self, number: int) -> Any:
        return self.channels[number - self.first_channel]

    # --- time and scenario ----------------------------------------------------
    def schedule(self, events: Sequence[Event]) -> None:
        self._events = sorted([*self._events, *events], key=lambda e: e.at)

    def now(self) -> float:
        return self.clock() - self._t0

    def advance(self) -> None:
        """Integrate physics up to now, applying due scenario events on the way."""
        target = self.now()
        while True:
            while self._events and self._events[0].at <= self.t:
                self.apply_event(self._events.pop(0))
            if self.t >= target:
                return
            limit = min(target, self._events[0].at) if self._events else target
            # max(..., 1e-6) guards against a model asking for zero-length steps
            dt = max(min(limit - self.t, self.max_step()), 1e-6)
            self.step(dt)
            self.t = limit if self.t + dt >= limit else self.t + dt

    def max_step(self) -> float:
        """Longest physics step allowed now; models return inf when steady."""
        return MAX_STEP

    def apply_event(self, event: Event) -> None:
        if event.action == "silence":
            self.silent_until = max(self.silent_until, event.at + event.duration)
        elif event.action == "garbage":
            self.garbage_until = max(self.garbage_until, event.at + event.duration)
        else:
            for name, value in (event.values or {}).items():
                self.set_param(name, value, event.channel)

    def set_param(self, name: str, value: Any, channel: int | None = None) -> None:
        param = self.params[name]
        attr = param.attr or name
        if not param.per_channel:
            setattr(self, attr, value)
            return
        *path, last = attr.split(".")
        numbers = self.channel_numbers if channel is None else [channel]
        for n in numbers:
            target = self.chan(n)
            for part in path:
                target = getattr(target, part)
            setattr(target, last, value)

    # --- requests ---------------------------------------------------------------
    def handle(self, line: str) -> bytes | None:
        """Answer one request line (without terminator) with full reply bytes."""
        self.advance()
        if self.t < self.silent_until:
            return None  # line is dead: the request is lost, nothing happens
        reply = self.respond(line)
        if reply is None:
            return None
        if self.t < self.garbage_until:
            n = self.rng.randint(4, max(8, len(reply)))
            reply = "".join(self.rng.choice(_GARBAGE_CHARS) for _ in range(n))
        return reply.encode("ascii", "replace") + self.reply_terminator

    def noise(self, sigma: float) -> float:
        return self.rng.gauss(0.0, sigma)

    # --- to implement -------------------------------------------------------------
    def step(self, dt: float) -> None:
        raise NotImplementedError

    def respond(self, line: str) -> str | None:
        raise NotImplementedError
