"""The alarm handler through the real broker: raise, clear, acknowledge, the retained list, the CLI, the ACL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import wait_until

pytestmark = pytest.mark.stack

# the box gets humid 4 s after the start and dry again 10 s later (the climate simulator's scenario)
HUMID_THEN_DRY = (
    "events:\n  - {at: 4, channel: 1, set: {humidity: 80, tau: 0.3}}\n"
    "  - {at: 14, channel: 1, set: {humidity: 30, tau: 0.3}}\n"
)
LIMITS = {"climate.0.humidity": {"high": 50, "hihi": 60, "hysteresis": 2, "delay": 1}}


def humid_box(c):
    c["alarms"] = {"limits": LIMITS}
    c["devices"]["climate"]["simulator"]["scenario"] = "climate-scenario.yaml"
    c["mqtt"]["keepalive"] = 2
    c["supervisor"].update(backoff_initial=1)


def start(own_stack, tweak=humid_box):
    s = own_stack(tweak)
    (s.workdir / "climate-scenario.yaml").write_text(HUMID_THEN_DRY)
    return s.start()


def summary(probe):
    msgs = probe.seen("slowctl/alarms/summary")
    return json.loads(msgs[-1].payload) if msgs else None


def listed(probe, kind):
    return next((a for a in (summary(probe) or {}).get("alarms", []) if a["kind"] == kind), None)


def events(probe):
    return [
        (e["kind"], e["device"], e["channel"], e["cause"])
        for e in map(json.loads, (m.payload for m in probe.seen("slowctl/alarms/event")))
    ]


def cli(s, *args, role="operator"):
    env = {**os.environ, "SLOWCTL_MQTT_HOST": "127.0.0.1", "SLOWCTL_MQTT_PORT": str(s.port)}
    env.update(SLOWCTL_MQTT_USERNAME=role, SLOWCTL_MQTT_PASSWORD=s.credentials[role], USER="alice")
    return subprocess.run(
        [sys.executable, "-m", "slowctl", *args], env=env, cwd=s.workdir, capture_output=True, text=True, timeout=30
    )


def test_raise_clear_acknowledge(own_stack):
    s = start(own_stack)
    viewer = s.probe("viewer")
    viewer.subscribe("slowctl/alarms/#")
    wait_until(lambda: summary(viewer) is not None, 10, what="the retained alarm list")
    assert listed(viewer, "humidity.HIHI") is None

    wait_until(lambda: listed(viewer, "humidity.HIHI"), 20, what="HIHI raised")
    alarm = listed(viewer, "humidity.HIHI")
    assert alarm["device"] == "climate" and alarm["channel"] == 0 and alarm["severity"] == "major"
    assert alarm["active"] and not alarm["acked"] and alarm["message"].startswith("climate.0 humidity")
    assert ("alarm_raised", "climate", 0, "humidity.HIHI") in events(viewer)
    table = cli(s, "alarms", role="viewer")
    assert table.returncode == 0 and "humidity.HIHI" in table.stdout and "unacknowledged" in table.stdout

    # dry again: gone, but latched until acknowledged
    wait_until(lambda: listed(viewer, "humidity.HIHI")["active"] is False, 25, what="HIHI gone")
    assert ("alarm_cleared", "climate", 0, "humidity.HIHI") in events(viewer)
    assert summary(viewer)["unacked"] >= 1

    refused = cli(s, "ack", "climate", "1", "HIHI")
    assert refused.returncode == 1 and "no alarm on climate.1 HIHI (alarms on climate: climate.0" in refused.stderr
    done = cli(s, "ack", "climate", "0", "HIHI")
    assert done.returncode == 0 and "acknowledged climate.0 humidity.HIHI" in done.stdout, done.stderr
    wait_until(lambda: listed(viewer, "humidity.HIHI") is None, 5, what="the alarm to leave the list")
    acked = [json.loads(m.payload) for m in viewer.seen("slowctl/alarms/event")]
    acked = [e for e in acked if e["kind"] == "alarm_acked" and e["cause"] == "humidity.HIHI"]
    assert acked and acked[0]["after"]["acked_by"] == "operator", "the broker login, not a name the client gives"


def test_only_operators_acknowledge_and_only_the_handler_publishes(own_stack):
    s = start(own_stack)
    viewer = s.probe("viewer")
    viewer.subscribe("slowctl/alarms/#")
    wait_until(lambda: listed(viewer, "humidity.HIHI"), 20, what="HIHI raised")
    # a viewer's ack is refused by the broker (its PUBACK says so): nothing acknowledged
    refused = cli(s, "ack", "climate", role="viewer")
    assert refused.returncode == 1, refused.stderr
    assert (
        refused.stderr
        == "slowctl ack: not authorised (viewer may not command alarms: the broker refused it, reason code 135)\n"
    )
    assert not listed(viewer, "humidity.HIHI")["acked"]
    op = s.probe("operator")
    op.subscribe("slowctl/alarms/summary")
    wait_until(lambda: summary(op) is not None, 5, what="the retained list")
    forged = json.dumps({"active": 0, "unacked": 0, "alarms": []})
    assert op.publish("slowctl/alarms/summary", forged, qos=1, retain=True) == 135, "not authorized (MQTT v5)"
    time.sleep(1)  # it would have come back to us by now
    assert all(json.loads(m.payload)["alarms"] for m in op.seen("slowctl/alarms/summary")), "a forged list got out"
    later = s.probe("viewer")
    later.subscribe("slowctl/alarms/summary")
    wait_until(lambda: summary(later) is not None, 5, what="the retained list")
    assert listed(later, "humidity.HIHI") is not None
    # a malformed ack is answered, and changes nothing
    op.subscribe("slowctl/alarms/reply")
    op.publish("slowctl/alarms/cmd", json.dumps({"action": "ack", "device": "climate", "channel": "zero"}), qos=1)
    reply = op.wait_json("slowctl/alarms/reply")
    assert not reply["ok"] and "channel must be a channel number" in reply["error"]
    assert not listed(viewer, "humidity.HIHI")["acked"]


def test_the_list_survives_a_restart_of_the_handler(own_stack):
    s = start(own_stack)
    viewer = s.probe("viewer")
    viewer.subscribe("slowctl/alarms/#", "slowctl/interlock/availability")
    wait_until(lambda: listed(viewer, "humidity.HIHI"), 20, what="HIHI raised")
    wait_until(lambda: listed(viewer, "humidity.HIHI")["active"] is False, 25, what="HIHI gone")
    since = listed(viewer, "humidity.HIHI")["since"]
    os.kill(s.pids()["interlock"], signal.SIGKILL)
    wait_until(lambda: viewer.seen("slowctl/interlock/availability")[-1].payload == b"offline", 6, what="its will")
    viewer.clear()
    wait_until(lambda: summary(viewer) is not None, 15, what="the restarted handler's list")
    alarm = listed(viewer, "humidity.HIHI")
    assert alarm is not None and not alarm["acked"] and alarm["since"] == since, "an unacknowledged alarm survives"
    assert "alarm" in s.service_log("interlock")
