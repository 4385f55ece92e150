"""The interlock process: watches every device's status, evaluates the stack's rules, publishes their state
and switches protected outputs off when a rule acts.

The rules and their logic are `slowctl.safety.rules`; this module only moves data. The device services
enforce the state (they refuse `on` and raising a voltage while a rule protecting the channel is active)
and treat every rule as active while this process is offline (its last will) or silent: it blocks, it
never releases by dying. It never switches an output on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import paho.mqtt.client as paho

from slowctl.config import StackConfig
from slowctl.device.contract import InterlockTopics
from slowctl.device.events import Event
from slowctl.device.heartbeat import Heartbeat
from slowctl.mqtt import Endpoint, MqttSession
from slowctl.safety.rules import DeviceView, Interlocks, RuleState, hv_outputs

log = logging.getLogger(__name__)

TICK = 0.5  # s between evaluations without news (delays, stale data)
REPUBLISH = 5.0  # s: the retained state is refreshed at least this often


class InterlockService:
    def __init__(self, stack: StackConfig, endpoint: Endpoint) -> None:
        self.stack = stack
        self.root = stack.mqtt.topic_root
        self.topics = InterlockTopics(self.root)
        self.rules = Interlocks.for_stack(stack.interlocks, stack.devices)
        self.view: dict[str, DeviceView] = {dev: DeviceView() for dev in stack.devices}
        self.lock = threading.Lock()  # the view: paho's thread writes it, the loop reads it
        self.news = threading.Event()
        self.evaluating = threading.Lock()  # the loop and paho's on-connect both evaluate
        self.stop_event = threading.Event()
        self.previous: dict[str, RuleState] = {}
        self.switched_off: dict[str, set[tuple[str, int]]] = {}  # per active rule: offs already sent
        self.seq = 0
        self.published_at = 0.0
        self.heartbeat = Heartbeat.from_env()
        self.mqtt = MqttSession(
            endpoint,
            "slowctl-interlock",
            keepalive=stack.mqtt.keepalive,
            reconnect=(stack.mqtt.reconnect_min, stack.mqtt.reconnect_max),
            will=(self.topics.availability, "offline"),
            on_connect=self._announce,
        )

    def run(self) -> int:
        self.mqtt.subscribe(f"{self.root}/+/status", self._on_message)
        self.mqtt.subscribe(f"{self.root}/+/availability", self._on_message)
        self.mqtt.subscribe(self.topics.cmd, self._on_command)
        self.mqtt.start()
        try:
            while not self.stop_event.is_set():
                self.heartbeat.beat(self.mqtt.connected.is_set())
                self.news.wait(TICK)
                self.news.clear()
                self._evaluate()
        finally:
            self.mqtt.stop(last_words=[(self.topics.availability, "offline")])
        return 0

    def _announce(self) -> None:
        # evaluate before saying online: a device must never see "online" with a stale state
        self.published_at = 0.0
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

    def _on_command(self, msg: paho.MQTTMessage) -> None:
        """{"action": "clear", "rule": name, "id": ...}: an operator clears a latched rule (never an output)."""
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = None
        req = body if isinstance(body, dict) else {}
        if not msg.retain and req.get("action") == "off-all-hv":
            self._off_all_hv(req)
            return
        if msg.retain:
            error: str | None = "retained commands are refused: a stale command must never run"
        elif not isinstance(body, dict) or req.get("action") != "clear" or not isinstance(req.get("rule"), str):
            error = 'expected {"action": "clear", "rule": "<name>"} or {"action": "off-all-hv", "kill": false}'
        else:
            with self.evaluating:
                error = self.rules.clear(req["rule"])
            if error is None:
                self._emit_text("interlock_cleared", f"interlock {req['rule']} cleared by an operator", req["rule"])
                self.news.set()
        reply = {
            "id": req.get("id") if isinstance(req.get("id"), (str, int)) else None,
            "action": "clear",
            "rule": req.get("rule") if isinstance(req.get("rule"), str) else None,
            "ok": error is None,
            "error": error,
        }
        self.mqtt.publish(self.topics.reply, json.dumps(reply), qos=1)

    def _off_all_hv(self, req: dict[str, Any]) -> None:
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
            body = {"action": "kill" if kill else "off", "channel": ch, "id": f"emergency:{cmd_id}", "ts": time.time()}
            self.mqtt.publish(f"{self.root}/{dev}/cmd", json.dumps(body), qos=1)
            sent.append(f"{dev}.{ch}")
        msg = f"emergency off ({'kill' if kill else 'off'}) sent to {', '.join(sent) or 'nothing'}" + (
            f"; offline, not switched off: {', '.join(offline)}" if offline else ""
        )
        self._emit_text("emergency_off", msg, "emergency")
        reply = {
            "id": cmd_id,
            "action": "off-all-hv",
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
            self.previous[state.name] = state
        if changed or now - self.published_at > REPUBLISH:
            self._publish(states, now)

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
                self.mqtt.publish(f"{self.root}/{dev}/cmd", json.dumps(body), qos=1)
                sent.add((dev, ch))
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
