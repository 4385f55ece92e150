"""Commands through the real broker against the native dummy stack: every action, every bad input."""

import json
import time

import pytest

from harness import channel, send, v5_props, wait_until

pytestmark = pytest.mark.stack


@pytest.fixture
def op(operator):
    operator.subscribe("slowctl/+/reply", "slowctl/+/status", "slowctl/+/availability")
    operator.clear()
    return operator


def test_every_action_plain_topics(op):
    assert send(op, "slowctl/hv/cmd/iset/1", "50e-6")["ok"]
    assert send(op, "slowctl/hv/cmd/rampup/1", "40")["ok"]
    assert send(op, "slowctl/hv/cmd/rampdown/1", "50")["ok"]
    r = send(op, "slowctl/hv/cmd/vset/1", "60")
    assert isinstance(r.pop("before"), float), "the setting before, read from the instrument"
    assert r == {
        "id": None, "action": "vset", "channel": 1, "value": 60.0, "by": "operator", "for": None,
        "ok": True, "error": None, "applied": 60.0,
    }  # fmt: skip
    ch = channel(op, "hv", 1, lambda c: c["vset"] == 60)
    assert ch["iset"] == pytest.approx(50e-6) and ch["rampup"] == 40 and ch["rampdown"] == 50
    assert send(op, "slowctl/hv/cmd/on/1", "")["ok"]
    channel(op, "hv", 1, lambda c: c["on"] and c["state"] in ("RAMP_UP", "ON"))
    channel(op, "hv", 1, lambda c: c["state"] == "ON" and abs(c["vmon"] - 60) < 1, timeout=6)
    assert send(op, "slowctl/hv/cmd/off/1", "")["ok"]
    channel(op, "hv", 1, lambda c: c["state"] in ("RAMP_DOWN", "OFF"))
    channel(op, "hv", 1, lambda c: c["state"] == "OFF" and c["vmon"] < 1, timeout=6)
    assert send(op, "slowctl/hv/cmd/clear/1", "")["ok"]


def test_json_command_with_id_and_v5_response_topic(op):
    op.subscribe("slowctl/lv/reply/mine")
    props = v5_props(ResponseTopic="slowctl/lv/reply/mine", CorrelationData=b"corr-42")
    reply = send(
        op, "slowctl/lv/cmd", json.dumps({"action": "iset", "channel": 2, "value": 0.5, "id": "a1"}), properties=props
    )
    assert isinstance(reply["before"], float)
    assert {k: v for k, v in reply.items() if k != "before"} == {
        "id": "a1",
        "action": "iset",
        "channel": 2,
        "value": 0.5,
        "by": "operator",
        "for": None,
        "ok": True,
        "error": None,
        "applied": 0.5,
    }
    mine = op.wait_message("slowctl/lv/reply/mine")
    assert json.loads(mine.payload) == reply
    assert mine.properties.CorrelationData == b"corr-42"


def test_wildcard_response_topic_is_refused_and_the_service_lives_on(op):
    props = v5_props(ResponseTopic="slowctl/lv/reply/+", CorrelationData=b"c")
    reply = send(op, "slowctl/lv/cmd", json.dumps({"action": "iset", "channel": 2, "value": 0.3}), properties=props)
    assert not reply["ok"] and "without wildcards" in reply["error"]
    assert send(op, "slowctl/lv/cmd/iset/2", "0.3")["ok"]


def test_response_topic_outside_the_device_is_refused(op):
    props = v5_props(ResponseTopic="slowctl/hv/reply/x", CorrelationData=b"c")
    reply = send(op, "slowctl/lv/cmd", json.dumps({"action": "iset", "channel": 2, "value": 0.4}), properties=props)
    assert not reply["ok"] and "response topic" in reply["error"]


BAD = [
    ("slowctl/hv/cmd", "{not json", "malformed JSON"),
    ("slowctl/hv/cmd", "[1, 2]", "JSON object"),
    ("slowctl/hv/cmd", json.dumps({"action": "explode", "channel": 0}), "unknown action"),
    ("slowctl/hv/cmd/explode/0", "", "unknown action"),
    ("slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 7, "value": 1}), "unknown channel 7"),
    ("slowctl/hv/cmd", json.dumps({"action": "vset", "channel": -1, "value": 1}), "negative"),
    ("slowctl/hv/cmd/vset/-1", "1", "not a channel number"),
    ("slowctl/hv/cmd/vset/x", "1", "not a channel number"),
    ("slowctl/hv/cmd/vset/0", "abc", "not a number"),
    ("slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 0, "value": "12"}), "must be a number"),
    ("slowctl/hv/cmd/vset/0", "nan", "not a number"),
    ("slowctl/hv/cmd", '{"action": "vset", "channel": 0, "value": NaN}', "finite"),
    ("slowctl/hv/cmd/vset/0", "inf", "not a number"),
    ("slowctl/hv/cmd", '{"action": "vset", "channel": 0, "value": 1e999}', "finite"),
    ("slowctl/hv/cmd/vset/0", "601", "exceeds the configured limit vmax=600"),
    ("slowctl/hv/cmd/vset/0", "-5", "must be >= 0"),
    ("slowctl/hv/cmd/iset/0", "1e-3", "exceeds the configured limit imax"),
    ("slowctl/hv/cmd/rampup/0", "500", "ramp_max"),
    ("slowctl/hv/cmd/vset/0", "", "needs a value"),
    ("slowctl/hv/cmd/on/0", "1", "takes no value"),
    ("slowctl/hv/cmd/vset", "1", "cmd/<action>/<channel>"),
    ("slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 0, "value": 1, "ts": time.time() - 60}), "stale"),
    ("slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 0, "value": 1, "ts": "2020-01-01T00:00:00Z"}), "stale"),
    ("slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 0, "value": 1, "ts": time.time() + 86400}), "future"),
    ("slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 0, "value": 1, "colour": "red"}), "unknown field"),
    ("slowctl/climate/cmd/on/0", "", "not supported by this device"),
    ("slowctl/lv/cmd/vset/3", "13", "vmax=12"),
    ("slowctl/lv/cmd/rampup/1", "1", "not supported"),  # LV channel 1 has no software ramp configured
    ("slowctl/hv/cmd/vset/0", "\xff".encode("latin-1"), "UTF-8"),
    ("slowctl/hv/cmd", "[" * 60000, "malformed JSON"),  # deeper than Python's recursion limit
    ("slowctl/hv/cmd", '{"action": "vset", "channel": 0, "value": ' + "9" * 5000 + "}", "malformed JSON"),
]


@pytest.mark.parametrize("topic,payload,reason", BAD, ids=[f"{t.split('/', 2)[2]}:{str(p)[:20]}" for t, p, _ in BAD])
def test_bad_input_is_refused_and_changes_nothing(op, topic, payload, reason):
    device = topic.split("/")[1]
    before = op.wait_json(f"slowctl/{device}/status", lambda d: d["state"] == "ok")
    reply = send(op, topic, payload)
    assert reply["ok"] is False
    assert reason in reply["error"], reply
    # the next poll shows the same setpoints
    after = op.wait_json(f"slowctl/{device}/status", lambda d: d["seq"] > before["seq"] + 1)
    keys = ("on", "vset", "iset", "rampup", "rampdown")
    assert [{k: c.get(k) for k in keys} for c in after["channels"]] == [
        {k: c.get(k) for k in keys} for c in before["channels"]
    ]


def test_oversized_payload_is_refused(op):
    reply = send(op, "slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 0, "value": 1, "id": "x" * 70000}))
    assert not reply["ok"] and "payload too large" in reply["error"]


def test_retained_command_is_refused_and_never_replayed(op, stack):
    reply = send(op, "slowctl/lv/cmd/vset/3", "5", retain=True)
    assert not reply["ok"] and "retained" in reply["error"]
    op.publish("slowctl/lv/cmd/vset/3", "", retain=True)  # clear it from the broker


def test_service_survives_bad_input(op, stack):
    for topic, payload, _ in BAD:
        op.publish(topic, payload)

    def replies_settled():  # every refusal answered before the good command is counted
        n = len(op.seen("slowctl/+/reply"))
        time.sleep(0.3)
        return len(op.seen("slowctl/+/reply")) == n

    wait_until(replies_settled, 10, what="the refusals' replies")
    assert send(op, "slowctl/lv/cmd/iset/3", "0.25")["ok"]
    channel(op, "lv", 3, lambda c: c["iset"] == 0.25)
    assert op.last["slowctl/hv/availability"].payload == b"online"  # retained: arrived at subscribe
    assert stack.proc.poll() is None
    assert "Traceback" not in stack.service_log("service-hv")


def test_status_and_metrics_payloads(op, stack):
    viewer = stack.probe("viewer")
    viewer.subscribe("slowctl/+/metrics", "slowctl/+/health", "slowctl/+/status")
    status = viewer.wait_json("slowctl/climate/status", lambda d: d["state"] == "ok")
    assert set(status) >= {"device", "model", "ts", "seq", "state", "channels"}
    box = status["channels"][0]
    assert set(box) == {"channel", "name", "temperature", "humidity", "dewpoint"}
    assert box["dewpoint"] < box["temperature"]
    hv = viewer.wait_json("slowctl/hv/status", lambda d: d["state"] == "ok")["channels"][0]
    assert set(hv) >= {"channel", "name", "on", "vset", "vmon", "iset", "imon", "rampup", "rampdown", "state"}
    lines = viewer.wait_message("slowctl/hv/metrics").payload.decode().splitlines()
    assert len(lines) == 4 and lines[0].startswith("supply,channel=0,device=hv,kind=hv,name=sensor-A ")
    assert "on=false" in lines[0] or "on=true" in lines[0]
    health = viewer.wait_json("slowctl/hv/health")
    assert set(health) >= {"uptime", "poll_cycles", "last_poll_duration", "consecutive_errors", "connected", "restarts"}


def test_viewer_cannot_command(stack):
    viewer = stack.probe("viewer")
    viewer.wait_connected()
    viewer.subscribe("slowctl/lv/reply")
    code = viewer.publish("slowctl/lv/cmd/on/0", "")
    assert code.is_failure and code.value == 135  # Not authorized
    time.sleep(0.3)
    assert viewer.seen("slowctl/lv/reply") == []
