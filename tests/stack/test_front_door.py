"""The README's commands on a stock Debian/Ubuntu, the distribution's Python first on PATH: `./scripts/up.sh`,
a second terminal, and the test setup and command.

Its Python is externally managed (PEP 668: `pip install` refuses), so scripts/install.sh installs into a
virtual environment that it makes and up.sh runs from; a second terminal activates it and finds the
running stack from any directory.
"""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from harness import REPO

DISTRIBUTION_PYTHON = Path("/usr/bin/python3")
# a stock machine's PATH: no pyenv, no Go (the native stack then runs without a recorder, and
# scripts/build-test-tools.sh is not run)
STOCK_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


@pytest.mark.stack
@pytest.mark.timeout(900)
@pytest.mark.skipif(not DISTRIBUTION_PYTHON.exists(), reason="no distribution Python at /usr/bin/python3")
def test_up_with_the_distribution_python(own_stack, tmp_path):
    venv, running = tmp_path / "venv", tmp_path / "running"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHON", "VIRTUAL_ENV")}
    env.update(PATH=STOCK_PATH, SLOWCTL_VENV=str(venv), SLOWCTL_RUNTIME_DIR=str(running))
    s = own_stack()
    s.start(timeout=600, command=["bash", str(REPO / "scripts" / "up.sh")], env=env)

    log = s.log()
    assert f"creating the virtual environment {venv} with python3" in log, log[-3000:]
    assert os.path.realpath(venv / "bin" / "python3") == os.path.realpath(DISTRIBUTION_PYTHON)
    assert (
        f"slowctl is installed in {venv}; to use it from another terminal (any directory): . {venv}/bin/activate" in log
    )

    # the second terminal, as the README says: activate, then slowctl from any directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = f". {venv}/bin/activate && cd {elsewhere} && slowctl status && command -v slowctl"
    r = subprocess.run(["bash", "-c", second], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"{venv}/bin/slowctl"
    rows = [line.split() for line in r.stdout.splitlines()[1:] if line.split()[0] in s.config["devices"]]
    assert {row[0] for row in rows} == set(s.config["devices"]) and all(row[1] == "online" for row in rows)

    # Ctrl-C: the last line says everything stopped
    s.proc.send_signal(signal.SIGINT)
    s.proc.wait(30)
    assert s.log().splitlines()[-1].startswith("[slowctl] stopped: all "), s.log()[-2000:]
    assert s.log().splitlines()[-1].endswith(" processes have exited")


@pytest.mark.timeout(900)
@pytest.mark.skipif(not DISTRIBUTION_PYTHON.exists(), reason="no distribution Python at /usr/bin/python3")
def test_the_readme_test_commands_with_the_distribution_python(tmp_path):
    """`./scripts/install.sh --test`, then the README's test command (on one file: the whole suite runs in CI)."""
    built = subprocess.run(["bash", str(REPO / "scripts" / "build-test-tools.sh"), "--paths"], capture_output=True)
    if len(built.stdout.splitlines()) < 4:
        pytest.skip("the test tools are not built: install.sh --test would build them for minutes here")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHON", "VIRTUAL_ENV")}
    env.update(PATH=STOCK_PATH, SLOWCTL_VENV=str(venv))
    r = subprocess.run(
        ["bash", "scripts/install.sh", "--test"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert os.path.realpath(venv / "bin" / "python3") == os.path.realpath(DISTRIBUTION_PYTHON)
    r = subprocess.run(
        [venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_config.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and " passed" in r.stdout.splitlines()[-1], r.stdout[-2000:]
