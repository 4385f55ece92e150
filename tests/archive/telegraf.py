"""The real Telegraf (built from source: tests/tools.py) running the project's telegraf/telegraf.conf
unchanged: only the environment differs from compose (broker and InfluxDB addresses, credentials)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.tools import tool

from harness import REPO, die_with_parent, free_port

CONF = REPO / "telegraf" / "telegraf.conf"


class Telegraf:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.health = f"http://127.0.0.1:{free_port()}"
        self.env = {**env, "TELEGRAF_HEALTH_ADDRESS": self.health}
        self.log = workdir / "telegraf.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Telegraf:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir), **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(tool("telegraf")), "--config", str(CONF)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def errors(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if " E! " in line]
