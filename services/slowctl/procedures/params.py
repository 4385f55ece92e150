"""A procedure's parameters, declared once as class attributes: the runner, the CLI, the catalog the UI
reads and the docs all take them from the declaration.

Each parameter parses what a person typed (`--param stop=-500`) or what a JSON command carried, and
refuses anything else with a reason that names it: never clamped, never rounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
REQUIRED: Any = object()
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
CHANNEL = re.compile(r"^([a-z][a-z0-9_]{0,31})\.(\d{1,3})$")


class ParamError(ValueError):
    pass


@dataclass(frozen=True)
class ChannelRef:
    """One channel of one device, written `device.channel` (`hv.0`)."""

    device: str
    channel: int

    def __str__(self) -> str:
        return f"{self.device}.{self.channel}"


@dataclass
class Param(Generic[T]):
    """One parameter: its kind, default (REQUIRED: none), unit, bounds, help."""

    kind: str
    default: Any = REQUIRED
    unit: str = ""
    lo: float | None = None
    hi: float | None = None
    doc: str = ""
    choices: tuple[str, ...] = ()
    positive: bool = False  # strictly > 0
    drives: bool = False  # a channel the procedure commands: one run per channel, interlocks checked
    name: str = field(default="", init=False)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Param[T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object | None, owner: type) -> Param[T] | T:
        if obj is None:
            return self
        return obj.values[self.name]  # type: ignore[attr-defined]

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def parse(self, raw: Any) -> T:
        """The value from text or JSON, or ParamError saying why not."""
        if self.default is None and (raw is None or (isinstance(raw, str) and raw.strip().lower() == "none")):
            return None  # type: ignore[return-value]  # an optional setting left out on purpose ("none: no limit")
        value = self._convert(raw)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            unit = f" {self.unit}" if self.unit else ""
            if self.positive and value <= 0:
                raise ParamError(f"{self.name}: must be > 0{unit}, got {value:g}")
            if self.lo is not None and value < self.lo:
                raise ParamError(f"{self.name}: {value:g}{unit} is below the minimum {self.lo:g}{unit}")
            if self.hi is not None and value > self.hi:
                raise ParamError(f"{self.name}: {value:g}{unit} is above the maximum {self.hi:g}{unit}")
        return value

    def _convert(self, raw: Any) -> Any:
        k = self.kind
        if k in ("number", "integer", "duration"):
            if k == "duration" and isinstance(raw, str):
                m = DURATION.match(raw)
                if not m:
                    raise ParamError(f"{self.name}: expected a duration such as 90, 30s, 10m, 2h or 1d, got {raw!r}")
                return float(m.group(1)) * SECONDS[m.group(2)]
            if isinstance(raw, str):
                try:
                    raw = int(raw) if k == "integer" else float(raw)
                except ValueError:
                    what = "an integer" if k == "integer" else "a number"
                    raise ParamError(f"{self.name}: expected {what}, got {raw!r}") from None
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                raise ParamError(f"{self.name}: expected a number, got {str(raw)[:40]!r}")
            if k == "integer" and (isinstance(raw, float) and not raw.is_integer()):
                raise ParamError(f"{self.name}: expected an integer, got {raw!r}")
            if not math.isfinite(raw):
                raise ParamError(f"{self.name}: must be a finite number")
            return int(raw) if k == "integer" else float(raw)
        if k == "choice":
            if raw not in self.choices:
                raise ParamError(f"{self.name}: expected one of {', '.join(self.choices)}, got {str(raw)[:40]!r}")
            return raw
        if k == "flag":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "yes", "1", "false", "no", "0"):
                return raw.lower() in ("true", "yes", "1")
            raise ParamError(f"{self.name}: expected true or false, got {str(raw)[:40]!r}")
        if k == "channel":
            return _channel(self.name, raw)
        if k == "channels":
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list) or not items:
                raise ParamError(f"{self.name}: expected channels such as hv.0,hv.1")
            refs = [_channel(self.name, i.strip() if isinstance(i, str) else i) for i in items]
            if len(set(refs)) != len(refs):
                raise ParamError(f"{self.name}: a channel is named twice")
            return tuple(refs)
        if k == "readings":
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
                raise ParamError(f"{self.name}: expected readings such as climate.0.temperature,climate.0.humidity")
            return tuple(i.strip() for i in items)
        raise ParamError(f"{self.name}: unknown parameter kind {k!r}")

    def describe(self) -> dict[str, Any]:
        """The catalog entry: what a form in the UI needs."""
        out: dict[str, Any] = {"kind": self.kind, "doc": self.doc, "required": self.required}
        if not self.required:
            out["default"] = _plain(self.default)
        for key in ("unit", "lo", "hi", "choices"):
            if getattr(self, key) not in ("", None, ()):
                out[key] = getattr(self, key)
        if self.positive:
            out["positive"] = True  # strictly above 0: a form cannot tell from lo
        if self.drives:
            out["drives"] = True
        return out


def _channel(name: str, raw: Any) -> ChannelRef:
    m = CHANNEL.match(raw) if isinstance(raw, str) else None
    if not m:
        raise ParamError(f"{name}: expected a channel as device.channel (hv.0), got {str(raw)[:40]!r}")
    return ChannelRef(m.group(1), int(m.group(2)))


def _plain(value: Any) -> Any:
    if isinstance(value, ChannelRef):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """A parsed value as JSON (channels as `hv.0`)."""
    return _plain(value)


# the declarations a procedure file uses
def Number(unit: str = "", default: Any = REQUIRED, *, lo: float | None = None, hi: float | None = None,
           positive: bool = False, doc: str = "") -> Param[float]:  # fmt: skip
    return Param("number", default, unit, lo, hi, doc, positive=positive)


def Integer(default: Any = REQUIRED, *, lo: float | None = None, hi: float | None = None, doc: str = "") -> Param[int]:
    return Param("integer", default, "", lo, hi, doc)


def Duration(
    default: Any = REQUIRED, *, lo: float | None = None, hi: float | None = None, doc: str = ""
) -> Param[float]:
    """Seconds; typed as 90, 30s, 10m, 2h or 1d."""
    return Param("duration", default, "s", lo, hi, doc)


def Choice(*choices: str, default: Any = REQUIRED, doc: str = "") -> Param[str]:
    return Param("choice", default, doc=doc, choices=choices)


def Flag(default: bool = False, doc: str = "") -> Param[bool]:
    return Param("flag", default, doc=doc)


def Channel(doc: str = "", *, drives: bool = True) -> Param[ChannelRef]:
    return Param("channel", REQUIRED, doc=doc, drives=drives)


def Channels(doc: str = "", *, drives: bool = True) -> Param[tuple[ChannelRef, ...]]:
    return Param("channels", REQUIRED, doc=doc, drives=drives)


def Readings(default: Any = REQUIRED, doc: str = "") -> Param[tuple[str, ...]]:
    """Readings as device.channel.field (climate.0.humidity)."""
    return Param("readings", default, doc=doc)
