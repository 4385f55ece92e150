"""The recorder: every command, reply and event from the broker into MongoDB, nothing lost.

A message is on disk (the journal, a DiskQueue) before the broker hears it was received (manual QoS 1
acknowledgement, persistent session): a crash of the recorder loses nothing the broker let go of. A
writer thread moves the journal into MongoDB in order; while MongoDB is unreachable or refuses, the
journal grows (bounded) and the recorder says so on its health topic, which the alarm handler turns
into an alarm. It is not in the command path.

It also answers read-only questions about the record on its own command topics (ask.py): the control UI
reads the history through it rather than holding a MongoDB login of its own. They are not recorded.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from slowctl.config import StackConfig
from slowctl.device.commands import json_command
from slowctl.device.contract import RecorderTopics
from slowctl.device.heartbeat import Heartbeat
from slowctl.diskqueue import DiskQueue, QueueFull
from slowctl.mqtt import Endpoint, MqttSession, response_of
from slowctl.records.ask import Refused, answer, encode
from slowctl.records.docstore import Batch, MongoSettings, drain_journal
from slowctl.records.store import apply, ensure_indexes, expire, to_write

log = logging.getLogger(__name__)

NAME = "recorder"  # its broker login and its topics: <root>/recorder/{availability,health}
SESSION_EXPIRY = 7 * 24 * 3600  # s the broker keeps queueing for it while it is away
BATCH = 500
EXPIRE_EVERY = 3600.0  # s between retention passes
HEALTH_EVERY = 5.0
QUESTIONS = 8  # waiting questions; more are refused at once (a page that asks in a loop slows nobody else)


class Recorder:
    def __init__(self, stack: StackConfig, endpoint: Endpoint, mongo: MongoSettings, state_dir: Path) -> None:
        self.root = stack.mqtt.topic_root
        self.cfg = stack.records
        self.mongo = mongo
        self.dir = state_dir / NAME
        self.journal = DiskQueue(self.dir / "journal", int(self.cfg.buffer_mb * 1024 * 1024))
        self.stop_event = threading.Event()
        self.news = threading.Event()
        self.written = 0
        self.rejected = 0  # documents MongoDB refused (kept in its `rejected` collection)
        self.waiting: deque[tuple[paho.MQTTMessage, float]] = deque()  # received, not yet on disk: not acked
        self.journal_error: str | None = None  # why the journal takes nothing (full, disk error)
        self.take_lock = threading.Lock()
        self.db_error: str | None = None
        self.last_write: float | None = None
        self.expired_at = 0.0  # when retention last deleted old documents (monotonic)
        self.heartbeat = Heartbeat.from_env()
        self.topics = RecorderTopics(self.root)
        self.health_topic, self.availability = self.topics.health, self.topics.availability
        self.questions: queue.Queue[paho.MQTTMessage] = queue.Queue(QUESTIONS)
        self.mqtt = MqttSession(
            endpoint,
            self._client_id(),
            keepalive=stack.mqtt.keepalive,
            reconnect=(stack.mqtt.reconnect_min, stack.mqtt.reconnect_max),
            will=(self.availability, "offline"),
            on_connect=self._announce,
            session_expiry=SESSION_EXPIRY,
            manual_ack=True,
        )

    def _client_id(self) -> str:
        """Stable (the persistent session is found by it) and unguessable (nobody else can take it over)."""
        path = self.dir / "client-id"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(f"slowctl-recorder-{secrets.token_hex(8)}\n")
        return path.read_text().strip()

    # --- lifecycle --------------------------------------------------------------------------
    def run(self) -> int:
        for problem in self.journal.problems:
            log.error("journal: %s", problem)
        for topic in (f"{self.root}/+/event", f"{self.root}/+/reply", f"{self.root}/+/cmd/#"):
            self.mqtt.subscribe(topic, self._on_message, qos=1)
        self.mqtt.subscribe(f"{self.root}/+/by/+/cmd/#", self._on_message, qos=1)
        self.mqtt.subscribe("/+/cmd/#", self._on_message, qos=1)  # tracker_dcs topics
        writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)
        writer.start()
        threading.Thread(target=self._answer_loop, name="questions", daemon=True).start()
        self.mqtt.start()
        published = 0.0
        try:
            while not self.stop_event.wait(1.0):
                self.heartbeat.beat(self.mqtt.connected.is_set())
                if self.waiting:
                    with self.take_lock:
                        self._take()  # a disk that failed may take writes again
                if time.monotonic() - published >= HEALTH_EVERY:
                    published = time.monotonic()
                    self._publish_health()
        finally:
            self.stop_event.set()
            self.news.set()
            writer.join(10)
            self.mqtt.stop(last_words=[(self.availability, "offline")])
            self.journal.close()
        return 0

    def _announce(self) -> None:
        self.mqtt.publish(self.availability, "online", qos=1, retain=True)
        self._publish_health()

    # --- broker -> journal (paho's thread) ----------------------------------------------------
    def _on_message(self, msg: paho.MQTTMessage) -> None:
        if msg.topic.startswith(self.topics.base + "/"):  # questions to the recorder and its answers: reads
            self.mqtt.ack(msg)
            if self.topics.commands.sender(msg.topic) is not None:
                self._question(msg)
            return
        if msg.retain:  # a retained message was recorded when it was published live
            self.mqtt.ack(msg)
            return
        with self.take_lock:
            self.waiting.append((msg, time.time()))
            self._take()

    def _take(self) -> None:
        """Under take_lock: the waiting messages into the journal, in order, each acknowledged once on disk.
        While the journal is full (or the disk fails) they stay unacknowledged: the broker sends no more than
        its in-flight window and keeps the rest in the session; they go in as the writer makes room."""
        while self.waiting:
            msg, at = self.waiting[0]
            # its key, made now and kept with it: the document's _id, the same however often it is replayed
            record = {"t": msg.topic, "p": msg.payload.decode("utf-8", "replace"), "at": at, "k": uuid.uuid4().hex}
            try:
                self.journal.put(record)
            except (QueueFull, OSError) as exc:
                if self.journal_error is None:
                    log.error("journal: %s; messages held back, the broker keeps the rest", exc)
                self.journal_error = str(exc)
                return
            self.waiting.popleft()
            self.mqtt.ack(msg)
            self.news.set()
        if self.journal_error is not None:
            log.info("journal: taking messages again")
            self.journal_error = None

    # --- questions about the record (paho's thread hands them to the question thread) --------------------
    def _question(self, msg: paho.MQTTMessage) -> None:
        try:
            self.questions.put_nowait(msg)
        except queue.Full:
            self._answer(msg, {}, f"busy: {QUESTIONS} questions waiting, ask again in a moment")

    def _answer_loop(self) -> None:
        from pymongo.errors import PyMongoError

        client, db = self.mongo.connect()
        while not self.stop_event.is_set():
            try:
                msg = self.questions.get(timeout=1.0)
            except queue.Empty:
                continue
            body, origin, error = json_command(self.topics.commands, msg.topic, msg.payload, msg.retain)
            ask = body or {}
            found: dict[str, Any] = {}
            if error is None and body is None:
                error = 'expected a JSON object: {"action": "log" | "runs" | "run", ...} (docs/records.md)'
            if error is None:
                try:
                    found = answer(db, ask)
                except Refused as exc:
                    error = str(exc)
                except PyMongoError as exc:
                    error = f"the record cannot be read now: {_short(exc)}"
            self._answer(msg, found, error, ask, origin.by, origin.reply(True)["for"])
        client.close()

    def _answer(
        self,
        msg: paho.MQTTMessage,
        found: dict[str, Any],
        error: str | None,
        ask: dict[str, Any] | None = None,
        by: str | None = None,
        on_behalf: str | None = None,
    ) -> None:
        ask = ask or {}
        ident = ask.get("id")
        action = ask.get("action")
        reply = {
            "id": ident if isinstance(ident, (str, int)) and not isinstance(ident, bool) else None,
            "action": action if isinstance(action, str) else None,
            "by": by,
            "for": on_behalf,
            "ok": error is None,
            "error": error,
            **found,
        }
        if error:
            log.info("question refused (%s): %s", by, error)
        response, properties = response_of(msg)
        topic = response if response and self.topics.owns_response_topic(response) else None
        self.mqtt.publish(topic or self.topics.reply, encode(reply), qos=1, properties=properties)

    # --- journal -> MongoDB (writer thread) -------------------------------------------------------
    def _write_loop(self) -> None:
        drain_journal(
            self.journal,
            self.mongo,
            self.stop_event,
            self.news,
            ensure_indexes,
            self._write,
            self._failed,
            self._written,
            BATCH,
        )

    def _write(self, db: Any, batch: Batch) -> None:
        writes = [w for _, r in batch if (w := to_write(self.root, r["k"], r["t"], r["p"], r["at"]))]
        rejected = apply(db, writes)
        if rejected:
            self.rejected += rejected
            log.error("MongoDB refused %d documents: kept in its `rejected` collection", rejected)
        if time.monotonic() - self.expired_at > EXPIRE_EVERY:
            self.expired_at = time.monotonic()
            gone = expire(db, self.cfg.retention_days)
            if gone:
                log.info("retention: %d documents older than %d days deleted", gone, self.cfg.retention_days)

    def _failed(self, exc: Exception) -> None:
        from pymongo.errors import PyMongoError

        if not isinstance(exc, PyMongoError):
            log.exception("writing the journal into MongoDB failed", exc_info=exc)
        first = self.db_error is None
        self.db_error = _short(exc)
        if first:
            log.error("MongoDB: %s; buffering on disk", self.db_error)
            self._publish_health()

    def _written(self, batch: Batch, recovered: bool) -> None:
        with self.take_lock:
            self._take()  # room again for what was held back
        self.written += len(batch)
        self.last_write = time.time()
        if recovered:
            log.info("MongoDB: writing again")
            self.db_error = None
            self._publish_health()

    # --- health (the alarm handler reads its `alarms`) -------------------------------------------
    def health(self) -> dict[str, Any]:
        fill = self.journal.fill
        alarms = []
        if self.db_error is not None and len(self.journal):
            alarms.append(
                {"kind": "NOT_WRITING", "severity": "major", "message": f"recorder buffering: {self.db_error}"}
            )
        if self.journal_error is not None:
            alarms.append(
                {
                    "kind": "BUFFER_FULL",
                    "severity": "major",
                    "message": f"journal takes nothing ({self.journal_error}): {len(self.waiting)} messages held "
                    "back, the broker keeps the rest (up to its queue limit)",
                }
            )
        elif fill >= self.cfg.buffer_warn:
            alarms.append(
                {
                    "kind": "BUFFER_NEAR_FULL",
                    "severity": "major",
                    "message": f"recorder buffer {100 * fill:.0f} % full ({len(self.journal)} records)",
                }
            )
        if self.rejected:
            alarms.append(
                {
                    "kind": "DOCUMENTS_REJECTED",
                    "severity": "minor",
                    "message": f"MongoDB refused {self.rejected} documents: see its `rejected` collection",
                }
            )
        if self.journal.problems:
            alarms.append(
                {"kind": "JOURNAL_DAMAGED", "severity": "minor", "message": "; ".join(self.journal.problems)[:500]}
            )
        return {
            "ts": int(time.time() * 1000),
            "buffered": len(self.journal),
            "buffer_fill": round(fill, 4),
            "written": self.written,
            "held_back": len(self.waiting),
            "rejected": self.rejected,
            "mongodb": self.db_error or "ok",
            "last_write": self.last_write,
            "alarms": alarms,
        }

    def _publish_health(self) -> None:
        if self.mqtt.connected.is_set():
            self.mqtt.publish(self.health_topic, json.dumps(self.health()), qos=1, retain=True)


def _short(exc: Exception) -> str:
    return str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0][:300]
