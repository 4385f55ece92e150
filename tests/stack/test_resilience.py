"""Failures the stack must survive: broker restart, simulator death, service death, shutdown."""

import os
import signal
import time

import pytest

from harness import channel, send, wait_until
from slowctl.stack.supervisor import port_open

pytestmark = pytest.mark.stack

KEEPALIVE = 2


def fast(c):
    c["mqtt"]["keepalive"] = KEEPALIVE
    c["supervisor"].update(backoff_initial=0.3, backoff_max=1)


def online(probe, devices):
    return {m.topic.split("/")[1] for m in probe.seen("slowctl/+/availability") if m.payload == b"online"} >= devices


def test_broker_restart_services_reconnect_reannounce_resubscribe(own_stack):
    s = own_stack(fast).start()
    broker = s.pids()["broker"]
    os.kill(broker, signal.SIGKILL)
    wait_until(lambda: not port_open("127.0.0.1", s.port), 5, what="the broker to die")
    wait_until(lambda: port_open("127.0.0.1", s.port), 10, what="the supervisor to restart the broker")
    back = time.monotonic()
    # no persistence in the native broker: what we see now was re-announced by the services
    viewer = s.probe("viewer")
    viewer.subscribe("slowctl/+/availability")
    wait_until(lambda: online(viewer, set(s.config["devices"])), 3.5, what="all devices online again")
    assert time.monotonic() - back <= 3.5
    op = s.probe("operator")
    op.subscribe("slowctl/+/reply", "slowctl/+/status")
    assert op.wait_json("slowctl/hv/status")["state"] == "ok"  # retained status re-published
    assert send(op, "slowctl/hv/cmd/vset/1", "11")["ok"]  # subscriptions restored
    assert "restarted broker" in s.log()


def test_simulator_killed_and_restarted(own_stack):
    # the simulator comes back after 5 s: time to see the link down, even on a loaded machine
    s = own_stack(lambda c: (fast(c), c["supervisor"].update(backoff_initial=5))).start()
    op = s.probe("operator")
    op.subscribe("slowctl/lv/status", "slowctl/lv/reply")
    service_pid = s.pids()["service-lv"]
    os.kill(s.pids()["sim-lv"], signal.SIGKILL)
    down = op.wait_json("slowctl/lv/status", lambda d: d["state"] == "disconnected", timeout=5)
    assert down["error"]
    reply = send(op, "slowctl/lv/cmd/vset/2", "3")
    assert not reply["ok"] and "not connected" in reply["error"]
    op.wait_json("slowctl/lv/status", lambda d: d["state"] == "ok" and d["seq"] > down["seq"], timeout=15)
    assert s.pids()["service-lv"] == service_pid, "recovered without restarting the service"
    assert send(op, "slowctl/lv/cmd/vset/2", "3")["ok"]


def test_killed_service_goes_offline_by_last_will_and_is_restarted(own_stack):
    s = own_stack(fast).start()
    viewer = s.probe("viewer")
    viewer.subscribe("slowctl/climate/availability", "slowctl/climate/health")
    viewer.wait_message("slowctl/climate/availability", lambda m: m.payload == b"online")
    viewer.clear()  # before the kill: the will can arrive at once (the kernel closes the socket)
    os.kill(s.pids()["service-climate"], signal.SIGKILL)
    killed = time.monotonic()
    viewer.wait_message("slowctl/climate/availability", lambda m: m.payload == b"offline", timeout=10)
    # the broker fires the will after 1.5 x keepalive (plus its 1 s housekeeping tick)
    assert time.monotonic() - killed <= 1.5 * KEEPALIVE + 1.0
    viewer.wait_message("slowctl/climate/availability", lambda m: m.payload == b"online", timeout=10)
    # timeout: the instrument reconnect backoff, on a loaded machine
    health = viewer.wait_json("slowctl/climate/health", lambda d: d["restarts"] == 1 and d["connected"], timeout=15)
    assert health["poll_cycles"] >= 1


def test_supervisor_gives_up_and_says_so(own_stack):
    s = own_stack(lambda c: (fast(c), c["supervisor"].update(max_restarts=1, window=60))).start()
    os.kill(s.pids()["service-climate"], signal.SIGKILL)
    wait_until(lambda: "restarted service-climate" in s.log(), 5, what="a restart")
    wait_until(lambda: "service-climate" in s.pids(), 5, what="the new process")
    os.kill(s.pids()["service-climate"], signal.SIGKILL)
    wait_until(lambda: "GIVING UP on service-climate" in s.log(), 5, what="the supervisor to give up")
    time.sleep(1)
    assert "service-climate" not in s.pids()
    assert {"service-hv", "service-lv", "broker"} <= set(s.pids())


def test_sigterm_announces_offline_and_leaves_outputs_alone(own_stack):
    s = own_stack(fast).start()
    op = s.probe("operator")
    op.subscribe("slowctl/lv/status", "slowctl/lv/reply", "slowctl/lv/availability")
    assert send(op, "slowctl/lv/cmd/vset/3", "5")["ok"]
    assert send(op, "slowctl/lv/cmd/on/3", "")["ok"]
    channel(op, "lv", 3, lambda c: c["state"] == "ON")
    op.clear()
    os.kill(s.pids()["service-lv"], signal.SIGTERM)
    t0 = time.monotonic()
    op.wait_message("slowctl/lv/availability", lambda m: m.payload == b"offline", timeout=3)
    assert time.monotonic() - t0 < 1.5 * KEEPALIVE, "offline came from the clean shutdown, not the will"
    op.wait_message("slowctl/lv/availability", lambda m: m.payload == b"online", timeout=10)
    ch = channel(op, "lv", 3, lambda c: c["state"] in ("ON", "OFF"), timeout=5)
    assert ch["on"] and ch["vmon"] == pytest.approx(5, abs=0.05), "the output survived the service restart"


def test_stack_stops_cleanly(own_stack):
    s = own_stack(fast).start()
    children = s.pids()
    # broker, interlock, a simulator and a service per device
    assert len(children) == 2 + 2 * len(s.config["devices"])
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(15) == 0
    for pid in children.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (s.state / "stack.json").exists()
