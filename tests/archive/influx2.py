"""A real InfluxDB 2 (`influxd`, built from source: tests/tools.py) of its own, on a free loopback port."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.tools import tool

from harness import die_with_parent, free_port, stop_process


class Influx2:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "influxd.log"
        self.token = ""  # for query(): the tests set Grafana's token

    def start(self, timeout: float = 30.0) -> Influx2:
        """Started and answering. A port taken meanwhile (free_port() released it) gets another one."""
        for _ in range(3):
            if self._start(timeout):
                return self
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
        raise RuntimeError(f"influxd found its port taken three times: {self.log.read_text()[-2000:]}")

    def _start(self, timeout: float) -> bool:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(tool("influxd")),
            "--http-bind-address", f"127.0.0.1:{self.port}",
            "--bolt-path", str(self.workdir / "influxd.bolt"),
            "--engine-path", str(self.workdir / "engine"),
            "--sqlite-path", str(self.workdir / "influxd.sqlite"),
            "--reporting-disabled", "--ui-disabled", "--log-level", "error",
        ]  # fmt: skip
        seen = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                said = self.log.read_bytes()[seen:].decode(errors="replace")
                if "address already in use" in said:
                    return False
                raise RuntimeError(f"influxd exited: {said[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if json.load(r).get("name") == "influxdb":  # ours, not whoever else is on the port
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"influxd did not answer within {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc)

    def query(self, q: str, db: str | None = None, method: str = "GET") -> dict:
        """InfluxQL the way Grafana runs it (epoch=ms, with `self.token`: Grafana's read-only token);
        raise on any error, also statement errors."""
        params = {"q": q, "epoch": "ms", **({"db": db} if db else {})}
        data = urllib.parse.urlencode(params)
        if method == "GET":
            req = urllib.request.Request(f"{self.url}/query?{data}")
        else:
            req = urllib.request.Request(f"{self.url}/query", data=data.encode(), method="POST")
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        req.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{exc.code} {exc.read().decode(errors='replace')} for {q}") from None
        for result in body.get("results", []):
            if "error" in result:
                raise AssertionError(f"InfluxQL error: {result['error']} in {q}")
        return body


def series(body: dict) -> list[dict]:
    """All series of all statements of a query answer."""
    return [s for result in body.get("results", []) for s in result.get("series", [])]


def tag_values(influx: Influx2, db: str, q: str) -> list[str]:
    """The values a SHOW TAG VALUES query lists (what Grafana offers in a variable)."""
    body = influx.query(q, db, method="POST")
    return sorted({row[1] for s in series(body) for row in s["values"]})
