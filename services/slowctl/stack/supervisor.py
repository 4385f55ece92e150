"""Process supervision for the native stack: start in order, restart with backoff, give up loudly."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from slowctl.config import SupervisorConfig


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_port: tuple[str, int] | None = None  # ready once this TCP port accepts
    tier: int = 0  # stopped after every higher tier (the broker is tier 0)


@dataclass
class Managed:
    spec: ProcessSpec
    proc: subprocess.Popen | None = None
    restarts: int = 0
    recent: deque = field(default_factory=deque)  # times of recent restarts
    backoff: float = 0.0
    restart_at: float | None = None
    failed: bool = False
    started_at: float = 0.0


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Linux: deliver `sig` to this process when its parent dies (call in a child before exec)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: children may outlive a killed supervisor


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Supervisor:
    def __init__(self, cfg: SupervisorConfig, log_dir: Path, say: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.log_dir = log_dir
        self.say = say
        self.procs: dict[str, Managed] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def start(self, specs: list[ProcessSpec], ready_timeout: float = 10.0) -> None:
        """Start processes together, then wait until each is ready (its port accepts)."""
        group = []
        for spec in specs:
            m = self.procs[spec.name] = Managed(spec, backoff=self.cfg.backoff_initial)
            self._spawn(m)
            group.append(m)
        deadline = time.monotonic() + ready_timeout
        for m in group:
            if not m.spec.ready_port:
                continue
            while not port_open(*m.spec.ready_port):
                if m.proc and m.proc.poll() is not None:
                    raise RuntimeError(
                        f"{m.spec.name} exited with code {m.proc.returncode} during start-up "
                        f"(log: {self.log_path(m.spec.name)})"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{m.spec.name} not ready on port {m.spec.ready_port[1]} after {ready_timeout:g} s"
                    )
                time.sleep(0.02)

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _spawn(self, m: Managed) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(m.spec.name), "ab") as logf:
            env = {**os.environ, **m.spec.env, "SLOWCTL_RESTARTS": str(m.restarts)}
            # a supervisor killed outright takes its processes with it (they get SIGTERM)
            m.proc = subprocess.Popen(
                m.spec.argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=set_parent_death_signal,
            )
        m.started_at = time.monotonic()
        m.restart_at = None

    def tick(self) -> None:
        """Notice exits, schedule and perform restarts."""
        now = time.monotonic()
        with self._lock:
            if self._stopping:
                return
            for m in self.procs.values():
                if m.failed or m.proc is None:
                    continue
                if m.restart_at is None and m.proc.poll() is not None:
                    self._on_exit(m, now)
                elif m.restart_at is not None and now >= m.restart_at:
                    m.restarts += 1
                    m.recent.append(now)
                    self._spawn(m)
                    self.say(f"restarted {m.spec.name} (restart {m.restarts})")

    def _on_exit(self, m: Managed, now: float) -> None:
        while m.recent and now - m.recent[0] > self.cfg.window:
            m.recent.popleft()
        if now - m.started_at > self.cfg.window:
            m.backoff = self.cfg.backoff_initial  # it ran fine for a while: start over
        if len(m.recent) >= self.cfg.max_restarts:
            m.failed = True
            code = m.proc.returncode if m.proc else None
            self.say(
                f"GIVING UP on {m.spec.name}: it exited (code {code}) after {len(m.recent)} "
                f"restarts within {self.cfg.window:g} s; see {self.log_path(m.spec.name)}"
            )
            return
        self.say(
            f"{m.spec.name} exited with code {m.proc.returncode if m.proc else None}; restarting in {m.backoff:.1f} s"
        )
        m.restart_at = now + m.backoff
        m.backoff = min(m.backoff * 2, self.cfg.backoff_max)

    def run(self, stop: threading.Event, period: float = 0.1) -> None:
        while not stop.wait(period):
            self.tick()

    def stop_all(self, timeout: float = 5.0) -> tuple[int, list[str], list[str]]:
        """Stop tier by tier, highest first (services, then simulators, then the broker). Returns how many
        were running, those killed after `timeout` s without stopping on SIGTERM, and those still there
        after SIGKILL (name and pid)."""
        with self._lock:
            self._stopping = True
        count, killed, alive = 0, [], []
        for tier in sorted({m.spec.tier for m in self.procs.values()}, reverse=True):
            running = [
                (m.spec.name, m.proc)
                for m in self.procs.values()
                if m.spec.tier == tier and m.proc is not None and m.proc.poll() is None
            ]
            count += len(running)
            for _, p in running:
                p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for name, p in running:
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    killed.append(name)
                    p.kill()
                    try:
                        p.wait(timeout)
                    except subprocess.TimeoutExpired:
                        alive.append(f"{name} (pid {p.pid})")
        return count, killed, alive
