"""The interlock process: watches every device's status, evaluates the stack's rules, publishes their state
and switches protected outputs off when a rule acts. It is also the stack's alarm handler: it keeps the list
of active and unacknowledged alarms and takes the operators' acknowledgements.

The rules and their logic are `slowctl.safety.rules`, the alarms `slowctl.safety.alarms`; this module only
moves data. The device services
enforce the state (they refuse `on` and raising a voltage while a rule protecting the channel is active)
and treat every rule as active while this process is offline (its last will) or silent: it blocks, it
never releases by dying. It never switches an output on.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from slowctl.atomic import write_json
from slowctl.config import StackConfig
from slowctl.device.commands import Request, json_command
from slowctl.device.contract import AlarmTopics, CommandTopics, InterlockTopics
from slowctl.device.events import Event
from slowctl.device.heartbeat import Heartbeat
from slowctl.mqtt import Endpoint, MqttSession
from slowctl.safety.alarms import AlarmHandler, Change
from slowctl.safety.rules import DeviceView, Interlocks, RuleState, device_shapes, hv_outputs

log = logging.getLogger(__name__)

TICK = 0.5  # s between evaluations without news (delays, stale data)
REPUBLISH = 5.0  # s: the retained state is refreshed at least this often
REPORTING = "recorder"  # services whose health carries alarms about themselves
LOGIN_NAME = "interlock"  # its broker login: the devices record its offs as "interlock"
ALARM_HOLD = 3.0  # s after (re)connecting before alarms are judged: the retained statuses come in first


class InterlockService:
    def __init__(self, stack: StackConfig, endpoint: Endpoint, state_dir: Path | None = None) -> None:
        self.stack = stack
        self.root = stack.mqtt.topic_root
        self.topics = InterlockTopics(self.root)
        self.alarm_topics = AlarmTopics(self.root)
        self.rules = Interlocks.for_stack(stack.interlocks, stack.devices)
        shapes = device_shapes(stack.devices)
        self.alarms = AlarmHandler.for_stack(stack.alarms, stack.devices, shapes, time.monotonic())
        self.alarm_file = state_dir / "alarms.json" if state_dir else None  # None: nothing kept (tests)
        self.alarm_file_problem = self.alarms.load(self.alarm_file) if self.alarm_file else None
        self.to_save: dict[str, Any] | None = None  # the latest alarm list for the file, written by the saver
        self.save_news = threading.Event()
        self.view: dict[str, DeviceView] = {dev: DeviceView() for dev in stack.devices}
        self.lock = threading.Lock()  # the view: paho's thread writes it, the loop reads it
        self.news = threading.Event()
        self.evaluating = threading.Lock()  # the loop and paho's on-connect both evaluate
        self.stop_event = threading.Event()
        self.reported: dict[str, list[dict[str, Any]]] = {}  # alarms services raise about themselves
        self.previous: dict[str, RuleState] = {}
        self.switched_off: dict[str, set[tuple[str, int]]] = {}  # per active rule: offs already sent
        self.acted: set[str] = set()  # active rules that have switched something off (an alarm even if `requires`)
        self.seq = 0
        self.published_at = 0.0
        self.heartbeat = Heartbeat.from_env()
        self.mqtt = MqttSession(
            endpoint,
            f"slowctl-interlock-{secrets.token_hex(6)}",  # unguessable: nobody can take its session over
            keepalive=stack.mqtt.keepalive,
            reconnect=(stack.mqtt.reconnect_min, stack.mqtt.reconnect_max),
            will=(self.topics.availability, "offline"),
            on_connect=self._announce,
        )

    def run(self) -> int:
        self.mqtt.subscribe(f"{self.root}/+/status", self._on_message)
        self.mqtt.subscribe(f"{self.root}/+/availability", self._on_message)
        for leaf in ("health", "availability"):
            self.mqtt.subscribe(f"{self.root}/{REPORTING}/{leaf}", self._on_service)
        for topic in self.topics.commands.filters:
            self.mqtt.subscribe(topic, self._on_command)
        for topic in self.alarm_topics.commands.filters:
            self.mqtt.subscribe(topic, self._on_alarm_command)
        saver = threading.Thread(target=self._save_loop, name="alarm-file", daemon=True)
        saver.start()
        self.mqtt.start()
        if self.alarm_file_problem:
            self._emit_text("latch_state", self.alarm_file_problem, "alarms")
        try:
            while not self.stop_event.is_set():
                self.heartbeat.beat(self.mqtt.connected.is_set())
                self.news.wait(TICK)
                self.news.clear()
                self._evaluate()
        finally:
            self.mqtt.stop(last_words=[(self.topics.availability, "offline")])
            saver.join(5)  # the last alarm list reaches the file
        return 0

    def _save_loop(self) -> None:
        """The alarm file, written off the locks: an fsync must never delay an interlock decision."""
        while not self.stop_event.is_set() or self.save_news.is_set():
            if not self.save_news.wait(0.5):
                continue
            self.save_news.clear()
            with self.lock:
                body, self.to_save = self.to_save, None
            if body is not None and self.alarm_file is not None:
                try:
                    write_json(self.alarm_file, body)
                except OSError as exc:
                    log.error("cannot keep the alarm list in %s: %s", self.alarm_file, exc)

    def _announce(self) -> None:
        # evaluate before saying online: a device must never see "online" with a stale state
        self.published_at = 0.0
        self.alarms.hold(time.monotonic() + ALARM_HOLD)
        self._evaluate()
        self.mqtt.publish(self.topics.availability, "online", qos=1, retain=True)

    def _on_message(self, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        device, leaf = parts[-2], parts[-1]
        with self.lock:
            view = self.view.get(device)
            if view is None:
                return  # not a device of this stack (or the interlock's own topics)
            if leaf == "availability":
                view.online = msg.payload == b"online"
            else:
                try:
                    status = json.loads(msg.payload)
                except ValueError:
                    status = None
                view.status = status if isinstance(status, dict) else None
                view.received = time.monotonic()
        self.news.set()

    def _on_service(self, msg: paho.MQTTMessage) -> None:
        """A service that reports on itself (the recorder): its own alarms, and an alarm when it is gone."""
        service, leaf = msg.topic.split("/")[-2:]
        with self.lock:
            if leaf == "availability":
                online = msg.payload == b"online"
                gone = [{"kind": "OFFLINE", "severity": "major", "message": "offline: nothing is being recorded"}]
                if not online and service in self.reported:  # one it has seen working, not one never run
                    self.reported[service] = gone
                elif online and self.reported.get(service) == gone:
                    self.reported[service] = []
            else:
                try:
                    alarms = json.loads(msg.payload).get("alarms", [])
                except (ValueError, AttributeError):
                    alarms = [{"kind": "HEALTH_UNREADABLE", "severity": "minor", "message": "health unreadable"}]
                self.reported[service] = [a for a in alarms if isinstance(a, dict)] if isinstance(alarms, list) else []
        self.news.set()

    def _on_command(self, msg: paho.MQTTMessage) -> None:
        """{"action": "clear", "rule": name, "id": ...}: an operator clears a latched rule (never an output)."""
        body, origin, error = json_command(self.topics.commands, msg.topic, msg.payload, msg.retain)
        req = body or {}
        if error is None and req.get("action") == "off-all-hv":
            self._off_all_hv(req, origin)
            return
        if error is None and (req.get("action") != "clear" or not isinstance(req.get("rule"), str)):
            error = 'expected {"action": "clear", "rule": "<name>"} or {"action": "off-all-hv", "kill": false}'
        if error is None:
            with self.evaluating:
                error = self.rules.clear(req["rule"])
            if error is None:
                self._emit_text("interlock_cleared", f"interlock {req['rule']} cleared by {origin.who}", req["rule"])
                self.news.set()
        reply = {
            "id": req.get("id") if isinstance(req.get("id"), (str, int)) else None,
            "action": "clear",
            "by": origin.by,
            "rule": req.get("rule") if isinstance(req.get("rule"), str) else None,
            "ok": error is None,
            "error": error,
        }
        self.mqtt.publish(self.topics.reply, json.dumps(reply), qos=1)

    def _on_alarm_command(self, msg: paho.MQTTMessage) -> None:
        """{"action": "ack", "device": ..., "channel": n, "kind": ..., "id": ...}: an operator acknowledges
        alarms (channel and kind narrow it down; the login says who); refused with the reason when none matches."""
        body, origin, error = json_command(self.alarm_topics.commands, msg.topic, msg.payload, msg.retain)
        req = body or {}
        channel, kind = req.get("channel"), req.get("kind")
        changes: list[Change] = []
        error = error or _ack_problem(req)
        if error is None:
            with self.evaluating:
                changes, error = self.alarms.ack(req["device"], channel, kind, origin.who, time.time())
                if changes:
                    self._alarm_news(changes)
        reply = {
            "id": req.get("id") if isinstance(req.get("id"), (str, int)) else None,
            "action": "ack",
            "by": origin.by,
            "ok": error is None,
            "acked": [{"device": c.alarm.device, "channel": c.alarm.channel, "kind": c.alarm.kind} for c in changes],
            "error": error,
        }
        self.mqtt.publish(self.alarm_topics.reply, json.dumps(reply), qos=1)

    def _off_all_hv(self, req: dict[str, Any], origin: Request) -> None:
        """Emergency off from MQTT: `off` (or `kill`) to every HV output of a device that is online; the
        devices reply per channel on their reply topics, this reply says what was sent and what is offline."""
        cmd_id = req.get("id") if isinstance(req.get("id"), (str, int)) else None
        kill = req.get("kill") is True
        with self.lock:
            online = {dev for dev, v in self.view.items() if v.online}
        sent, offline = [], []
        for dev, ch in hv_outputs(self.stack.devices):
            if dev not in online:
                offline.append(f"{dev}.{ch}")
                continue
            body: dict[str, Any] = {"action": "kill" if kill else "off", "channel": ch, "id": f"emergency:{cmd_id}"}
            body.update(ts=time.time(), **{"for": origin.on_behalf or origin.by})  # recorded: "interlock for alice"
            self.mqtt.publish(CommandTopics(self.root, dev).of(LOGIN_NAME), json.dumps(body), qos=1)
            sent.append(f"{dev}.{ch}")
        msg = f"emergency off ({'kill' if kill else 'off'}) by {origin.who} sent to {', '.join(sent) or 'nothing'}" + (
            f"; offline, not switched off: {', '.join(offline)}" if offline else ""
        )
        self._emit_text("emergency_off", msg, "emergency")
        reply = {
            "id": cmd_id,
            "action": "off-all-hv",
            "by": origin.by,
            "ok": not offline,
            "sent": sent,
            "offline": offline,
            "error": f"offline: {', '.join(offline)}" if offline else None,
        }
        self.mqtt.publish(self.topics.reply, json.dumps(reply), qos=1)

    def _evaluate(self) -> None:
        with self.evaluating:
            self._evaluate_now()

    def _evaluate_now(self) -> None:
        now = time.monotonic()
        with self.lock:
            states = self.rules.evaluate(self.view, now)
            on = {
                (dev, c["channel"])
                for dev, v in self.view.items()
                for c in (v.status or {}).get("channels", [])
                if c.get("on")
            }
        changed = False
        for state in states:
            before = self.previous.get(state.name)
            if before is None or (before.active, before.reason, before.latched) != (
                state.active,
                state.reason,
                state.latched,
            ):
                changed = True
                if before is None or before.active != state.active:
                    self._event(state)
            if state.active:
                self._protect(state, on)
            else:
                self.switched_off.pop(state.name, None)
                self.acted.discard(state.name)
            self.previous[state.name] = state
        republish = now - self.published_at > REPUBLISH
        if changed or republish:
            self._publish(states, now)
        if not self.mqtt.connected.is_set():
            return  # its own outage: every status would look stale; alarms are held until it is back
        try:
            with self.lock:
                reported = dict(self.reported)
                alarm_changes = self.alarms.evaluate(self.view, states, now, time.time(), self.acted, reported)
        except Exception:  # a fault of the alarm handler must never stop the interlocks
            log.exception("alarm evaluation failed; the alarm list is held as it is")
            return
        if alarm_changes or republish:
            self._alarm_news(alarm_changes)

    def _protect(self, state: RuleState, on: set[tuple[str, int]]) -> None:
        """Switch off each protected output that is on, once per activation: `off` (the channel's off_mode
        decides ramp or not) or, for `action: kill`, `kill`; `refuse_only` rules only block."""
        if state.action == "refuse_only":
            return
        sent = self.switched_off.setdefault(state.name, set())
        for dev, ch in state.protects:
            if (dev, ch) in on and (dev, ch) not in sent:
                action = "kill" if state.action == "kill" else "off"
                body = {"action": action, "channel": ch, "id": f"interlock:{state.name}", "ts": time.time()}
                self.mqtt.publish(CommandTopics(self.root, dev).of(LOGIN_NAME), json.dumps(body), qos=1)
                sent.add((dev, ch))
                self.acted.add(state.name)
                self._emit(
                    "interlock_action", f"interlock {state.name}: switching {dev}.{ch} off ({state.reason})", state
                )
            elif (dev, ch) not in on:
                sent.discard((dev, ch))  # off now: should it come on again, it is switched off again

    def _event(self, state: RuleState) -> None:
        if state.active:
            self._emit("interlock_active", f"interlock {state.name} active: {state.reason}", state)
        else:
            self._emit("interlock_clear", f"interlock {state.name} clear: {state.reason}", state)

    def _emit(self, kind: str, message: str, state: RuleState) -> None:
        self._emit_text(kind, message, state.name, state.active)

    def _emit_text(self, kind: str, message: str, rule: str, active: bool | None = None) -> None:
        event = Event("interlock", kind, message, after=active, cause=rule)
        log.log(logging.WARNING if event.severity == "major" else logging.INFO, "%s", message)
        self.mqtt.publish(self.topics.event, event.payload(), qos=1)

    def _alarm_news(self, changes: list[Change]) -> None:
        """Events for what was raised, cleared or acknowledged, the retained list, and the state file."""
        for change in changes:
            a = change.alarm
            kind = f"alarm_{change.what}"
            if change.what == "raised":
                message, severity = f"{a.where} {a.kind} ({a.severity}): {a.message}", a.severity
            elif change.what == "cleared":
                left = "" if a.key not in self.alarms.alarms else "; listed until acknowledged"
                message, severity = f"{a.where} {a.kind} gone{left}", ""
            else:
                message, severity = f"{a.where} {a.kind} acknowledged by {a.acked_by}", ""
            event = Event(a.device, kind, message, a.channel, severity, after=a.payload(), cause=a.kind)
            log.log(logging.WARNING if change.what == "raised" else logging.INFO, "alarm %s", message)
            self.mqtt.publish(self.alarm_topics.event, event.payload(), qos=1)
        body = {"ts": int(time.time() * 1000), **self.alarms.summary()}
        self.mqtt.publish(self.alarm_topics.summary, json.dumps(body), qos=1, retain=True)
        if changes:
            with self.lock:
                self.to_save = self.alarms.snapshot()
            self.save_news.set()

    def _publish(self, states: list[RuleState], now: float) -> None:
        self.seq += 1
        self.published_at = now
        body: dict[str, Any] = {
            "ts": int(time.time() * 1000),
            "seq": self.seq,
            "rules": {
                s.name: {
                    "active": s.active,
                    "reason": s.reason,
                    "action": s.action,
                    "latched": s.latched,
                    "protects": [f"{d}.{c}" for d, c in s.protects],
                    "floor": s.floor,
                }
                for s in states
            },
        }
        self.mqtt.publish(self.topics.state, json.dumps(body), qos=1, retain=True)
        for name, rule in body["rules"].items():
            self.mqtt.publish(f"{self.topics.rules}/{name}", json.dumps(rule), qos=1, retain=True)


def _ack_problem(req: dict[str, Any]) -> str | None:
    channel, kind = req.get("channel"), req.get("kind")
    if "by" in req:
        return "'by' is not accepted: the broker login says who acknowledges"
    if req.get("action") != "ack" or not isinstance(req.get("device"), str):
        return 'expected {"action": "ack", "device": "<device>", "channel": <n>, "kind": "<kind>"}'
    if channel is not None and (not isinstance(channel, int) or isinstance(channel, bool) or channel < 0):
        return f"channel must be a channel number, got {channel!r}"
    if kind is not None and not (isinstance(kind, str) and 0 < len(kind) <= 64):
        return "kind must be an alarm kind such as 'TRIP', 'humidity.HIGH' or 'HIGH'"
    return None
