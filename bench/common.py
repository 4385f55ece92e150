"""Shared plumbing for the benchmarks: the test harness's dummy stack, timing waiters, reporting."""

from __future__ import annotations

import json
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import DummyStack, free_port, wait_until  # noqa: E402,F401

RESULTS = REPO / "bench" / "results"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float], scale: float = 1.0) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50) * scale, 3),
        "p99": round(percentile(values, 99) * scale, 3),
        "max": round(max(values) * scale, 3),
        "min": round(min(values) * scale, 3),
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def report(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


class Listener:
    """A callback-driven MQTT client: waits for a matching message without polling delays."""

    def __init__(self, stack: DummyStack, role: str, topics: list[str]) -> None:
        self._cond = threading.Condition()
        self._waiters: list[tuple[Callable[[mqtt.MQTTMessage], bool], list]] = []
        self.on_message: Callable[[mqtt.MQTTMessage, float], None] | None = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.username_pw_set(role, stack.credentials[role])
        c.on_message = self._on_message
        subscribed = threading.Event()

        def on_connect(cl, u, f, r, p) -> None:
            cl.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cl.subscribe([(t, 1) for t in topics])

        c.on_connect = on_connect
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect("127.0.0.1", stack.port)
        c.loop_start()
        assert subscribed.wait(10), "could not subscribe"
        self.client = c

    def _on_message(self, client, userdata, msg) -> None:
        now = time.perf_counter()
        if self.on_message:
            self.on_message(msg, now)
        with self._cond:
            for pred, slot in self._waiters:
                if not slot and pred(msg):
                    slot.append(now)
            self._cond.notify_all()

    def expect(self, pred: Callable[[mqtt.MQTTMessage], bool]) -> list:
        slot: list = []
        with self._cond:
            self._waiters.append((pred, slot))
        return slot

    def wait(self, slot: list, timeout: float) -> float:
        with self._cond:
            self._cond.wait_for(lambda: bool(slot), timeout)
            self._waiters = [w for w in self._waiters if w[1] is not slot]
        if not slot:
            raise TimeoutError("no matching message")
        return slot[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
