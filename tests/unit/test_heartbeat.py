"""The device service's heartbeat and `slowctl healthcheck` (the compose healthcheck)."""

import os
import subprocess
import sys
import time

from slowctl.device.heartbeat import Heartbeat, check


def test_beats_only_while_alive_and_at_most_every_period(tmp_path):
    path = tmp_path / "beat"
    hb = Heartbeat(str(path), every=0.2)
    hb.beat(alive=False)
    assert not path.exists()
    hb.beat(alive=True)
    first = path.stat().st_mtime_ns
    os.utime(path, ns=(first - 10**9, first - 10**9))
    hb.beat(alive=True)  # within the period: untouched
    assert path.stat().st_mtime_ns == first - 10**9
    time.sleep(0.25)
    hb.beat(alive=True)
    assert path.stat().st_mtime_ns > first - 10**9


def test_no_file_configured_does_nothing():
    Heartbeat(None).beat(alive=True)


def test_check_fresh_stale_missing(tmp_path):
    path = tmp_path / "beat"
    assert "missing" in check(path, 15)
    path.touch()
    assert check(path, 15) is None
    old = time.time() - 60
    os.utime(path, (old, old))
    assert "60 s ago (limit 15 s)" in check(path, 15)


def healthcheck(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "slowctl", "healthcheck", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=30,
    )


def test_healthcheck_command_exit_codes(tmp_path):
    path = tmp_path / "beat"
    r = healthcheck(env={"SLOWCTL_HEALTH_FILE": str(path)})
    assert r.returncode == 1 and "missing" in r.stdout
    path.touch()
    r = healthcheck("--file", str(path))
    assert r.returncode == 0 and r.stdout.strip() == "healthy"
    old = time.time() - 100
    os.utime(path, (old, old))
    assert healthcheck("--file", str(path), "--max-age", "30").returncode == 1
    env = {k: v for k, v in os.environ.items() if k != "SLOWCTL_HEALTH_FILE"}
    r = subprocess.run([sys.executable, "-m", "slowctl", "healthcheck"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "SLOWCTL_HEALTH_FILE is not set" in r.stderr
