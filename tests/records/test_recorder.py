"""The record: the native stack's recorder writes every command, reply and event into FerretDB (a real
MongoDB-wire server, built by scripts/build-test-tools.sh), and `slowctl log` reads it back.

Outages: FerretDB frozen (SIGSTOP: its clients time out) and the recorder killed; nothing sent meanwhile
may be missing afterwards, and the order stays. A recorder whose journal is damaged and whose MongoDB
refuses it starts anyway, keeps the damaged file aside, buffers and raises an alarm.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.records import records_stack
from tests.tools import tool

from harness import DummyStack, send, wait_until

PW = "alice's long password"


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    s = records_stack(tmp_path_factory.mktemp("records"))
    assert "records          FerretDB" in s.log(), s.log()
    assert s.user_add("alice", "operator", PW).returncode == 0
    yield s
    s.stop()


def log(s: DummyStack, *args: str) -> subprocess.CompletedProcess:
    return s.slowctl("log", "--state-dir", str(s.state), *args)


def entries(s: DummyStack, *args: str) -> list[dict]:
    r = log(s, "--json", "--limit", "10000", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def commands(s: DummyStack, device: str, channel: int) -> list[dict]:
    return entries(s, "--kind", "command", "--device", device, "--channel", str(channel))


def test_who_did_what_with_outcome_and_values_before_and_after(rec):
    alice = rec.probe("alice", PW)
    alice.subscribe("slowctl/hv/reply")
    assert send(alice, "slowctl/hv/by/alice/cmd/vset/1", "12")["ok"]
    nodered = rec.probe("nodered")
    nodered.subscribe("slowctl/hv/reply")
    body = {"action": "vset", "channel": 1, "value": 14, "for": "alice", "id": "ui-7"}
    assert send(nodered, "slowctl/hv/by/nodered/cmd", json.dumps(body))["ok"]
    op = rec.probe("operator")
    op.subscribe("slowctl/hv/reply")
    assert not send(op, "slowctl/hv/cmd/vset/1", "99999")["ok"]

    wait_until(lambda: len([c for c in commands(rec, "hv", 1) if c["outcome"] != "no reply yet"]) >= 3, 10)
    got = commands(rec, "hv", 1)[-3:]
    assert [(c["who"], c["what"], c["outcome"]) for c in got] == [
        ("alice", "vset 12.0", "ok"),
        ("nodered for alice", "vset 14", "ok"),
        ("operator", "vset 99999.0", "refused"),
    ], got
    assert (got[0]["after"], got[1]["before"], got[1]["after"]) == (12.0, 12.0, 14.0)
    assert "exceeds the configured limit vmax" in got[2]["reason"]
    assert [c["who"] for c in entries(rec, "--user", "alice", "--kind", "command")] == ["alice", "nodered for alice"]
    text = log(rec, "--device", "hv", "--kind", "command").stdout.splitlines()
    assert "alice" in text[-3] and "vset 12.0" in text[-3] and "ok (0 -> 12)" in text[-3], text[-3]


def test_events_filters_and_formats(rec):
    started = entries(rec, "--kind", "service_start")
    assert {e["device"] for e in started} == set(rec.config["devices"]), "every service's start is recorded"
    assert all(e["type"] == "event" and e["severity"] == "info" for e in started)
    assert entries(rec, "--since", "1h", "--kind", "service_start") == started
    assert entries(rec, "--until", "1h") == [], "nothing older than an hour"
    assert all(e["device"] == "climate" for e in entries(rec, "--device", "climate"))
    ts = [e["ts"] for e in entries(rec)]
    assert ts == sorted(ts), "newest last"
    csv = log(rec, "--csv", "--kind", "service_start").stdout.splitlines()
    assert csv[0] == "ts,type,who,device,channel,what,outcome,reason,before,after,severity" and len(csv) > 1
    bad = log(rec, "--since", "yesterday")
    assert bad.returncode == 2 and "expected ISO 8601" in bad.stderr and "Traceback" not in bad.stderr


def test_status_has_a_line_for_the_recorder_not_a_device_row(rec):
    r = rec.slowctl("status", "--state-dir", str(rec.state))
    assert r.returncode == 0, r.stderr
    rows = [
        line.split()[0]
        for line in r.stdout.splitlines()[1:]
        if line and not line.startswith(("interlock", "recorder", "procedure runner"))
    ]
    assert "recorder" not in rows and set(rows) == set(rec.config["devices"]), r.stdout
    assert "recorder online: MongoDB ok" in r.stdout, r.stdout
    assert "procedure runner online: running: none (slowctl procedure list)" in r.stdout, r.stdout


def test_follow_prints_new_entries(rec):
    follower = subprocess.Popen(
        [sys.executable, "-m", "slowctl", "log", "--follow", "--json", "--kind", "command", "--device", "lv"]
        + ["--state-dir", str(rec.state), "--since", "2s"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=rec.workdir,
    )
    try:
        time.sleep(1.5)
        op = rec.probe("operator")
        op.subscribe("slowctl/lv/reply")
        assert send(op, "slowctl/lv/cmd/iset/1", "0.55")["ok"]
        line = follower.stdout.readline()
        entry = json.loads(line)
        assert (entry["device"], entry["what"], entry["who"]) == ("lv", "iset 0.55", "operator"), entry
    finally:
        follower.terminate()
        follower.wait(10)


def burst(s: DummyStack, values: list[float]) -> None:
    op = s.probe("operator")
    op.subscribe("slowctl/lv/reply")
    for v in values:
        assert send(op, "slowctl/lv/cmd/iset/1", f"{v:g}")["ok"]


def recorder_alarm(viewer, kind: str) -> bool:
    """The alarm handler's latest list has the recorder's alarm `kind`."""
    msgs = viewer.seen("slowctl/alarms/summary")
    alarms = json.loads(msgs[-1].payload)["alarms"] if msgs else []
    return any(a["device"] == "recorder" and a["kind"] == kind for a in alarms)


def test_a_mongodb_outage_loses_nothing_and_raises_an_alarm(rec):
    viewer = rec.probe("viewer")
    viewer.subscribe("slowctl/recorder/health", "slowctl/alarms/summary")
    ferretdb = rec.pids()["ferretdb"]
    values = [round(0.1 + 0.01 * i, 2) for i in range(20)]
    os.kill(ferretdb, signal.SIGSTOP)
    try:
        burst(rec, values)
        wait_until(lambda: recorder_alarm(viewer, "NOT_WRITING"), 20, what="the recorder's alarm")
        health = json.loads(viewer.seen("slowctl/recorder/health")[-1].payload)
        assert health["buffered"] > 0 and health["mongodb"] != "ok", health
    finally:
        os.kill(ferretdb, signal.SIGCONT)
    wait_until(lambda: [c["what"] for c in commands(rec, "lv", 1)][-20:] == [f"iset {v}" for v in values], 30)


def test_a_recorder_killed_loses_nothing_it_had_not_written(rec):
    before = rec.pids()["recorder"]
    os.kill(before, signal.SIGKILL)
    values = [round(0.3 + 0.01 * i, 2) for i in range(10)]
    burst(rec, values)  # while it is dead: the broker keeps them in its persistent session
    wait_until(lambda: rec.pids().get("recorder") not in (None, before), 20, what="the supervisor's restart")
    wait_until(lambda: [c["what"] for c in commands(rec, "lv", 1)][-10:] == [f"iset {v}" for v in values], 30)


def test_a_damaged_journal_and_a_refusing_mongodb(rec, tmp_path):
    """A second recorder: its journal has a damaged segment, MongoDB refuses its login. (It shares the
    recorder's login and topics: its last words leave `slowctl/recorder/availability` offline, so the module's
    other tests come before it.)"""
    journal = tmp_path / "recorder" / "journal"
    journal.mkdir(parents=True)
    (journal / f"{1:016d}.jsonl").write_text('[1,{"t":"slowctl/lv/event","p":"{}","at":1}]\n[2,{"t":broken\n')
    viewer = rec.probe("viewer")
    viewer.subscribe("slowctl/alarms/event")
    env = {
        **os.environ,
        "SLOWCTL_MQTT_USERNAME": "recorder",
        "SLOWCTL_MQTT_PASSWORD": rec.credentials["recorder"],
        "SLOWCTL_MONGO_HOST": "127.0.0.1",
        "SLOWCTL_MONGO_PORT": str(rec.config["records"]["mongo_port"]),
        "SLOWCTL_MONGO_DATABASE": "slowctl",
        "SLOWCTL_MONGO_USER": "slowctl",
        "SLOWCTL_MONGO_PASSWORD": "not-the-password",
    }
    out = tmp_path / "recorder.log"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slowctl", "recorder", "--config", str(rec.state / "stack.yaml")]
            + ["--state-dir", str(tmp_path)],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "buffering on disk" in out.read_text(), 20, what="the refusal")
        assert "line 2 unreadable" in out.read_text() and "kept aside" in out.read_text(), out.read_text()
        assert list(journal.glob("*.corrupt-*")), "the damaged file is kept for a person"
        burst(rec, [0.5, 0.51, 0.52])
        raised = lambda: [  # noqa: E731
            e
            for e in (json.loads(m.payload) for m in viewer.seen("slowctl/alarms/event"))
            if e["kind"] == "alarm_raised" and e["device"] == "recorder" and "NOT_WRITING" in str(e["cause"])
        ]
        wait_until(raised, 20, what="an alarm from the refused recorder")
        assert "Authentication failed" in raised()[0]["message"] or "auth" in raised()[0]["message"].lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    from slowctl.diskqueue import DiskQueue

    kept = DiskQueue(journal, 10**9)
    assert len(kept) >= 1 + 3 * 2, "the replayable record, and each command with its reply, all still buffered"


def test_without_ferretdb_the_stack_says_so_and_log_says_where_to_look(own_stack, monkeypatch):
    from harness import free_port

    monkeypatch.setenv("SLOWCTL_FERRETDB", "/nonexistent/ferretdb")
    s = own_stack(lambda c: c.update(records={"mongo_port": free_port()})).start()
    lines = [line for line in s.log().splitlines() if "MongoDB-wire server" in line]
    assert len(lines) == 1 and "no recorder" in lines[0], s.log()
    r = log(s)
    assert r.returncode == 1 and "keeps no record" in r.stderr and str(s.state / "logs") in r.stderr, r.stderr


def test_a_full_journal_holds_messages_back_and_loses_none(own_stack):
    """A journal of 4 KiB while MongoDB is frozen: the recorder stops taking messages (unacknowledged, the
    broker keeps them), says so with an alarm, and once MongoDB is back every one of them arrives."""
    from harness import free_port

    os.environ.setdefault("SLOWCTL_FERRETDB", str(tool("ferretdb")))
    s = own_stack(lambda c: c.update(records={"mongo_port": free_port(), "buffer_mb": 0.004})).start()
    viewer = s.probe("viewer")
    viewer.subscribe("slowctl/recorder/health", "slowctl/alarms/summary")
    ferretdb = s.pids()["ferretdb"]
    values = [round(0.1 + 0.01 * i, 2) for i in range(30)]
    os.kill(ferretdb, signal.SIGSTOP)
    try:
        burst(s, values)

        def held_back() -> bool:
            msgs = viewer.seen("slowctl/recorder/health")
            return bool(msgs) and json.loads(msgs[-1].payload)["held_back"] > 0

        wait_until(held_back, 20, what="messages held back by the full journal")
        wait_until(lambda: recorder_alarm(viewer, "BUFFER_FULL"), 20, what="the full-journal alarm")
    finally:
        os.kill(ferretdb, signal.SIGCONT)
    expected = [f"iset {v}" for v in values]
    got: list = []

    def arrived() -> bool:
        got[:] = [(c["what"], c["outcome"]) for c in commands(s, "lv", 1)]
        # every one, each with its reply; the order of what the broker held back is the broker's (Mosquitto
        # 2.0.11 may reorder a client's queue once its in-flight window is full)
        return sorted(got[-30:]) == sorted((w, "ok") for w in expected)

    try:
        wait_until(arrived, 60, what="every command of the burst")
    except AssertionError:
        print(got, json.loads(viewer.seen("slowctl/recorder/health")[-1].payload), s.service_log("recorder")[-3000:])
        raise
