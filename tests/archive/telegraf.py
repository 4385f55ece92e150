"""The real Telegraf (built from source: tests/tools.py) running the project's telegraf/telegraf.conf
unchanged, started by the compose service's own entrypoint line (which hands the token over from its
file): only the environment and two paths differ from compose."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from tests.tools import tool

from harness import REPO, die_with_parent, free_port, stop_process

CONF = REPO / "telegraf" / "telegraf.conf"
TOKEN_IN_COMPOSE = "/var/lib/slowctl/influxdb-token/token"
EXEC_IN_COMPOSE = "exec /entrypoint.sh telegraf"


def compose_entrypoint(token_file: Path) -> list[str]:
    """docker-compose.yml's telegraf entrypoint, with the token file and the image's entrypoint native."""
    shell, flag, script = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["telegraf"][
        "entrypoint"
    ]
    script = script.replace("$$", "$")  # compose's escape of `$`
    assert TOKEN_IN_COMPOSE in script and EXEC_IN_COMPOSE in script, script
    native = f"exec {shlex.quote(str(tool('telegraf')))} --config {shlex.quote(str(CONF))}"
    return [shell, flag, script.replace(TOKEN_IN_COMPOSE, str(token_file)).replace(EXEC_IN_COMPOSE, native)]


class Telegraf:
    def __init__(self, workdir: Path, env: dict[str, str], token_file: Path) -> None:
        self.workdir = workdir
        self.token_file = token_file
        self.health = f"http://127.0.0.1:{free_port()}"
        self.env = {**env, "TELEGRAF_HEALTH_ADDRESS": self.health}
        self.log = workdir / "telegraf.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Telegraf:
        """Started, and running: its health output answers (it has loaded the config and the token).
        A health port taken meanwhile (free_port() released it) gets another one."""
        for _ in range(3):
            if self._start(timeout):
                return self
            self.health = f"http://127.0.0.1:{free_port()}"
            self.env["TELEGRAF_HEALTH_ADDRESS"] = self.health
        raise RuntimeError(f"telegraf found its health port taken three times: {self.log.read_text()[-2000:]}")

    def _start(self, timeout: float) -> bool:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir), **self.env}
        seen = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                compose_entrypoint(self.token_file),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                said = self.log.read_bytes()[seen:].decode(errors="replace")
                if "address already in use" in said:
                    return False
                raise RuntimeError(f"telegraf exited {self.proc.returncode}: {said[-2000:]}")
            try:
                with urllib.request.urlopen(self.health + "/", timeout=1):
                    return True
            except urllib.error.HTTPError:
                return True  # 503: up, the output not keeping up yet
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"telegraf not up within {timeout} s: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc)

    def errors(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if " E! " in line]
