"""The flow generator: pages per device, HV confirmation, status never wired to commands, lab tabs kept."""

import json
import re

import pytest
import yaml

from harness import DUMMY_CONFIG
from slowctl.config import load_config, parse_config
from slowctl.drivers import supply_kind
from slowctl.stack.nodered import (
    BROKER_ID,
    PREFIX,
    FlowError,
    decrypt_credentials,
    encrypt_credentials,
    generate,
    merge,
    write_flows,
)


@pytest.fixture(scope="module")
def stack():
    return load_config(DUMMY_CONFIG)


@pytest.fixture(scope="module")
def flows(stack):
    return generate(stack)


def by_type(flows, kind):
    return [n for n in flows if n["type"] == kind]


def device_config(widget):
    """The device description the generator embedded into the widget."""
    m = re.search(r"const dev = (\{.*?\})\n", widget["format"])
    assert m, "no device description in the widget"
    return json.loads(m.group(1).replace("<\\/", "</"))


BENCH_PAGES = {"overview", "alarms", "log", "procedures", "trends", "environment", "health"}


def device_widgets(flows, stack):
    return {w["name"]: w for w in by_type(flows, "ui-template") if w["name"] in stack.devices}


def test_a_page_per_device_plus_the_bench_pages(stack, flows):
    pages = {p["path"]: p for p in by_type(flows, "ui-page")}
    assert set(pages) == {f"/{d}" for d in stack.devices} | {f"/{p}" for p in BENCH_PAGES}
    assert min(pages.values(), key=lambda p: p["order"])["path"] == "/overview"  # the landing page
    assert len(by_type(flows, "ui-base")) == 1 and by_type(flows, "ui-base")[0]["path"] == "/dashboard"
    widgets = {w["name"]: w for w in by_type(flows, "ui-template")}
    assert set(widgets) == set(stack.devices) | BENCH_PAGES | {"all HV off"}
    # the emergency bar is on every page (Dashboard 2's UI scope), every other widget in its page's group
    assert widgets["all HV off"]["templateScope"] == "widget:ui" and widgets["all HV off"]["ui"] == f"{PREFIX}ui"
    assert all(w["templateScope"] == "local" and w["group"] for n, w in widgets.items() if n != "all HV off")
    # one shared widget source, embedded per device: no hundreds of nodes
    assert len(flows) < 22 * len(stack.devices)  # (the bench pages: ~150 nodes, whatever the devices)
    for w in widgets.values():  # every placeholder filled
        assert "__SLOWCTL_" not in w["format"], w["name"]


def test_the_overview_shows_every_device_and_channel_of_the_config(stack, flows):
    widget = next(w for w in by_type(flows, "ui-template") if w["name"] == "overview")
    m = re.search(r"bench: (\[.*?\]), devices: \{\}", widget["format"])
    bench = {d["id"]: d for d in json.loads(m.group(1))}
    assert list(bench) == list(stack.devices)
    for dev_id, dev in stack.devices.items():
        assert [c["channel"] for c in bench[dev_id]["channels"]] == sorted(dev.channels)
    assert bench["hv"]["current_unit"] == "µA" and bench["climate"]["kind"] == "sensor"


def test_hv_devices_need_confirmation(stack, flows):
    described = {name: device_config(w) for name, w in device_widgets(flows, stack).items()}
    hv = {d for d, c in stack.devices.items() if supply_kind(c.model, [ch.vmax for ch in c.channels.values()]) == "hv"}
    assert {"hv", "hv2", "bias"} <= hv and "lv" not in hv  # the example bench's HV: the sensor bias supplies
    assert {d for d, c in described.items() if c["confirm"]} == hv
    assert described["hv"]["confirm_actions"] == ["on", "vset", "iset"]
    assert described["hv"]["current_unit"] == "µA" and described["lv"]["current_unit"] == "A"
    assert described["chiller"]["kind"] == "chiller" and described["climate"]["kind"] == "sensor"
    # the software ramp of the Keithley offers ramp rates; the HMP's channel 1 has none
    assert "rampup" in described["bias"]["channels"][0]["actions"]
    assert "rampup" not in described["lv"]["channels"][1]["actions"]
    # the service's own bounds, for the page's checks before a confirmation
    assert described["hv"]["channels"][0]["limits"]["vset"] == {"min": 0.0, "max": 600.0, "positive": False}
    assert described["hv"]["channels"][0]["limits"]["rampup"]["positive"] is True
    assert "OUTPUT_LOST" in described["hv"]["latched"] and "ISET_ABOVE_IMAX" not in described["hv"]["latched"]


def test_any_channel_above_60_v_counts_as_hv(stack):
    raw = yaml.safe_load(DUMMY_CONFIG.read_text())
    raw["devices"]["lv"]["channels"][2]["vmax"] = 0  # irrelevant; now make an LV channel an HV one:
    raw["devices"] = {"lv": raw["devices"]["lv"]}
    raw.pop("interlocks")  # they protect the devices just removed
    raw.pop("alarms")  # their limits are on readings of those devices
    raw.pop("procedures")  # its environment readings are of those devices too
    raw["devices"]["lv"]["model"] = "tti-mx100tp"
    raw["devices"]["lv"]["options"] = {"outputs": 3}
    raw["devices"]["lv"]["channels"] = {0: {"name": "x", "vmax": 61, "imax": 1}}
    flows = generate(parse_config(raw))
    assert device_config(next(w for w in by_type(flows, "ui-template") if w["name"] == "lv"))["confirm"]


def reachable(flows, start, through=lambda node: True):
    """Node ids a message from `start` can reach, following wires only out of nodes where `through`."""
    ids = {n["id"]: n for n in flows}
    seen, todo = set(), [start]
    while todo:
        nid = todo.pop()
        if nid != start and not through(ids[nid]):
            continue
        for port in ids[nid].get("wires", []):
            for nxt in port:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
    return seen


def test_status_is_never_wired_to_a_command(flows):
    """A widget does not pass its input on (passthru off), so no MQTT input reaches an MQTT output."""
    ids = {n["id"]: n for n in flows}
    outs = {n["id"] for n in by_type(flows, "mqtt out")}
    assert outs, "no command outputs generated"
    for widget in by_type(flows, "ui-template"):
        assert widget["passthru"] is False, widget["name"]
        assert widget["storeOutMessages"] is False, widget["name"]
    for mqtt_in in by_type(flows, "mqtt in"):
        reached = reachable(flows, mqtt_in["id"], through=lambda n: n["type"] != "ui-template")
        assert not reached & outs, f"{mqtt_in['topic']} reaches {[ids[o]['topic'] for o in reached & outs]}"
        assert any(ids[n]["type"] == "ui-template" for n in reached), f"{mqtt_in['topic']} feeds no widget"
    # and the only way into a command output is a widget's own output, through a guard
    guards = {
        "operator commands only",
        "operator acknowledgements only",
        "all HV off, operators only",
        "operator runs only",
        "ask the record",  # read-only questions, on the recorder's own topic only
    }
    for out in outs:
        feeders = [n for n in flows if any(out in port for port in n.get("wires", []))]
        assert len(feeders) == 1 and feeders[0]["name"] in guards
        widgets = [n for n in flows if any(feeders[0]["id"] in port for port in n.get("wires", []))]
        assert [w["type"] for w in widgets] == ["ui-template"]


def test_commands_go_to_the_own_device_never_retained(stack, flows):
    device_outs = [o for o in by_type(flows, "mqtt out") if o["id"].split(".")[1] in stack.devices]
    assert len(device_outs) == len([d for d in stack.devices if d != "climate"])  # sensors take no commands
    for out in device_outs:
        dev = out["id"][len(PREFIX) :].split(".")[0]
        assert out["topic"] == f"slowctl/{dev}/by/nodered/cmd"  # Node-RED's own: the ACL lets it write only there
        assert out["expiry"] == str(int(stack.devices[dev].max_command_age))
    for out in by_type(flows, "mqtt out"):
        assert out["retain"] == "false" and int(out["expiry"]) > 0
    guard = next(n for n in flows if n["id"] == f"{PREFIX}hv.guard")
    assert '"0": ["clear", "iset", "kill", "off", "on", "rampdown", "rampup", "vset"]' in guard["func"]
    ack = next(n for n in flows if n["id"] == f"{PREFIX}bench.out")
    assert ack["topic"] == "slowctl/alarms/by/nodered/cmd"
    assert (
        next(n for n in flows if n["id"] == f"{PREFIX}procedures.out")["topic"] == "slowctl/procedures/by/nodered/cmd"
    )
    # all HV off: the topic is each command's own (msg.topic), set by the function from the config only
    assert next(n for n in flows if n["id"] == f"{PREFIX}emergency.out")["topic"] == ""


def test_no_secret_in_the_flows(flows):
    broker = next(n for n in flows if n["id"] == BROKER_ID)
    assert broker["broker"] == "${MQTT_HOST}" and broker["port"] == "${MQTT_PORT}"
    assert "credentials" not in broker and "password" not in json.dumps(flows).lower().replace("passthru", "")


LAB_TAB = {"id": "abc123", "type": "tab", "label": "lab: interlock"}
LAB_NODE = {"id": "def456", "type": "inject", "z": "abc123", "wires": [[]]}
LAB_CONFIG = {"id": "cfg789", "type": "ui-group", "page": "slowctl.page.hv", "name": "extra"}


def test_merge_keeps_lab_tabs_and_replaces_generated_ones(flows):
    stale = {"id": f"{PREFIX}tab.removed-device", "type": "tab", "label": "slowctl: removed"}
    on_generated = {"id": "x1", "type": "debug", "z": f"{PREFIX}tab.hv", "wires": []}
    on_stale = {"id": "x2", "type": "debug", "z": stale["id"], "wires": []}
    old_widget = {"id": f"{PREFIX}hv.widget", "type": "ui-template", "z": f"{PREFIX}tab.hv", "format": "old"}
    merged, dropped = merge(flows, [LAB_TAB, LAB_NODE, LAB_CONFIG, stale, on_generated, on_stale, old_widget])
    ids = [n["id"] for n in merged]
    assert len(ids) == len(set(ids))
    assert {"abc123", "def456", "cfg789"} <= set(ids)
    assert stale["id"] not in ids and "x1" not in ids and "x2" not in ids
    assert sorted(dropped) == ["x1", "x2"]
    assert next(n for n in merged if n["id"] == f"{PREFIX}hv.widget")["format"] != "old"
    assert ids[: len(flows)] == [n["id"] for n in flows]  # generated tabs first


def test_write_flows_merges_and_keeps_lab_credentials(stack, tmp_path):
    path = tmp_path / "flows.json"
    path.write_text(json.dumps([LAB_TAB, LAB_NODE, {"id": "x1", "type": "debug", "z": f"{PREFIX}tab.hv"}]))
    (tmp_path / "flows_cred.json").write_text(json.dumps(encrypt_credentials({"def456": {"token": "t"}}, "k")))
    assert write_flows(stack, path, "k") == ["x1"]
    written = json.loads(path.read_text())
    assert {"abc123", "def456"} <= {n["id"] for n in written}
    assert json.loads((tmp_path / "flows.json.bak").read_text())[2]["id"] == "x1"
    creds = decrypt_credentials(json.loads((tmp_path / "flows_cred.json").read_text()), "k")
    assert creds == {"def456": {"token": "t"}, BROKER_ID: {"user": "nodered", "password": "${MQTT_PASSWORD_NODERED}"}}
    assert (tmp_path / "flows_cred.json").stat().st_mode & 0o077 == 0
    # idempotent
    before = path.read_text()
    assert write_flows(stack, path, "k") == []
    assert path.read_text() == before


def test_bad_inputs_get_clear_errors(stack, tmp_path):
    path = tmp_path / "flows.json"
    with pytest.raises(FlowError, match="NODERED_CREDENTIAL_SECRET"):
        write_flows(stack, path, "")
    path.write_text("{not json")
    with pytest.raises(FlowError, match="not valid JSON"):
        write_flows(stack, path, "k")
    path.write_text('{"a": 1}')
    with pytest.raises(FlowError, match="expected a Node-RED flow file"):
        write_flows(stack, path, "k")
    path.write_text("[]")
    (tmp_path / "flows_cred.json").write_text(json.dumps(encrypt_credentials({"a": {"b": "c"}}, "right")))
    with pytest.raises(FlowError, match="cannot be decrypted"):
        write_flows(stack, path, "wrong")


def test_credentials_match_node_reds_encryption(tmp_path):
    """Node-RED itself decrypts what we encrypt (same cipher, key and layout)."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if not node:
        pytest.skip("node not installed")
    blob = encrypt_credentials({"n1": {"user": "u", "password": "${X}"}}, "s3cret")
    js = (
        "const c=require('crypto');const b=JSON.parse(process.argv[1])['$'];"
        "const d=c.createDecipheriv('aes-256-ctr',c.createHash('sha256').update('s3cret').digest(),"
        "Buffer.from(b.substring(0,32),'hex'));"
        "process.stdout.write(d.update(b.substring(32),'base64','utf8')+d.final('utf8'))"
    )
    out = subprocess.run([node, "-e", js, json.dumps(blob)], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"n1": {"user": "u", "password": "${X}"}}
    # and what Node-RED writes on a deploy, we read (its encryptCredentials, same steps)
    js = (
        "const c=require('crypto');const iv=c.randomBytes(16);"
        "const e=c.createCipheriv('aes-256-ctr',c.createHash('sha256').update('s3cret').digest(),iv);"
        "process.stdout.write(JSON.stringify({'$':iv.toString('hex')+e.update(JSON.stringify({n2:{token:'t'}}),"
        "'utf8','base64')+e.final('base64')}))"
    )
    out = subprocess.run([node, "-e", js], capture_output=True, text=True, check=True).stdout
    assert decrypt_credentials(json.loads(out), "s3cret") == {"n2": {"token": "t"}}


def test_cli_writes_flows(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "data" / "flows.json"
    r = subprocess.run(
        [sys.executable, "-m", "slowctl", "nodered-flows", "--config", str(DUMMY_CONFIG), "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "NODERED_CREDENTIAL_SECRET": "k"},
    )
    assert r.returncode == 0, r.stderr
    devices = len(load_config(DUMMY_CONFIG).devices)
    assert f"flows for {devices} devices" in r.stdout and out.exists() and (out.parent / "flows_cred.json").exists()
    r = subprocess.run(
        [sys.executable, "-m", "slowctl", "nodered-flows", "--config", str(DUMMY_CONFIG), "--out", str(out)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "NODERED_CREDENTIAL_SECRET"},
    )
    assert r.returncode == 1 and "NODERED_CREDENTIAL_SECRET" in r.stderr


# --- who: the logged-in person in every command ------------------------------------------------


def test_every_browser_message_carries_its_client_data(flows):
    """Dashboard 2 adds msg._client (and our plugin the person) only when the ui-base includes client data;
    with ui-template among the client-constrained types, a message for one browser goes there only."""
    (base,) = by_type(flows, "ui-base")
    assert base["includeClientData"] is True
    assert "ui-template" in base["acceptsClientConfig"]
    for guard in (n for n in flows if n.get("name") == "operator commands only"):
        dev = guard["id"][len(PREFIX) :].split(".")[0]
        assert guard["outputs"] == 2 and guard["wires"] == [[f"{PREFIX}{dev}.out"], [f"{PREFIX}{dev}.merge"]]


def run_js(code: str, messages: list, flow_context: dict | None = None, env: dict | None = None) -> dict:
    """A function node's code run as Node-RED runs it (the body of a function of msg, node and context)."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if not node:
        pytest.skip("node not installed")
    js = (
        "const warnings=[];const node={warn:t=>warnings.push(t)};"
        "const store={};const context={get:k=>store[k],set:(k,v)=>{store[k]=v}};"
        "const fstore=JSON.parse(process.argv[3]);const flow={get:k=>fstore[k],set:(k,v)=>{fstore[k]=v}};"
        "const envs=JSON.parse(process.argv[4]);const env={get:k=>envs[k]};"
        "const global={get:k=>k==='archiveToken'?()=>envs.TOKEN||'':undefined};"
        "const f=new Function('msg','node','context','flow','env','global',process.argv[1]);"
        "const out=JSON.parse(process.argv[2]).map(m=>f(m,node,context,flow,env,global));"
        "process.stdout.write(JSON.stringify({out,warnings}))"
    )
    args = [node, "-e", js, code, json.dumps(messages), json.dumps(flow_context or {}), json.dumps(env or {})]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def test_the_guard_sends_for_the_logged_in_operator_only(flows):
    guard = next(n for n in flows if n["id"] == f"{PREFIX}lv.guard")
    cmd = {"action": "iset", "channel": 0, "value": 1.5, "id": "ui-x-1", "for": "someone-else", "extra": 1}

    def client(username, role):
        return {"_client": {"user": {"username": username, "role": role}, "socketId": "s1"}}

    got = run_js(
        guard["func"],
        [
            {"payload": cmd, **client("alice", "operator")},
            {"payload": cmd, **client("victor", "viewer")},
            {"payload": cmd},  # no client data at all
            {"payload": cmd, "_client": {"socketId": "s1"}},  # a socket without a (valid) login
            {"payload": cmd, **client("Alice!", "operator")},  # not a login name
            {"payload": {"action": "explode", "channel": 0}, **client("alice", "operator")},
        ],
    )
    sent, refused = got["out"][0]
    assert refused is None and set(sent) == {"payload"}
    assert {k: v for k, v in sent["payload"].items() if k != "ts"} == {
        "action": "iset",
        "channel": 0,
        "value": 1.5,
        "id": "ui-x-1",
        "for": "alice",
    }
    replies = []
    for out in got["out"][1:5]:
        sent, refused = out
        assert sent is None, out  # never sent anonymously or for a viewer
        assert refused["topic"] == "slowctl/lv/reply" and refused["payload"]["ok"] is False
        assert refused["payload"]["id"] == "ui-x-1" and refused["payload"]["action"] == "iset"
        replies.append(refused["payload"]["error"])
    assert replies[0] == "victor is a viewer: commands need an operator account"
    assert all(r.startswith("no logged-in person on this connection") for r in replies[1:])
    assert got["out"][1][1]["_client"]["socketId"] == "s1"  # the refusal goes back to that browser
    assert got["out"][5] is None  # not a command at all: dropped
    assert len(got["warnings"]) == 5


def test_the_merge_passes_a_refusal_to_its_browser_only(flows):
    merge = next(n for n in flows if n["id"] == f"{PREFIX}lv.merge")
    reply = {"id": "ui-x-1", "ok": False, "error": "no"}
    got = run_js(
        merge["func"],
        [
            {"topic": "slowctl/lv/reply", "payload": reply, "_client": {"socketId": "s1"}},
            {"topic": "slowctl/lv/reply", "payload": reply},
        ],
    )["out"]
    assert got[0]["_client"] == {"socketId": "s1"} and got[0]["payload"]["reply"] == reply
    assert "_client" not in got[1]


def client(username, role):
    return {"_client": {"user": {"username": username, "role": role}, "socketId": "s1"}}


def test_all_hv_off_sends_off_to_every_hv_output_for_an_operator_only(stack, flows):
    from slowctl.safety.rules import hv_outputs

    off = next(n for n in flows if n["id"] == f"{PREFIX}emergency.off")
    request = {"action": "off-all-hv", "id": "abc-1"}
    got = run_js(
        off["func"],
        [
            {"payload": request, **client("alice", "operator")},
            {"payload": request, **client("victor", "viewer")},
            {"payload": request},
            {"payload": {"action": "whoami"}, **client("victor", "viewer")},
            {"payload": {"action": "on", "channel": 0}, **client("alice", "operator")},
        ],
        {"availability": {"hv": "online", "hv2": "online", "bias": "offline"}},
    )["out"]
    commands, answer = got[0]
    expected = hv_outputs(stack.devices)
    assert {(c["topic"].split("/")[1], c["payload"]["channel"]) for c in commands} == set(expected)
    assert len(commands) == len(expected) and {"hv", "hv2", "bias"} == {d for d, _ in expected}
    for c in commands:
        assert c["topic"] == f"slowctl/{c['topic'].split('/')[1]}/by/nodered/cmd"  # Node-RED's own topic
        assert {k: v for k, v in c["payload"].items() if k != "ts"} == {
            "action": "off",
            "channel": c["payload"]["channel"],
            "id": "emergency-abc-1",
            "for": "alice",
        }
    run = answer["payload"]["run"]
    assert run["by"] == "alice" and "_client" not in answer  # every open page sees that it happened
    assert {o["result"] for o in run["outputs"] if o["device"] == "bias"} == {
        "device offline: sent, no service to answer"
    }
    for out in got[1:3]:  # a viewer, nobody: refused on that page, nothing sent
        assert out[0] is None and out[1]["payload"]["run"]["ok"] is False
    assert got[1][1]["payload"]["run"]["error"] == "victor is a viewer: commands need an operator account"
    assert got[1][1]["_client"]["socketId"] == "s1"
    assert got[3] == [
        None,
        {"payload": {"whoami": {"username": "victor", "role": "viewer"}}, **client("victor", "viewer")},
    ]
    assert got[4] is None  # not an emergency off: dropped


def test_an_acknowledgement_goes_out_for_an_operator_only(flows):
    ack = next(n for n in flows if n["id"] == f"{PREFIX}bench.ack")
    request = {"action": "ack", "device": "climate", "channel": 0, "kind": "humidity.HIHI", "id": "ui-a-1", "by": "x"}
    got = run_js(
        ack["func"],
        [
            {"payload": request, **client("alice", "operator")},
            {"payload": request, **client("victor", "viewer")},
            {"payload": dict(request, device="nowhere"), **client("alice", "operator")},
        ],
    )["out"]
    sent, refused = got[0]
    assert refused is None
    assert {k: v for k, v in sent["payload"].items() if k != "ts"} == {
        "action": "ack",
        "device": "climate",
        "channel": 0,
        "kind": "humidity.HIHI",
        "id": "ui-a-1",
        "for": "alice",
    }
    assert got[1][0] is None and got[1][1]["payload"]["error"].startswith("victor is a viewer")
    assert got[2] is None


def test_the_log_keeps_the_newest_events(flows):
    log = next(n for n in flows if n["id"] == f"{PREFIX}log.table")
    code = (
        log["func"]
        .replace("context.get('log', 'file')", "context.get('log')")
        .replace("context.set('log', log, 'file')", "context.set('log', log)")
    )
    events = [{"payload": {"ts": i, "device": "hv", "kind": "k", "message": str(i), "cause": "c"}} for i in range(505)]
    out = run_js(code, events)["out"]
    assert len(out[-1]["payload"]["log"]) == 500 and out[-1]["payload"]["log"][0]["ts"] == 5
    assert "'file')" in log["func"]  # kept in the file-backed store (settings.js contextStorage)
    # at start, what was kept goes to the page (not only with the next event); nothing else is injected
    replay = run_js(code, [*events[:3], {"topic": "replay"}])["out"][-1]
    assert [e["ts"] for e in replay["payload"]["log"]] == [0, 1, 2]
    (inject,) = by_type(flows, "inject")
    assert inject["topic"] == "replay" and inject["wires"] == [[log["id"]]] and inject["once"] is True


def test_a_run_starts_or_aborts_for_an_operator_only(flows):
    guard = next(n for n in flows if n["id"] == f"{PREFIX}procedures.guard")
    start = {"action": "start", "procedure": "iv_scan", "params": {"channel": "bias.0"}, "id": "ui-p-1", "for": "x"}
    got = run_js(
        guard["func"],
        [
            {"payload": start, **client("alice", "operator")},
            {"payload": {"action": "abort", "run": "r1", "id": "ui-p-2"}, **client("alice", "operator")},
            {"payload": start, **client("victor", "viewer")},
            {"payload": {"action": "delete", "run": "r1"}, **client("alice", "operator")},
        ],
    )["out"]
    assert {k: v for k, v in got[0][0]["payload"].items() if k != "ts"} == {
        "action": "start",
        "procedure": "iv_scan",
        "params": {"channel": "bias.0"},
        "id": "ui-p-1",
        "for": "alice",
    }
    assert {k: v for k, v in got[1][0]["payload"].items() if k != "ts"} == {
        "action": "abort",
        "run": "r1",
        "id": "ui-p-2",
        "for": "alice",
    }
    assert got[2][0] is None and got[2][1]["payload"]["error"].startswith("victor is a viewer")
    assert got[3] is None


def test_the_trends_follow_the_config(stack, flows):
    from slowctl.stack.nodered import trend_charts

    charts = {c["title"]: c for c in trend_charts(stack)}
    assert list(charts) == [
        "HV Vmon",
        "HV Imon",
        "LV Vmon",
        "LV Imon",
        "Temperature",
        "Humidity",
        "Dew point",
        "Dew-point margin",
    ]
    hv = [s["key"] for s in charts["HV Vmon"]["series"]]
    assert hv == [f"{d}.{c}.vmon" for d in ("hv", "hv2", "bias") for c in sorted(stack.devices[d].channels)]
    assert charts["HV Imon"]["unit"] == "µA" and charts["LV Imon"]["unit"] == "A"
    assert "chiller.0.temperature" in [s["key"] for s in charts["Temperature"]["series"]]
    table = next(n for n in flows if n["id"] == f"{PREFIX}trends.table")
    statuses = [n["topic"] for n in by_type(flows, "mqtt in") if n["wires"] == [[table["id"]]]]
    assert sorted(statuses) == sorted(f"slowctl/{d}/status" for d in stack.devices)
    # a status becomes points (margin computed), sent at most once per step
    status = {"ts": 1_000_000, "channels": [{"channel": 0, "temperature": 20.0, "dewpoint": 5.0, "humidity": 40.0}]}
    out = run_js(table["func"], [{"topic": "slowctl/climate/status", "payload": status}] * 2)["out"]
    assert out[0]["payload"]["history"]["climate.0.margin"] == [[1_000_000, 15.0]] and out[1] is None


def test_the_log_asks_the_record_and_the_answer_goes_to_the_asker_only(flows):
    ask = next(n for n in flows if n["id"] == f"{PREFIX}log.ask")
    answer = next(n for n in flows if n["id"] == f"{PREFIX}log.answer")
    (out,) = [n for n in by_type(flows, "mqtt out") if n["id"] == f"{PREFIX}log.ask.out"]
    assert (
        out["topic"] == "slowctl/recorder/by/nodered/cmd" and out["respTopic"] == "slowctl/recorder/reply/nodered/log"
    )
    alice = {"socketId": "s1", "user": {"username": "alice", "role": "viewer"}}
    question = {"payload": {"ask": "log", "device": "hv", "id": "log-x-1"}, "_client": alice}
    # without a recorder: the page is told at once, nothing is asked
    (told,) = run_js(ask["func"], [question])["out"]
    assert told[0] is None and told[1]["_client"] == alice
    assert told[1]["payload"]["answer"]["ok"] is False and "not running" in told[1]["payload"]["answer"]["error"]
    r = run_js(ask["func"], [question, {"payload": {"ask": "drop"}, "_client": alice}, {"payload": {"ask": "log"}}],
               {"recorder": "online"})  # fmt: skip
    sent, dropped, anonymous = r["out"]
    assert sent == [{"payload": {"action": "log", "id": "log-x-1", "limit": 500, "device": "hv"}}, None]
    assert dropped is None and anonymous is None and len(r["warnings"]) == 2
    # the answer goes to the browser that asked, once; an answer nobody waits for goes nowhere
    pending = {"questions.log": {"log-x-1": {"client": alice, "at": 0}}}
    reply = {"topic": "slowctl/recorder/reply/nodered/log", "payload": {"id": "log-x-1", "ok": True, "rows": []}}
    first, again = run_js(answer["func"], [reply, reply], pending)["out"]
    assert first["_client"] == alice and first["payload"]["answer"]["rows"] == [] and again is None


def test_the_archive_queries_are_the_generators_for_fixed_ranges_only(stack):
    from slowctl.stack.nodered import ARCHIVE_POINTS, ARCHIVE_RANGES, archive_queries, trend_charts

    charts = trend_charts(stack)
    for span, seconds in ARCHIVE_RANGES.items():
        statements = archive_queries(charts, span)
        # one per chart and measurement: the temperature chart reads the sensors and the chillers' baths
        measurements = {(s["chart"], re.search(r'FROM "(\w+)"', s["q"]).group(1)) for s in statements}
        assert len(statements) == len(measurements) == len(charts) + 1
        assert {("Temperature", "environment"), ("Temperature", "chiller")} <= measurements
        window = int(re.search(r"GROUP BY time\((\d+)s\)", statements[0]["q"]).group(1))
        assert seconds / window + 1 <= ARCHIVE_POINTS  # bounded points per series, whatever the range
        assert all(f"WHERE time > now() - {span} AND (" in s["q"] for s in statements)
    by_field = {(s["chart"], s["field"]): s["q"] for s in archive_queries(charts, "6h")}
    assert by_field[("HV Vmon", "vmon")].startswith('SELECT mean("vmon") AS "vmon" FROM "supply" WHERE')
    assert """("device" = 'hv' AND "channel" = '2')""" in by_field[("HV Vmon", "vmon")]
    assert "\"device\" = 'lv'" not in by_field[("HV Vmon", "vmon")]  # the LV channels have their own chart
    margin = by_field[("Dew-point margin", "margin")]
    assert margin.startswith('SELECT mean("temperature") - mean("dewpoint") AS "margin" FROM "environment"')
    for bad in ("2h", "1h; DROP", ""):
        with pytest.raises(FlowError, match="not one of 1h, 6h, 24h, 7d, 30d"):
            archive_queries(charts, bad)


def test_the_archive_is_asked_with_the_read_only_token_for_a_listed_range_only(flows):
    ask = next(n for n in flows if n["id"] == f"{PREFIX}trends.archive")
    (http,) = by_type(flows, "http request")
    assert ask["wires"] == [[http["id"]], [f"{PREFIX}trends.widget"]] and http["url"] == "" and http["ret"] == "obj"
    page = next(n for n in flows if n["id"] == f"{PREFIX}trends.widget")
    assert page["wires"] == [[ask["id"]]]
    alice = {"socketId": "s1", "user": {"username": "alice", "role": "viewer"}}
    env = {"INFLUXDB_URL": "http://influxdb:8086/", "INFLUXDB_BUCKET": "slowctl", "TOKEN": "read-only"}
    asked = [{"payload": {"archive": r}, "_client": alice} for r in ("24h", "2y", "SELECT 1", None)]
    good, *bad = run_js(ask["func"], asked, env=env)["out"]
    sent = good[0]
    assert good[1] is None and sent["url"] == "http://influxdb:8086/query" and sent["method"] == "POST"
    assert sent["headers"]["Authorization"] == "Token read-only" and sent["_client"] == alice
    assert "db=slowctl&epoch=ms&q=SELECT%20mean" in sent["payload"] and "now()%20-%2024h" in sent["payload"]
    for refused in bad:  # nothing to InfluxDB; the page is told why
        assert (
            refused[0] is None
            and "refused: not one of 1h, 6h, 24h, 7d, 30d" in refused[1]["payload"]["archive"]["error"]
        )
    # natively (no INFLUXDB_URL) or before influx-init wrote the token: said, not asked
    (native,) = run_js(ask["func"], asked[:1])["out"]
    assert native[0] is None and native[1]["payload"]["archive"]["error"].startswith("no archive here")
    (early,) = run_js(ask["func"], asked[:1], env={**env, "TOKEN": ""})["out"]
    assert "no read-only token" in early[1]["payload"]["archive"]["error"]
