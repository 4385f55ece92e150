"""A real InfluxDB 2 (`influxd`, built from source: tests/tools.py) of its own, on a free loopback port."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.tools import tool

from harness import die_with_parent, free_port


class Influx2:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "influxd.log"

    def start(self, timeout: float = 30.0) -> Influx2:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(tool("influxd")),
            "--http-bind-address", f"127.0.0.1:{self.port}",
            "--bolt-path", str(self.workdir / "influxd.bolt"),
            "--engine-path", str(self.workdir / "engine"),
            "--sqlite-path", str(self.workdir / "influxd.sqlite"),
            "--reporting-disabled", "--ui-disabled", "--log-level", "error",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"influxd did not answer within {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
