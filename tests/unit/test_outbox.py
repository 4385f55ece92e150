"""The device outbox: publish now or keep in order, the bound and its loss report, damage at start, and the
adapter's drain (PUBACK before commit, nothing published twice across a reconnect), with a fake MQTT client."""

from __future__ import annotations

import itertools
import json
import threading

import paho.mqtt.client as paho
import pytest

from slowctl.device.adapter import DeviceService
from slowctl.device.events import Event
from slowctl.device.outbox import EVENT, METRICS, MemoryQueue, Outbox, event_messages
from slowctl.mqtt import Endpoint


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def metrics(n: int) -> tuple[str, str]:
    return (METRICS, f"supply,channel=0,device=hv vmon={n} {1_800_000_000_000 + n * 1000}")


def waiting(box: Outbox) -> list[tuple[str, str]]:
    return [m for _, m in box.peek(10_000)]


def test_published_at_once_while_connected_and_nothing_waits():
    box = Outbox(MemoryQueue(10_000), "hv", 10_000)
    out: list = []
    box.offer([metrics(1)], lambda k, p: out.append((k, p)) or True)
    assert out == [metrics(1)] and len(box) == 0


def test_kept_in_order_while_away_and_behind_the_backlog_once_back():
    box = Outbox(MemoryQueue(10_000), "hv", 10_000)
    box.offer([metrics(1)], None)
    box.offer([metrics(2)], None)
    out: list = []
    box.offer([metrics(3)], lambda k, p: out.append((k, p)) or True)  # connected, but 1 and 2 wait: order
    assert out == [] and waiting(box) == [metrics(1), metrics(2), metrics(3)]
    box.commit(box.peek(10)[-1][0])
    box.offer([metrics(4)], lambda k, p: out.append((k, p)) or True)
    assert out == [metrics(4)] and len(box) == 0


def test_what_the_client_does_not_take_is_kept_with_all_after_it():
    box = Outbox(MemoryQueue(10_000), "hv", 10_000)
    takes = iter([True, False, True])
    box.offer([metrics(1), metrics(2), metrics(3)], lambda k, p: next(takes))
    assert waiting(box) == [metrics(2), metrics(3)]


def test_the_bound_counts_what_was_not_kept_and_reports_it_before_the_next_that_fits():
    clock = Clock()
    queue = MemoryQueue(400)
    box = Outbox(queue, "hv", 400, clock)
    kept = 0
    while True:  # fill it
        box.offer([metrics(kept)], None)
        if box.lost:
            break
        kept += 1
    clock.t += 30
    box.offer([metrics(100)], None)
    event = Event("hv", "trip", "channel 0 tripped", 0)
    box.offer(event_messages(event), None)  # an event and its line: one event lost, its line not counted
    assert (box.lost_metrics, box.lost_events) == (2, 1)
    assert len(box) == kept
    box.commit(box.peek(1000)[-1][0])  # the broker took the backlog: room again
    out: list = []
    clock.t += 5
    box.offer([metrics(200)], lambda k, p: out.append((k, p)) or True)
    (kind, payload), (line_kind, line), after = out
    report = json.loads(payload)
    assert kind == EVENT and line_kind == METRICS and line.startswith("event,") and after == metrics(200)
    assert report["kind"] == "outbox_full" and report["severity"] == "major"
    assert report["after"] == {"metrics": 2, "events": 1, "from": 1_800_000_000_000, "to": 1_800_000_030_000}
    assert "2 metrics messages and 1 events" in report["message"] and "(30 s)" in report["message"]
    assert "full" in report["message"]
    assert box.lost == 0


def test_the_loss_report_is_kept_in_the_outbox_when_the_broker_is_still_away():
    box = Outbox(MemoryQueue(1500), "hv", 1500, Clock())
    while not box.lost:
        box.offer([metrics(1)], None)
    box.commit(box.peek(100)[-1][0])  # room again, but not connected
    box.offer([metrics(2)], None)
    kinds = [json.loads(p)["kind"] if k == EVENT else p.split(",")[0] for k, p in waiting(box)]
    assert kinds == ["outbox_full", "event", "supply"] and box.lost == 0


def test_on_disk_it_survives_a_restart(tmp_path):
    box = Outbox.open(tmp_path / "hv.outbox", 1_000_000, "hv")
    box.offer([metrics(1), metrics(2)], None)
    box.close()
    again = Outbox.open(tmp_path / "hv.outbox", 1_000_000, "hv")
    assert waiting(again) == [metrics(1), metrics(2)] and again.start_events() == []
    again.commit(again.peek(1)[0][0])
    again.close()
    assert waiting(Outbox.open(tmp_path / "hv.outbox", 1_000_000, "hv")) == [metrics(2)]


def test_a_damaged_file_becomes_an_event_and_the_rest_is_replayed(tmp_path):
    box = Outbox.open(tmp_path / "hv.outbox", 1_000_000, "hv")
    box.offer([metrics(n) for n in range(3)], None)
    box.close()
    (segment,) = (tmp_path / "hv.outbox").glob("*.jsonl")
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(lines[0] + b"\x00garbage\n" + lines[2])
    again = Outbox.open(tmp_path / "hv.outbox", 1_000_000, "hv")
    assert waiting(again) == [metrics(0)]
    (event,) = again.start_events()
    assert event.kind == "outbox_damaged" and event.severity == "major"
    assert "line 2 unreadable" in event.message and "2 record(s) from 2 on could not be replayed" in event.message
    assert "kept aside as" in event.message and list((tmp_path / "hv.outbox").glob("*.corrupt-*"))


def test_an_unusable_directory_falls_back_to_memory_and_says_so(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    box = Outbox.open(blocker / "hv.outbox", 1_000_000, "hv")
    box.offer([metrics(1)], None)
    assert waiting(box) == [metrics(1)]
    (event,) = box.start_events()
    assert "kept in memory only" in event.message


# --- the adapter's drain, with a fake MQTT client -----------------------------------------------------


class Info:
    def __init__(self, rc: int) -> None:
        self.rc = rc
        self._published = False


class FakeMqtt:
    """Connected or not; every QoS 1 publish is kept (as paho keeps it) until `ack` plays the broker."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.sent: list[tuple[str, str, Info]] = []
        self.full = False

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        if self.full:
            return Info(paho.MQTT_ERR_QUEUE_SIZE)
        info = Info(paho.MQTT_ERR_SUCCESS if self.connected.is_set() else paho.MQTT_ERR_NO_CONN)
        self.sent.append((topic, payload, info))
        return info

    def ack_all(self) -> None:
        for *_, info in self.sent:
            info._published = True

    def payloads(self, topic_end: str) -> list[str]:
        return [p for t, p, _ in self.sent if t.endswith(topic_end)]


@pytest.fixture
def service(stack_config, tmp_path):
    svc = DeviceService("hv", stack_config, Endpoint("127.0.0.1", 1), state_dir=tmp_path)
    svc.mqtt = FakeMqtt()
    return svc


def test_metrics_wait_while_away_and_go_out_in_order_once_acknowledged(service):
    for n in range(5):
        service._offer([metrics(n)])
    assert service.mqtt.sent == [] and len(service.outbox) == 5
    service.mqtt.connected.set()
    service.mqtt.ack_all()
    acker = threading.Timer(0.05, service.mqtt.ack_all)
    acker.start()
    service._drain(lambda: False)
    assert service.mqtt.payloads("/metrics") == [metrics(n)[1] for n in range(5)]
    assert len(service.outbox) == 0, "committed after the PUBACKs"
    service._offer([metrics(5)])  # nothing waits: at once
    assert service.mqtt.payloads("/metrics")[-1] == metrics(5)[1]


def test_a_batch_the_connection_drops_under_is_not_published_twice(service):
    for n in range(3):
        service._offer([metrics(n)])
    service.mqtt.connected.set()

    def drop_then_ack() -> None:
        service.mqtt.connected.clear()  # the broker goes; paho keeps the batch and sends it again later
        service.mqtt.connected.set()
        service.mqtt.ack_all()

    threading.Timer(0.1, drop_then_ack).start()
    service._drain(lambda: False)
    assert service.mqtt.payloads("/metrics") == [metrics(n)[1] for n in range(3)]
    assert len(service.outbox) == 0


def test_stopping_commits_only_what_was_acknowledged(service):
    for n in range(3):
        service._offer([metrics(n)])
    service.mqtt.connected.set()
    service._drain(lambda: True)  # stopping before anything went out
    assert service.mqtt.sent == [] and len(service.outbox) == 3
    stop = itertools.chain([False], itertools.repeat(True))  # stopping while the batch waits for PUBACKs
    service._drain(lambda: next(stop))
    assert len(service.mqtt.sent) == 3
    assert len(service.outbox) == 3, "nothing acknowledged: everything stays for the next start"


def test_a_full_client_queue_keeps_the_rest_for_the_next_turn(service):
    service.mqtt.connected.set()
    service.mqtt.full = True
    service._offer([metrics(1)])
    assert len(service.outbox) == 1 and service._outbox_wake.is_set()
    service.mqtt.full = False
    threading.Timer(0.05, service.mqtt.ack_all).start()
    service._drain(lambda: False)
    assert service.mqtt.payloads("/metrics") == [metrics(1)[1]] and len(service.outbox) == 0


def test_events_and_status_while_away(service):
    service._emit([Event("hv", "trip", "channel 0 tripped", 0)])
    service._publish_status()
    assert service.mqtt.sent == [], "nothing goes to paho while the broker is away"
    kinds = [k for _, (k, _) in service.outbox.peek(10)]
    assert kinds == [EVENT, METRICS], "the event and its line; the status is not kept"


def test_the_bound_is_the_device_config(stack_config, tmp_path):
    hv = stack_config.devices["hv"].model_copy(update={"outbox_max_mb": 0.5})
    stack = stack_config.model_copy(update={"devices": {**stack_config.devices, "hv": hv}})
    svc = DeviceService("hv", stack, Endpoint("127.0.0.1", 1), state_dir=tmp_path)
    assert svc.outbox.max_bytes == 512 * 1024 and (tmp_path / "hv.outbox").is_dir()
