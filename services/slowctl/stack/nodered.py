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
from slowctl.device.contract import AlarmTopics, InterlockTopics, ProcedureTopics, RecorderTopics, Topics
from slowctl.device.core import OUTPUT_LOST, OUTPUT_ON_EXTERNALLY, SETPOINT_CHANGED_EXTERNALLY, TRIP_LATCHED
from slowctl.device.memory import UNREADABLE

PREFIX = "slowctl."
LATCHED = (TRIP_LATCHED, OUTPUT_LOST, OUTPUT_ON_EXTERNALLY, SETPOINT_CHANGED_EXTERNALLY, UNREADABLE)
HV_CONFIRM_ACTIONS = tuple(n for n, a in ACTIONS.items() if a.raises)  # may raise a high voltage or its current
BROKER_ID = PREFIX + "broker"
BROKER_USER = "nodered"
MAX_AGE = 10.0  # s: expiry of the UI's commands that are not one device's (alarm acks, all HV off)
TREND_STEP_MS = 5000  # the trend page's resolution (and how often it is sent): 720 points per series and hour
# the trend page's archive view (compose: InfluxDB 2): the only ranges it may ask for, and at most this many
# points per series whatever the range (the window of the mean is sized to it)
ARCHIVE_RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
ARCHIVE_POINTS = 500
LOG_KEEP = 500  # events the log page keeps live, and asks the record for (the record keeps all: slowctl log)
RUNS_ASKED = 50  # past runs the procedures page lists from the record
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
    from slowctl.drivers import current_unit

    kind = device_kind(dev.model)
    caps = Capabilities.build(dev)
    channels = dev.channels.values()
    unit, scale = (
        current_unit(dev.model, [c.vmax for c in channels], [c.imax for c in channels])
        if kind == "supply"
        else ("A", 1.0)
    )
    return {
        "id": dev_id,
        "model": dev.model,
        # what `clear` ends (with a trip): the page offers clear only while one of them is shown
        "latched": sorted(LATCHED),
        "kind": kind,
        "confirm": kind == "supply" and is_hv(dev),
        "confirm_actions": list(HV_CONFIRM_ACTIONS),
        # HV currents are typed and shown in µA; the command carries A
        "current_unit": unit,
        "current_scale": scale,
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


COMMON = "__SLOWCTL_COMMON__"  # the shared Vue mixin (nodered/widgets/common.js)
COMMON_STYLE = "/* __SLOWCTL_COMMON_STYLE__ */"  # the shared styles (nodered/widgets/common.css)


def js_value(value: Any) -> str:
    # JSON is a JS expression; '</' must not end the <script> element of the template
    return json.dumps(value, ensure_ascii=False).replace("</", "<\\/")


class Widgets:
    """The Vue sources of nodered/widgets/, filled in: each `__SLOWCTL_<NAME>__` marker once, by its data."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.common = self._strip_comment((directory / "common.js").read_text())
        self.style = (directory / "common.css").read_text()

    @staticmethod
    def _strip_comment(js: str) -> str:
        return "\n".join(line for line in js.splitlines() if not line.startswith("//")).strip()

    def vue(self, name: str, **data: Any) -> str:
        source = (self.dir / f"{name}.vue").read_text()
        fills = {f"__SLOWCTL_{k.upper()}__": js_value(v) for k, v in data.items()}
        if COMMON in source:
            fills[COMMON] = self.common
            fills[COMMON_STYLE] = self.style
        for marker, text in fills.items():
            if source.count(marker) != 1:
                raise FlowError(f"nodered/widgets/{name}.vue must contain {marker} exactly once")
            source = source.replace(marker, text)
        return source


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

PERSON_JS = """\
// The person logged in on the connection a message came from: msg._client.user, set by Dashboard 2's
// plugin (nodered/accounts/plugin.js) from the socket's login, never by the browser. A command without a
// person, or from a viewer, is not sent: error says why.
const LOGIN = /^[a-z][a-z0-9_.-]{1,31}$/
function person (msg) {
    const user = msg._client && msg._client.user
    const login = user && typeof user.username === 'string' && LOGIN.test(user.username) ? user.username : null
    if (!login) return { login: null, role: null, error: 'no logged-in person on this connection (log in again): nothing sent' }
    if (user.role !== 'operator') return { login, role: user.role, error: login + ' is a ' + user.role + ': commands need an operator account' }
    return { login, role: user.role, error: null }
}
"""

GUARD_JS = (
    PERSON_JS
    + """\
// Only what an operator can send leaves here: a known action on a configured
// channel, with the widget's id, a fresh ts, and "for": the person logged in.
// Anything else (e.g. a status that reached this node by a wiring mistake) is
// dropped with a warning. A refusal goes to output 2, answered on the page.
const allowed = %s
const REPLY_TOPIC = %s
const c = msg.payload
const actions = c && typeof c === 'object' ? allowed[String(c.channel)] : null
if (!actions || !actions.includes(c.action)) {
    node.warn('slowctl: dropped a message that is not an operator command')
    return null
}
const cmd = { action: c.action, channel: c.channel, ts: Date.now() / 1000 }
if (c.value !== undefined && c.value !== null) cmd.value = c.value
if (typeof c.id === 'string' || typeof c.id === 'number') cmd.id = c.id
const who = person(msg)
if (who.error) {
    node.warn('slowctl: refused ' + cmd.action + ' ch ' + cmd.channel + ': ' + who.error)
    const reply = { id: cmd.id === undefined ? null : cmd.id, action: cmd.action, channel: cmd.channel,
        value: cmd.value === undefined ? null : cmd.value, ok: false, error: who.error, applied: null }
    return [null, { topic: REPLY_TOPIC, payload: reply, _client: msg._client }]
}
cmd.for = who.login
return [{ payload: cmd }, null]
"""
)

EMERGENCY_JS = (
    PERSON_JS
    + """\
// "All HV off" (and "who am I" for the banner): `off` to every HV output, each on its device's own
// Node-RED command topic with "for" the person, as `slowctl off --all-hv` sends them (straight to the
// device services: no other process needed). Devices that are offline are sent it all the same (off is
// always safe) and said to be offline. Output 1: the commands; output 2: the answer for the page(s).
const OUTPUTS = %s
const ROOT = %s
const c = msg.payload
if (!c || typeof c !== 'object') return null
const who = person(msg)
if (c.action === 'whoami') return [null, { payload: { whoami: who.login ? { username: who.login, role: who.role } : null }, _client: msg._client }]
if (c.action !== 'off-all-hv') {
    node.warn('slowctl: dropped a message that is not an emergency off')
    return null
}
const id = 'emergency-' + (typeof c.id === 'string' ? c.id.slice(0, 40) : String(Date.now()))
if (who.error) return [null, { payload: { run: { id, by: who.login, ok: false, error: who.error, outputs: [] } }, _client: msg._client }]
const online = flow.get('availability') || {}
const ts = Date.now() / 1000
const run = { id, by: who.login, started: Date.now(), outputs: [] }
const commands = []
for (const o of OUTPUTS) {
    run.outputs.push(Object.assign({ ok: null, result: online[o.device] === 'online' ? 'sent' : 'device offline: sent, no service to answer' }, o))
    commands.push({ topic: ROOT + '/' + o.device + '/by/nodered/cmd', payload: { action: 'off', channel: o.channel, id, ts, for: who.login } })
}
flow.set('run', run)
node.warn('slowctl: all HV off by ' + who.login + ': ' + OUTPUTS.length + ' outputs')
return [commands, { payload: { run } }]
"""
)

EMERGENCY_REPLIES_JS = """\
// The devices' replies to the last "all HV off", per output; availability for the next one.
const parts = msg.topic.split('/')
const leaf = parts.pop()
const device = parts.pop()
if (leaf === 'availability') {
    const online = flow.get('availability') || {}
    online[device] = String(msg.payload)
    flow.set('availability', online)
    return null
}
const r = msg.payload
const run = flow.get('run')
if (!run || !r || typeof r !== 'object' || r.id !== run.id) return null
const o = run.outputs.find(x => x.device === device && x.channel === r.channel)
if (!o) return null
o.ok = r.ok === true
o.result = r.ok ? 'off (' + r.applied + ')' : 'refused: ' + r.error
flow.set('run', run)
return { payload: { run } }
"""

ANSWER_JS = """\
// What a page shows, with a reply riding along once; a refusal (it carries the sender's _client) goes to
// that browser only, and Dashboard 2 keeps no such message for replay.
function answer (state, reply) {
    const out = { payload: Object.assign({ reply }, state) }
    if (msg._client) out._client = msg._client
    return out
}
"""

BENCH_JS = (
    ANSWER_JS
    + """\
// The whole bench for the overview and the alarm page: every device's status and availability, the
// alarm list, the interlock rules, whether the interlock process (the alarm handler) runs; an
// acknowledgement's reply (or the flow's refusal, to its own page only) rides along once.
const parts = msg.topic.split('/')
const leaf = parts.pop()
const target = parts.pop()
const bench = context.get('bench') || { devices: {}, alarms: null, interlocks: null, handler: null }
let reply = null
if (msg._client || (target === 'alarms' && leaf === 'reply')) reply = msg.payload
else if (target === 'alarms' && leaf === 'summary') bench.alarms = msg.payload
else if (target === 'interlock' && leaf === 'state') bench.interlocks = msg.payload
else if (target === 'interlock' && leaf === 'availability') bench.handler = String(msg.payload)
else if (leaf === 'status' || leaf === 'availability') {
    const d = bench.devices[target] || { status: null, availability: null }
    d[leaf] = leaf === 'status' ? msg.payload : String(msg.payload)
    bench.devices[target] = d
} else return null
context.set('bench', bench)
return answer(bench, reply)
"""
)

ACK_JS = (
    PERSON_JS
    + """\
// An operator acknowledges an alarm: {action: 'ack', device, channel, kind} to the alarm handler on
// Node-RED's own topic, "for" the person (the handler records who). Output 2: a refusal for the page.
const DEVICES = %s
const c = msg.payload
if (!c || c.action !== 'ack' || !DEVICES.includes(c.device)) {
    node.warn('slowctl: dropped a message that is not an acknowledgement')
    return null
}
const cmd = { action: 'ack', device: c.device, ts: Date.now() / 1000 }
if (Number.isInteger(c.channel)) cmd.channel = c.channel
if (typeof c.kind === 'string') cmd.kind = c.kind
if (typeof c.id === 'string') cmd.id = c.id
const who = person(msg)
if (who.error) return [null, { topic: 'refused', payload: { id: cmd.id || null, action: 'ack', ok: false, error: who.error }, _client: msg._client }]
cmd.for = who.login
return [{ payload: cmd }, null]
"""
)

PROCEDURES_JS = (
    ANSWER_JS
    + """\
// The procedure runner as the page needs it: the catalog, whether the runner runs, every run's progress
// (retained: the runner keeps the last 20 finished) and each run's points as they come (the live curve:
// the runs seen since Node-RED started; the record has them all: slowctl procedure show). A reply (or
// the flow's refusal, to its own page only) rides along once.
const KEEP_RUNS = 20
const KEEP_POINTS = 2000
const parts = msg.topic.split('/')
const leaf = parts.pop()
const s = context.get('procs') || { catalog: null, runner: null, runs: {}, points: {} }
let reply = null
if (msg._client || leaf === 'reply') reply = msg.payload
else if (leaf === 'catalog') s.catalog = msg.payload
else if (leaf === 'availability') s.runner = String(msg.payload)
else if (parts[parts.length - 1] === 'progress' && msg.payload && typeof msg.payload === 'object') {
    const p = msg.payload
    s.runs[leaf] = p
    const pts = s.points[leaf] || []
    const last = p.last
    if (last && typeof last === 'object' && !pts.some(x => x.seq === last.seq)) pts.push(last)
    if (pts.length > KEEP_POINTS) pts.splice(0, pts.length - KEEP_POINTS)
    s.points[leaf] = pts
    const ids = Object.keys(s.runs).sort((a, b) => (s.runs[b].started || 0) - (s.runs[a].started || 0))
    for (const old of ids.slice(KEEP_RUNS + 5)) { delete s.runs[old]; delete s.points[old] }
} else return null
context.set('procs', s)
return answer(s, reply)
"""
)

PROCEDURE_GUARD_JS = (
    PERSON_JS
    + """\
// Start or abort a run for the logged-in operator: the runner checks the parameters and the bench (and
// answers with its reason); "for" is the person, who the runner records. Output 2: a refusal for the page.
const c = msg.payload
if (c && typeof c === 'object' && 'ask' in c) return null  // a question about past runs: the record node's
if (!c || typeof c !== 'object' || (c.action !== 'start' && c.action !== 'abort')) {
    node.warn('slowctl: dropped a message that is not a procedure command')
    return null
}
const cmd = c.action === 'start'
    ? { action: 'start', procedure: String(c.procedure), params: c.params && typeof c.params === 'object' ? c.params : {} }
    : { action: 'abort', run: String(c.run) }
cmd.ts = Date.now() / 1000
if (typeof c.id === 'string') cmd.id = c.id
const who = person(msg)
if (who.error) return [null, { topic: 'refused', payload: { id: cmd.id || null, action: cmd.action, ok: false, error: who.error }, _client: msg._client }]
cmd.for = who.login
return [{ payload: cmd }, null]
"""
)

TRENDS_JS = """\
// The last hour of every trended reading, one point per STEP (the bucket's latest value), from the
// statuses: the trend page's live view (no archive needed). Sent whole at most once per STEP.
const FIELDS = %s
const STEP = %d
const SPAN = 3600 * 1000
const parts = msg.topic.split('/')
parts.pop()
const dev = parts.pop()
const s = msg.payload
if (!s || typeof s !== 'object' || !Array.isArray(s.channels) || !FIELDS[dev]) return null
const history = context.get('history') || {}
const t = Math.floor((typeof s.ts === 'number' ? s.ts : Date.now()) / STEP) * STEP
for (const c of s.channels) {
    for (const f of FIELDS[dev]) {
        // the dew-point margin: how far the air is above condensing
        const v = f === 'margin' ? (typeof c.temperature === 'number' && typeof c.dewpoint === 'number' ? c.temperature - c.dewpoint : null) : c[f]
        if (typeof v !== 'number') continue
        const key = dev + '.' + c.channel + '.' + f
        const pts = history[key] || (history[key] = [])
        if (pts.length && pts[pts.length - 1][0] === t) pts[pts.length - 1][1] = v
        else pts.push([t, v])
        while (pts.length && pts[0][0] < t - SPAN) pts.shift()
    }
}
context.set('history', history)
const now = Date.now()
if (now - (context.get('sent') || 0) < STEP) return null
context.set('sent', now)
return { payload: { history, now } }
"""

ARCHIVE_ASK_JS = """\
// The trend page's archive view: the page names a range, the statements for it were built by the flow
// generator from the config (no text from the page reaches InfluxDB). InfluxDB's InfluxQL endpoint with a
// read-only token (influx-init's, compose only): the control UI can read the archive, never change it.
const QUERIES = %s
const range = msg.payload && msg.payload.archive
const answer = archive => [null, { payload: { archive }, _client: msg._client }]
if (typeof range !== 'string' || !Object.prototype.hasOwnProperty.call(QUERIES, range)) {
    return answer({ range: null, error: 'archive range ' + JSON.stringify(String(range)).slice(0, 24) + ' refused: not one of ' + Object.keys(QUERIES).join(', ') })
}
const url = env.get('INFLUXDB_URL'), db = env.get('INFLUXDB_BUCKET')
if (!url || !db) return answer({ range, error: "no archive here: the InfluxDB archive is the compose stack's (the live hour is kept)" })
const tokenOf = global.get('archiveToken')  // settings.js: the read-only token file, read now
const token = typeof tokenOf === 'function' ? tokenOf() : ''
if (!token) return answer({ range, error: 'the archive is not readable yet: no read-only token (INFLUXDB_READONLY_FILE; did influxdb-init run?)' })
const q = QUERIES[range].statements.map(s => s.q).join('; ')
// a fresh message: nothing the page sent reaches the http request node but the range
return [{
    method: 'POST',
    url: url.replace(/\\/+$/, '') + '/query',
    headers: { Authorization: 'Token ' + token, 'Content-Type': 'application/x-www-form-urlencoded' },
    payload: 'db=' + encodeURIComponent(db) + '&epoch=ms&q=' + encodeURIComponent(q),
    requestTimeout: 20000,
    range,
    _client: msg._client
}, null]
"""

ARCHIVE_ANSWER_JS = """\
// InfluxDB's answer to the archive view, as the live view's history ({device.channel.field: [[ms, value]]})
// with the range drawn; an error is said as it is.
const QUERIES = %s
const range = msg.range
const asked = QUERIES[range]
const r = msg.payload
const to = Date.now()
const out = { range, from: to - asked.seconds * 1000, to, history: {} }
if (msg.statusCode !== 200 || !r || typeof r !== 'object' || !Array.isArray(r.results)) {
    out.error = 'the archive did not answer: ' + (msg.statusCode || '') + ' ' + String(r && r.error || r || '').slice(0, 200)
    return { payload: { archive: out }, _client: msg._client }
}
const errors = []
for (const res of r.results) {
    const s = asked.statements[res.statement_id]
    if (res.error) errors.push(res.error)
    if (!s) continue
    for (const series of res.series || []) {
        const tags = series.tags || {}
        const key = tags.device + '.' + tags.channel + '.' + s.field
        out.history[key] = series.values.filter(v => typeof v[0] === 'number' && typeof v[1] === 'number')
    }
}
if (errors.length) out.error = 'the archive said: ' + errors.join('; ').slice(0, 200)
return { payload: { archive: out }, _client: msg._client }
"""

LOG_JS = """\
// The bench's log: every event (device, interlock, alarm handler, procedure runner) as it comes, the
// newest KEEP kept in Node-RED's file-backed context (it survives a page reload and a Node-RED restart;
// the full record is the recorder's: slowctl log). Commands are in it as command_applied / _refused /
// _failed events whose cause names the person ("nodered for alice id=...").
const KEEP = %d
const log = context.get('log', 'file') || []
if (msg.topic === 'replay') return { payload: { log } }  // at start: what was kept before a restart
const e = msg.payload
if (!e || typeof e !== 'object') return null
log.push({ ts: e.ts, device: e.device, channel: e.channel, kind: e.kind, severity: e.severity, message: e.message,
    cause: e.cause === undefined ? null : e.cause })
if (log.length > KEEP) log.splice(0, log.length - KEEP)
context.set('log', log, 'file')
return { payload: { log } }
"""

RECORD_ASK_JS = """\
// The record, read through the recorder (Node-RED holds no MongoDB login): a page's question (its log's
// history, the past runs, one run's points) goes to the recorder as Node-RED's, remembered with the browser
// that asked (its answer goes there only: RECORD_ANSWER_JS). Without a recorder the page hears so at once.
const LIMIT = %d
const KEY = %s
const q = msg.payload
if (q && typeof q === 'object' && 'action' in q) return null  // a command from the same page: the guard's
if (!msg._client || !q || typeof q !== 'object' || !['log', 'runs', 'run'].includes(q.ask) || typeof q.id !== 'string') {
    node.warn('slowctl: dropped a message that is not a question about the record')
    return null
}
const ask = { action: q.ask, id: q.id.slice(0, 64) }
if (q.ask === 'log') {
    ask.limit = LIMIT
    if (q.device) ask.device = String(q.device)
} else if (q.ask === 'runs') ask.limit = LIMIT
else ask.run = String(q.run)
const recorder = flow.get('recorder')
if (recorder !== 'online') {
    const error = 'the recorder is ' + (recorder || 'not running: this stack keeps no record')
    return [null, { payload: { answer: { id: ask.id, action: ask.action, ok: false, recorder: false, error } }, _client: msg._client }]
}
const now = Date.now()
const pending = flow.get(KEY) || {}
for (const k of Object.keys(pending)) if (now - pending[k].at > 60000) delete pending[k]
pending[ask.id] = { client: msg._client, at: now }
flow.set(KEY, pending)
return [{ payload: ask }, null]
"""

RECORD_ANSWER_JS = """\
// The recorder's answers, each to the browser that asked (RECORD_ASK_JS); its availability, for the next.
const AVAILABILITY = %s
const KEY = %s
if (msg.topic === AVAILABILITY) {
    flow.set('recorder', String(msg.payload))
    return null
}
const a = msg.payload
const pending = flow.get(KEY) || {}
const p = a && typeof a === 'object' ? pending[a.id] : null
if (!p) return null
delete pending[a.id]
flow.set(KEY, pending)
return { payload: { answer: Object.assign({ recorder: true }, a) }, _client: p.client }
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
        """A widget in `group`; with group "", on every page (Dashboard 2's UI scope: the emergency bar)."""
        # passthru false: an incoming status must never leave the widget (it would become a command)
        self.add(
            {
                "id": nid,
                "type": "ui-template",
                "z": tab,
                "group": group,
                "page": "",
                "ui": "" if group else f"{PREFIX}ui",
                "name": name,
                "order": 1,
                "width": "12",
                "height": "0",
                "head": "",
                "format": vue,
                "storeOutMessages": False,
                "passthru": False,
                "resendOnRefresh": True,
                "templateScope": "local" if group else "widget:ui",
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

    def mqtt_out(self, nid: str, tab: str, topic: str, expiry: float, y: int = 120, response: str = "") -> None:
        """Commands: never retained, expiring (a command that waited must not run late); topic "": msg.topic;
        `response`: the MQTT v5 response topic the answer is asked for on."""
        self.add(
            {
                "id": nid,
                "type": "mqtt out",
                "z": tab,
                "name": topic or "msg.topic",
                "topic": topic,
                "qos": "1",
                "retain": "false",
                "respTopic": response,
                "contentType": "application/json",
                "userProps": "",
                "correl": "",
                "expiry": str(int(expiry)),
                "broker": BROKER_ID,
                "x": 1090,
                "y": y,
                "wires": [],
            }
        )

    def device(self, dev_id: str, dev: DeviceConfig, order: int, widgets: Widgets) -> None:
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
        vue = widgets.vue("device", device=desc)
        self.widget(f"{p}widget", tab, group, dev_id, vue, [f"{p}guard"] if commands else [], 120)
        if commands:
            allowed = {str(c["channel"]): c["actions"] for c in desc["channels"]}
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
            # Node-RED's own topic: the broker lets the login `nodered` publish only there, and the
            # device records "nodered for <person>" from it and the command's "for"
            self.mqtt_out(f"{p}out", tab, t.commands.of(BROKER_USER), dev.max_command_age)

    def table_page(
        self,
        key: str,
        label: str,
        path: str,
        icon: str,
        order: int,
        topics: list[tuple[str, str]],
        code: str,
        vue: str,
        to: list[str] | None = None,
    ) -> None:
        """A read-only page fed by one function; `to`: where the widget's own messages go (questions)."""
        p = f"{PREFIX}{key}."
        tab = self.tab(key, label)
        group = self.page(key, label.capitalize(), path, icon, order)
        for i, (topic, datatype) in enumerate(topics):
            self.mqtt_in(f"{p}in.{i}", tab, topic, datatype, f"{p}table", 60 + 60 * i)
        self.function(f"{p}table", tab, label, code, [f"{p}widget"], 420, 120)
        self.widget(f"{p}widget", tab, group, label, vue, to or [], 120)

    def bench(self, widgets: Widgets, bench: list[dict[str, Any]]) -> None:
        """The overview (landing page) and the alarm page: one picture of the bench, fed to both; the alarm
        page's acknowledgements go to the alarm handler through the operator guard."""
        p = f"{PREFIX}bench."
        tab = self.tab("bench", "overview and alarms")
        root = self.root
        alarms, interlock = AlarmTopics(root), InterlockTopics(root)
        topics = [
            (f"{root}/+/status", "json"),
            (f"{root}/+/availability", "utf8"),
            (alarms.summary, "json"),
            (alarms.reply, "json"),
            (interlock.state, "json"),
        ]
        for i, (topic, datatype) in enumerate(topics):
            self.mqtt_in(f"{p}in.{i}", tab, topic, datatype, f"{p}merge", 60 + 60 * i)
        widgets_out = [f"{p}overview", f"{p}alarms"]
        self.function(f"{p}merge", tab, "the bench", BENCH_JS, widgets_out, 420, 120)
        overview = self.page("overview", "Overview", "/overview", "view-dashboard", 1)
        self.widget(f"{p}overview", tab, overview, "overview", widgets.vue("overview", bench=bench), [], 120)
        group = self.page("alarms", "Alarms", "/alarms", "alarm-light", 2)
        self.widget(f"{p}alarms", tab, group, "alarms", widgets.vue("alarms"), [f"{p}ack"], 240)
        devices = [d["id"] for d in bench] + ["recorder", "interlock"]  # the services that report alarms too
        self.function(
            f"{p}ack",
            tab,
            "operator acknowledgements only",
            ACK_JS % json.dumps(devices),
            [f"{p}out"],
            870,
            240,
            second=[f"{p}merge"],
        )
        self.mqtt_out(f"{p}out", tab, alarms.commands.of(BROKER_USER), self.max_age(), 240)

    def record(self, tab: str, key: str, widget: str, limit: int, y: int = 300) -> None:
        """The nodes that let a page ask the recorder about the record: {key}.ask takes the widget's
        questions, {key}.answer brings the answers back (no MQTT input reaches the output)."""
        p = f"{PREFIX}{key}."
        t = RecorderTopics(self.root)
        answers = f"{t.reply}/{BROKER_USER}/{key}"  # each page its own: answers reach the page that asked
        waiting = json.dumps(f"questions.{key}")
        code = RECORD_ASK_JS % (limit, waiting)
        self.function(f"{p}ask", tab, "ask the record", code, [f"{p}ask.out"], 420, y, second=[widget])
        # a fixed topic (Node-RED's own question topic) and the page's answer topic; a question that waited
        # is not worth answering: it expires like a command
        self.mqtt_out(f"{p}ask.out", tab, t.commands.of(BROKER_USER), self.max_age(), y, response=answers)
        self.mqtt_in(f"{p}in.answers", tab, answers, "json", f"{p}answer", y + 60)
        self.mqtt_in(f"{p}in.recorder", tab, t.availability, "utf8", f"{p}answer", y + 120)
        code = RECORD_ANSWER_JS % (json.dumps(t.availability), waiting)
        self.function(f"{p}answer", tab, "the record's answers", code, [widget], 420, y + 60)

    def max_age(self) -> float:
        return min((d.max_command_age for d in self.stack.devices.values()), default=MAX_AGE)

    def emergency(self, widgets: Widgets, outputs: list[dict[str, Any]]) -> None:
        """ "All HV off" on every page (a UI-scoped widget), with the person logged in beside it."""
        p = f"{PREFIX}emergency."
        tab = self.tab("emergency", "all HV off")
        self.mqtt_in(f"{p}in.reply", tab, f"{self.root}/+/reply", "json", f"{p}replies", 60)
        self.mqtt_in(f"{p}in.availability", tab, f"{self.root}/+/availability", "utf8", f"{p}replies", 120)
        self.function(f"{p}replies", tab, "replies to all HV off", EMERGENCY_REPLIES_JS, [f"{p}widget"], 420, 90)
        vue = widgets.vue("emergency", outputs=outputs)
        self.widget(f"{p}widget", tab, "", "all HV off", vue, [f"{p}off"], 120)
        code = EMERGENCY_JS % (json.dumps(outputs), json.dumps(self.root))
        self.function(f"{p}off", tab, "all HV off, operators only", code, [f"{p}out"], 870, 120, second=[f"{p}widget"])
        # the topic of each command is its device's Node-RED topic (msg.topic), as the guard's are
        self.mqtt_out(f"{p}out", tab, "", self.max_age())

    def procedures(self, widgets: Widgets) -> None:
        """Start an IV scan, a burn-in or a lab procedure with a form built from the runner's catalog, watch
        its progress and curve, abort; the recent runs."""
        p = f"{PREFIX}procedures."
        tab = self.tab("procedures", "procedures")
        t = ProcedureTopics(self.root)
        topics = [
            (t.catalog, "json"),
            (t.availability, "utf8"),
            (f"{t.progress_root}/+", "json"),
            (t.reply, "json"),
        ]
        for i, (topic, datatype) in enumerate(topics):
            self.mqtt_in(f"{p}in.{i}", tab, topic, datatype, f"{p}merge", 60 + 60 * i)
        self.function(f"{p}merge", tab, "the runner and its runs", PROCEDURES_JS, [f"{p}widget"], 420, 120)
        group = self.page("procedures", "Procedures", "/procedures", "chart-bell-curve", 4)
        # output: start/abort to the guard, questions about past runs to the record
        self.widget(f"{p}widget", tab, group, "procedures", widgets.vue("procedures"), [f"{p}guard", f"{p}ask"], 120)
        self.record(tab, "procedures", f"{p}widget", RUNS_ASKED)
        code = PROCEDURE_GUARD_JS
        self.function(f"{p}guard", tab, "operator runs only", code, [f"{p}out"], 870, 120, second=[f"{p}merge"])
        self.mqtt_out(f"{p}out", tab, t.commands.of(BROKER_USER), self.max_age())

    def trends(self, widgets: Widgets, charts: list[dict[str, Any]]) -> None:
        fields: dict[str, list[str]] = {}
        for chart in charts:
            for series in chart["series"]:
                dev, _, field = series["key"].split(".")
                if field not in fields.setdefault(dev, []):
                    fields[dev].append(field)
        devices = sorted(fields)
        self.table_page(
            "trends",
            "trends",
            "/trends",
            "chart-line",
            5,
            [(Topics(self.root, d).status, "json") for d in devices],
            TRENDS_JS % (json.dumps(fields), TREND_STEP_MS),
            widgets.vue("trends", charts=charts, ranges=list(ARCHIVE_RANGES)),
            to=[f"{PREFIX}trends.archive"],
        )
        # the archive view: the page's range -> InfluxDB (read-only) -> the same charts
        p, tab = f"{PREFIX}trends.", f"{PREFIX}tab.trends"
        queries = json.dumps(
            {r: {"seconds": s, "statements": archive_queries(charts, r)} for r, s in ARCHIVE_RANGES.items()}
        )
        widget = [f"{p}widget"]
        self.function(
            f"{p}archive", tab, "the archive, read-only", ARCHIVE_ASK_JS % queries, [f"{p}influx"], 420, 240, widget
        )
        self.add(
            {
                "id": f"{p}influx",
                "type": "http request",
                "z": tab,
                "name": "InfluxDB (InfluxQL)",
                "method": "use",  # msg.method, msg.url: set above from the environment, never from the page
                "ret": "obj",
                "paytoqs": "ignore",
                "url": "",
                "tls": "",
                "persist": False,
                "proxy": "",
                "insecureHTTPParser": False,
                "authType": "",
                "senderr": False,
                "headers": [],
                "x": 650,
                "y": 240,
                "wires": [[f"{p}archived"]],
            }
        )
        self.function(f"{p}archived", tab, "the archive's answer", ARCHIVE_ANSWER_JS % queries, widget, 870, 240)

    def log(self, widgets: Widgets) -> None:
        # at start the log kept in the file context store goes to the page at once, not only with the next event
        self.add(
            {
                "id": f"{PREFIX}log.replay",
                "type": "inject",
                "z": f"{PREFIX}tab.log",
                "name": "the kept log, at start",
                "props": [{"p": "topic", "vt": "str"}],
                "topic": "replay",
                "repeat": "",
                "crontab": "",
                "once": True,
                "onceDelay": "1",
                "x": 170,
                "y": 180,
                "wires": [[f"{PREFIX}log.table"]],
            }
        )
        self.table_page(
            "log",
            "log",
            "/log",
            "format-list-bulleted",
            3,
            [(f"{self.root}/+/event", "json")],
            LOG_JS % LOG_KEEP,
            widgets.vue("log", devices=list(self.stack.devices)),
            to=[f"{PREFIX}log.ask"],
        )
        # the history from before Node-RED started (or saw it): the record, on page open and per device filter
        self.record(f"{PREFIX}tab.log", "log", f"{PREFIX}log.widget", LOG_KEEP)


def generate(stack: StackConfig, widgets_path: Path | None = None) -> list[dict[str, Any]]:
    """The generated nodes, in the order the editor shows their tabs."""
    from slowctl.safety.rules import hv_outputs

    widgets = Widgets(widgets_path or widgets_dir())
    flow = _Flow(stack)
    flow.shared()
    root = flow.root
    bench = [bench_entry(d, describe(d, dev)) for d, dev in stack.devices.items()]
    flow.bench(widgets, bench)
    flow.log(widgets)
    if stack.procedures.enabled:
        flow.procedures(widgets)
    flow.trends(widgets, trend_charts(stack))
    outputs = [
        {"device": d, "channel": ch, "name": stack.devices[d].channels[ch].name} for d, ch in hv_outputs(stack.devices)
    ]
    flow.emergency(widgets, outputs)
    flow.table_page(
        "health",
        "health",
        "/health",
        "heart-pulse",
        7,
        [(f"{root}/+/availability", "utf8"), (f"{root}/+/status", "json"), (f"{root}/+/health", "json")],
        HEALTH_JS,
        widgets.vue("health"),
    )
    climate = [d for d, dev in stack.devices.items() if device_kind(dev.model) in ("sensor", "chiller")]
    flow.table_page(
        "environment",
        "environment",
        "/environment",
        "water-percent",
        6,
        [(Topics(root, d).status, "json") for d in climate],
        ENVIRONMENT_JS,
        widgets.vue("environment"),
    )
    for order, (dev_id, dev) in enumerate(stack.devices.items(), start=10):
        flow.device(dev_id, dev, order, widgets)
    ids = [n["id"] for n in flow.nodes]
    if len(ids) != len(set(ids)):
        raise FlowError(f"duplicate node ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return flow.nodes


def influxql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def archive_queries(charts: list[dict[str, Any]], span: str) -> list[dict[str, str]]:
    """The InfluxQL statements of the trend page's archive view for one of ARCHIVE_RANGES: one per chart and
    measurement, the same schema as the Grafana dashboards (docs/data-model.md), the mean over a window
    sized so that no series has more than ARCHIVE_POINTS points. Another range is refused."""
    if span not in ARCHIVE_RANGES:
        raise FlowError(f"archive range {span!r}: not one of {', '.join(ARCHIVE_RANGES)}")
    # GROUP BY time() windows are aligned to the epoch: the range may start inside one, hence one more
    window = -(-ARCHIVE_RANGES[span] // (ARCHIVE_POINTS - 1))
    statements = []
    for chart in charts:
        where: dict[tuple[str, str], list[str]] = {}  # (measurement, field) -> the series' tag conditions
        for s in chart["series"]:
            dev, ch, field = s["key"].split(".")
            one = f'("device" = {influxql_string(dev)} AND "channel" = {influxql_string(ch)})'
            where.setdefault((s["measurement"], field), []).append(one)
        for (measurement, field), tags in where.items():
            # the margin is not stored: temperature - dewpoint, as the environment dashboard computes it
            mean = 'mean("temperature") - mean("dewpoint")' if field == "margin" else f'mean("{field}")'
            statements.append(
                {
                    "chart": chart["title"],
                    "field": field,
                    "q": f'SELECT {mean} AS "{field}" FROM "{measurement}" WHERE time > now() - {span} '
                    f'AND ({" OR ".join(tags)}) GROUP BY time({window}s), "device", "channel" fill(none)',
                }
            )
    return statements


def trend_charts(stack: StackConfig) -> list[dict[str, Any]]:
    """The trend page's charts from the config: Vmon and Imon of the HV and the LV channels, the climate
    sensors' temperature (with the chillers' baths), humidity, dew point and margin."""
    charts: dict[str, dict[str, Any]] = {}

    def add(title: str, unit: str, scale: float, key: str, label: str) -> None:
        chart = charts.setdefault(title, {"title": title, "unit": unit, "scale": scale, "series": []})
        # the archive's measurement of the series (docs/data-model.md)
        measurement = {"supply": "supply", "sensor": "environment"}.get(desc["kind"], "chiller")
        chart["series"].append({"key": key, "label": label, "measurement": measurement})

    for dev_id, dev in stack.devices.items():
        desc = describe(dev_id, dev)
        for c in desc["channels"]:
            where, label = f"{dev_id}.{c['channel']}", f"{dev_id}.{c['channel']} {c['name']}"
            if desc["kind"] == "supply":
                group = "HV" if is_hv(dev) else "LV"
                add(f"{group} Vmon", "V", 1.0, f"{where}.vmon", label)
                add(f"{group} Imon", desc["current_unit"], desc["current_scale"], f"{where}.imon", label)
            elif desc["kind"] == "sensor":
                add("Temperature", "°C", 1.0, f"{where}.temperature", label)
                add("Humidity", "%RH", 1.0, f"{where}.humidity", label)
                add("Dew point", "°C", 1.0, f"{where}.dewpoint", label)
                add("Dew-point margin", "K", 1.0, f"{where}.margin", label)
            else:
                add("Temperature", "°C", 1.0, f"{where}.temperature", label + " (bath)")
    order = ["HV Vmon", "HV Imon", "LV Vmon", "LV Imon", "Temperature", "Humidity", "Dew point", "Dew-point margin"]
    return [charts[t] for t in order if t in charts]


def bench_entry(dev_id: str, desc: dict[str, Any]) -> dict[str, Any]:
    """What the overview shows of a device: its kind, channels and current unit (the rest is its status)."""
    keys = ("id", "model", "kind", "current_unit", "current_scale")
    return {
        **{k: desc[k] for k in keys},
        "channels": [{"channel": c["channel"], "name": c["name"]} for c in desc["channels"]],
    }


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
