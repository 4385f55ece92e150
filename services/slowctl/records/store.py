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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from slowctl.device.capabilities import CommandError, finite_number
from slowctl.device.commands import Request, check_on_behalf, parse_json, parse_legacy, parse_plain
from slowctl.device.contract import SHARED_LOGIN, CommandTopics

COMMANDS, EVENTS = "commands", "events"
INDEXES = {
    COMMANDS: [
        [("ts", 1)],
        [("device", 1), ("ts", 1)],
        [("user", 1), ("ts", 1)],
        [("reply_key", 1)],
        [("reply_id", 1)],
    ],
    EVENTS: [[("ts", 1)], [("device", 1), ("ts", 1)], [("kind", 1), ("ts", 1)]],
}
LEGACY = re.compile(r"^/([^/]+)/cmd/(setv|switch)/([^/]+)$")


@dataclass(frozen=True)
class Write:
    """One change to the record: an insert, or the completion of a command by its reply."""

    collection: str
    doc: dict[str, Any]
    match: dict[str, Any] | None = None  # a reply: the pending command it completes
    raw: str = ""  # the message as received, kept in `rejected` if MongoDB refuses the document


REJECTED = "rejected"  # documents MongoDB refused, with the message they came from
LATEST = 4102444800.0  # 2100-01-01: a time beyond this is not a time
MATCH_WINDOW = timedelta(minutes=5)  # a reply completes a command received at most this long before it
# services, not devices: their commands are JSON of their own, their replies name no channel, and their events name
# the device they are about (only the service itself may publish them: interlock, procedures)
SERVICES = ("alarms", "interlock", "procedures")
SERVICE_KEYS = ("device", "channel", "kind", "rule", "kill", "procedure", "run", "params")  # what their commands say


def when(ms: Any, fallback: float) -> datetime:
    ok = isinstance(ms, (int, float)) and not isinstance(ms, bool) and 0 < ms / 1000 < LATEST
    return datetime.fromtimestamp(ms / 1000 if ok else fallback, UTC)


def plain(value: Any) -> Any:
    """What may be stored of a client's value: a finite number, a bool, None, or short text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else str(value)[:64]  # BSON holds 64-bit integers
    if isinstance(value, float):
        return value if finite_number(value) else str(value)
    return str(value)[:256]


def _plain_or_map(value: Any) -> Any:
    """A procedure's parameters stay a map of plain values (at most 64 of them)."""
    if isinstance(value, dict):
        return {str(k)[:64].replace(".", "_").lstrip("$"): plain(v) for k, v in list(value.items())[:64]}
    return plain(value)


def to_write(root: str, key: str, topic: str, payload: str, received: float) -> Write | None:
    """What one journal record (a message as received) changes in the record; None: not ours to keep.

    The topic decides what a message is: a command topic is a command whatever its last level says, and an
    event or a reply only counts on exactly <root>/<target>/event or /reply (where only that service may
    publish)."""
    write = _classify(root, key, topic, payload, received)
    return replace(write, raw=payload[:4096]) if write is not None else None


def _classify(root: str, key: str, topic: str, payload: str, received: float) -> Write | None:
    parts = topic.split("/")
    depth = len(root.split("/"))
    if topic.startswith(root + "/") and len(parts) > depth:
        target = parts[depth]
        found = CommandTopics(root, target).sender(topic)
        if found is not None:
            return _command(key, target, found[0], found[1], topic, payload, received)
        if len(parts) == depth + 2 and parts[-1] == "event":
            return _event(key, target, payload, received)
        if len(parts) == depth + 2 and parts[-1] == "reply":
            return _reply(key, target, payload, received)
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
    if form == "json" and target in SERVICES:  # their commands are not device commands
        try:
            body = json.loads(payload)
        except ValueError:
            body = {}
        if isinstance(body, dict):
            req.action, req.id, req.on_behalf = body.get("action"), body.get("id"), body.get("for")
            what = {k: _plain_or_map(body[k]) for k in SERVICE_KEYS if k in body}
            req.value, req.error = what or None, None
    return Write(COMMANDS, _command_doc(key, target, login, req, topic, payload, received, form))


def _command_doc(
    key: str, target: str, login: str, req: Request, topic: str, payload: str, received: float, form: str
) -> dict[str, Any]:
    req.by = login
    try:  # a person who names another is refused by the device: recorded as theirs alone
        check_on_behalf(login, req.on_behalf)
    except CommandError as exc:
        req.on_behalf, req.error = None, req.error or str(exc)
    echo = req.reply(True)  # the fields as the device echoes them in its reply: the match key is made of those
    value = req.value if isinstance(req.value, dict) else plain(req.value)
    return {
        "_id": key,
        "ts": datetime.fromtimestamp(received, UTC),
        "device": target,
        "channel": echo["channel"],
        "action": echo["action"],
        "value": value,
        "user": login,
        "for": echo["for"],
        "who": req.who,
        "origin": form,
        "topic": topic,
        "id": echo["id"],
        "outcome": "pending",
        "reason": req.error,
        "payload": payload[:2048],
        "reply_key": _reply_key(target, login, echo["action"], echo["channel"], echo["id"]),
    }


def _reply_key(device: str, login: Any, action: Any, channel: Any, cid: Any) -> str:
    if device in SERVICES:
        channel = None  # their replies name no channel (an ack's channel is part of what it acknowledges)
    return json.dumps([device, login, action, channel, cid])


def _reply(key: str, target: str, payload: str, received: float) -> Write | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or "ok" not in body:
        return None
    outcome = "ok" if body["ok"] is True else "refused"
    done = {
        "outcome": outcome,
        "reason": plain(body.get("error")),
        "before": plain(body.get("before")),
        "after": plain(body.get("applied")),
        "replied": datetime.fromtimestamp(received, UTC),
        "reply_id": key,
    }
    login, on_behalf = plain(body.get("by")), plain(body.get("for"))
    channel, action, cid = plain(body.get("channel")), plain(body.get("action")), plain(body.get("id"))
    rkey = _reply_key(target, login, action, channel, cid)
    # the command as the reply tells it, for when the command itself was not seen
    alone = {
        "_id": key,
        "ts": datetime.fromtimestamp(received, UTC),
        "device": target,
        "channel": channel,
        "action": action,
        "value": plain(body.get("value")),
        "user": login,
        "for": on_behalf,
        "who": f"{login} for {on_behalf}" if on_behalf else login,
        "origin": "reply",
        "id": cid,
        **done,
    }
    since = datetime.fromtimestamp(received, UTC) - MATCH_WINDOW
    return Write(COMMANDS, alone, match={"reply_key": rkey, "outcome": "pending", "since": since, "done": done})


def _event(key: str, target: str, payload: str, received: float) -> Write | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
        return None
    doc = {k: plain(body.get(k)) for k in ("device", "kind", "severity", "message", "channel", "cause")}
    doc["message"] = str(body.get("message"))[:2000]
    for k in ("before", "after"):  # any shape the device gives (a state, a number, the alarm's fields), as JSON text
        value = body.get(k)
        doc[k] = value if value is None or isinstance(value, (bool, str)) else plain(value) if isinstance(
            value, (int, float)) else json.dumps(value, default=str)[:2000]  # fmt: skip
    doc["channel"] = (
        doc["channel"] if isinstance(doc["channel"], int) and not isinstance(doc["channel"], bool) else None
    )
    if target not in SERVICES or not doc["device"]:
        doc["device"] = target  # a device speaks for itself only (the ACL: its own event topic)
    return Write(EVENTS, {"_id": key, "ts": when(body.get("ts"), received), "source": target, **doc})


def apply(db: Any, writes: list[Write]) -> int:
    """Into MongoDB, in order; a write already made (a replay) changes nothing. A document MongoDB refuses
    (invalid, too large) goes to `rejected` with its message, never blocking what follows; returns how many.
    Losing the connection raises (PyMongoError): the caller keeps the journal and tries again."""
    from bson.errors import BSONError
    from pymongo.errors import DuplicateKeyError, WriteError

    rejected = 0
    for w in writes:
        try:
            _apply_one(db, w)
        except DuplicateKeyError:
            pass  # this very document, written before a crash
        except (WriteError, BSONError, OverflowError, ValueError, TypeError) as exc:
            rejected += 1
            doc = {"_id": w.doc["_id"], "ts": w.doc.get("ts"), "collection": w.collection, "error": str(exc)[:500]}
            try:
                db[REJECTED].insert_one({**doc, "raw": w.raw})
            except DuplicateKeyError:
                pass
    return rejected


def _apply_one(db: Any, w: Write) -> None:
    from pymongo import ASCENDING, ReturnDocument

    coll = db[w.collection]
    if w.match is None:
        coll.insert_one(w.doc)
        return
    done = w.match["done"]
    if coll.find_one({"reply_id": done["reply_id"]}, {"_id": 1}) is not None:
        return  # applied before a crash
    found = coll.find_one_and_update(
        {"reply_key": w.match["reply_key"], "outcome": "pending", "ts": {"$gte": w.match["since"]}},
        {"$set": done},
        sort=[("ts", ASCENDING)],
        return_document=ReturnDocument.AFTER,
    )
    if found is None:
        coll.insert_one(w.doc)


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
