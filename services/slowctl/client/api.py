"""A small MQTT client for people and scripts: status table, get, set, env."""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from slowctl.device.contract import AlarmTopics, CommandTopics, InterlockTopics, ProcedureTopics, Topics
from slowctl.mqtt import Endpoint, Handler, MqttSession, publish_properties


class ClientError(Exception):
    pass


def stack_endpoint(state_dir: Path, role: str) -> tuple[Endpoint, str]:
    """The running native stack's broker and the password of `role`; returns (endpoint, topic root)."""
    info_path, creds_path = state_dir / "stack.json", state_dir / "credentials.json"
    if not info_path.exists():
        raise ClientError(f"no running native stack in {state_dir} (start one with: slowctl up --dummy)")
    info = json.loads(info_path.read_text())
    creds = json.loads(creds_path.read_text())
    if role not in creds:
        raise ClientError(f"unknown role {role!r} (known: {', '.join(sorted(creds))})")
    mqtt = info["mqtt"]
    return Endpoint(mqtt["host"], mqtt["port"], role, creds[role]), mqtt.get("topic_root", "slowctl")


def resolve_endpoint(state_dir: Path, role: str, env: dict[str, str] | None = None) -> tuple[Endpoint, str]:
    """SLOWCTL_MQTT_* from the environment win; otherwise the native stack's files."""
    env = dict(os.environ) if env is None else env
    root = env.get("SLOWCTL_TOPIC_ROOT", "slowctl")
    if env.get("SLOWCTL_MQTT_HOST"):
        return Endpoint(
            env["SLOWCTL_MQTT_HOST"],
            int(env.get("SLOWCTL_MQTT_PORT", "1883")),
            env.get("SLOWCTL_MQTT_USERNAME") or None,
            env.get("SLOWCTL_MQTT_PASSWORD") or None,
            env.get("SLOWCTL_MQTT_TLS_CA") or None,
        ), root
    return stack_endpoint(state_dir, role)


def env_exports(endpoint: Endpoint, root: str) -> str:
    pairs = [
        ("SLOWCTL_MQTT_HOST", endpoint.host),
        ("SLOWCTL_MQTT_PORT", str(endpoint.port)),
        ("SLOWCTL_MQTT_USERNAME", endpoint.username or ""),
        ("SLOWCTL_MQTT_PASSWORD", endpoint.password or ""),
        ("SLOWCTL_TOPIC_ROOT", root),
    ]
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in pairs)


def open_session(
    endpoint: Endpoint,
    timeout: float = 5.0,
    client_id: str | None = None,
    subscriptions: tuple[tuple[str, Handler], ...] = (),
) -> MqttSession:
    """Connected (with `subscriptions` made as it connects), or ClientError with the broker's reason."""
    s = MqttSession(endpoint, client_id or f"slowctl-cli-{uuid.uuid4().hex[:8]}")
    for topic, handler in subscriptions:
        s.subscribe(topic, handler)
    s.start()
    if not s.wait_connected(timeout):
        s.stop()
        reason = s.connect_failure or "no answer"
        raise ClientError(f"cannot connect to {endpoint.host}:{endpoint.port} as {endpoint.username}: {reason}")
    return s


def collect(endpoint: Endpoint, topics: list[str], quiet: float = 0.3, limit: float = 3.0) -> dict[str, bytes]:
    """Retained messages on `topics`, gathered until the broker has been quiet for `quiet` s."""
    got: dict[str, bytes] = {}
    last = [0.0]

    def on_message(msg) -> None:
        got[msg.topic] = msg.payload
        last[0] = time.monotonic()

    s = open_session(endpoint)
    for t in topics:
        s.subscribe(t, on_message, wait=limit)
    last[0] = time.monotonic()  # quiet time counts from the subscription, not from connecting
    deadline = last[0] + limit
    while time.monotonic() < deadline and time.monotonic() - last[0] < quiet:
        time.sleep(0.02)
    s.stop()
    return got


def status_rows(endpoint: Endpoint, root: str) -> tuple[list[dict[str, Any]], str | None]:
    """One row per device (availability, state, age, health), and a line each on the interlock process and the
    alarms, the recorder and the procedure runner (None when none of them has ever announced itself)."""
    safety = [InterlockTopics(root).availability, InterlockTopics(root).state, AlarmTopics(root).summary]
    runner = (ProcedureTopics(root).availability, ProcedureTopics(root).state)
    got = collect(endpoint, [f"{root}/+/availability", f"{root}/+/status", f"{root}/+/health", *safety, runner[1]])
    devices: dict[str, dict[str, Any]] = {}
    now_ms = time.time() * 1000
    recorder = (f"{root}/recorder/availability", f"{root}/recorder/health")
    for topic, payload in got.items():
        if topic in safety or topic in recorder or topic in runner:
            continue
        device, kind = topic[len(root) + 1 :].split("/", 1)
        row = devices.setdefault(device, {"device": device})
        if kind == "availability":
            row["availability"] = payload.decode(errors="replace")
        elif payload:
            try:
                data = json.loads(payload)
            except json.JSONDecodeError:
                continue
            if kind == "status":
                row["state"] = data.get("state")
                row["age"] = (now_ms - data["ts"]) / 1000 if isinstance(data.get("ts"), (int, float)) else None
            elif kind == "health":
                for key in ("poll_cycles", "errors", "restarts"):
                    row[key] = data.get(key)
    lines = [
        line for line in (_safety_line(got, safety), _recorder_line(got, recorder), _runner_line(got, runner)) if line
    ]
    return [devices[d] for d in sorted(devices)], "\n".join(lines) or None


def _recorder_line(got: dict[str, bytes], topics: tuple[str, str]) -> str | None:
    availability, health_topic = topics
    if availability not in got:
        return None
    try:
        health = json.loads(got.get(health_topic) or b"{}")
    except json.JSONDecodeError:
        health = {}
    return (
        f"recorder {got[availability].decode(errors='replace')}: MongoDB {health.get('mongodb', '?')}, "
        f"{health.get('written', '?')} written, {health.get('buffered', '?')} buffered (slowctl log)"
    )


def _runner_line(got: dict[str, bytes], topics: tuple[str, str]) -> str | None:
    availability, state_topic = topics
    if availability not in got:
        return None
    try:
        runs = json.loads(got.get(state_topic) or b"{}").get("runs", {})
    except (json.JSONDecodeError, AttributeError):
        runs = {}
    running = ", ".join(f"{r.get('procedure')} on {'/'.join(r.get('channels', []))}" for r in runs.values()) or "none"
    return f"procedure runner {got[availability].decode(errors='replace')}: running: {running} (slowctl procedure list)"


def _safety_line(got: dict[str, bytes], topics: list[str]) -> str | None:
    availability, state_topic, summary_topic = topics
    if availability not in got:
        return None
    try:
        rules = json.loads(got.get(state_topic) or b"{}").get("rules", {})
        alarms = json.loads(got.get(summary_topic) or b"{}")
    except (json.JSONDecodeError, AttributeError):
        rules, alarms = {}, {}
    active = sorted(name for name, r in rules.items() if isinstance(r, dict) and r.get("active"))
    return (
        f"interlock process {got[availability].decode(errors='replace')}: {len(rules)} rules, "
        f"active: {', '.join(active) or 'none'}; alarms: {alarms.get('active', '?')} active, "
        f"{alarms.get('unacked', '?')} unacknowledged (slowctl interlocks, slowctl alarms)"
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("DEVICE", "AVAILABILITY", "STATE", "AGE", "POLLS", "ERRORS", "RESTARTS")
    lines = [header]
    for r in rows:
        age = r.get("age")
        lines.append(
            (
                r["device"],
                r.get("availability", "?"),
                r.get("state") or "?",
                f"{age:.1f}s" if age is not None else "?",
                str(r.get("poll_cycles", "?")),
                str(r.get("errors", "?")),
                str(r.get("restarts", "?")),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines)


def get_status(endpoint: Endpoint, root: str, device: str, timeout: float = 3.0) -> dict[str, Any]:
    topic = Topics(root, device).status
    got = collect(endpoint, [topic], limit=timeout)
    if topic not in got:
        raise ClientError(f"no status for device {device!r} (is it configured and running?)")
    return json.loads(got[topic])


def off_all_hv(
    endpoint: Endpoint, root: str, outputs: list[tuple[str, int]], kill: bool = False, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Emergency off: `off` (or `kill`) to every HV output, straight to each device service (no other
    process needed). One row per output: its reply, or why there is none (device offline, no reply)."""
    devices = sorted({dev for dev, _ in outputs})
    seen = collect(endpoint, [Topics(root, dev).availability for dev in devices], limit=timeout)
    online = {dev for dev in devices if seen.get(Topics(root, dev).availability) == b"online"}
    run = uuid.uuid4().hex[:12]
    replies: dict[tuple[str, int], dict[str, Any]] = {}
    lock = threading.Lock()
    all_in = threading.Event()
    expected = [(dev, ch) for dev, ch in outputs if dev in online]

    def on_reply(msg) -> None:
        parts = msg.topic.split("/")
        with lock:
            replies[(parts[-4], int(parts[-1]))] = json.loads(msg.payload)
            if len(replies) >= len(expected):
                all_in.set()

    s = open_session(endpoint)
    try:
        if expected and not s.subscribe(f"{root}/+/reply/emergency-{run}/+", on_reply, wait=timeout):
            raise ClientError("the broker did not acknowledge the subscription to the replies")
        for dev, ch in expected:
            topics = Topics(root, dev)
            body = {"action": "kill" if kill else "off", "channel": ch, "id": f"emergency-{run}", "ts": time.time()}
            props = publish_properties(
                ResponseTopic=f"{topics.reply}/emergency-{run}/{ch}", MessageExpiryInterval=int(timeout) + 1
            )
            s.publish(topics.commands.of(endpoint.username), json.dumps(body), qos=1, properties=props)
        if expected:
            all_in.wait(timeout)
    finally:
        s.stop()
    rows = []
    for dev, ch in outputs:
        reply = replies.get((dev, ch))
        if dev not in online:
            rows.append({"device": dev, "channel": ch, "ok": False, "result": "device offline: not switched off"})
        elif reply is None:
            rows.append({"device": dev, "channel": ch, "ok": False, "result": f"no reply within {timeout:g} s"})
        else:
            result = f"{reply.get('applied')}" if reply.get("ok") else f"refused: {reply.get('error')}"
            rows.append({"device": dev, "channel": ch, "ok": bool(reply.get("ok")), "result": result})
    return rows


def alarm_summary(endpoint: Endpoint, root: str, timeout: float = 3.0) -> dict[str, Any]:
    """The alarm handler's retained list (every active or unacknowledged alarm)."""
    topics = AlarmTopics(root)
    got = collect(endpoint, [topics.summary, InterlockTopics(root).availability], limit=timeout)
    if topics.summary not in got:
        raise ClientError(f"no alarm list on {topics.summary} (is the interlock process running?)")
    summary = json.loads(got[topics.summary])
    summary["handler_online"] = got.get(InterlockTopics(root).availability) == b"online"
    return summary


def format_alarms(summary: dict[str, Any]) -> str:
    lines = [("SINCE", "SEVERITY", "STATE", "WHERE", "KIND", "MESSAGE", "ACKNOWLEDGED")]
    for a in summary.get("alarms", []):
        where = a["device"] if a.get("channel") is None else f"{a['device']}.{a['channel']}"
        acked = (
            f"{a['acked_by']} {time.strftime('%H:%M:%S', time.localtime(a['acked_at'] / 1000))}" if a["acked"] else "-"
        )
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["since"] / 1000))
        lines.append((since, a["severity"], "active" if a["active"] else "gone", where, a["kind"], a["message"], acked))
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines)
    head = f"{summary.get('active', 0)} active, {summary.get('unacked', 0)} unacknowledged"
    if not summary.get("handler_online", True):
        head += " (the interlock process is OFFLINE: this list is its last word)"
    return head if len(lines) == 1 else f"{head}\n{table}"


def request(
    endpoint: Endpoint, commands: CommandTopics, reply_topic: str, body: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """One command to the interlock process (alarm `ack`, interlock `clear`): its reply, matched by id."""
    cmd_id = uuid.uuid4().hex
    done = threading.Event()
    reply: dict[str, Any] = {}

    def on_reply(msg) -> None:
        data = json.loads(msg.payload)
        if data.get("id") == cmd_id:
            reply.update(data)
            done.set()

    s = open_session(endpoint)
    try:
        if not s.subscribe(reply_topic, on_reply, wait=timeout):
            raise ClientError(f"the broker did not acknowledge the subscription to {reply_topic}")
        s.publish(commands.of(endpoint.username), json.dumps({**body, "id": cmd_id}), qos=1)
        if not done.wait(timeout):
            raise ClientError(f"no reply on {reply_topic} within {timeout:g} s (is the interlock process running?)")
    finally:
        s.stop()
    return reply


def ack_alarms(
    endpoint: Endpoint, root: str, device: str, channel: int | None, kind: str | None, timeout: float = 5.0
) -> dict[str, Any]:
    """Acknowledge alarms; the broker login is who acknowledged."""
    topics = AlarmTopics(root)
    body = {"action": "ack", "device": device, "channel": channel, "kind": kind}
    return request(endpoint, topics.commands, topics.reply, body, timeout)


def interlock_state(endpoint: Endpoint, root: str, timeout: float = 3.0) -> dict[str, Any]:
    topic = InterlockTopics(root).state
    got = collect(endpoint, [topic], limit=timeout)
    if topic not in got:
        raise ClientError(f"no interlock state on {topic} (is the interlock process running?)")
    return json.loads(got[topic])


def clear_interlock(endpoint: Endpoint, root: str, rule: str, timeout: float = 5.0) -> dict[str, Any]:
    topics = InterlockTopics(root)
    return request(endpoint, topics.commands, topics.reply, {"action": "clear", "rule": rule}, timeout)
