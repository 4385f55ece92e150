"""Fixtures: a real InfluxDB 1.x filled with what a real dummy stack published, converted as Telegraf does."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from harness import DummyStack, send, wait_until

from .influx1 import INSTALL_HINT, Influx1, find_influxd
from .telegraf_mirror import Telegraf

DB = "slowctl"  # what the DBRP mapping calls the bucket in production


@pytest.fixture(scope="session")
def influxd_binary() -> str:
    binary = find_influxd()
    if not binary:
        pytest.skip(INSTALL_HINT)
    return binary


@pytest.fixture
def influx(tmp_path, influxd_binary):
    """An empty InfluxDB 1.x of its own."""
    server = Influx1(tmp_path / "influxdb", influxd_binary).start()
    yield server
    server.stop()


@dataclass
class Archive:
    influx: Influx1
    db: str
    from_ms: int
    to_ms: int
    lines: list[str]
    topics: set[str]


@pytest.fixture(scope="module")
def archive(tmp_path_factory, influxd_binary) -> Archive:
    """The dummy stack runs ~15 s with one HV channel tripping; every metrics, availability and
    health message a viewer receives goes through the Telegraf mirror into InfluxDB 1.x."""
    from slowctl.stack.native import StackError, find_mosquitto

    try:
        find_mosquitto()
    except StackError as exc:
        pytest.skip(str(exc))
    work = tmp_path_factory.mktemp("archive")
    scenario = work / "hv-trip.yaml"
    # 10 kOhm on channel 2: more current than any limit above 30 V, so it trips once switched on
    scenario.write_text("events:\n  - {at: 0.2, channel: 2, set: {load: 10000}}\n")
    # an LV short on channel 1 (the HMP's output 2: scenarios count as the instrument does) with the
    # electronic fuse on: the LV dashboard has a trip to show too
    lv_short = work / "lv-short.yaml"
    lv_short.write_text("events:\n  - {at: 0.2, channel: 2, set: {load: 0.1}}\n")

    def tweak(config: dict) -> None:
        config["devices"]["hv"]["simulator"]["scenario"] = str(scenario)
        config["devices"]["lv"]["simulator"]["scenario"] = str(lv_short)
        config["devices"]["lv"].setdefault("options", {})["fuse"] = True

    influx = Influx1(work / "influxdb", influxd_binary)
    stack = DummyStack(work / "stack", tweak)
    try:
        influx.start()
        influx.query(f'CREATE DATABASE "{DB}"', method="POST")
        stack.start()
        started_ms = int(time.time() * 1000)
        viewer = stack.probe("viewer")
        viewer.subscribe("slowctl/+/metrics", "slowctl/+/availability", "slowctl/+/health", "slowctl/+/status")
        operator = stack.probe("operator")
        operator.subscribe("slowctl/+/reply")
        for dev in ("hv", "lv", "chiller"):  # online is the service; commands need the instrument connected
            viewer.wait_json(f"slowctl/{dev}/status", lambda d: d["state"] == "ok", timeout=15)
        for topic, value in [
            ("slowctl/hv/cmd/vset/0", "50"),
            ("slowctl/hv/cmd/on/0", ""),
            ("slowctl/hv/cmd/vset/2", "60"),
            ("slowctl/hv/cmd/on/2", ""),
            ("slowctl/lv/cmd/on/0", ""),
            ("slowctl/lv/cmd/vset/1", "1.5"),
            ("slowctl/lv/cmd/iset/1", "0.5"),
            ("slowctl/lv/cmd/on/1", ""),
            ("slowctl/chiller/cmd/on/0", ""),
        ]:
            reply = send(operator, topic, value)
            assert reply["ok"], reply
        viewer.wait_json("slowctl/hv/status", lambda d: d["channels"][2]["state"] == "TRIPPED", timeout=30)
        viewer.wait_json("slowctl/lv/status", lambda d: d["channels"][1]["state"] == "TRIPPED", timeout=10)
        time.sleep(3)  # a few more polls of every device, the chiller's 2 s period included
        wait_until(
            lambda: any(b"tripped=true" in m.payload for m in viewer.seen("slowctl/hv/metrics")),
            5,
            what="a metrics line with tripped=true",
        )
        telegraf = Telegraf()
        lines: list[str] = []
        topics = set()
        now_ms = int(time.time() * 1000)
        for msg in viewer.seen():
            if msg.topic.endswith("/status"):
                continue
            topics.add(msg.topic)
            lines += telegraf.convert(msg.topic, msg.payload, now_ms)
        influx.write(DB, lines)
        yield Archive(influx, DB, started_ms - 60_000, int(time.time() * 1000) + 1000, lines, topics)
    finally:
        stack.stop()
        influx.stop()
