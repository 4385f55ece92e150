"""Nothing lost while the broker is down: the device services' outbox, against the real native stack.

The broker is stopped by SIGTERM, as an operator, systemd or docker stops it: Mosquitto then saves its
state, so the test's subscriber keeps its persistent session (like Telegraf's) across the restart and
sees everything the services publish once they are back, however fast they reconnect. (A broker killed
outright loses the sessions it had not autosaved yet; tests/stack/test_resilience.py kills it.) The
services' side is the same either way: their connection drops, they keep publishing into the outbox.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from harness import wait_until
from slowctl.stack.supervisor import port_open

pytestmark = pytest.mark.stack

OUTAGE = 4.0  # s: the supervisor's restart delay, for the broker and for a killed service


def slow_restarts(c: dict) -> None:
    c["mqtt"]["keepalive"] = 2
    c["supervisor"].update(backoff_initial=OUTAGE, backoff_max=OUTAGE, max_restarts=10)


class Subscriber:
    """A viewer with a persistent session: the broker queues for it while it is away, and keeps it across
    its own restart when it could save it (SIGTERM)."""

    def __init__(self, stack, *topics: str) -> None:
        self.received: list[tuple[float, str, bytes]] = []  # arrival (time.time()), topic, payload
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"outbox-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set("viewer", stack.credentials["viewer"])
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, u, flags, rc, p: (
            None if flags.session_present else c.subscribe([(t, 1) for t in topics])
        )
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        # clean start the first time only (paho's default): its reconnects resume the session
        self.client.connect("127.0.0.1", stack.port, keepalive=30, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(5), "no SUBACK"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.received.append((time.time(), msg.topic, msg.payload))

    def metrics(self, device: str, channel: int = 0) -> list[tuple[float, float]]:
        """(arrival, reading timestamp) of one channel's metrics lines, in the order they arrived (s)."""
        with self._lock:
            got = list(self.received)
        out = []
        for arrived, topic, payload in got:
            if topic != f"slowctl/{device}/metrics":
                continue
            for line in payload.decode().splitlines():
                head = line.split(" ", 1)[0].split(",")
                if head[0] != "event" and f"channel={channel}" in head[1:]:
                    out.append((arrived, int(line.rsplit(" ", 1)[1]) / 1000))
        return out

    def events(self, device: str, kind: str) -> list[dict]:
        with self._lock:
            got = list(self.received)
        events = [json.loads(p) for _, t, p in got if t == f"slowctl/{device}/event"]
        return [e for e in events if e["kind"] == kind]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber():
    made: list[Subscriber] = []

    def make(stack, *topics: str) -> Subscriber:
        made.append(Subscriber(stack, *topics))
        return made[-1]

    yield make
    for s in made:
        s.close()


def stop_broker(stack) -> float:
    """SIGTERM; the supervisor starts it again after OUTAGE s. Returns when it went (time.time())."""
    os.kill(stack.pids()["broker"], signal.SIGTERM)
    wait_until(lambda: not port_open("127.0.0.1", stack.port), 5, what="the broker to stop")
    return time.time()


def gaps(stamps: list[float], start: float, end: float, period: float = 1.0) -> list[tuple[float, float]]:
    inside = sorted(t for t in stamps if start <= t <= end)
    edges = [start, *inside, end]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b - a > 1.5 * period]


def test_metrics_of_a_broker_outage_arrive_after_it_in_order_with_their_timestamps(own_stack, subscriber):
    """hv keeps running through the outage; lv is killed during it and comes back after the broker."""
    s = own_stack(slow_restarts).start()
    sub = subscriber(s, "slowctl/+/metrics", "slowctl/+/event")
    time.sleep(3)
    down = stop_broker(s)
    time.sleep(1.5)
    os.kill(s.pids()["service-lv"], signal.SIGKILL)  # what it queued is on disk: nothing else keeps it
    lv_killed = time.time()
    wait_until(lambda: port_open("127.0.0.1", s.port), OUTAGE + 10, what="the broker back")
    back = time.time()
    # lv comes back OUTAGE s after its kill, reads its outbox and publishes it
    wait_until(lambda: any(ts > back for _, ts in sub.metrics("lv")), OUTAGE + 15, what="lv's live metrics")
    time.sleep(2)
    end = time.time() - 1.5

    hv = sub.metrics("hv")
    stamps = [ts for _, ts in hv]
    assert gaps(stamps, down - 3, end) == [], "hv: every second of the outage arrived"
    outage = [(arrived, ts) for arrived, ts in hv if down + 0.5 < ts < back - 0.5]
    assert len(outage) >= OUTAGE - 2 and all(arrived >= back for arrived, _ in outage), "late, with their own time"
    # in order and once each: what went through the outbox (a message in flight when the broker went may come
    # twice: QoS 1 is at least once)
    after = [ts for ts in stamps if ts > down + 0.2]
    assert after == sorted(after) and len(set(after)) == len(after)

    lv = [ts for _, ts in sub.metrics("lv")]
    assert gaps(lv, down - 3, lv_killed - 1.0) == [], "lv: what it queued before it was killed arrived"
    replayed = [ts for ts in lv if down + 0.2 < ts < lv_killed]
    assert replayed and replayed == sorted(replayed) and len(set(replayed)) == len(replayed)
    assert sub.events("lv", "service_start"), "the restarted service's own record"

    # everything acknowledged is committed: the outboxes are empty again
    for device in ("hv", "lv"):
        box = s.state / "devices" / f"{device}.outbox"
        wait_until(lambda box=box: not list(box.glob("*.jsonl")), 5, what=f"{device}'s outbox to be empty")


def test_a_damaged_outbox_and_a_full_one_are_reported_and_the_services_run_on(own_stack, subscriber):
    def tweak(c: dict) -> None:
        slow_restarts(c)
        c["supervisor"].update(backoff_initial=2 * OUTAGE, backoff_max=2 * OUTAGE)
        c["devices"]["climate"]["outbox_max_mb"] = 0.001  # 1 KiB: a few messages, then full

    s = own_stack(tweak).start()
    sub = subscriber(s, "slowctl/+/metrics", "slowctl/+/event", "slowctl/+/status")
    time.sleep(2)
    down = stop_broker(s)
    box = s.state / "devices" / "hv.outbox"
    wait_until(lambda: sum(len(p.read_bytes().splitlines()) for p in box.glob("*.jsonl")) >= 3, 5, what="hv queueing")
    os.kill(s.pids()["service-hv"], signal.SIGKILL)
    (segment,) = box.glob("*.jsonl")
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(lines[0] + b'[0,"damaged by the test\n' + b"".join(lines[2:]))
    wait_until(lambda: port_open("127.0.0.1", s.port), 2 * OUTAGE + 10, what="the broker back")
    back = time.time()

    (damaged,) = wait_until(lambda: sub.events("hv", "outbox_damaged"), 3 * OUTAGE + 15, what="hv's report")
    assert damaged["severity"] == "major"
    assert "line 2 unreadable" in damaged["message"] and "could not be replayed" in damaged["message"]
    assert "kept aside as" in damaged["message"]
    assert list(box.glob("*.corrupt-*")), "the damaged file is kept for a person to look at"
    hv = [ts for _, ts in sub.metrics("hv")]
    assert [ts for ts in hv if down - 1 < ts < down + 2], "what was before the damage is replayed"

    def running_again() -> bool:
        statuses = [json.loads(p) for _, t, p in list(sub.received) if t == "slowctl/hv/status"]
        return any(st["state"] == "ok" and st["ts"] / 1000 > back for st in statuses)

    wait_until(running_again, 15, what="hv running again")

    (full,) = wait_until(lambda: sub.events("climate", "outbox_full"), 10, what="climate's loss report")
    lost = full["after"]
    assert full["severity"] == "major" and lost["metrics"] >= 1
    assert down - 1 <= lost["from"] / 1000 <= lost["to"] / 1000 <= back + 1, lost
    assert f"{lost['metrics']} metrics messages" in full["message"], full["message"]
    climate = [ts for _, ts in sub.metrics("climate")]
    assert any(down < ts < back for ts in climate), "what fitted arrived"
    assert gaps(climate, down - 2, back), "and the rest is missing: bounded"
