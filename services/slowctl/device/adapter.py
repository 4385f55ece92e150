"""The MQTT adapter of one device service: connect, subscribe, queue, poll loop, publish.

Every decision is the policy core's (core.py); this module only moves data between the broker, the
instrument link and the core. Threads: the poller (the caller of `run`) reads the instrument every poll
period; the command worker executes queued commands and software-ramp steps; paho's network thread parses
and validates commands before they are queued; the outbox thread (from the first connect) publishes what
waited while the broker was away (outbox.py). All calls into the core hold `_core_lock`; calls that talk
to the instrument hold the link first (lock order: link, then core, then `_outbox_lock`).
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from slowctl.config import DeviceConfig, StackConfig
from slowctl.device.capabilities import Capabilities
from slowctl.device.commands import (
    Command,
    CommandError,
    Request,
    check_size,
    parse_json,
    parse_legacy,
    parse_plain,
    validate,
)
from slowctl.device.contract import SHARED_LOGIN, DeviceState, InterlockTopics, LegacyTopics, Topics
from slowctl.device.core import DeviceCore, Outcome
from slowctl.device.events import Event
from slowctl.device.heartbeat import Heartbeat
from slowctl.device.memory import MemoryFile
from slowctl.device.outbox import EVENT, METRICS, Outbox, event_messages
from slowctl.device.payloads import channel_dict, legacy_status, metrics_lines
from slowctl.drivers import DRIVERS, Driver, supply_kind
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings, open_link
from slowctl.mqtt import Endpoint, MqttSession, publish_properties
from slowctl.safety.rules import cold_sides, guards

log = logging.getLogger(__name__)

DRAIN_BATCH = 100  # outbox messages published before waiting for their PUBACKs
DRAIN_RATE = 500.0  # outbox messages per second at most: the broker and Telegraf take the backlog with the live data


def link_settings(driver: type[Driver], cfg: DeviceConfig) -> LinkSettings:
    """The driver's defaults for its instrument, overridden by what the device config says."""
    overrides = {k: v for section in (cfg.serial, cfg.link) for k, v in section.model_dump().items() if v is not None}
    return replace(driver.link_settings, timeout=cfg.timeout, visa_library=cfg.visa_library, **overrides)


@dataclass
class Health:
    restarts: int = 0
    poll_cycles: int = 0
    last_poll_duration: float | None = None
    consecutive_errors: int = 0
    errors: int = 0


class DeviceService:
    def __init__(
        self, device: str, stack: StackConfig, endpoint: Endpoint, restarts: int = 0, state_dir: Path | None = None
    ) -> None:
        self.id = device
        self.cfg = stack.devices[device]
        self.driver_cls = DRIVERS[self.cfg.model]
        self.options = self.driver_cls.parse_options(self.cfg.options)
        self.link_settings = link_settings(self.driver_cls, self.cfg)
        self.topics = Topics(stack.mqtt.topic_root, device)
        self.legacy = LegacyTopics(self.cfg.legacy_name) if self.cfg.legacy_name else None
        self.channels = sorted(self.cfg.channels)
        self.names = {ch: c.name for ch, c in self.cfg.channels.items()}
        self.kind = supply_kind(self.cfg.model, [c.vmax for c in self.cfg.channels.values()])
        self.caps = Capabilities.build(self.cfg, self.options)
        memory = MemoryFile(state_dir / f"{device}.json" if state_dir else None)
        protecting = guards(stack.interlocks, stack.devices, device)
        colds = cold_sides(stack.interlocks, device)
        self.core = DeviceCore(device, self.cfg, self.caps, memory, time.monotonic, protecting, colds)
        self.interlock_topics = InterlockTopics(stack.mqtt.topic_root) if protecting or colds else None
        self._interlock_state: dict[str, Any] | None = None
        self._interlock_online = False
        self._interlock_news = threading.Event()
        self.mqtt = MqttSession(
            endpoint,
            f"slowctl-{device}-{secrets.token_hex(6)}",  # unguessable: nobody can take its session over
            keepalive=stack.mqtt.keepalive,
            reconnect=(stack.mqtt.reconnect_min, stack.mqtt.reconnect_max),
            will=(self.topics.availability, "offline"),
            on_connect=self._announce,
        )
        self.health = Health(restarts=restarts)
        self.heartbeat = Heartbeat.from_env()
        self.stop_event = threading.Event()
        self.queue: queue.Queue[Command] = queue.Queue()
        self._driver: Driver | None = None
        self._driver_lock = threading.Lock()
        self._core_lock = threading.RLock()
        self._accept_lock = threading.Lock()
        # what the broker has not taken yet (while it is away, and until the backlog is out: order), on disk
        self.outbox = Outbox.open(
            state_dir / f"{device}.outbox" if state_dir else None, int(self.cfg.outbox_max_mb * 1024 * 1024), device
        )
        self._outbox_lock = threading.Lock()  # one decision at a time: publish now, or keep behind the backlog
        self._outbox_wake = threading.Event()
        self._drainer: threading.Thread | None = None  # started at the first connect
        self._closing = False
        self._connected_once = False
        self._last_status: str | None = None
        self.state = DeviceState.DISCONNECTED
        self.error: str | None = "not connected yet"
        self.identity: str | None = None
        self.seq = 0
        self.started = time.monotonic()

    # --- lifecycle (signal handlers belong to the entry point: stop by setting stop_event) --------
    def run(self) -> int:
        for topic in self.topics.commands.filters:
            self.mqtt.subscribe(topic, self._on_command)
        if self.interlock_topics:
            self.mqtt.subscribe(self.interlock_topics.state, self._on_interlock)
            self.mqtt.subscribe(self.interlock_topics.availability, self._on_interlock)
        if self.legacy:
            self.mqtt.subscribe(self.legacy.setv, self._on_legacy)
            self.mqtt.subscribe(self.legacy.switch, self._on_legacy)
        self.mqtt.start()
        self._emit(
            [
                Event(self.id, "service_start", f"service started ({self.cfg.model} at {self.cfg.address})"),
                *self.core.start_events,
                *self.outbox.start_events(),  # what the last run left that could not be read back
            ]
        )
        worker = threading.Thread(target=self._command_loop, name="commands", daemon=True)
        worker.start()
        try:
            self._poll_loop()
        finally:
            self.stop_event.set()
            worker.join(5)
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        """Announce offline and let go of the instrument; outputs stay exactly as they are."""
        with self._accept_lock:
            self._closing = True  # from now on _accept refuses: every command still gets its reply
        while True:
            try:
                cmd = self.queue.get_nowait()
            except queue.Empty:
                break
            self._reply(cmd.request, False, "service is shutting down; command not executed")
        with self._core_lock:
            self._emit(self.core.persist())
            self._emit([Event(self.id, "service_stop", "service stopped; outputs left as they are")])
        self._finish_outbox()
        self.mqtt.stop(last_words=[(self.topics.availability, "offline")])
        self.outbox.close()
        driver = self._driver
        if driver is not None:
            driver.link.close()
        log.info("stopped")

    def _announce(self) -> None:
        """Birth: runs on every (re)connect to the broker."""
        self.mqtt.publish(self.topics.availability, "online", qos=1, retain=True)
        self.mqtt.publish(self.topics.capabilities, json.dumps(self.caps.describe()), qos=1, retain=True)
        # the last status as it was: paho's network thread must not wait for a command holding the core
        if self._last_status is not None:
            self.mqtt.publish(self.topics.status, self._last_status, qos=1, retain=True)
        self._publish_health()
        # what waited in the outbox goes out from its own thread, in order: never paho's network thread
        if self._drainer is None:
            self._drainer = threading.Thread(target=self._drain_loop, name="outbox", daemon=True)
            self._drainer.start()
        self._outbox_wake.set()

    # --- instrument link ----------------------------------------------------------
    def _connect(self) -> bool:
        link = None
        try:
            link = open_link(self.cfg.address, self.link_settings)
            driver = self.driver_cls(link, self.options, self.channels)
            identity = driver.connect()
            with link.lock.exclusive(), self._core_lock:
                self._emit(self.core.connected(driver, identity, first=not self._connected_once))
        except (LinkError, InstrumentError) as exc:
            if link is not None:
                link.close()
            self.health.consecutive_errors += 1
            self.health.errors += 1
            self._set_state(DeviceState.DISCONNECTED, f"cannot connect to {self.cfg.address}: {exc}")
            return False
        self._connected_once = True
        self.identity = identity
        with self._driver_lock:
            self._driver = driver
        log.info("instrument connected: %s", identity)
        self.state, self.error = DeviceState.OK, None
        self._publish_status()
        return True

    def _link_lost(self, driver: Driver, exc: Exception) -> None:
        with self._driver_lock:
            if self._driver is not driver:
                return
            self._driver = None
        with self._core_lock:
            self._emit(self.core.link_lost(str(exc)))
        with driver.link.lock.exclusive():  # never close under a transaction of the other thread
            driver.link.close()
        self.health.consecutive_errors += 1
        self.health.errors += 1
        self._set_state(DeviceState.DISCONNECTED, f"instrument link lost: {exc}")

    def _set_state(self, state: DeviceState, error: str | None) -> None:
        changed = (state, error) != (self.state, self.error)
        self.state, self.error = state, error
        if error and changed:
            log.warning("%s: %s", state.value, error)
        self._publish_status()
        self._publish_health()

    # --- polling --------------------------------------------------------------------
    def _poll_loop(self) -> None:
        backoff = 0.5
        next_poll = time.monotonic()
        while not self.stop_event.is_set():
            self.heartbeat.beat(self.mqtt.connected.is_set())
            with self._core_lock:
                self._take_interlocks()
            try:
                backoff, next_poll = self._poll_step(backoff, next_poll)
            except Exception as exc:  # a bug must not end the service: treat it as a lost link
                log.exception("unexpected error in the poll loop")
                driver = self._driver
                if driver is not None:
                    self._link_lost(driver, exc)
                self.stop_event.wait(1.0)

    def _poll_step(self, backoff: float, next_poll: float) -> tuple[float, float]:
        """One turn of the poll loop: (re)connect with backoff, or poll when due."""
        if self._driver is None:
            if not self._connect():
                self.stop_event.wait(backoff)
                return min(backoff * 2, self.cfg.reconnect_max), next_poll
            backoff = 0.5
            next_poll = time.monotonic() + self.cfg.poll_period  # connecting has just read everything
        now = time.monotonic()
        if now < next_poll:
            self.stop_event.wait(min(next_poll - now, 0.5))
            return backoff, next_poll
        self._poll_once()
        next_poll += self.cfg.poll_period
        if next_poll < time.monotonic():  # overran: skip, don't burst
            next_poll = time.monotonic() + self.cfg.poll_period
        return backoff, next_poll

    def _poll_once(self) -> None:
        driver = self._driver
        if driver is None:
            return
        started = time.monotonic()
        full = self.health.poll_cycles % self.cfg.full_read_every == self.cfg.full_read_every - 1
        try:
            readings = driver.read(self.channels, full)
        except LinkError as exc:
            self._link_lost(driver, exc)
            return
        except InstrumentError as exc:
            self.health.consecutive_errors += 1
            self.health.errors += 1
            self._set_state(DeviceState.ERROR, str(exc))
            return
        self.health.poll_cycles += 1
        self.health.last_poll_duration = time.monotonic() - started
        self.health.consecutive_errors = 0
        self.state, self.error = DeviceState.OK, None
        with self._core_lock:
            self._emit(self.core.observe(readings, started))
            self._publish_status()
            self._emit(self.core.persist())  # here, not after each command: the next one need not wait
        self._publish_health()

    # --- interlocks -------------------------------------------------------------------------
    def _on_interlock(self, msg: paho.MQTTMessage) -> None:
        """The interlock process's state and availability (paho's thread: parse here, decide in the core)."""
        assert self.interlock_topics is not None
        if msg.topic == self.interlock_topics.availability:
            self._interlock_online = msg.payload == b"online"
        else:
            try:
                state = json.loads(msg.payload)
            except ValueError:
                state = None  # unreadable counts as none: every rule stays active
            self._interlock_state = state if isinstance(state, dict) else None
        self._interlock_news.set()  # taken in by the worker or the poller: paho's thread never waits on the core

    def _take_interlocks(self) -> None:
        """Under the core lock: the latest interlock state into the core, before anything is decided."""
        if self._interlock_news.is_set():
            self._interlock_news.clear()
            self._emit(self.core.interlock_update(self._interlock_state, self._interlock_online))

    # --- commands -------------------------------------------------------------------------
    def _on_command(self, msg: paho.MQTTMessage) -> None:
        sender = self.topics.commands.sender(msg.topic)
        login, parts = sender if sender else (None, ["?"])
        req = self._read_request(
            msg,
            lambda: (
                parse_json(msg.payload)
                if not parts
                else parse_plain(parts[0], parts[1], msg.payload)
                if len(parts) == 2
                else Request(error="command topic must be cmd or cmd/<action>/<channel> (below by/<login>/ or not)")
            ),
        )
        req.by = login
        self._accept(req)

    def _on_legacy(self, msg: paho.MQTTMessage) -> None:
        *_, kind, channel = msg.topic.split("/")
        req = self._read_request(msg, lambda: parse_legacy(kind, channel, msg.payload))
        req.by = SHARED_LOGIN  # the ACL lets only the shared login publish there
        self._accept(req)

    def _read_request(self, msg: paho.MQTTMessage, parse: Callable[[], Request]) -> Request:
        try:
            check_size(msg.payload)
            req = parse()
        except CommandError as exc:
            req = Request(error=str(exc))
        if msg.retain:
            req.error = "retained commands are refused: a stale command must never run"
        props = getattr(msg, "properties", None)
        if props is not None:
            expiry = getattr(props, "MessageExpiryInterval", None)
            if expiry is not None:
                req.expires = req.received + expiry
            req.response_topic = getattr(props, "ResponseTopic", None)
            req.correlation = getattr(props, "CorrelationData", None)
        return req

    def _accept(self, req: Request) -> None:
        if req.response_topic and not self.topics.owns_response_topic(req.response_topic):
            topic, req.response_topic = req.response_topic, None
            self._refuse(
                req, f"response topic {topic[:80]!r} must be {self.topics.reply} or a topic below it, without wildcards"
            )
            return
        try:
            cmd = validate(req, self.caps, self.cfg.max_command_age)
            if self._driver is None:
                raise CommandError(f"instrument not connected ({self.error})")
        except CommandError as exc:
            self._refuse(req, str(exc))
            return
        except Exception:  # a bug in validation still owes the sender a reply
            log.exception("validating a command failed")
            self._refuse(req, "internal error while validating the command; not executed")
            return
        with self._accept_lock:
            if self._closing:
                self._reply(req, False, "service is shutting down; command not executed")
                return
            self.queue.put(cmd)

    def _refuse(self, req: Request, reason: str) -> None:
        channel = req.channel if isinstance(req.channel, int) and req.channel in self.names else None
        action = req.action if isinstance(req.action, str) else "command"
        self._emit(
            [
                Event(
                    self.id,
                    "command_refused",
                    f"{action[:32]} refused: {reason}",
                    channel,
                    after=req.reply(False)["value"],
                    cause=_cause(req),
                )
            ]
        )
        self._reply(req, False, reason)

    def _reply(self, req: Request, ok: bool, error: str | None = None, applied: Any = None, before: Any = None) -> None:
        body = req.reply(ok, error)
        body["applied"] = applied
        body["before"] = before
        text = json.dumps(body)
        if not ok:
            log.info("refused %s: %s", req.action, error)
        if req.response_topic:  # the one who asked first; then the shared topic (the record, the UI)
            props = publish_properties(CorrelationData=req.correlation) if req.correlation else None
            self.mqtt.publish(req.response_topic, text, qos=1, properties=props)
        self.mqtt.publish(self.topics.reply, text, qos=1)

    def _command_loop(self) -> None:
        while not self.stop_event.is_set():
            with self._core_lock:
                wait = self.core.next_ramp_step() - time.monotonic()
                ramping = bool(self.core.ramps)
            try:
                cmd: Command | None = self.queue.get(timeout=min(0.5, max(0.0, wait)))
            except queue.Empty:
                cmd = None
            if cmd is not None:
                try:
                    self._execute(cmd)
                except Exception:  # the worker must live on, and the command gets its one reply
                    log.exception("executing %s failed", cmd.action)
                    self._reply(
                        cmd.request, False, "internal error while executing the command; check the device status"
                    )
            if ramping:
                try:
                    self._step_ramps()
                except Exception as exc:
                    log.exception("software ramp step failed")
                    with self._core_lock:
                        self._emit(self.core.abort_ramps(f"internal error ({exc})"))

    def _execute(self, cmd: Command) -> None:
        req = cmd.request
        stale = self._stale(req)
        driver = self._driver
        if stale or driver is None:
            self._refuse(req, stale or f"instrument not connected ({self.error})")
            return
        with driver.link.lock.exclusive(), self._core_lock:
            self._take_interlocks()
            outcome: Outcome = self.core.execute(driver, cmd, _cause(req))
            if outcome.link_error is None:
                self._publish_status()
                self._reply(req, outcome.ok, outcome.error, outcome.applied, outcome.before)
                self._emit(outcome.events)  # after the reply: the sender waits for that, not for the record
                return
        with self._core_lock:
            self._emit(outcome.events)
        self._link_lost(driver, outcome.link_error)
        self._reply(req, False, outcome.error)

    def _stale(self, req: Request) -> str | None:
        """Why a queued command is too old to run now, or None."""
        now = time.monotonic()
        if now - req.received > self.cfg.max_command_age:
            return f"stale command: waited {now - req.received:.1f} s before it could run; not executed"
        if req.expires is not None and now > req.expires:
            return "stale command: its MQTT message expiry passed before it could run; not executed"
        if req.issued is not None and time.time() - req.issued > self.cfg.max_command_age:
            return (
                f"stale command: issued {time.time() - req.issued:.1f} s ago "
                f"(max {self.cfg.max_command_age:g} s); not executed"
            )
        return None

    def _step_ramps(self) -> None:
        driver = self._driver
        if driver is None:
            with self._core_lock:
                self._emit(self.core.abort_ramps("the instrument is not connected"))
            return
        try:
            with driver.link.lock.exclusive(), self._core_lock:
                if self.core.next_ramp_step() > time.monotonic():
                    return
                self._emit(self.core.step_ramps(driver))
                self._publish_status()
        except LinkError as exc:
            self._link_lost(driver, exc)

    # --- publishing -------------------------------------------------------------------------
    def _emit(self, events: list[Event]) -> None:
        """Events go out once each; the core's in order (emitted under the core lock); while the broker is
        away they wait in the outbox (on disk, bounded)."""
        for e in events:
            log.log(logging.WARNING if e.severity == "major" else logging.INFO, "event %s: %s", e.kind, e.message)
        if events:
            self._offer([m for e in events for m in event_messages(e)])

    def _publish_status(self) -> None:
        with self._core_lock:
            self.seq += 1
            ts = int(time.time() * 1000)
            # only readings we vouch for: none while disconnected or while polls fail
            readings = dict(self.core.readings) if self.state is DeviceState.OK else {}
            status: dict[str, Any] = {
                "device": self.id,
                "model": self.cfg.model,
                "ts": ts,
                "seq": self.seq,
                "state": self.state.value,
                "error": self.error,
                "identity": self.identity,
                "channels": [channel_dict(ch, self.names[ch], readings.get(ch)) for ch in self.channels],
            }
            self._last_status = json.dumps(status)
            # retained status: only the latest counts, never kept (nothing piles up in paho while the broker
            # is away; _announce publishes the last); metrics: through the outbox, with their timestamps
            connected = self.mqtt.connected.is_set()
            if connected:
                self.mqtt.publish(self.topics.status, self._last_status, qos=1, retain=True)
            if readings:
                self._offer([(METRICS, metrics_lines(self.id, self.names, readings, ts, self.kind))])
                if connected and self.legacy:
                    self.mqtt.publish(self.legacy.status, json.dumps(legacy_status(readings)), qos=1, retain=True)

    def _publish_health(self) -> None:
        if not self.mqtt.connected.is_set():
            return
        h = self.health
        body = {
            "device": self.id,
            "ts": int(time.time() * 1000),
            "uptime": round(time.monotonic() - self.started, 3),
            "poll_cycles": h.poll_cycles,
            "last_poll_duration": h.last_poll_duration,
            "consecutive_errors": h.consecutive_errors,
            "errors": h.errors,
            "connected": self._driver is not None,
            "restarts": h.restarts,
        }
        self.mqtt.publish(self.topics.health, json.dumps(body), qos=1, retain=True)

    # --- the outbox: metrics and events, published in order, nothing lost while the broker is away ----------
    def _offer(self, messages: list[tuple[str, str]]) -> None:
        """Publish now when connected and nothing waits; else into the outbox behind what waits."""
        with self._outbox_lock:
            connected = self.mqtt.connected.is_set()
            self.outbox.offer(messages, self._publish_now if connected else None)
            waiting = len(self.outbox) > 0
        if waiting and connected:
            self._outbox_wake.set()  # e.g. paho's queue was full: the drainer takes it from here

    def _topic(self, kind: str) -> str:
        return self.topics.event if kind == EVENT else self.topics.metrics

    def _publish_now(self, kind: str, payload: str) -> bool:
        """True when paho took the message. Also while the connection has just gone (NO_CONN): paho keeps
        it and sends it first at the reconnect, before the outbox is drained, so the order holds."""
        rc = self.mqtt.publish(self._topic(kind), payload, qos=1).rc
        return rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN)

    def _drain_loop(self) -> None:
        while not self.stop_event.is_set():
            self._outbox_wake.wait(1.0)
            self._outbox_wake.clear()
            try:
                self._drain(self.stop_event.is_set)
            except Exception:  # the outbox must not stop for good over one bad turn
                log.exception("draining the outbox failed")
                self.stop_event.wait(1.0)

    def _drain(self, stop: Callable[[], bool]) -> None:
        """Publish what waits, oldest first, while connected: a batch at a time, committed once the broker
        acknowledged all of it. A batch the connection drops under is waited for, not published again:
        paho sends what it had taken again after the reconnect."""
        while self.mqtt.connected.is_set() and not stop():
            started = time.monotonic()
            with self._outbox_lock:
                batch = self.outbox.peek(DRAIN_BATCH)
                if not batch:
                    self.outbox.offer([], self._publish_now)  # what was lost while it was full, if anything
                    return
            sent: list[tuple[int, paho.MQTTMessageInfo]] = []
            for seq, (kind, payload) in batch:
                info = self.mqtt.publish(self._topic(kind), payload, qos=1)
                if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                    break  # paho's queue is full: the rest waits for the next turn
                sent.append((seq, info))
            if sent:
                self._await_acks(sent, stop)
            pause = (len(sent) / DRAIN_RATE if sent else 0.5) - (time.monotonic() - started)
            if pause > 0:
                time.sleep(pause)

    def _await_acks(self, sent: list[tuple[int, paho.MQTTMessageInfo]], stop: Callable[[], bool]) -> None:
        """Until the broker acknowledged every message of the batch (across a reconnect), then commit; when
        stopping, a second more at most, and commit what was acknowledged (the rest goes out again next time)."""
        give_up: float | None = None
        while True:
            acked = 0
            while acked < len(sent) and _acked(sent[acked][1]):
                acked += 1
            done = acked == len(sent)
            if stop() and give_up is None:
                give_up = time.monotonic() + 1.0
            if done or (give_up is not None and time.monotonic() > give_up):
                if acked:
                    with self._outbox_lock:
                        self.outbox.commit(sent[acked - 1][0])
                return
            time.sleep(0.01)

    def _finish_outbox(self) -> None:
        """At shutdown: the last of the outbox while the broker is there (a few seconds at most)."""
        if self._drainer is not None:
            self._outbox_wake.set()  # it sees stop_event at once
            self._drainer.join(3)
        deadline = time.monotonic() + 2.0
        try:
            self._drain(lambda: time.monotonic() > deadline)
        except Exception:
            log.exception("draining the outbox at shutdown failed")
        if len(self.outbox):
            log.info("outbox: %d messages wait for the next start", len(self.outbox))


def _acked(info: paho.MQTTMessageInfo) -> bool:
    """The broker acknowledged it (PUBACK). paho's is_published() raises for a message published while the
    connection was down (rc NO_CONN), although paho keeps it and sends it after the reconnect: its flag."""
    return bool(getattr(info, "_published", False))


def _cause(req: Request) -> str:
    """Who asked (the broker-enforced login, and the person a front-end acts for) and the command's id."""
    return req.who + (f" id={req.id}" if isinstance(req.id, (str, int)) and not isinstance(req.id, bool) else "")
