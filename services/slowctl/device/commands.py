"""Commands: parse the three wire forms into one Request, then validate it.

Wire forms (docs/mqtt.md):
  <root>/<dev>/cmd                  {"action", "channel", "value", "id", "ts"}
  <root>/<dev>/cmd/<action>/<ch>    plain value or empty payload
  /<legacy>/cmd/setv/<ch>, /<legacy>/cmd/switch/<ch>   tracker_dcs topics

Validation refuses, it never clamps: a refused command changes nothing.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from slowctl.config import ChannelConfig
from slowctl.device.contract import ACTIONS, MAX_PAYLOAD

NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
CLOCK_SKEW = 2.0  # s of future timestamps tolerated between hosts


class CommandError(Exception):
    """A refused command; the message is the human-readable reason in the reply."""


@dataclass
class Request:
    """A command as it arrived; fields are raw until validated."""

    action: Any = None
    channel: Any = None
    value: Any = None
    id: Any = None
    ts: Any = None
    received: float = field(default_factory=time.monotonic)
    expires: float | None = None  # monotonic deadline from MQTT v5 message expiry
    issued: float | None = None  # epoch seconds from `ts`, once validated
    response_topic: str | None = None
    correlation: bytes | None = None
    error: str | None = None  # set when the payload could not even be read

    def reply(self, ok: bool, error: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id if isinstance(self.id, (str, int)) and not isinstance(self.id, bool) else None,
            "action": self.action if isinstance(self.action, str) else None,
            "channel": self.channel if isinstance(self.channel, int) and not isinstance(self.channel, bool) else None,
            "value": self.value if _finite_number(self.value) else None,
            "ok": ok,
            "error": error,
        }


def _finite_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True)
class Command:
    """A validated command: safe to execute as far as static checks go."""

    action: str
    channel: int
    value: float | None
    request: Request


def _number(text: str) -> float:
    text = text.strip()
    if not NUMBER.match(text):
        raise CommandError(f"value {text[:32]!r} is not a number")
    return float(text)


def _channel(text: str) -> int:
    if not re.fullmatch(r"\d{1,4}", text):
        raise CommandError(f"channel {text[:16]!r} is not a channel number (0, 1, ...)")
    return int(text)


def parse_json(payload: bytes) -> Request:
    req = Request()
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # also absurdly long or deep input
        req.error = f"malformed JSON: {exc}"
        return req
    if not isinstance(data, dict):
        req.error = "command must be a JSON object"
        return req
    req.action, req.channel, req.value = data.get("action"), data.get("channel"), data.get("value")
    req.id, req.ts = data.get("id"), data.get("ts")
    unknown = sorted(set(data) - {"action", "channel", "value", "id", "ts"})
    if unknown:
        req.error = f"unknown field(s) {', '.join(unknown)}"
    return req


def parse_plain(action: str, channel: str, payload: bytes) -> Request:
    req = Request(action=action)
    try:
        req.channel = _channel(channel)
        text = payload.decode("utf-8").strip()
        if text:
            req.value = _number(text)
    except UnicodeDecodeError:
        req.error = "payload is not UTF-8 text"
    except CommandError as exc:
        req.error = str(exc)
    return req


def parse_legacy(kind: str, channel: str, payload: bytes) -> Request:
    """tracker_dcs: setv/<ch> with a number, switch/<ch> with on/off (or 1/0)."""
    req = Request()
    try:
        req.channel = _channel(channel)
        text = payload.decode("utf-8").strip().lower()
        if kind == "setv":
            req.action, req.value = "vset", _number(text)
        elif text in ("on", "1", "true"):
            req.action = "on"
        elif text in ("off", "0", "false"):
            req.action = "off"
        else:
            req.action = "switch"
            raise CommandError(f"switch takes on or off, got {text[:16]!r}")
    except UnicodeDecodeError:
        req.error = "payload is not UTF-8 text"
    except CommandError as exc:
        req.error = str(exc)
    return req


def _issued_at(ts: Any) -> float:
    """Epoch seconds from a number (s, or ms when > 1e11) or an ISO 8601 string with zone."""
    if isinstance(ts, bool):
        raise CommandError("ts must be epoch seconds or an ISO 8601 time")
    if isinstance(ts, (int, float)):
        if not _finite_number(ts):
            raise CommandError("ts must be finite")
        return ts / 1000.0 if ts > 1e11 else float(ts)
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(f"ts {ts[:40]!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise CommandError("ts needs a time zone (e.g. Z)")
        return parsed.timestamp()
    raise CommandError("ts must be epoch seconds or an ISO 8601 time")


@dataclass(frozen=True)
class Rules:
    """What a device accepts: its actions, channels with limits, instrument ranges."""

    actions: frozenset[str]
    channels: dict[int, ChannelConfig]
    instrument_limits: Callable[[str], tuple[float, float] | None]
    max_age: float
    ramp_actions_for: Callable[[int], bool] = lambda ch: False  # software-ramped channels accept ramp rates


def validate(req: Request, rules: Rules, now_wall: float | None = None) -> Command:
    if req.error:
        raise CommandError(req.error)
    if not isinstance(req.action, str) or req.action not in ACTIONS:
        shown = req.action if isinstance(req.action, str) else json.dumps(req.action)
        raise CommandError(f"unknown action {str(shown)[:32]!r} (expected one of {', '.join(ACTIONS)})")
    spec = ACTIONS[req.action]
    if isinstance(req.channel, bool) or not isinstance(req.channel, int):
        raise CommandError("channel must be an integer")
    if req.channel < 0:
        raise CommandError(f"channel {req.channel} is negative")
    if req.channel not in rules.channels:
        raise CommandError(f"unknown channel {req.channel} (configured: {', '.join(map(str, sorted(rules.channels)))})")
    allowed = req.action in rules.actions or (
        req.action in ("rampup", "rampdown") and rules.ramp_actions_for(req.channel))
    if not allowed:
        raise CommandError(f"action {req.action!r} is not supported by this device")
    value = _checked_value(req, spec.takes_value, rules.channels[req.channel], rules)
    if req.ts is not None:
        now_wall = time.time() if now_wall is None else now_wall
        req.issued = _issued_at(req.ts)
        age = now_wall - req.issued
        if age > rules.max_age:
            raise CommandError(f"stale command: issued {age:.1f} s ago (max {rules.max_age:g} s)")
        if age < -CLOCK_SKEW:
            raise CommandError(f"ts is {-age:.1f} s in the future: check the sender's clock")
    return Command(req.action, req.channel, value, req)


def _checked_value(req: Request, takes_value: bool, ch: ChannelConfig, rules: Rules) -> float | None:
    value = req.value
    if not takes_value:
        if value is not None:
            raise CommandError(f"action {req.action!r} takes no value")
        return None
    if value is None:
        raise CommandError(f"action {req.action!r} needs a value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError("value must be a number")
    if not _finite_number(value):
        raise CommandError("value must be a finite number")
    value = float(value)
    unit = ACTIONS[req.action].unit
    if req.action == "tset":  # temperatures may be negative: both bounds come from the config
        if ch.tmin is None or ch.tmax is None:
            raise CommandError(f"channel {req.channel} ({ch.name}) has no tmin/tmax configured: tset refused")
        if not ch.tmin <= value <= ch.tmax:
            raise CommandError(f"tset {value:g} {unit} outside the configured limits tmin={ch.tmin:g}..tmax={ch.tmax:g} "
                               f"{unit} of channel {req.channel} ({ch.name})")
        limit, key = None, ""
    elif req.action in ("rampup", "rampdown"):
        if value <= 0:
            raise CommandError(f"{req.action} must be > 0 {unit}")
        limit, key = ch.ramp_max, "ramp_max"
    else:
        if value < 0:
            raise CommandError(f"{req.action} must be >= 0 {unit}")
        limit, key = (ch.vmax, "vmax") if req.action == "vset" else (ch.imax, "imax")
    if limit is not None and value > limit:
        raise CommandError(f"{req.action} {value:g} {unit} exceeds the configured limit {key}={limit:g} {unit} "
                           f"of channel {req.channel} ({ch.name})")
    hw = rules.instrument_limits(req.action)
    if hw and not hw[0] <= value <= hw[1]:
        raise CommandError(f"{req.action} {value:g} {unit} outside the instrument range {hw[0]:g}..{hw[1]:g} {unit}")
    return value


def check_size(payload: bytes) -> None:
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload too large: {len(payload)} bytes (max {MAX_PAYLOAD})")
