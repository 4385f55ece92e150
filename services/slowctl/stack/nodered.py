"""Node-RED flows for the control UI, generated from the stack config.

One Dashboard 2 page per device (a shared Vue widget from nodered/widgets/,
embedded per device), an environment page and a health page. The generator
owns every node whose id starts with `slowctl.` and every node on a tab it
owns; all other nodes (the lab's own tabs, config nodes, subflows) are kept as
they are, so lab-made flows survive a regeneration.

The wiring keeps status and commands apart: MQTT status goes into the widgets
(ui-template, passthru off), and only a widget's own output, i.e. a button the
operator pressed, reaches the command guard and the MQTT out node. The guard
sends a command only for a logged-in operator, named in its "for", on Node-RED's
own topic <root>/<device>/by/nodered/cmd; a viewer's command, or one without a
person, is answered on the page with a refusal and never published.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from slowctl.config import DeviceConfig, StackConfig
from slowctl.device.capabilities import ACTIONS
from slowctl.device.contract import Topics
from slowctl.device.core import OUTPUT_LOST, OUTPUT_ON_EXTERNALLY, SETPOINT_CHANGED_EXTERNALLY, TRIP_LATCHED
from slowctl.device.memory import UNREADABLE

PREFIX = "slowctl."
LATCHED = (TRIP_LATCHED, OUTPUT_LOST, OUTPUT_ON_EXTERNALLY, SETPOINT_CHANGED_EXTERNALLY, UNREADABLE)
HV_CONFIRM_ACTIONS = tuple(n for n, a in ACTIONS.items() if a.raises)  # may raise a high voltage or its current
BROKER_ID = PREFIX + "broker"
BROKER_USER = "nodered"
WIDGET_MARKER = "__SLOWCTL_DEVICE__"
BREAKPOINTS = [
    {"name": "Default", "px": 0, "cols": 3},
    {"name": "Tablet", "px": 576, "cols": 6},
    {"name": "Small Desktop", "px": 768, "cols": 9},
    {"name": "Desktop", "px": 1024, "cols": 12},
]


class FlowError(Exception):
    pass


def widgets_dir() -> Path:
    from slowctl.stack.paths import repo_file

    return repo_file("nodered", "widgets")


def device_kind(model: str) -> str:
    from slowctl.drivers import DRIVERS, kind_of

    try:
        return kind_of(DRIVERS[model])
    except ValueError:
        raise FlowError(f"model {model!r}: no control-UI widget for its kind of driver") from None


def channel_actions(dev: DeviceConfig, channel: int) -> list[str]:
    """What the service accepts on this channel: the capabilities the device service itself validates with."""
    from slowctl.device.capabilities import Capabilities

    return sorted(Capabilities.build(dev).channels[channel])


def is_hv(dev: DeviceConfig) -> bool:
    from slowctl.drivers import supply_kind

    return supply_kind(dev.model, [c.vmax for c in dev.channels.values()]) == "hv"


def describe(dev_id: str, dev: DeviceConfig) -> dict[str, Any]:
    """What the device widget needs to know: kind, HV confirmation, channels with limits and actions."""
    from slowctl.device.capabilities import Capabilities

    kind = device_kind(dev.model)
    caps = Capabilities.build(dev)
    imax = max((c.imax or 0) for c in dev.channels.values())
    # µA for sensor bias, also when no imax is configured (an operator types µA out of habit)
    small = kind == "supply" and (is_hv(dev) or 0 < imax <= 0.01)
    return {
        "id": dev_id,
        "model": dev.model,
        # what `clear` ends (with a trip): the page offers clear only while one of them is shown
        "latched": sorted(LATCHED),
        "kind": kind,
        "confirm": kind == "supply" and is_hv(dev),
        "confirm_actions": list(HV_CONFIRM_ACTIONS),
        # HV currents are typed and shown in µA; the command carries A
        "current_unit": "µA" if small else "A",
        "current_scale": 1e-6 if small else 1.0,
        "channels": [
            {
                "channel": ch,
                "name": c.name,
                "vmax": c.vmax,
                "imax": c.imax,
                "ramp_max": c.ramp_max,
                "tmin": c.tmin,
                "tmax": c.tmax,
                "actions": sorted(caps.channels[ch]),
                "steps": {n: cap.step for n, cap in caps.channels[ch].items() if cap.step},
                # the service's own bounds (config and instrument): the page refuses outside them before
                # asking to confirm; the resolution is left to the service (its refusal says the step)
                "limits": {
                    n: {"min": lo, "max": hi, "positive": cap.action.positive}
                    for n, cap in caps.channels[ch].items()
                    if cap.action.takes_value
                    for lo, hi in [cap.bounds]
                },
            }
            for ch, c in sorted(dev.channels.items())
        ],
    }


def device_widget(description: dict[str, Any], source: str) -> str:
    if source.count(WIDGET_MARKER) != 1:
        raise FlowError(f"nodered/widgets/device.vue must contain {WIDGET_MARKER} exactly once")
    # JSON is a JS expression; '</' must not end the <script> element of the template
    return source.replace(WIDGET_MARKER, json.dumps(description, ensure_ascii=False).replace("</", "<\\/"))


# --- function nodes (JavaScript that runs in Node-RED) ---------------------------------------

MERGE_JS = """\
// The latest status, availability and reply of this device in one message, so
// that a browser that connects (the widget replays its last message) sees all.
const kind = msg.topic.split('/').pop()
const state = context.get('state') || { status: null, availability: null }
if (kind === 'status' || kind === 'availability') state[kind] = msg.payload
context.set('state', state)
const out = { topic: msg.topic, payload: { status: state.status, availability: state.availability,
    reply: kind === 'reply' ? msg.payload : null } }
// the guard's refusals carry the sender's _client: they go to that browser only
if (msg._client) out._client = msg._client
return out
"""

GUARD_JS = """\
// Only what an operator can send leaves here: a known action on a configured
// channel, with the widget's id, a fresh ts, and "for": the person logged in
// (msg._client.user, set by Dashboard 2's plugin from the socket's login, never
// by the browser). Anything else (e.g. a status that reached this node by a
// wiring mistake) is dropped with a warning. A command without a person, or
// from a viewer, is not sent: output 2 answers the page with a refusal.
const allowed = %s
const REPLY_TOPIC = %s
const LOGIN = /^[a-z][a-z0-9_.-]{1,31}$/
const c = msg.payload
const actions = c && typeof c === 'object' ? allowed[String(c.channel)] : null
if (!actions || !actions.includes(c.action)) {
    node.warn('slowctl: dropped a message that is not an operator command')
    return null
}
const cmd = { action: c.action, channel: c.channel, ts: Date.now() / 1000 }
if (c.value !== undefined && c.value !== null) cmd.value = c.value
if (typeof c.id === 'string' || typeof c.id === 'number') cmd.id = c.id
const user = msg._client && msg._client.user
const login = user && typeof user.username === 'string' && LOGIN.test(user.username) ? user.username : null
function refuse (error) {
    node.warn('slowctl: refused ' + cmd.action + ' ch ' + cmd.channel + ': ' + error)
    const reply = { id: cmd.id === undefined ? null : cmd.id, action: cmd.action, channel: cmd.channel,
        value: cmd.value === undefined ? null : cmd.value, ok: false, error, applied: null }
    return [null, { topic: REPLY_TOPIC, payload: reply, _client: msg._client }]
}
if (!login) return refuse('no logged-in person on this connection (log in again): nothing sent')
if (user.role !== 'operator') return refuse(login + ' is a ' + user.role + ': commands need an operator account')
cmd.for = login
return [{ payload: cmd }, null]
"""

HEALTH_JS = """\
// One row per device from availability, status and health, sent whole.
const parts = msg.topic.split('/')
const kind = parts.pop()
const device = parts.pop()
const devices = context.get('devices') || {}
const d = devices[device] || {}
if (kind === 'availability') d.availability = String(msg.payload)
else if (kind === 'health' && msg.payload && typeof msg.payload === 'object') d.health = msg.payload
else if (kind === 'status' && msg.payload && typeof msg.payload === 'object') {
    d.state = msg.payload.state
    d.error = msg.payload.error
    d.status_ts = msg.payload.ts
} else return null
devices[device] = d
context.set('devices', devices)
return { payload: { devices } }
"""

ENVIRONMENT_JS = """\
// Sensor and chiller channels of every climate device and chiller, sent whole.
const parts = msg.topic.split('/')
parts.pop()
const device = parts.pop()
const s = msg.payload
if (!s || typeof s !== 'object') return null
const table = context.get('table') || {}
table[device] = s
context.set('table', table)
const sensors = []
const chillers = []
for (const dev of Object.keys(table).sort()) {
    const st = table[dev]
    for (const ch of st.channels || []) {
        const row = Object.assign({ device: dev, ts: st.ts }, ch)
        if ('humidity' in ch || 'dewpoint' in ch) sensors.push(row)
        else if ('tset' in ch) chillers.push(row)
    }
}
return { payload: { sensors, chillers } }
"""


# --- node builders ----------------------------------------------------------------------------


class _Flow:
    def __init__(self, stack: StackConfig) -> None:
        self.stack = stack
        self.root = stack.mqtt.topic_root
        self.nodes: list[dict[str, Any]] = []

    def add(self, node: dict[str, Any]) -> dict[str, Any]:
        self.nodes.append(node)
        return node

    def tab(self, key: str, label: str) -> str:
        tid = f"{PREFIX}tab.{key}"
        self.add(
            {
                "id": tid,
                "type": "tab",
                "label": f"slowctl: {label}",
                "disabled": False,
                "info": "Generated by slowctl from the stack config and rewritten at every start: "
                "changes here are lost. Put lab flows on other tabs (they are kept).",
            }
        )
        return tid

    def mqtt_in(self, nid: str, tab: str, topic: str, datatype: str, to: str, y: int) -> None:
        self.add(
            {
                "id": nid,
                "type": "mqtt in",
                "z": tab,
                "name": topic,
                "topic": topic,
                "qos": "1",
                "datatype": datatype,
                "broker": BROKER_ID,
                "nl": False,
                "rap": True,
                "rh": 0,
                "inputs": 0,
                "x": 170,
                "y": y,
                "wires": [[to]],
            }
        )

    def function(
        self, nid: str, tab: str, name: str, code: str, to: list[str], x: int, y: int, second: list[str] | None = None
    ) -> None:
        """A function node; with `second`, a second output wired there."""
        wires = [to] if second is None else [to, second]
        self.add(
            {
                "id": nid,
                "type": "function",
                "z": tab,
                "name": name,
                "func": code,
                "outputs": len(wires),
                "timeout": 0,
                "noerr": 0,
                "initialize": "",
                "finalize": "",
                "libs": [],
                "x": x,
                "y": y,
                "wires": wires,
            }
        )

    def page(self, key: str, name: str, path: str, icon: str, order: int) -> str:
        pid = f"{PREFIX}page.{key}"
        self.add(
            {
                "id": pid,
                "type": "ui-page",
                "name": name,
                "ui": f"{PREFIX}ui",
                "path": path,
                "icon": icon,
                "layout": "grid",
                "theme": f"{PREFIX}theme",
                "breakpoints": BREAKPOINTS,
                "order": order,
                "className": "",
                "visible": "true",
                "disabled": "false",
            }
        )
        gid = f"{PREFIX}group.{key}"
        self.add(
            {
                "id": gid,
                "type": "ui-group",
                "name": name,
                "page": pid,
                "width": "12",
                "height": "1",
                "order": 1,
                "showTitle": False,
                "className": "",
                "visible": "true",
                "disabled": "false",
                "groupType": "default",
            }
        )
        return gid

    def widget(self, nid: str, tab: str, group: str, name: str, vue: str, to: list[str], y: int) -> None:
        # passthru false: an incoming status must never leave the widget (it would become a command)
        self.add(
            {
                "id": nid,
                "type": "ui-template",
                "z": tab,
                "group": group,
                "page": "",
                "ui": "",
                "name": name,
                "order": 1,
                "width": "12",
                "height": "0",
                "head": "",
                "format": vue,
                "storeOutMessages": False,
                "passthru": False,
                "resendOnRefresh": True,
                "templateScope": "local",
                "className": "",
                "x": 650,
                "y": y,
                "wires": [to],
            }
        )

    def shared(self) -> None:
        self.add(
            {
                "id": BROKER_ID,
                "type": "mqtt-broker",
                "name": "slowctl broker",
                "broker": "${MQTT_HOST}",
                "port": "${MQTT_PORT}",
                "clientid": "",
                "autoConnect": True,
                "usetls": False,
                "protocolVersion": "5",
                "keepalive": "15",
                "cleansession": True,
                "autoUnsubscribe": True,
                "birthTopic": "",
                "birthQos": "0",
                "birthRetain": "false",
                "birthPayload": "",
                "birthMsg": {},
                "closeTopic": "",
                "closeQos": "0",
                "closeRetain": "false",
                "closePayload": "",
                "closeMsg": {},
                "willTopic": "",
                "willQos": "0",
                "willRetain": "false",
                "willPayload": "",
                "willMsg": {},
                "userProps": "",
                "sessionExpiry": "",
            }
        )
        self.add(
            {
                "id": f"{PREFIX}ui",
                "type": "ui-base",
                "name": "slowctl",
                "path": "/dashboard",
                "appIcon": "",
                # msg._client on every message from a browser: socketId, socketIp, and the logged-in
                # person (user: {username, role}) from nodered/accounts/plugin.js; the guard needs it
                "includeClientData": True,
                # ui-template too: a message with msg._client goes to that browser only and is not kept
                # for replay (a command, and the refusal of one, are one person's business)
                "acceptsClientConfig": ["ui-notification", "ui-control", "ui-template"],
                "showPathInSidebar": False,
                "headerContent": "page",
                "navigationStyle": "default",
                "titleBarStyle": "default",
                "showReconnectNotification": True,
                "notificationDisplayTime": 1,
                "showDisconnectNotification": True,
                "allowInstall": False,
            }
        )
        self.add(
            {
                "id": f"{PREFIX}theme",
                "type": "ui-theme",
                "name": "slowctl",
                "colors": {
                    "surface": "#1f3a5f",
                    "primary": "#0d74ce",
                    "bgPage": "#f4f5f7",
                    "groupBg": "#ffffff",
                    "groupOutline": "#d9d9e0",
                },
                "sizes": {
                    "density": "compact",
                    "pagePadding": "12px",
                    "groupGap": "12px",
                    "groupBorderRadius": "4px",
                    "widgetGap": "12px",
                },
            }
        )

    def device(self, dev_id: str, dev: DeviceConfig, order: int, source: str) -> None:
        t = Topics(self.root, dev_id)
        p = f"{PREFIX}{dev_id}."
        tab = self.tab(dev_id, dev_id)
        desc = describe(dev_id, dev)
        group = self.page(
            dev_id,
            f"{dev_id} ({dev.model})",
            f"/{dev_id}",
            {"supply": "flash", "chiller": "snowflake", "sensor": "thermometer"}[desc["kind"]],
            order,
        )
        for i, (topic, datatype) in enumerate(((t.status, "json"), (t.availability, "utf8"), (t.reply, "json"))):
            self.mqtt_in(f"{p}in.{topic.rsplit('/', 1)[1]}", tab, topic, datatype, f"{p}merge", 60 + 60 * i)
        self.function(f"{p}merge", tab, "latest status, availability, reply", MERGE_JS, [f"{p}widget"], 420, 120)
        commands = desc["kind"] != "sensor"
        self.widget(
            f"{p}widget", tab, group, dev_id, device_widget(desc, source), [f"{p}guard"] if commands else [], 120
        )
        if commands:
            allowed = {str(c["channel"]): c["actions"] for c in desc["channels"]}
            # Node-RED's own topic: the broker lets the login `nodered` publish only there, and the
            # device records "nodered for <person>" from it and the command's "for"
            cmd_topic = t.commands.of(BROKER_USER)
            # output 1: the command, for the logged-in operator; output 2: a refusal shown on the page
            self.function(
                f"{p}guard",
                tab,
                "operator commands only",
                GUARD_JS % (json.dumps(allowed), json.dumps(t.reply)),
                [f"{p}out"],
                870,
                120,
                second=[f"{p}merge"],
            )
            self.add(
                {
                    "id": f"{p}out",
                    "type": "mqtt out",
                    "z": tab,
                    "name": cmd_topic,
                    "topic": cmd_topic,
                    "qos": "1",
                    "retain": "false",
                    "respTopic": "",
                    "contentType": "application/json",
                    "userProps": "",
                    "correl": "",
                    "expiry": str(int(dev.max_command_age)),
                    "broker": BROKER_ID,
                    "x": 1090,
                    "y": 120,
                    "wires": [],
                }
            )

    def overview(
        self, key: str, label: str, path: str, icon: str, order: int, topics: list[tuple[str, str]], code: str, vue: str
    ) -> None:
        p = f"{PREFIX}{key}."
        tab = self.tab(key, label)
        group = self.page(key, label.capitalize(), path, icon, order)
        for i, (topic, datatype) in enumerate(topics):
            self.mqtt_in(f"{p}in.{i}", tab, topic, datatype, f"{p}table", 60 + 60 * i)
        self.function(f"{p}table", tab, label, code, [f"{p}widget"], 420, 120)
        self.widget(f"{p}widget", tab, group, label, vue, [], 120)


def generate(stack: StackConfig, widgets: Path | None = None) -> list[dict[str, Any]]:
    """The generated nodes, in the order the editor shows their tabs."""
    widgets = widgets or widgets_dir()
    device_vue = (widgets / "device.vue").read_text()
    flow = _Flow(stack)
    flow.shared()
    root = flow.root
    flow.overview(
        "health",
        "health",
        "/health",
        "heart-pulse",
        1,
        [(f"{root}/+/availability", "utf8"), (f"{root}/+/status", "json"), (f"{root}/+/health", "json")],
        HEALTH_JS,
        (widgets / "health.vue").read_text(),
    )
    climate = [d for d, dev in stack.devices.items() if device_kind(dev.model) in ("sensor", "chiller")]
    flow.overview(
        "environment",
        "environment",
        "/environment",
        "water-percent",
        2,
        [(Topics(root, d).status, "json") for d in climate],
        ENVIRONMENT_JS,
        (widgets / "environment.vue").read_text(),
    )
    for order, (dev_id, dev) in enumerate(stack.devices.items(), start=3):
        flow.device(dev_id, dev, order, device_vue)
    ids = [n["id"] for n in flow.nodes]
    if len(ids) != len(set(ids)):
        raise FlowError(f"duplicate node ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return flow.nodes


def owned(node: dict[str, Any], owned_tabs: set[str]) -> bool:
    return str(node.get("id", "")).startswith(PREFIX) or node.get("z") in owned_tabs


def merge(generated: list[dict[str, Any]], existing: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Generated nodes replace every owned node; the lab's own nodes are kept after them.

    Returns the flows and the ids of lab nodes that were dropped because they sat
    on a generated tab (the caller warns: that tab is rewritten every time).
    """
    tabs = {n["id"] for n in [*generated, *existing] if n.get("type") == "tab" and str(n["id"]).startswith(PREFIX)}
    kept = [n for n in existing if not owned(n, tabs)]
    dropped = [str(n["id"]) for n in existing if not str(n.get("id", "")).startswith(PREFIX) and n.get("z") in tabs]
    return [*generated, *kept], dropped


def read_flows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text() or "[]")
    except json.JSONDecodeError as exc:
        raise FlowError(f"{path}: not valid JSON ({exc}); fix or remove it") from None
    if isinstance(data, dict) and isinstance(data.get("flows"), list):  # the editor's {rev, flows} form
        data = data["flows"]
    if not isinstance(data, list) or not all(isinstance(n, dict) and "id" in n for n in data):
        raise FlowError(f"{path}: expected a Node-RED flow file (a list of nodes with ids)")
    return data


# --- flows_cred.json: Node-RED's encryption (aes-256-ctr, key = sha256(credentialSecret)) ------


def _cipher(secret: str, iv: bytes):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(hashlib.sha256(secret.encode()).digest()), modes.CTR(iv))


def decrypt_credentials(data: dict[str, Any], secret: str) -> dict[str, Any]:
    if "$" not in data:
        return data  # plain (Node-RED encrypts it on its next save)
    blob = data["$"]
    iv, body = bytes.fromhex(blob[:32]), base64.b64decode(blob[32:])
    dec = _cipher(secret, iv).decryptor()
    try:
        return json.loads((dec.update(body) + dec.finalize()).decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FlowError(
            "flows_cred.json cannot be decrypted with NODERED_CREDENTIAL_SECRET "
            "(was it changed? restore the old key, or remove flows_cred.json and re-enter "
            "the credentials of the lab's own nodes)"
        ) from None


def encrypt_credentials(creds: dict[str, Any], secret: str) -> dict[str, str]:
    iv = os.urandom(16)
    enc = _cipher(secret, iv).encryptor()
    body = enc.update(json.dumps(creds).encode()) + enc.finalize()
    return {"$": iv.hex() + base64.b64encode(body).decode()}


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_flows(stack: StackConfig, flows_path: Path, secret: str) -> list[str]:
    """Writes flows.json (merged with the lab's nodes) and flows_cred.json beside it.

    The broker node's credentials are references (`${MQTT_PASSWORD_NODERED}`),
    which Node-RED fills from its environment: no password is written. Returns
    the ids of dropped lab nodes.
    """
    if not secret:
        raise FlowError("NODERED_CREDENTIAL_SECRET is empty: it encrypts flows_cred.json")
    existing = read_flows(flows_path)
    flows, dropped = merge(generate(stack), existing)
    flows_path.parent.mkdir(parents=True, exist_ok=True)
    if existing and dropped:
        _write(flows_path.with_name(flows_path.name + ".bak"), json.dumps(existing, indent=2), 0o600)
    cred_path = flows_path.with_name(flows_path.stem + "_cred.json")
    creds: dict[str, Any] = {}
    if cred_path.exists():
        try:
            creds = decrypt_credentials(json.loads(cred_path.read_text() or "{}"), secret)
        except json.JSONDecodeError:
            raise FlowError(f"{cred_path}: not valid JSON; remove it") from None
    live = {n["id"] for n in flows}
    creds = {k: v for k, v in creds.items() if k in live}  # credentials of removed nodes go with them
    creds[BROKER_ID] = {"user": BROKER_USER, "password": "${MQTT_PASSWORD_NODERED}"}
    _write(flows_path, json.dumps(flows, indent=2, ensure_ascii=False) + "\n", 0o644)
    _write(cred_path, json.dumps(encrypt_credentials(creds, secret)) + "\n", 0o600)
    return dropped
