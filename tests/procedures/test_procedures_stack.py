"""The procedure runner in the native dummy stack: runs against the simulated instruments through the real
broker, devices, interlock process and recorder, results read back from FerretDB (a real MongoDB-wire
server) directly and through `slowctl procedure show|export`.

One stack for the module (the example bench's lv-before-hv rule; the Keithley bias ramps at 50 V/s so
that scans take seconds). Each test leaves the bench as it found it: lv.0 on, every run over, bias.0 off.
Without the FerretDB binary (scripts/build-test-tools.sh) the stack runs without a record and the tests
that read it skip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psutil
import pytest
import yaml

from harness import DUMMY_CONFIG, DummyStack, Probe, wait_until
from slowctl import Client, ClientError, Refused

pytestmark = pytest.mark.stack

ALICE_PW = "alice's long password"
VERA_PW = "vera's long password"
ENDED = ("completed", "stopped", "aborted", "failed")


def tweak(c: dict) -> None:
    c["interlocks"] = {"lv-before-hv": yaml.safe_load(DUMMY_CONFIG.read_text())["interlocks"]["lv-before-hv"]}
    c["mqtt"]["keepalive"] = 2  # a stopped device service is announced offline within 3 s
    c["devices"]["bias"]["channels"][0].update(ramp_max=50, rampup=50, rampdown=50)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Iterator[DummyStack]:
    from slowctl.stack.native import StackError, find_mosquitto
    from slowctl.stack.records import find_ferretdb

    try:
        find_mosquitto()
    except StackError as exc:
        pytest.skip(str(exc))
    records = find_ferretdb() is not None
    s = DummyStack(tmp_path_factory.mktemp("procedures"), tweak, records=records).start()
    try:
        assert ("records          FerretDB" in s.log()) == records, s.log()
        assert s.user_add("alice", "operator", ALICE_PW).returncode == 0
        assert s.user_add("vera", "viewer", VERA_PW).returncode == 0
        with Client(state_dir=s.state) as op:
            op.procedures(timeout=10)  # the runner has spoken
            op.set("lv", 0, "vset", 1.2)
            op.set("lv", 0, "on")
            op.wait_until(lambda c: c.interlocked("bias", 0) == [], timeout=15)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def op(bench) -> Iterator[Client]:
    """The shared `operator` login, as `slowctl procedure ...` uses it."""
    with Client(state_dir=bench.state, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def alice(bench) -> Iterator[Client]:
    """A person's own operator account."""
    with Client("127.0.0.1", bench.port, "alice", ALICE_PW, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def db(bench):
    if "records          FerretDB" not in bench.log():
        pytest.skip("no FerretDB binary (scripts/build-test-tools.sh ferretdb): the stack keeps no record")
    from pymongo import MongoClient

    from slowctl.stack.records import record_settings

    settings = record_settings(bench.state)
    client: MongoClient = MongoClient(settings.uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    yield client[settings.database]
    client.close()


@pytest.fixture(autouse=True)
def bench_left_as_found(request) -> Iterator[None]:
    """After each test: no run left, lv.0 on, bias.0 off (a failed test must not spoil the next)."""
    yield
    if "bench" not in request.fixturenames:
        return
    bench: DummyStack = request.getfixturevalue("bench")
    c: Client = request.getfixturevalue("op")
    for run in active_runs(bench):
        try:
            c.abort_procedure(run)
            c.wait_for_run(run, 60)
        except ClientError:
            pass
    if not c.channel("lv", 0)["on"]:
        c.set("lv", 0, "on")
    c.wait_until(lambda c: c.interlocked("bias", 0) == [], timeout=15)
    c.wait_until(lambda c: not c.channel("bias", 0)["on"], timeout=30)


# --- helpers -----------------------------------------------------------------------------------------------------
def cli(s: DummyStack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return s.slowctl("procedure", *args, "--state-dir", str(s.state), timeout=timeout)


def safe(c: Client, device: str, channel: int, timeout: float = 30) -> dict[str, Any]:
    """Waits until the channel is off at 0 V; its status."""

    def there(c: Client) -> bool:
        ch = c.channel(device, channel)
        return not ch["on"] and ch["vset"] == 0 and abs(ch["vmon"] or 0) < 1

    c.wait_until(there, timeout=timeout)
    return c.channel(device, channel)


def progress_is(c: Client, run: str, test: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    c.wait_until(lambda c: test(c.run_progress(run) or {}), timeout=timeout)
    progress = c.run_progress(run)
    assert progress is not None
    return progress


def run_doc(db, run: str, test: Callable[[dict[str, Any]], bool] = lambda d: True, timeout: float = 20) -> dict:
    """The run's document once `test` holds (the journal writes it asynchronously)."""
    return wait_until(
        lambda: (d := db.procedures.find_one({"_id": run})) is not None and test(d) and d,
        timeout,
        interval=0.2,
        what=f"the record of run {run}",
    )


def runner_pid(s: DummyStack) -> int | None:
    for child in psutil.Process(s.proc.pid).children():
        try:
            if "procedure-runner" in child.cmdline():
                return child.pid
        except psutil.NoSuchProcess:
            continue
    return None


def service_pid(s: DummyStack, device: str) -> int:
    return s.pids()[f"service-{device}"]


def active_runs(s: DummyStack) -> dict[str, Any]:
    """The runner's retained state: the runs going on, with the channels they hold."""
    probe = Probe("127.0.0.1", s.port, "viewer", s.credentials["viewer"])
    try:
        probe.subscribe("slowctl/procedures/state")
        return probe.wait_json("slowctl/procedures/state")["runs"]
    finally:
        probe.close()


def raw_command(s: DummyStack, body: dict[str, Any]) -> dict[str, Any]:
    """A JSON command on the runner's topic as any MQTT client sends it (as operator); its reply."""
    probe = Probe("127.0.0.1", s.port, "operator", s.credentials["operator"])
    try:
        probe.subscribe("slowctl/procedures/reply")
        probe.publish("slowctl/procedures/by/operator/cmd", json.dumps(body))
        return probe.wait_json("slowctl/procedures/reply", lambda r: r["id"] == body["id"])
    finally:
        probe.close()


def maybe_db(request) -> Any:
    """The record, where the stack keeps one."""
    bench: DummyStack = request.getfixturevalue("bench")
    return request.getfixturevalue("db") if "records          FerretDB" in bench.log() else None


SLOW = {"channel": "bias.0", "start": -20, "stop": -100, "step": 20, "settle": 60, "samples": 1}


def at_first_step(c: Client, run: str) -> None:
    """The slow scan has brought bias.0 to 20 V and is settling (for a minute)."""
    progress_is(c, run, lambda p: p.get("state") == "running", 10)
    c.wait_until(lambda c: c.channel("bias", 0)["on"] and c.channel("bias", 0)["vmon"] > 19, timeout=15)


# --- the catalog ---------------------------------------------------------------------------------------------------
def test_the_catalog_is_retained_and_the_cli_prints_it(bench, op):
    catalog = op.procedures()
    assert [p["name"] for p in catalog["procedures"]] == ["iv_scan", "burn_in", "ramp_hold"]
    assert catalog["problems"] == [] and catalog["environment"] == bench.config["procedures"]["environment"]
    iv = next(p for p in catalog["procedures"] if p["name"] == "iv_scan")
    assert iv["params"]["stop"] == {"kind": "number", "doc": iv["params"]["stop"]["doc"], "required": True,
                                    "unit": "V"}  # fmt: skip
    r = cli(bench, "available", "iv_scan")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "iv_scan: IV scan" and lines[1].startswith("  Steps a bias channel")
    assert any(line.split()[:3] == ["current_limit", "number", "default"] and "default none" in line for line in lines)
    r = cli(bench, "available", "iv_scn")
    assert r.returncode == 2 and "no procedure 'iv_scn' (known: iv_scan, burn_in, ramp_hold)" in r.stderr


# --- an IV scan from start to end, and its record ---------------------------------------------------------------
@pytest.fixture(scope="module")
def iv_run(bench, alice) -> tuple[str, dict[str, Any], float]:
    """An IV scan started by alice (her own operator account): 0 to -60 V in 20 V steps."""
    t0 = time.time()
    run = alice.start_procedure("iv_scan", {"channel": "bias.0", "stop": -60, "step": 20, "settle": 0.2,
                                            "samples": 1})  # fmt: skip
    final = alice.wait_for_run(run, 90)
    return run, final, t0


def test_an_iv_scan_completes_and_leaves_the_channel_off(bench, alice, iv_run):
    run, final, t0 = iv_run
    assert final["state"] == "completed" and final["reason"] is None, final
    assert (final["step"], final["steps"], final["percent"], final["eta"], final["points"]) == (4, 4, 100.0, 0, 4)
    last = final["last"]
    assert last["seq"] == 4 and last["v"] == -60 and abs(last["vmon"] + 60) < 1 and last["i"] < 0, last
    assert {"climate_0_temperature", "climate_0_humidity", "chiller_0_temperature"} <= set(last)
    assert final["by"] == "alice" and final["channels"] == ["bias.0"]
    assert "bias.0 brought to 0 V and switched off" in final["notes"]
    ch = alice.channel("bias", 0)  # off when the run says it has ended, not a moment later
    assert not ch["on"] and ch["vset"] == 0 and abs(ch["vmon"]) < 1, ch
    # retained: someone who connects later still learns how it ended
    late = Probe("127.0.0.1", bench.port, "viewer", bench.credentials["viewer"])
    try:
        late.subscribe(f"slowctl/procedures/progress/{run}")
        msg = late.wait_message(f"slowctl/procedures/progress/{run}")
        assert msg.retain and json.loads(msg.payload)["state"] == "completed"
    finally:
        late.close()


def test_the_iv_scan_is_in_mongodb(bench, db, iv_run):
    run, final, t0 = iv_run
    doc = run_doc(db, run, lambda d: d["outcome"] == "completed")
    assert (doc["procedure"], doc["title"], doc["operator"], doc["by"]) == ("iv_scan", "IV scan", "alice", "alice")
    assert doc["params"] == {"channel": "bias.0", "start": 0.0, "stop": -60.0, "step": 20.0, "settle": 0.2,
                             "samples": 1, "current_limit": None, "jump": 10.0, "jump_floor": 1e-8,
                             "safe_voltage": 0.0}  # fmt: skip
    bias = doc["instruments"]["bias"]
    assert bias["model"] == "keithley-2410" and bias["identity"].startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2410")
    assert bias["options"]["polarity"] == "-" and bias["channels"]["0"]["vmax"] == 500
    assert t0 - 1 < doc["started"].timestamp() < doc["finished"].timestamp() < time.time()
    assert (doc["state"], doc["points"], doc["reason"]) == ("completed", 4, None)
    assert doc["channels"] == ["bias.0"] and "bias.0 brought to 0 V and switched off" in doc["notes"]
    pts = list(db.procedure_points.find({"run": run}).sort("seq", 1))
    assert [p["_id"] for p in pts] == [f"{run}:{n:07d}" for n in range(1, 5)]
    assert [p["v"] for p in pts] == [0, -20, -40, -60]
    assert all(abs(p["vmon"] - p["v"]) < 1 and p["state"] == "ON" and p["n"] == 1 for p in pts), pts
    currents = [p["i"] for p in pts]
    assert all(i <= 0 for i in currents) and abs(currents[1]) < abs(currents[2]) < abs(currents[3]) < 2e-6, currents
    assert all(doc["started"] <= p["ts"] <= doc["finished"] for p in pts)
    assert all(isinstance(p["climate_0_humidity"], float) for p in pts)


def test_show_and_export_read_the_record(bench, db, iv_run, tmp_path):
    run, final, t0 = iv_run
    run_doc(db, run, lambda d: d["outcome"] == "completed")
    r = cli(bench, "show", run)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"run        {run}" and "operator   alice" in lines and "outcome    completed" in lines
    assert any(line.startswith("instrument bias: keithley-2410 KEITHLEY INSTRUMENTS INC.") for line in lines)
    assert "points     4" in lines
    r = cli(bench, "export", run[:-2], "--csv")  # a unique beginning names it
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].startswith("seq,ts,v,vmon,i,i_std,n,state,") and len(rows) == 5, rows
    assert [row.split(",")[2] for row in rows[1:]] == ["0", "-20", "-40", "-60"]
    r = cli(bench, "export", run, "--json")
    body = json.loads(r.stdout)
    assert body["run"]["_id"] == run and body["run"]["operator"] == "alice" and len(body["points"]) == 4
    assert body["run"]["instruments"]["bias"]["model"] == "keithley-2410"
    png = tmp_path / "iv.png"
    r = cli(bench, "export", run, "--png", "--out", str(png))
    assert r.returncode == 0 and r.stdout.strip() == f"{png}: 4 points", r.stdout + r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    r = cli(bench, "list")
    assert any(line.startswith(run) and " completed " in line and "alice" in line for line in r.stdout.splitlines())
    r = cli(bench, "show", "19990101T000000")
    assert r.returncode == 2 and "no run '19990101T000000' in the record" in r.stderr


def test_the_recorder_files_the_runs_commands_for_the_person(bench, db, iv_run):
    run, final, t0 = iv_run

    def commands() -> list[dict]:
        r = bench.slowctl("log", "--json", "--kind", "command", "--device", "bias", "--user", "alice",
                          "--state-dir", str(bench.state))  # fmt: skip
        assert r.returncode == 0, r.stderr
        return [e for e in map(json.loads, r.stdout.splitlines()) if datetime.fromisoformat(e["ts"]).timestamp() >= t0]

    wait_until(lambda: any(e["what"] == "off" for e in commands()), 20, interval=0.5, what="the run's off on record")
    got = commands()
    assert {e["who"] for e in got} == {"procedures for alice"}, got
    assert all(e["outcome"] == "ok" for e in got), got
    assert [e["what"] for e in got if e["what"].startswith("vset")][-4:] == ["vset 20.0", "vset 40.0", "vset 60.0",
                                                                               "vset 0.0"]  # fmt: skip
    assert "on" in [e["what"] for e in got]


def test_runs_back_to_back_on_one_channel(op):
    """The next run may start the moment the last one says it has ended: its channel is off by then."""
    params = {"channel": "bias.0", "stop": -20, "step": 20, "settle": 0, "samples": 1}
    for _ in range(2):
        run = op.start_procedure("iv_scan", params)
        final = op.wait_for_run(run, 60)
        assert final["state"] == "completed", final
        assert not op.channel("bias", 0)["on"]


# --- how a run ends early -----------------------------------------------------------------------------------------
def test_breakdown_stops_the_scan_and_the_channel_comes_back(op):
    """The sensor on bias.0 breaks down near -431 V, where its 10 µA compliance holds the output."""
    run = op.start_procedure("iv_scan", {"channel": "bias.0", "start": -400, "stop": -500, "step": 50,
                                         "settle": 0.2, "samples": 1})  # fmt: skip
    final = op.wait_for_run(run, 90)
    assert final["state"] == "stopped", final
    assert final["reason"].startswith("compliance at -450 V") and "µA" in final["reason"], final["reason"]
    last = final["last"]
    assert last["v"] == -450 and last["state"] == "COMPLIANCE" and -445 < last["vmon"] < -420, last
    assert abs(last["i"]) > 9e-6, "held at the current limit"
    assert final["step"] == 2 and final["steps"] == 3, "the last step was never taken"
    safe(op, "bias", 0, timeout=5)


def test_abort_by_a_person_and_from_the_cli(bench, op, alice):
    run = op.start_procedure("iv_scan", SLOW)
    at_first_step(op, run)
    reply = alice.abort_procedure(run)
    assert reply["ok"] and reply["run"] == run and reply["by"] == "alice", reply
    final = op.wait_for_run(run, 30)
    assert (final["state"], final["reason"]) == ("aborted", "aborted by alice"), final
    assert "bias.0 brought to 0 V and switched off" in final["notes"]
    safe(op, "bias", 0, timeout=5)
    with pytest.raises(Refused, match=f"no active run '{run}'"):
        alice.abort_procedure(run)

    run = op.start_procedure("iv_scan", SLOW)
    at_first_step(op, run)
    r = cli(bench, "abort", run)
    assert r.returncode == 0 and f"abort of {run} requested" in r.stdout, r.stdout + r.stderr
    final = op.wait_for_run(run, 30)
    assert (final["state"], final["reason"]) == ("aborted", "aborted by operator"), final
    safe(op, "bias", 0, timeout=5)
    r = cli(bench, "abort", run)
    assert r.returncode == 2 and f"refused: no active run '{run}'" in r.stderr, r.stderr


def test_a_trip_fails_the_run_and_a_refused_on_fails_the_next(bench, op):
    """hv.0 (CAEN) held at 100 V by a burn-in; its current limit lowered under the sensor's 1.8 µA: over-current,
    and after the trip time the channel trips. While tripped the device refuses `on` ("clear first")."""
    run = op.start_procedure("burn_in", {"channels": "hv.0", "voltage": 100, "duration": 120, "interval": 1})
    try:
        progress = progress_is(op, run, lambda p: (p.get("points") or 0) >= 2, 30)
        # the retained progress, as a front-end that connects now sees it
        late = Probe("127.0.0.1", bench.port, "viewer", bench.credentials["viewer"])
        try:
            late.subscribe(f"slowctl/procedures/progress/{run}")
            msg = late.wait_message(f"slowctl/procedures/progress/{run}")
        finally:
            late.close()
        seen = json.loads(msg.payload)
        assert msg.retain and seen["state"] == "running" and seen["procedure"] == "burn_in", seen
        assert seen["steps"] == 120 and 2 <= seen["step"] < 120 and 0 < seen["percent"] < 100, seen
        assert 60 < seen["eta"] <= 120 and seen["message"].startswith("max 1.8"), seen
        assert seen["last"]["seq"] == seen["step"] and 1.7e-6 < seen["last"]["i_hv_0"] < 2e-6, seen["last"]
        assert seen["channels"] == ["hv.0"] and progress["by"] == "operator"

        op.set("hv", 0, "iset", 1e-6)
        final = op.wait_for_run(run, 30)
        assert final["state"] == "failed" and final["reason"].startswith("hv.0 tripped (hv.0 at "), final
        op.wait_until(lambda c: c.channel("hv", 0)["vset"] == 0, timeout=5)  # the safe end: vset 0 while off
        ch = op.channel("hv", 0)
        assert ch["state"] == "TRIPPED" and not ch["on"], ch

        again = op.start_procedure("burn_in", {"channels": "hv.0", "voltage": 100, "duration": 10, "interval": 1})
        final = op.wait_for_run(again, 30)
        assert final["state"] == "failed", final
        assert final["reason"].startswith("hv.0: on refused: ") and "clear" in final["reason"], final["reason"]
        assert op.channel("hv", 0)["state"] == "TRIPPED"
    finally:
        if op.channel("hv", 0)["state"] == "TRIPPED":
            op.set("hv", 0, "clear")
        op.set("hv", 0, "iset", 20e-6)
    safe(op, "hv", 0)


def test_the_interlock_acting_fails_the_run(op):
    """lv.0 switched off during a burn-in on bias.0: the interlock switches the bias off under the run."""
    run = op.start_procedure("burn_in", {"channels": "bias.0", "voltage": -50, "duration": 120, "interval": 1})
    progress_is(op, run, lambda p: (p.get("points") or 0) >= 1, 20)
    op.set("lv", 0, "off")
    final = op.wait_for_run(run, 30)
    assert final["state"] == "failed", final
    assert final["reason"].startswith("bias.0 was switched off without the run asking (interlock lv-before-hv "
                                      "active: lv.0 is not on"), final["reason"]  # fmt: skip
    safe(op, "bias", 0)


# --- refused before anything moves -------------------------------------------------------------------------------
def test_an_active_interlock_refuses_the_start(bench, op):
    watcher = Probe("127.0.0.1", bench.port, "viewer", bench.credentials["viewer"])
    try:
        watcher.subscribe("slowctl/bias/by/#", "slowctl/bias/cmd/#")
        op.set("lv", 0, "off")
        op.wait_until(lambda c: c.interlocked("bias", 0) != [], timeout=10)
        before = op.channel("bias", 0)
        with pytest.raises(Refused) as info:
            op.start_procedure("iv_scan", {"channel": "bias.0", "stop": -60, "step": 20})
        assert info.value.reason.startswith("bias.0: interlock lv-before-hv active: lv.0 is not on"), info.value
        with pytest.raises(Refused) as info:
            op.start_procedure("burn_in", {"channels": "hv.1,bias.0", "voltage": 50, "duration": 60})
        assert info.value.reason.startswith("hv.1: interlock lv-before-hv active: ") and "; bias.0: interlock" in (
            info.value.reason
        ), info.value
        op.set("lv", 0, "on")  # a command to lv: once its reply is here, a command to bias would have been seen
        assert watcher.seen() == [], [m.topic for m in watcher.seen()]
    finally:
        watcher.close()
    assert active_runs(bench) == {}
    after = op.channel("bias", 0)
    assert not after["on"] and after["vset"] == before["vset"]


def test_refusals_name_the_problem(bench, op):
    hv0 = op.channel("hv", 0)
    cases = [
        ("no_such", {}, "unknown procedure 'no_such' (known: burn_in, iv_scan, ramp_hold)"),
        ("iv_scan", {"channel": "bias.0", "stop": -60, "step": 20, "settle": -1},
         "iv_scan: settle: -1 s is below the minimum 0 s"),
        ("iv_scan", {"channel": "bias.0", "stop": -60, "step": 20, "setle": 1},
         "iv_scan: setle: unknown parameter of iv_scan"),
        ("iv_scan", {"channel": "bias.0", "step": 20}, "iv_scan: stop: required"),
        ("iv_scan", {"channel": "bias.0", "stop": -600, "step": 50}, "iv_scan: stop: -600 V is beyond bias.0's limit of 500 V"),
        ("iv_scan", {"channel": "hv.0", "stop": -60, "step": 20},
         "iv_scan: stop: -60 V is negative, but hv.0 has no polarity configured (values are magnitudes)"),
        ("iv_scan", {"channel": "hv.0", "stop": 60.05, "step": 20}, "iv_scan: stop: 60.05 V is finer than hv.0's 0.1 V step"),
        ("ramp_hold", {"channel": "hv.0", "target": 50, "hold": 1, "rate": 80},
         "ramp_hold: rate: 80 V/s is above hv.0's ramp_max of 50 V/s"),
        ("iv_scan", {"channel": "hv.9", "stop": 60, "step": 20}, "hv.9: hv has no channel 9 (configured: 0, 1, 2, 3)"),
        ("iv_scan", {"channel": "hx.0", "stop": 60, "step": 20}, "hx.0: no device 'hx' (devices: "),
        ("burn_in", {"channels": "hv.0,hv.0", "voltage": 50, "duration": 60}, "burn_in: channels: a channel is named twice"),
    ]  # fmt: skip
    for name, params, reason in cases:
        with pytest.raises(Refused) as info:
            op.start_procedure(name, params)
        assert info.value.reason.startswith(reason), (name, params, info.value.reason)
    for body, reason in [
        ({"action": "start", "procedure": "iv_scan", "param": {}, "id": "t1"}, "unknown field(s) param"),
        ({"action": "start", "procedure": "iv_scan", "params": [], "id": "t2"}, "params must be an object"),
        ({"action": "stop", "run": "x", "id": "t3"}, "unknown action 'stop' (expected start or abort)"),
    ]:
        assert raw_command(bench, body)["error"].startswith(reason), body
    assert active_runs(bench) == {}
    now = op.channel("hv", 0)
    assert (now["on"], now["vset"]) == (hv0["on"], hv0["vset"]), "nothing moved"


def test_a_busy_channel_is_refused_naming_the_run_that_holds_it(op, alice, request):
    run = alice.start_procedure("iv_scan", SLOW)
    at_first_step(op, run)
    database = maybe_db(request)
    if database is not None:  # slowctl procedure list: a run going on says so
        assert run_doc(database, run, lambda d: d["state"] != "starting")["state"] == "running"
    with pytest.raises(Refused) as info:
        op.start_procedure("burn_in", {"channels": "hv.1,bias.0", "voltage": 50, "duration": 60})
    assert info.value.reason == f"bias.0 busy: run {run} (iv_scan by alice) holds it", info.value.reason
    assert not op.channel("hv", 1)["on"], "refused whole: hv.1 was not touched either"
    state = op.run_progress(run)
    assert state is not None and state["state"] == "running" and state["by"] == "alice"
    op.abort_procedure(run)
    assert op.wait_for_run(run, 30)["state"] == "aborted"


def test_an_offline_device_is_refused(bench, op):
    pid = service_pid(bench, "lv2")
    os.kill(pid, signal.SIGSTOP)  # silent: the broker announces its last will after 1.5 keepalives
    try:
        op.wait_until(lambda c: not c.online("lv2"), timeout=15)
        with pytest.raises(Refused) as info:
            op.start_procedure("ramp_hold", {"channel": "lv2.0", "target": 3.3, "hold": 1})
        assert info.value.reason == "lv2.0: lv2 is not online", info.value.reason
    finally:
        os.kill(pid, signal.SIGCONT)
    op.wait_until(lambda c: c.online("lv2"), timeout=30)
    assert service_pid(bench, "lv2") == pid, "it went on where it was"


def test_a_viewer_cannot_start_a_run_an_operators_account_can(bench, op):
    with Client("127.0.0.1", bench.port, "vera", VERA_PW) as vera:
        assert vera.procedures()["procedures"], "a viewer reads the catalog"
        with pytest.raises(ClientError, match=r"^not authorised \(vera may not command procedures") as info:
            vera.start_procedure("iv_scan", {"channel": "bias.0", "stop": -20, "step": 20}, timeout=2)
        assert not isinstance(info.value, Refused), "the broker never delivered it: the runner did not refuse"
    with Client(state_dir=bench.state, role="viewer") as viewer:
        with pytest.raises(ClientError, match=r"^not authorised \(viewer may not command procedures"):
            viewer.start_procedure("iv_scan", {"channel": "bias.0", "stop": -20, "step": 20}, timeout=2)
    assert active_runs(bench) == {} and not op.channel("bias", 0)["on"]
    # (alice, an operator's own account, started the IV scan above: test_an_iv_scan_completes...)


# --- the runner's own troubles ---------------------------------------------------------------------------------------
def test_a_runner_killed_mid_run_closes_the_run_when_it_is_back(bench, op, request):
    run = op.start_procedure("iv_scan", {**SLOW, "settle": 1.5})
    progress_is(op, run, lambda p: (p.get("points") or 0) >= 1, 20)
    op.wait_until(lambda c: c.channel("bias", 0)["vmon"] > 25, timeout=10)  # ramping on to the next step
    before = runner_pid(bench)
    assert before is not None
    os.kill(before, signal.SIGKILL)
    final = op.wait_for_run(run, 60)  # its retained progress is closed by the restarted runner
    assert final["state"] == "failed", final
    assert final["reason"] == "the procedure runner stopped during the run (crash or restart)", final
    assert "bias.0 brought to 0 V and switched off" in final["notes"], final["notes"]
    assert final["last"]["seq"] >= 1, "what was known of the run is kept"
    safe(op, "bias", 0, timeout=5)
    after = runner_pid(bench)
    assert after not in (None, before), "the supervisor restarted it"
    assert not json.loads((bench.state / "procedures" / "active.json").read_text()), "nothing left to recover"
    op.procedures()  # the new runner takes commands
    database = maybe_db(request)
    if database is not None:
        doc = run_doc(database, run, lambda d: d["outcome"] == "failed")
        assert doc["reason"] == final["reason"] and doc["finished"] is not None
        assert doc["points"] == database.procedure_points.count_documents({"run": run}) >= 1
        assert "bias.0 brought to 0 V and switched off" in doc["notes"]


def test_a_mongodb_outage_does_not_stop_the_run_and_the_record_says_so(bench, op, db):
    run = op.start_procedure("burn_in", {"channels": "bias.0", "voltage": -50, "duration": 30, "interval": 1})
    progress_is(op, run, lambda p: (p.get("points") or 0) >= 2, 20)
    ferretdb = bench.pids()["ferretdb"]
    os.kill(ferretdb, signal.SIGSTOP)
    try:
        wait_until(
            lambda: "results kept on disk" in bench.service_log("procedures"), 25, interval=0.2,
            what="the runner to notice",
        )  # fmt: skip
        points = (op.run_progress(run) or {}).get("points", 0)
        progress_is(op, run, lambda p: p.get("points", 0) >= points + 2, 10)  # the run goes on
    finally:
        os.kill(ferretdb, signal.SIGCONT)
    final = op.wait_for_run(run, 60)
    assert final["state"] == "completed" and final["points"] == 30, final
    outage = [n for n in final["notes"] if n.startswith("MongoDB was unreachable from ")]
    assert outage and "results kept on disk and written when it was back" in outage[0], final["notes"]
    doc = run_doc(db, run, lambda d: d["outcome"] == "completed", timeout=30)
    assert any(n.startswith("MongoDB was unreachable") for n in doc["notes"]), doc["notes"]
    seqs = wait_until(
        lambda: (
            (s := [p["seq"] for p in db.procedure_points.find({"run": run}).sort("seq", 1)]) == list(range(1, 31)) and s
        ),
        30,
        interval=0.5,
        what="every point in MongoDB",
    )
    assert len(seqs) == doc["points"] == 30
