"""Commands: parse the three wire forms into one Request, then validate it.

Wire forms (docs/mqtt.md), each also below <root>/<dev>/by/<login>/ (who sent it, as the broker enforces):
  <root>/<dev>/cmd                  {"action", "channel", "value", "id", "ts", "for"}
  <root>/<dev>/cmd/<action>/<ch>    plain value or empty payload
  /<legacy>/cmd/setv/<ch>, /<legacy>/cmd/switch/<ch>   tracker_dcs topics

Validation refuses, it never clamps: a refused command changes nothing.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slowctl.device.capabilities import Capabilities, CommandError, finite_number
from slowctl.device.contract import FRONTENDS, LOGIN, MAX_PAYLOAD, CommandTopics

NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
CLOCK_SKEW = 2.0  # s of future timestamps tolerated between hosts


@dataclass
class Request:
    """A command as it arrived; fields are raw until validated."""

    action: Any = None
    channel: Any = None
    value: Any = None
    id: Any = None
    ts: Any = None
    by: str | None = None  # the broker login it came from (the topic says; the ACL enforces it)
    on_behalf: Any = None  # "for": the person a front-end acts for
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
            "value": self.value if finite_number(self.value) else None,
            "by": self.by,
            "for": self.on_behalf if isinstance(self.on_behalf, str) and LOGIN.match(self.on_behalf) else None,
            "ok": ok,
            "error": error,
        }

    @property
    def who(self) -> str:
        """As the record shows it: `alice`, `nodered for alice`."""
        by = self.by or "unknown"
        named = isinstance(self.on_behalf, str) and LOGIN.match(self.on_behalf)
        return f"{by} for {self.on_behalf}" if named else by


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
    req.id, req.ts, req.on_behalf = data.get("id"), data.get("ts"), data.get("for")
    unknown = sorted(set(data) - {"action", "channel", "value", "id", "ts", "for"})
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
        if not finite_number(ts):
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


def validate(req: Request, caps: Capabilities, max_age: float, now_wall: float | None = None) -> Command:
    """A command that passes every static check (action, channel, value, age), or CommandError."""
    if req.error:
        raise CommandError(req.error)
    check_on_behalf(req.by, req.on_behalf)
    cap = caps.get(req.action, req.channel)
    value = cap.check(req.value)
    if req.ts is not None:
        now_wall = time.time() if now_wall is None else now_wall
        req.issued = _issued_at(req.ts)
        age = now_wall - req.issued
        if age > max_age:
            raise CommandError(f"stale command: issued {age:.1f} s ago (max {max_age:g} s)")
        if age < -CLOCK_SKEW:
            raise CommandError(f"ts is {-age:.1f} s in the future: check the sender's clock")
    return Command(cap.name, req.channel, value, req)


def check_on_behalf(by: str | None, on_behalf: Any) -> None:
    """Only a front-end says for whom it acts, and names a login when it does."""
    if on_behalf is None:
        return
    if by not in FRONTENDS:
        raise CommandError(f"'for' is refused from {by}: only a front-end ({', '.join(FRONTENDS)}) acts for a person")
    if not isinstance(on_behalf, str) or not LOGIN.match(on_behalf):
        raise CommandError(f"'for' must be a login name (a-z, 0-9, _.-), got {str(on_behalf)[:40]!r}")


def sender(topics: CommandTopics, topic: str, body: dict[str, Any]) -> tuple[Request, str | None]:
    """Who sent a JSON command to a target (`.by`, `.on_behalf`, `.who`), and why it is refused (or None)."""
    found = topics.sender(topic)
    if found is None or found[1]:
        return Request(by="unknown"), f"commands go to {topics.cmd} or {topics.base}/by/<login>/cmd, as JSON"
    req = Request(by=found[0], on_behalf=body.get("for"), id=body.get("id"))
    try:
        check_on_behalf(req.by, req.on_behalf)
    except CommandError as exc:
        req.on_behalf = None
        return req, str(exc)
    return req, None


def json_command(
    topics: CommandTopics, topic: str, payload: bytes, retain: bool
) -> tuple[dict[str, Any] | None, Request, str | None]:
    """A JSON command to a service (the interlock process, the alarm handler, the procedure runner): its body
    (None unless a JSON object), who sent it, and why it is refused as it came (or None)."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = None
    origin, error = sender(topics, topic, body or {})
    if error is None and retain:
        error = "retained commands are refused: a stale command must never run"
    return body, origin, error


def check_size(payload: bytes) -> None:
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload too large: {len(payload)} bytes (max {MAX_PAYLOAD})")
