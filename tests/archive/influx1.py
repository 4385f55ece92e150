"""A throw-away InfluxDB 1.x (`influxd` from apt) on free loopback ports, and a small HTTP client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import die_with_parent, free_port, wait_until

INSTALL_HINT = "influxd (InfluxDB 1.x) is not installed: run `bash scripts/install.sh --test`"


def find_influxd() -> str | None:
    return shutil.which("influxd") or next((p for p in ("/usr/bin/influxd",) if os.path.exists(p)), None)


def _config(root: Path, http_port: int, rpc_port: int) -> str:
    # Every listener is on 127.0.0.1 and a free port, or off; no phoning home.
    return f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{root}/meta"
  logging-enabled = false
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[retention]
  enabled = false
[shard-precreation]
  enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
[ifql]
  enabled = false
  bind-address = "127.0.0.1:{free_port()}"
[logging]
  level = "warn"
"""


class Influx1:
    """`influxd run -config <tmp>`; stop() ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "influxdb.conf"
        self.config.write_text(_config(workdir, self.port, free_port()))
        self.binary = binary
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Influx1:
        # INFLUXDB_* variables would override the config file (e.g. from a sourced .env)
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}
        self._log = open(self.workdir / "influxd.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "run", "-config", str(self.config)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            wait_until(lambda: self.proc.poll() is not None or self._ping(), timeout, 0.1, "influxd to answer /ping")
            assert self.proc.poll() is None, (self.workdir / "influxd.log").read_text(errors="replace")
        except BaseException:
            self.stop()
            raise
        return self

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=1) as r:
                return r.status == 204
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            self._log.close()

    # --- HTTP API (1.x) ------------------------------------------------------------------
    def query(self, q: str, db: str | None = None, method: str = "GET") -> dict:
        """Run InfluxQL the way Grafana does (epoch=ms); raise on any error, also statement errors."""
        params = {"q": q, "epoch": "ms"}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params)
        if method == "GET":
            req = urllib.request.Request(f"{self.url}/query?{data}")
        else:
            req = urllib.request.Request(f"{self.url}/query", data=data.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{exc.code} {exc.read().decode(errors='replace')} for {q}") from None
        for result in body.get("results", []):
            if "error" in result:
                raise AssertionError(f"InfluxQL error: {result['error']} in {q}")
        return body

    def write(self, db: str, lines: list[str], precision: str = "ms") -> None:
        body = "\n".join(lines).encode()
        url = f"{self.url}/write?" + urllib.parse.urlencode({"db": db, "precision": precision})
        req = urllib.request.Request(url, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 204, r.status
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"write refused: {exc.code} {exc.read().decode(errors='replace')}") from None


def series(body: dict) -> list[dict]:
    """All series of all statements of a query answer."""
    return [s for result in body.get("results", []) for s in result.get("series", [])]


def wait_for_points(influx: Influx1, db: str, measurement: str, timeout: float = 5.0) -> None:
    wait_until(
        lambda: series(influx.query(f'SELECT count(*) FROM "{measurement}"', db)),
        timeout,
        0.1,
        f"points in {measurement}",
    )


def tag_values(influx: Influx1, db: str, q: str) -> list[str]:
    """The values a SHOW TAG VALUES query lists (what Grafana offers in a variable)."""
    body = influx.query(q, db, method="POST")
    return sorted({row[1] for s in series(body) for row in s["values"]})
