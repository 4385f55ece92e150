"""`slowctl log`: the record read back, commands and events merged in time order, newest last."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from slowctl.records.store import COMMANDS, EVENTS

COMMAND_EVENTS = ("command_applied", "command_refused", "command_failed")  # the commands collection has them
RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FIELDS = ("ts", "type", "who", "device", "channel", "what", "outcome", "reason", "before", "after", "severity")


class QueryError(Exception):
    pass


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (a time without zone is local time), or an age: 30s, 10m, 2h, 7d."""
    now = now or datetime.now(UTC)
    m = RELATIVE.match(text.strip())
    if m:
        return now - timedelta(seconds=float(m.group(1)) * UNITS[m.group(2)])
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"time {text!r}: expected ISO 8601 (2026-12-01T03:12) or an age (30s, 10m, 2h, 7d)") from None
    return t.astimezone(UTC) if t.tzinfo else t.astimezone().astimezone(UTC)


@dataclass
class Filter:
    device: str | None = None
    channel: int | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kind: str | None = None  # "command", or an event kind

    def commands(self) -> dict[str, Any] | None:
        if self.kind not in (None, "command"):
            return None
        q: dict[str, Any] = self._common()
        if self.user:
            q["$or"] = [{"user": self.user}, {"for": self.user}]
        return q

    def events(self) -> dict[str, Any] | None:
        if self.kind == "command":
            return None
        q = self._common()
        q["kind"] = self.kind if self.kind else {"$nin": list(COMMAND_EVENTS)}
        if self.user:
            q["cause"] = {"$regex": f"(^|for ){re.escape(self.user)}( |$)"}
        return q

    def _common(self) -> dict[str, Any]:
        q: dict[str, Any] = {}
        if self.device:
            q["device"] = self.device
        if self.channel is not None:
            q["channel"] = self.channel
        if self.since or self.until:
            q["ts"] = {**({"$gte": self.since} if self.since else {}), **({"$lt": self.until} if self.until else {})}
        return q


def entries(db: Any, f: Filter, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` entries that match, oldest first."""
    found: list[dict[str, Any]] = []
    for name, q, row in ((COMMANDS, f.commands(), command_row), (EVENTS, f.events(), event_row)):
        if q is not None:
            found += [row(d) for d in db[name].find(q).sort([("ts", -1), ("_id", -1)]).limit(limit)]
    found.sort(key=lambda r: (r["ts"], r["_key"]))
    return found[-limit:]


def follow(db: Any, f: Filter, first: list[dict[str, Any]], every: float, stop: Callable[[], bool]) -> Iterator[dict]:
    """New entries as they are written (a command reappears once its reply has completed it)."""
    seen = {(r["type"], r["_key"], r["_state"]): r["ts"] for r in first}
    newest = max((r["ts"] for r in first), default=f.since or datetime.now(UTC))
    while not stop():
        # a window that moves with the newest entry; a little behind it, for replies completing commands
        since = newest - timedelta(seconds=30)
        for r in entries(db, Filter(f.device, f.channel, f.user, since, f.until, f.kind), 10_000):
            key = (r["type"], r["_key"], r["_state"])
            if key not in seen:
                seen[key] = r["ts"]
                newest = max(newest, r["ts"])
                yield r
        seen = {k: t for k, t in seen.items() if t >= since}
        time.sleep(every)


def command_row(d: dict[str, Any]) -> dict[str, Any]:
    value = d.get("value")
    what = (d.get("action") or "?") + (
        "" if value is None else f" {value if not isinstance(value, dict) else json.dumps(value)}"
    )
    outcome = d.get("outcome")
    if outcome == "pending":
        outcome = "no reply yet" if _age(d["ts"]) < 10 else "no reply"
    return {
        "ts": _utc(d["ts"]),
        "type": "command",
        "who": d.get("who") or d.get("user"),
        "device": d.get("device"),
        "channel": d.get("channel"),
        "what": what,
        "outcome": outcome,
        "reason": d.get("reason"),
        "before": d.get("before"),
        "after": d.get("after"),
        "severity": None,
        "_key": str(d["_id"]),
        "_state": d.get("outcome"),
    }


def event_row(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "ts": _utc(d["ts"]),
        "type": "event",
        "who": d.get("cause"),
        "device": d.get("device"),
        "channel": d.get("channel"),
        "what": d.get("kind"),
        "outcome": None,
        "reason": d.get("message"),
        "before": d.get("before"),
        "after": d.get("after"),
        "severity": d.get("severity"),
        "_key": str(d["_id"]),
        "_state": None,
    }


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # pymongo hands out naive UTC


def _age(t: datetime) -> float:
    return (datetime.now(UTC) - _utc(t)).total_seconds()


def as_text(r: dict[str, Any]) -> str:
    when = r["ts"].astimezone().strftime("%Y-%m-%d %H:%M:%S")
    where = r["device"] + ("" if r["channel"] is None else f".{r['channel']}")
    if r["type"] == "command":
        change = "" if r["before"] is None and r["after"] is None else f" ({_fmt(r['before'])} -> {_fmt(r['after'])})"
        reason = f": {r['reason']}" if r["reason"] else ""
        return f"{when}  {r['who'] or '?':<20} {where:<12} {r['what']:<18} {r['outcome']}{change}{reason}"
    who = f"  [{r['who']}]" if r["who"] else ""
    return f"{when}  {'event ' + (r['severity'] or ''):<20} {where:<12} {r['what']:<18} {r['reason']}{who}"


def _fmt(v: Any) -> str:
    return "?" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def as_dict(r: dict[str, Any], when: Callable[[datetime], Any] = datetime.isoformat) -> dict[str, Any]:
    """An entry's public fields (`when` writes its time)."""
    return {k: (when(r[k]) if k == "ts" else r[k]) for k in FIELDS}


def as_json(r: dict[str, Any]) -> str:
    return json.dumps(as_dict(r), default=str)


def csv_header() -> str:
    return ",".join(FIELDS)


def as_csv(r: dict[str, Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(
        [r[k].isoformat() if k == "ts" else ("" if r[k] is None else r[k]) for k in FIELDS]
    )
    return out.getvalue()
