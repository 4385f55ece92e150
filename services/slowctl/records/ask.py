"""The record read back over MQTT: the questions the recorder answers (the control UI asks them; it has
no MongoDB login). Read-only and bounded; the same queries as `slowctl log` (query.py) and `slowctl
procedure list|show` (procedures.py).

  {"action": "log", "device": "hv", "channel": 0, "kind": "command", "since": "2h", "until": ..., "limit": 200}
  {"action": "runs", "procedure": "iv_scan", "limit": 50}
  {"action": "run", "run": "<run id or a unique beginning of it>"}

Each may carry "id" (echoed) and, from a front-end, "for". A question that is not understood is refused
with the reason, nothing is read.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from slowctl.records.procedures import NotFound, find_run, points, runs
from slowctl.records.query import Filter, QueryError, as_dict, entries, parse_time

MAX_ROWS = 500  # log entries or runs in one answer
MAX_POINTS = 5000  # a run's points in one answer (a burn-in of days at one a minute is more: "complete": false)
MAX_ANSWER = 2 * 1024 * 1024  # bytes: a bigger answer is refused, not sent
NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # device, procedure and run names (no regex, no operators)
FIELDS = {
    "log": {"device", "channel", "kind", "since", "until", "limit"},
    "runs": {"procedure", "limit"},
    "run": {"run"},
}
ALWAYS = {"action", "id", "for", "ts"}


class Refused(Exception):
    pass


def answer(db: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The answer's fields for a question (ok, and what was asked for), or Refused."""
    action = body.get("action")
    if action not in FIELDS:
        raise Refused(f"unknown action {str(action)[:32]!r} (expected {', '.join(FIELDS)})")
    unknown = sorted(set(body) - FIELDS[action] - ALWAYS)
    if unknown:
        raise Refused(f"unknown field(s) for {action}: {', '.join(u[:32] for u in unknown[:5])}")
    if action == "log":
        f = Filter(
            device=_name(body, "device"),
            channel=None if body.get("channel") is None else _integer(body, "channel", 0, 0, 9999),
            since=_time(body, "since"),
            until=_time(body, "until"),
            kind=_name(body, "kind"),
        )
        limit = _integer(body, "limit", 200, 1, MAX_ROWS)
        return {"rows": [as_dict(r, _ms) for r in entries(db, f, limit)], "limit": limit}
    if action == "runs":
        limit = _integer(body, "limit", 50, 1, MAX_ROWS)
        return {"runs": [_plain(d) for d in runs(db, limit, _name(body, "procedure"))], "limit": limit}
    run = _name(body, "run")
    if run is None:
        raise Refused('run: the run\'s id is required ({"action": "run", "run": "<id>"})')
    try:
        doc = find_run(db, run)
    except NotFound as exc:
        raise Refused(str(exc)) from None
    pts = points(db, doc["_id"], MAX_POINTS + 1)
    return {
        "run": _plain(doc),
        "points": [_plain({k: v for k, v in p.items() if k not in ("_id", "run")}) for p in pts[:MAX_POINTS]],
        "complete": len(pts) <= MAX_POINTS,
    }


def encode(reply: dict[str, Any]) -> str:
    """The answer as sent; one bigger than MAX_ANSWER becomes a refusal that says so."""
    text = json.dumps(reply, default=str)
    if len(text.encode()) <= MAX_ANSWER:
        return text
    small = {k: reply.get(k) for k in ("id", "action", "by", "for")}
    small.update(ok=False, error=f"the answer is {len(text) // 1024} KiB (max {MAX_ANSWER // 1024}): ask for less")
    return json.dumps(small)


def _name(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not NAME.match(value):
        raise Refused(f"{key}: expected a name (letters, digits, _.:-), got {str(value)[:40]!r}")
    return value


def _integer(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Refused(f"{key}: expected a whole number {lo}..{hi}, got {str(value)[:40]!r}")
    return value


def _time(body: dict[str, Any], key: str) -> datetime | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise Refused(f"{key}: expected ISO 8601 or an age (30s, 10m, 2h, 7d)")
    try:
        return parse_time(value)
    except QueryError as exc:
        raise Refused(f"{key}: {exc}") from None


def _ms(t: datetime) -> int:
    """Times as the live messages carry them: ms since the epoch (the page merges both)."""
    return int(t.timestamp() * 1000)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _ms(value if value.tzinfo else value.replace(tzinfo=UTC))  # pymongo hands out naive UTC
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
