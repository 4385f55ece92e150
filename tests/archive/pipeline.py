"""The archive path as compose runs it, natively: a dummy stack, the real Telegraf, the real InfluxDB 2 set up
by `slowctl influx-init`. Used by the archive tests and by bench/archive_loss.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import DummyStack

from .influx2 import Influx2
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


def influx_init(influx: Influx2, token_dir: Path) -> dict[str, str]:
    """`slowctl influx-init` as the compose job runs it; the scoped tokens it wrote, by file name."""
    cmd = [sys.executable, "-m", "slowctl", "influx-init", "--url", influx.url, "--token-dir", str(token_dir)]
    r = subprocess.run(cmd, env={**os.environ, **INFLUX_ENV}, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"influx-init failed: {r.stderr}")
    return {name: (token_dir / name / "token").read_text() for name in ("telegraf", "grafana")}


@dataclass
class Pipeline:
    stack: DummyStack
    influx: Influx2  # queries with Grafana's read-only token
    telegraf: Telegraf


@contextmanager
def archive_pipeline(work: Path, tweak: Callable[[dict], None] | None = None) -> Iterator[Pipeline]:
    influx = Influx2(work / "influxdb")
    stack = DummyStack(work / "stack", tweak)
    telegraf = None
    try:
        influx.start()
        tokens = influx_init(influx, work / "tokens")  # Telegraf reads its file, as in compose
        influx.token = tokens["grafana"]
        stack.start()
        # the same listener, user and password as the compose Telegraf (plain MQTT inside the stack)
        env = {
            "MQTT_SERVER": f"tcp://127.0.0.1:{stack.port}",
            "MQTT_PASSWORD_TELEGRAF": stack.credentials["telegraf"],
            "INFLUXDB_URL": influx.url,
            "INFLUXDB_ORG": INFLUX_ENV["INFLUXDB_ORG"],
            "INFLUXDB_BUCKET": INFLUX_ENV["INFLUXDB_BUCKET"],
        }
        telegraf = Telegraf(work / "telegraf", env, work / "tokens" / "telegraf" / "token").start()
        yield Pipeline(stack, influx, telegraf)
    finally:
        if telegraf:
            telegraf.stop()
        stack.stop()
        influx.stop()
