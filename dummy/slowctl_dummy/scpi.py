"""Minimal SCPI command layer: declare commands with ``@scpi(pattern)``.

Patterns use SCPI notation: upper-case letters are the short form,
``[...]`` is optional, ``?`` marks a query::

    @scpi("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def volt_q(self, arg): ...

Headers match case-insensitively in short or long form only ("VOLT" or
"VOLTAGE", not "VOLTA").  A line may hold several commands joined by ``;``;
each is resolved from the root (a leading ``:`` is allowed), a lenient
reading of the SCPI path rules that matches how drivers write them.  Query
replies of one line are joined by ``;``.  Errors reply nothing and go to the
error queue read by ``SYST:ERR?`` (``0,"No error"`` when empty); a header
error also discards the rest of the line, as IEEE 488.2 parsers do.

IEEE 488.2 status reporting, common to every SCPI instrument: each error sets
its bit in the Standard Event Status Register (ESR: 2 query error -4xx,
3 device-dependent error -3xx and positive codes, 4 execution error -2xx,
5 command error -1xx); ``*OPC`` sets bit 0.  ``*ESR?`` reads and clears it,
``*ESE``/``*SRE`` set the enable masks (0..255).  ``*STB?`` reads the status
byte: bit 2 error queue not empty (SCPI), bit 5 ESB (ESR & ESE), bit 6 MSS
(STB & SRE); a socket has no MAV to report.  ``*CLS`` empties the error queue
and clears ESR; the enable masks stay.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from .base import Instrument

Handler = Callable[[Any, str | None], str | None]
QUEUE_SIZE = 10
OPC, QYE, DDE, EXE, CME = 1, 4, 8, 16, 32  # ESR bits (IEEE 488.2)


class ScpiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f'{code},"{message}"')
        self.code = code


def undefined_header() -> ScpiError:
    return ScpiError(-113, "Undefined header")


def scpi(pattern: str) -> Callable[[Handler], Handler]:
    """Mark a method as the handler of a SCPI command pattern."""

    def mark(fn: Handler) -> Handler:
        fn.scpi_patterns = [*getattr(fn, "scpi_patterns", []), pattern]  # type: ignore[attr-defined]
        return fn

    return mark


def compile_pattern(pattern: str) -> re.Pattern[str]:
    def node(m: re.Match[str]) -> str:
        word = m.group(0)
        short = "".join(c for c in word if c.isupper() or c.isdigit())
        return f"(?:{word.upper()}|{short})" if short != word else word

    regex = re.sub(r"[A-Za-z]+", node, re.escape(pattern).replace(r"\[", "[").replace(r"\]", "]"))
    regex = regex.replace("[", "(?:").replace("]", ")?")
    return re.compile(r":?" + regex)


# --- parameter parsing -----------------------------------------------------------
def number(arg: str | None, lo: float, hi: float) -> float:
    if arg is None or not arg.strip():
        raise ScpiError(-109, "Missing parameter")
    word = arg.strip().upper()
    if word in ("MIN", "MINIMUM"):
        return lo
    if word in ("MAX", "MAXIMUM"):
        return hi
    try:
        value = float(word)
    except ValueError:
        raise ScpiError(-104, "Data type error") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ScpiError(-222, "Data out of range")
    return value


def integer(arg: str | None, lo: int, hi: int) -> int:
    value = number(arg, lo, hi)
    if value != int(value):
        raise ScpiError(-224, "Illegal parameter value")
    return int(value)


def esr_bit(code: int) -> int:
    """The ESR bit an error of this code sets."""
    if -199 <= code <= -100:
        return CME
    if -299 <= code <= -200:
        return EXE
    if -499 <= code <= -400:
        return QYE
    return DDE  # -3xx and the instruments' own positive codes


def boolean(arg: str | None) -> bool:
    if arg is None or not arg.strip():
        raise ScpiError(-109, "Missing parameter")
    word = arg.strip().upper()
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    raise ScpiError(-224, "Illegal parameter value")


class ScpiInstrument(Instrument):
    """An instrument whose command table is its ``@scpi`` methods."""

    commands: ClassVar[list[tuple[re.Pattern[str], str]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.commands = [
            (compile_pattern(p), name) for name in dir(cls) for p in getattr(getattr(cls, name), "scpi_patterns", [])
        ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.errors: deque[ScpiError] = deque()
        self.esr = self.ese = self.sre = 0

    def push_error(self, err: ScpiError) -> None:
        self.esr |= esr_bit(err.code)
        if len(self.errors) >= QUEUE_SIZE:
            self.errors[-1] = ScpiError(-350, "Queue overflow")
        else:
            self.errors.append(err)

    def respond(self, line: str) -> str | None:
        replies = []
        for cmd in line.split(";"):
            header, _, arg = cmd.strip().partition(" ")
            if not header:
                continue
            handler = next((n for rx, n in self.commands if rx.fullmatch(header.upper())), None)
            try:
                if handler is None:
                    raise undefined_header()
                reply = getattr(self, handler)(arg.strip() or None)
            except ScpiError as err:
                self.push_error(err)
                if err.code == -113:  # unparsable: drop the rest of the line
                    break
                continue
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    @scpi("SYSTem:ERRor[:NEXT]?")
    def _syst_err(self, arg: str | None) -> str:
        return str(self.errors.popleft()) if self.errors else '0,"No error"'

    @scpi("*CLS")
    def _cls(self, arg: str | None) -> None:
        self.errors.clear()
        self.esr = 0

    def stb(self) -> int:
        word = (4 if self.errors else 0) | (32 if self.esr & self.ese else 0)
        return word | (64 if word & self.sre else 0)

    @scpi("*ESE")
    def _ese(self, arg: str | None) -> None:
        self.ese = integer(arg, 0, 255)

    @scpi("*ESE?")
    def _ese_q(self, arg: str | None) -> str:
        return str(self.ese)

    @scpi("*ESR?")
    def _esr_q(self, arg: str | None) -> str:
        word, self.esr = self.esr, 0  # reading clears it
        return str(word)

    @scpi("*SRE")
    def _sre(self, arg: str | None) -> None:
        self.sre = integer(arg, 0, 255) & ~64  # bit 6 cannot be enabled

    @scpi("*SRE?")
    def _sre_q(self, arg: str | None) -> str:
        return str(self.sre)

    @scpi("*STB?")
    def _stb_q(self, arg: str | None) -> str:
        return str(self.stb())

    @scpi("*OPC")
    def _opc_set(self, arg: str | None) -> None:
        self.esr |= OPC  # every command completes before the next one is read

    @scpi("*OPC?")
    def _opc(self, arg: str | None) -> str:
        return "1"

    @scpi("*WAI")
    def _wai(self, arg: str | None) -> None:
        return None
