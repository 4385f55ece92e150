"""Fixtures: the real archive path. A real dummy stack publishes; the real Telegraf (telegraf/telegraf.conf
unchanged) carries it into a real InfluxDB 2 set up by `slowctl influx-init`, as in compose."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from harness import DummyStack, send, wait_until

from .influx2 import Influx2, series
from .telegraf import Telegraf

DB = "slowctl"  # the InfluxQL database the DBRP mapping gives the bucket
INFLUX_ENV = {
    "INFLUXDB_ORG": "slowctl",
    "INFLUXDB_BUCKET": DB,
    "INFLUXDB_RETENTION": "0",
    "INFLUXDB_ADMIN_USER": "slowctl-admin",
    "INFLUXDB_ADMIN_PASSWORD": "archive-test-password-0123456789abcdef",
    "INFLUXDB_TOKEN": "archive-test-admin-token-0123456789abcdef0123456789",
}


def influx_init(influx: Influx2, token_dir) -> dict[str, str]:
    """`slowctl influx-init` as the compose job runs it; the scoped tokens it wrote, by file name."""
    cmd = [sys.executable, "-m", "slowctl", "influx-init", "--url", influx.url, "--token-dir", str(token_dir)]
    r = subprocess.run(cmd, env={**os.environ, **INFLUX_ENV}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return {name: (token_dir / name).read_text() for name in ("telegraf", "grafana")}


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

    influx = Influx2(work / "influxdb")
    stack = DummyStack(work / "stack", tweak)
    telegraf = None
    try:
        influx.start()
        tokens = influx_init(influx, work / "tokens")
        influx.token = tokens["grafana"]
        stack.start()
        # the same listener, user and password as the compose Telegraf (plain MQTT inside the stack)
        telegraf = Telegraf(
            work / "telegraf",
            {
                "MQTT_SERVER": f"tcp://127.0.0.1:{stack.port}",
                "MQTT_PASSWORD_TELEGRAF": stack.credentials["telegraf"],
                "INFLUXDB_URL": influx.url,
                "INFLUXDB_TOKEN": tokens["telegraf"],
                "INFLUXDB_ORG": INFLUX_ENV["INFLUXDB_ORG"],
                "INFLUXDB_BUCKET": INFLUX_ENV["INFLUXDB_BUCKET"],
            },
        ).start()
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
    finally:
        if telegraf:
            telegraf.stop()
        stack.stop()
        influx.stop()
