"""Fixtures: the real archive path. A real dummy stack publishes; the real Telegraf (telegraf/telegraf.conf
unchanged) carries it into a real InfluxDB 2 set up by `slowctl influx-init`, as in compose."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from harness import send, wait_until

from .influx2 import Influx2, series
from .pipeline import DB, archive_pipeline
from .telegraf import Telegraf


@dataclass
class Archive:
    influx: Influx2  # queries with Grafana's read-only token
    db: str
    from_ms: int
    to_ms: int
    topics: set[str]
    telegraf: Telegraf


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Archive:
    """The dummy stack runs ~15 s with one HV channel and one LV channel tripping; the real Telegraf
    archives what it publishes in the real InfluxDB 2."""
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

    with archive_pipeline(work, tweak) as pipe:
        stack, influx, telegraf = pipe.stack, pipe.influx, pipe.telegraf
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

        # Telegraf flushes every 5 s: wait until the trips and every device's availability are archived
        def archived() -> bool:
            trips = series(influx.query('SELECT count("tripped") FROM "supply" WHERE "tripped" = true', DB))
            online = series(influx.query('SELECT last("online") FROM "availability" GROUP BY "device"', DB))
            return bool(trips) and len(online) >= len(stack.config["devices"])

        wait_until(archived, 30, 0.5, "Telegraf to archive the trips and the availability")
        time.sleep(6)  # one more flush: the latest polls of every device
        assert telegraf.errors() == [], telegraf.errors()
        topics = {m.topic for m in viewer.seen() if not m.topic.endswith("/status")}
        yield Archive(influx, DB, started_ms - 60_000, int(time.time() * 1000) + 1000, topics, telegraf)
