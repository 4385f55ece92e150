"""The record read back over MQTT: the recorder answers read-only questions (docs/records.md) with the same
queries as `slowctl log` and `slowctl procedure show`, through the real broker (its ACL) and FerretDB."""

from __future__ import annotations

import json
import uuid

import pytest
from tests.records import records_stack

from harness import DummyStack, Probe, send, wait_until
from slowctl import Client
from slowctl.mqtt import publish_properties

ALICE_PW = "alice's long password"
VERA_PW = "vera's long password"
NOT_AUTHORIZED = 135


def fast_bias(c: dict) -> None:
    c["devices"]["bias"]["channels"][0].update(ramp_max=50, rampup=50, rampdown=50)  # a scan of seconds


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    s = records_stack(tmp_path_factory.mktemp("questions"), fast_bias)
    assert s.user_add("alice", "operator", ALICE_PW).returncode == 0
    assert s.user_add("vera", "viewer", VERA_PW).returncode == 0
    yield s
    s.stop()


@pytest.fixture(scope="module")
def vera(rec):
    p = rec.probe("vera", VERA_PW)
    p.subscribe("slowctl/recorder/reply/#", "slowctl/recorder/reply")
    return p


def ask(probe: Probe, login: str, body: dict | str, response: str | None = None) -> dict:
    """A question as the UI asks it (response topic + correlation data); the answer meant for it."""
    key = uuid.uuid4().hex
    response = response or f"slowctl/recorder/reply/{login}/{key}"
    props = publish_properties(ResponseTopic=response, CorrelationData=key.encode())
    payload = body if isinstance(body, str) else json.dumps(body)
    assert probe.publish(f"slowctl/recorder/by/{login}/cmd", payload, properties=props) == 0
    msg = probe.wait_message(
        "slowctl/recorder/reply/#", lambda m: getattr(m.properties, "CorrelationData", None) == key.encode(), 10
    )
    return json.loads(msg.payload)


def cli_log(s: DummyStack, *args: str) -> list[dict]:
    r = s.slowctl("log", "--state-dir", str(s.state), "--json", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_the_log_is_what_slowctl_log_says_and_a_viewer_may_read_it(rec, vera):
    alice = rec.probe("alice", ALICE_PW)
    alice.subscribe("slowctl/lv/reply")
    assert send(alice, "slowctl/lv/by/alice/cmd/vset/1", "1.5")["ok"]
    assert not send(alice, "slowctl/lv/by/alice/cmd/vset/1", "999")["ok"]  # refused: above the limit
    wait_until(lambda: len(cli_log(rec, "--device", "lv", "--user", "alice")) == 2, 10, what="the record")
    answer = ask(vera, "vera", {"action": "log", "device": "lv", "limit": 5, "id": "q1"})
    assert answer["ok"] and answer["id"] == "q1" and answer["by"] == "vera", answer
    expected = cli_log(rec, "--device", "lv", "--limit", "5")
    key = ("type", "who", "device", "channel", "what", "outcome", "reason")
    assert [tuple(r[k] for k in key) for r in answer["rows"]] == [tuple(r[k] for k in key) for r in expected]
    mine = [r for r in answer["rows"] if r["who"] == "alice"]
    assert [(r["what"], r["outcome"]) for r in mine] == [("vset 1.5", "ok"), ("vset 999.0", "refused")]
    assert all(isinstance(r["ts"], int) for r in answer["rows"])  # ms, as the live events have it
    two = ask(vera, "vera", {"action": "log", "device": "lv", "limit": 2})
    assert two["rows"] == answer["rows"][-2:]  # the newest, oldest first
    only = ask(vera, "vera", {"action": "log", "device": "lv", "kind": "command", "since": "10m"})
    assert {r["type"] for r in only["rows"]} == {"command"} and len(only["rows"]) >= 2


@pytest.mark.parametrize(
    "body, error",
    [
        ({"action": "log", "limit": 501}, "limit: expected a whole number 1..500"),
        ({"action": "log", "limit": "5"}, "limit: expected a whole number"),
        ({"action": "log", "device": {"$ne": None}}, "device: expected a name"),
        ({"action": "log", "device": "hv.*"}, "device: expected a name"),
        ({"action": "log", "since": "yesterday"}, "since: time 'yesterday'"),
        ({"action": "log", "$where": "1"}, "unknown field(s) for log: $where"),
        ({"action": "drop"}, "unknown action 'drop'"),
        ({"action": "run"}, "the run's id is required"),
        ({"action": "run", "run": "19990101T000000"}, "no run '19990101T000000' in the record"),
        ({"action": "runs", "for": "alice"}, "'for' is refused from vera"),
        ("not json", "expected a JSON object"),
    ],
)
def test_bad_questions_are_refused_with_the_reason(rec, vera, body, error):
    answer = ask(vera, "vera", body)
    assert answer["ok"] is False and error in answer["error"], answer
    assert "rows" not in answer and "runs" not in answer


def test_questions_are_not_recorded_and_answers_stay_in_the_reply_tree(rec, vera):
    ask(vera, "vera", {"action": "log", "limit": 1})
    # a response topic outside the recorder's reply tree is not used: the answer goes to its reply topic
    key = uuid.uuid4().hex
    props = publish_properties(ResponseTopic="slowctl/hv/cmd", CorrelationData=key.encode())
    vera.publish("slowctl/recorder/by/vera/cmd", json.dumps({"action": "runs", "id": key}), properties=props)
    assert vera.wait_json("slowctl/recorder/reply", lambda r: r["id"] == key)["ok"]
    # a retained question would be asked again at every connection: refused
    key = uuid.uuid4().hex
    props = publish_properties(ResponseTopic=f"slowctl/recorder/reply/vera/{key}")
    vera.publish(
        "slowctl/recorder/by/vera/cmd", json.dumps({"action": "runs", "id": key}), retain=True, properties=props
    )
    vera.publish("slowctl/recorder/by/vera/cmd", "", retain=True)  # and gone again
    refused = vera.wait_json(f"slowctl/recorder/reply/vera/{key}", lambda r: r["id"] == key)
    assert refused["ok"] is False and "retained" in refused["error"] and "runs" not in refused
    assert cli_log(rec, "--device", "recorder") == []  # reads: not commands of the record


def test_who_may_ask(rec, vera):
    # a viewer asks under her own name only; a device service asks nothing
    assert vera.publish("slowctl/recorder/by/alice/cmd", json.dumps({"action": "runs"})) == NOT_AUTHORIZED
    assert vera.publish("slowctl/hv/by/vera/cmd", json.dumps({"action": "on", "channel": 0})) == NOT_AUTHORIZED
    hv = rec.probe("hv")
    assert hv.publish("slowctl/recorder/by/hv/cmd", json.dumps({"action": "runs"})) == NOT_AUTHORIZED
    for login in ("viewer", "operator", "nodered"):
        p = rec.probe(login)
        p.subscribe("slowctl/recorder/reply/#")
        assert ask(p, login, {"action": "log", "limit": 1})["ok"], login
    # the recorder answers on its reply tree only: its login cannot publish a command or an event
    recorder = rec.probe("recorder")
    assert recorder.publish("slowctl/hv/by/recorder/cmd", "{}") == NOT_AUTHORIZED
    assert recorder.publish("slowctl/recorder/event", "{}") == NOT_AUTHORIZED


def test_runs_and_a_run_with_its_points(rec, vera):
    with Client("127.0.0.1", rec.port, "alice", ALICE_PW, timeout=10) as alice:
        run = alice.start_procedure(
            "iv_scan", {"channel": "bias.0", "stop": -40, "step": 20, "settle": 0.2, "samples": 1}
        )
        final = alice.wait_for_run(run, 90)
    assert final["state"] == "completed", final

    def recorded() -> dict | None:
        runs = ask(vera, "vera", {"action": "runs", "limit": 10})["runs"]
        return next((r for r in runs if r["_id"] == run and r.get("outcome") == "completed"), None)

    doc = wait_until(recorded, 20, interval=0.5, what="the run in the record")
    assert doc["by"] == "alice" and doc["channels"] == ["bias.0"] and isinstance(doc["started"], int)
    answer = ask(vera, "vera", {"action": "run", "run": run[:-3]})  # a unique beginning is enough
    assert answer["ok"] and answer["run"]["_id"] == run and answer["complete"] is True, answer
    assert [p["v"] for p in answer["points"]] == [0, -20, -40]
    assert all(isinstance(p["i"], float) for p in answer["points"])
    only_iv = ask(vera, "vera", {"action": "runs", "procedure": "burn_in"})
    assert only_iv["ok"] and only_iv["runs"] == []
