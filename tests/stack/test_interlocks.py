"""Interlocks through the real broker: LV before HV, the protective off, fail-safe when the interlock dies."""

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from harness import channel, send, wait_until

pytestmark = pytest.mark.stack

BENCH = Path(__file__).parents[2] / "config" / "bench.yaml"
RULES = {"lv-before-hv": {"kind": "requires", "protects": ["hv.0", "hv.1"], "requires": ["lv.2"]}}


def with_rules(c):
    c["interlocks"] = RULES
    c["mqtt"]["keepalive"] = 2  # the interlock's last will within 3 s
    c["supervisor"].update(backoff_initial=5)  # time to see the fail-safe before the restart


def rule_state(probe):
    msgs = probe.seen("slowctl/interlock/state")
    return json.loads(msgs[-1].payload)["rules"]["lv-before-hv"] if msgs else None


def test_lv_before_hv(own_stack):
    s = own_stack(with_rules).start()
    op = s.probe("operator")
    op.subscribe("slowctl/+/reply", "slowctl/+/status", "slowctl/interlock/#", "slowctl/hv/event")
    wait_until(lambda: rule_state(op) is not None and rule_state(op)["active"], 10, what="the interlock state")
    assert send(op, "slowctl/hv/cmd/vset/0", "40")["ok"]
    reply = send(op, "slowctl/hv/cmd/on/0", "")
    assert not reply["ok"] and "interlock lv-before-hv: lv.2 is not on and ok" in reply["error"], reply
    ch = channel(op, "hv", 0, lambda c: "INTERLOCKED" in c.get("alarms", []))
    assert not ch["on"]

    assert send(op, "slowctl/lv/cmd/vset/2", "5")["ok"]
    assert send(op, "slowctl/lv/cmd/on/2", "")["ok"]
    wait_until(lambda: rule_state(op)["active"] is False, 5, what="the rule to clear")
    wait_until(lambda: send(op, "slowctl/hv/cmd/on/0", "")["ok"], 5, what="hv on once LV is on")
    channel(op, "hv", 0, lambda c: c["on"] and "INTERLOCKED" not in c.get("alarms", []), timeout=5)

    # LV lost while HV is on: the interlock switches HV off (ramped: the channel's off_mode)
    assert send(op, "slowctl/lv/cmd/off/2", "")["ok"]
    wait_until(
        lambda: any(json.loads(m.payload).get("id") == "interlock:lv-before-hv" for m in op.seen("slowctl/hv/reply")),
        5,
        what="the interlock's off command",
    )
    channel(op, "hv", 0, lambda c: c["state"] in ("RAMP_DOWN", "OFF"), timeout=5)
    kinds = [json.loads(m.payload)["kind"] for m in op.seen("slowctl/interlock/event")]
    assert "interlock_active" in kinds and "interlock_action" in kinds
    assert any(json.loads(m.payload)["kind"] == "interlock" for m in op.seen("slowctl/hv/event"))


def test_a_dead_interlock_blocks_and_never_releases(own_stack):
    s = own_stack(with_rules).start()
    op = s.probe("operator")
    op.subscribe("slowctl/+/reply", "slowctl/interlock/#")
    wait_until(lambda: rule_state(op) is not None, 10, what="the interlock state")
    assert send(op, "slowctl/lv/cmd/vset/2", "5")["ok"]
    assert send(op, "slowctl/lv/cmd/on/2", "")["ok"]
    wait_until(lambda: rule_state(op)["active"] is False, 5, what="the rule to clear")
    pid = next(p for p in __import__("psutil").Process(s.proc.pid).children() if "interlock" in p.cmdline())
    os.kill(pid.pid, signal.SIGKILL)
    wait_until(
        lambda: any(m.payload == b"offline" for m in op.seen("slowctl/interlock/availability")),
        6,
        what="the interlock's last will",
    )
    wait_until(lambda: not send(op, "slowctl/hv/cmd/on/1", "")["ok"], 5, what="the device to block")
    reply = send(op, "slowctl/hv/cmd/on/1", "")
    assert "interlock lv-before-hv: the interlock process is not running" in reply["error"], reply
    # back (supervisor restart): it evaluates before it says online, and the channel is released
    wait_until(lambda: send(op, "slowctl/hv/cmd/on/1", "")["ok"], 20, what="the restarted interlock to release")


def test_an_operator_cannot_forge_the_interlock_state(own_stack):
    s = own_stack(with_rules).start()
    op = s.probe("operator")
    op.subscribe("slowctl/+/reply", "slowctl/interlock/state")
    wait_until(lambda: rule_state(op) is not None, 10, what="the interlock state")
    forged = json.dumps({"rules": {"lv-before-hv": {"active": False, "reason": "forged"}}})
    op.publish("slowctl/interlock/state", forged, retain=True)
    op.publish("slowctl/interlock/availability", "online", retain=True)
    reply = send(op, "slowctl/hv/cmd/on/0", "")
    assert not reply["ok"] and "lv.2 is not on and ok" in reply["error"], reply


def test_a_latched_rule_holds_until_an_operator_clears_it(own_stack):
    latched = {"lv-before-hv": {**RULES["lv-before-hv"], "latch": True}}
    s = own_stack(lambda c: (with_rules(c), c.update(interlocks=latched))).start()
    op = s.probe("operator")
    op.subscribe("slowctl/+/reply", "slowctl/interlock/#")
    wait_until(lambda: rule_state(op) is not None and rule_state(op)["active"], 10, what="the interlock state")

    def clear():
        before = len(op.seen("slowctl/interlock/reply"))
        op.publish("slowctl/interlock/cmd", json.dumps({"action": "clear", "rule": "lv-before-hv", "id": "c1"}))
        wait_until(lambda: len(op.seen("slowctl/interlock/reply")) > before, 5, what="the interlock's reply")
        return json.loads(op.seen("slowctl/interlock/reply")[-1].payload)

    assert clear() == {
        "id": "c1",
        "action": "clear",
        "rule": "lv-before-hv",
        "ok": False,
        "error": "interlock lv-before-hv is not latched",
    }, "not while its condition holds"
    assert send(op, "slowctl/lv/cmd/vset/2", "5")["ok"] and send(op, "slowctl/lv/cmd/on/2", "")["ok"]
    wait_until(lambda: rule_state(op)["latched"], 5, what="the rule to latch")
    assert rule_state(op)["active"] and not send(op, "slowctl/hv/cmd/on/0", "")["ok"]
    assert clear()["ok"]
    wait_until(lambda: rule_state(op)["active"] is False, 5, what="the release")
    wait_until(lambda: send(op, "slowctl/hv/cmd/on/0", "")["ok"], 5, what="hv on after the clear")
    per_rule = op.seen("slowctl/interlock/rules/lv-before-hv")
    assert per_rule and json.loads(per_rule[-1].payload)["active"] is False


def test_the_example_bench_is_safe_once_lv_is_on(own_stack):
    """config/bench.yaml's rules as they are: only LV before HV holds at start; LV on releases HV."""
    s = own_stack(lambda c: c.update(interlocks=yaml.safe_load(BENCH.read_text())["interlocks"])).start()
    op = s.probe("operator")
    op.subscribe("slowctl/+/reply", "slowctl/interlock/#")

    def active():
        msgs = op.seen("slowctl/interlock/state")
        return {n for n, r in json.loads(msgs[-1].payload)["rules"].items() if r["active"]} if msgs else None

    wait_until(lambda: active() == {"lv-before-hv"}, 10, what="every rule but LV-before-HV satisfied")
    reply = send(op, "slowctl/bias/cmd/on/0", "")
    assert not reply["ok"] and "interlock lv-before-hv" in reply["error"]
    assert send(op, "slowctl/lv/cmd/vset/0", "1.2")["ok"] and send(op, "slowctl/lv/cmd/on/0", "")["ok"]
    wait_until(lambda: active() == set(), 10, what="every rule satisfied once LV is on")
    for dev in ("hv", "hv2", "bias"):
        assert send(op, f"slowctl/{dev}/cmd/on/0", "")["ok"], dev


def test_emergency_off_from_the_cli_says_what_it_could_not_reach(own_stack):
    def tweak(c):
        c["mqtt"]["keepalive"] = 2
        c["supervisor"].update(backoff_initial=60)  # the killed service stays down for the test

    s = own_stack(tweak).start()
    op = s.probe("operator")
    op.subscribe("slowctl/+/reply", "slowctl/+/status", "slowctl/+/availability")
    for dev, ch, v in (("hv", 0, "30"), ("hv2", 0, "30"), ("bias", 0, "10")):
        assert send(op, f"slowctl/{dev}/cmd/vset/{ch}", v)["ok"] and send(op, f"slowctl/{dev}/cmd/on/{ch}", "")["ok"]
    os.kill(s.pids()["service-hv2"], signal.SIGKILL)
    wait_until(lambda: op.last["slowctl/hv2/availability"].payload == b"offline", 6, what="hv2's last will")
    r = s.slowctl("off", "--all-hv", "--kill", "--state-dir", str(s.state))
    assert r.returncode == 1, r.stdout + r.stderr
    rows = {tuple(line.split()[:2]): line for line in r.stdout.splitlines()}
    assert len(rows) == 4 + 2 + 1, r.stdout  # every HV output of the bench: hv 0-3, hv2 0-1, bias 0
    assert "ok" in rows[("hv", "0")] and "OFF" in rows[("hv", "0")] and "ok" in rows[("bias", "0")]
    assert "device offline" in rows[("hv2", "0")] and "FAILED" in rows[("hv2", "1")]
    for dev in ("hv", "bias"):
        channel(op, dev, 0, lambda c: not c["on"] and c["vmon"] < 1, timeout=5)  # killed: no ramp down
    again = s.slowctl("off", "--all-hv", "--state-dir", str(s.state))
    assert "ok" in again.stdout.splitlines()[0], "idempotent: off again is fine"


def test_emergency_off_over_mqtt(own_stack):
    s = own_stack(with_rules).start()
    op = s.probe("operator")
    op.subscribe("slowctl/+/reply", "slowctl/+/status", "slowctl/interlock/#")
    wait_until(lambda: rule_state(op) is not None, 10, what="the interlock state")
    assert send(op, "slowctl/lv/cmd/vset/2", "5")["ok"] and send(op, "slowctl/lv/cmd/on/2", "")["ok"]
    wait_until(lambda: rule_state(op)["active"] is False, 5, what="the rule to clear")
    assert send(op, "slowctl/hv/cmd/vset/1", "30")["ok"] and send(op, "slowctl/hv/cmd/on/1", "")["ok"]
    op.publish("slowctl/interlock/cmd", json.dumps({"action": "off-all-hv", "id": "e1"}))
    wait_until(lambda: op.seen("slowctl/interlock/reply"), 5, what="the interlock's reply")
    reply = json.loads(op.seen("slowctl/interlock/reply")[-1].payload)
    assert reply["ok"] and reply["offline"] == [] and {"hv.1", "hv2.0", "bias.0"} <= set(reply["sent"])
    wait_until(
        lambda: any(
            json.loads(m.payload).get("id") == "emergency:e1" and json.loads(m.payload)["channel"] == 1
            for m in op.seen("slowctl/hv/reply")
        ),
        5,
        what="hv's reply for channel 1",
    )
    channel(op, "hv", 1, lambda c: c["state"] in ("RAMP_DOWN", "OFF"), timeout=5)
