"""The record in MongoDB: what a command, a reply and an event become, and how they are queried.

`commands`: one document per command as the broker delivered it (who from the topic: the broker's word),
completed by the device's reply (outcome, reason, value before and after). A reply whose command was not
seen (the recorder subscribed after it) becomes a document of its own. `events`: the event stream of the
devices, the interlock process and the alarm handler. Writes are idempotent (each document's `_id` is
the journal record it came from), so a replay after a crash never doubles anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from slowctl.device.commands import Request, parse_json, parse_legacy, parse_plain
from slowctl.device.contract import SHARED_LOGIN, CommandTopics

COMMANDS, EVENTS = "commands", "events"
INDEXES = {
    COMMANDS: [[("ts", 1)], [("device", 1), ("ts", 1)], [("user", 1), ("ts", 1)], [("reply_key", 1)]],
    EVENTS: [[("ts", 1)], [("device", 1), ("ts", 1)], [("kind", 1), ("ts", 1)]],
}
LEGACY = re.compile(r"^/([^/]+)/cmd/(setv|switch)/([^/]+)$")


@dataclass(frozen=True)
class Write:
    """One change to the record: an insert, or the completion of a command by its reply."""

    collection: str
    doc: dict[str, Any]
    match: dict[str, Any] | None = None  # a reply: the pending command it completes


def when(ms: Any, fallback: float) -> datetime:
    seconds = ms / 1000 if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms > 0 else fallback
    return datetime.fromtimestamp(seconds, UTC)


def to_write(root: str, key: str, topic: str, payload: str, received: float) -> Write | None:
    """What one journal record (a message as received) changes in the record; None: not ours to keep."""
    parts = topic.split("/")
    if topic.startswith(root + "/"):
        target, leaf = parts[len(root.split("/"))], parts[-1]
        if leaf == "event":
            return _event(key, target, payload, received)
        if leaf == "reply" and parts[-2] == target:
            return _reply(key, target, payload, received)
        found = CommandTopics(root, target).sender(topic)
        if found is not None:
            return _command(key, target, found[0], found[1], topic, payload, received)
        return None
    m = LEGACY.match(topic)
    if m:  # tracker_dcs: the legacy name is the device id
        req = parse_legacy(m.group(2), m.group(3), payload.encode())
        return Write(COMMANDS, _command_doc(key, m.group(1), SHARED_LOGIN, req, topic, payload, received, "legacy"))
    return None


def _command(key: str, target: str, login: str, levels: list[str], topic: str, payload: str, received: float) -> Write:
    data = payload.encode()
    if not levels:
        req, form = parse_json(data), "json"
    elif len(levels) == 2:
        req, form = parse_plain(levels[0], levels[1], data), "plain"
    else:
        req, form = Request(error="unknown command topic"), "unknown"
    if form == "json" and target in ("alarms", "interlock"):  # their commands are not device commands
        try:
            body = json.loads(payload)
        except ValueError:
            body = {}
        if isinstance(body, dict):
            req.action, req.id, req.on_behalf = body.get("action"), body.get("id"), body.get("for")
            req.value = {k: v for k, v in body.items() if k not in ("action", "id", "for", "ts")} or None
            req.error = None
    return Write(COMMANDS, _command_doc(key, target, login, req, topic, payload, received, form))


def _command_doc(
    key: str, target: str, login: str, req: Request, topic: str, payload: str, received: float, form: str
) -> dict[str, Any]:
    req.by = login
    who = req.who if isinstance(req.on_behalf, str) else login
    return {
        "_id": key,
        "ts": datetime.fromtimestamp(received, UTC),
        "device": target,
        "channel": req.channel if isinstance(req.channel, int) and not isinstance(req.channel, bool) else None,
        "action": req.action if isinstance(req.action, str) else None,
        "value": req.value,
        "user": login,
        "for": req.on_behalf if isinstance(req.on_behalf, str) else None,
        "who": who,
        "origin": form,
        "topic": topic,
        "id": req.id if isinstance(req.id, (str, int)) and not isinstance(req.id, bool) else None,
        "outcome": "pending",
        "reason": req.error,
        "payload": payload[:2048],
        "reply_key": _reply_key(target, login, req.action, req.channel, req.id),
    }


def _reply_key(device: str, login: Any, action: Any, channel: Any, cid: Any) -> str:
    return json.dumps([device, login, action, channel, cid])


def _reply(key: str, target: str, payload: str, received: float) -> Write | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or "ok" not in body:
        return None
    outcome = "ok" if body["ok"] else "refused"
    done = {
        "outcome": outcome,
        "reason": body.get("error"),
        "before": body.get("before"),
        "after": body.get("applied"),
        "replied": datetime.fromtimestamp(received, UTC),
        "reply_id": key,
    }
    login = body.get("by")
    rkey = _reply_key(target, login, body.get("action"), body.get("channel"), body.get("id"))
    # the command as the reply tells it, for when the command itself was not seen
    alone = {
        "_id": key,
        "ts": datetime.fromtimestamp(received, UTC),
        "device": target,
        "channel": body.get("channel"),
        "action": body.get("action"),
        "value": body.get("value"),
        "user": login,
        "for": body.get("for"),
        "who": f"{login} for {body['for']}" if body.get("for") else login,
        "origin": "reply",
        "id": body.get("id"),
        **done,
    }
    return Write(COMMANDS, alone, match={"reply_key": rkey, "outcome": "pending", "done": done})


def _event(key: str, target: str, payload: str, received: float) -> Write | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
        return None
    doc = {k: body.get(k) for k in ("device", "kind", "severity", "message", "channel", "before", "after", "cause")}
    doc["device"] = doc["device"] or target
    return Write(EVENTS, {"_id": key, "ts": when(body.get("ts"), received), "source": target, **doc})


def apply(db: Any, writes: list[Write]) -> None:
    """Into MongoDB, in order; a write already made (a replay) changes nothing."""
    from pymongo import ASCENDING, ReturnDocument
    from pymongo.errors import DuplicateKeyError

    for w in writes:
        coll = db[w.collection]
        if w.match is None:
            try:
                coll.insert_one(w.doc)
            except DuplicateKeyError:
                pass
            continue
        done = w.match["done"]
        if coll.find_one({"reply_id": done["reply_id"]}, {"_id": 1}) is not None:
            continue  # applied before a crash
        found = coll.find_one_and_update(
            {"reply_key": w.match["reply_key"], "outcome": "pending"},
            {"$set": done},
            sort=[("ts", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        if found is None:
            try:
                coll.insert_one(w.doc)
            except DuplicateKeyError:
                pass


def ensure_indexes(db: Any) -> None:
    for name, indexes in INDEXES.items():
        for keys in indexes:
            db[name].create_index(keys)


def expire(db: Any, days: int, now: datetime | None = None) -> int:
    """Deletes what is older than `days` (0: nothing); returns how many documents went."""
    if days <= 0:
        return 0
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    return sum(db[name].delete_many({"ts": {"$lt": cutoff}}).deleted_count for name in (COMMANDS, EVENTS))
