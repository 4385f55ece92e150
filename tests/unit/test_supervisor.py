"""Supervisor with real short-lived subprocesses: restart with backoff, give up, stop."""

import signal
import sys
import time

import pytest

from slowctl.config import SupervisorConfig
from slowctl.stack.supervisor import ProcessSpec, Supervisor


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run_until(sup: Supervisor, predicate, timeout: float, period: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        sup.tick()
        time.sleep(period)


@pytest.fixture
def make(tmp_path):
    sups = []

    def _make(**cfg):
        said: list[tuple[float, str]] = []
        sup = Supervisor(SupervisorConfig(**cfg), tmp_path / "logs", say=lambda m: said.append((time.monotonic(), m)))
        sups.append(sup)
        return sup, said

    yield _make
    for sup in sups:
        sup.stop_all(timeout=1.0)


CRASH = "import os; print('run', os.environ['SLOWCTL_RESTARTS'], flush=True); raise SystemExit(3)"


def test_crashing_process_is_restarted_with_growing_backoff_then_given_up(make):
    sup, said = make(max_restarts=3, window=30, backoff_initial=0.1, backoff_max=0.25)
    sup.start([ProcessSpec("crashy", py(CRASH))])
    m = sup.procs["crashy"]
    run_until(sup, lambda: m.failed, timeout=8)
    messages = [msg for _, msg in said]
    assert messages == [
        "crashy exited with code 3; restarting in 0.1 s",
        "restarted crashy (restart 1)",
        "crashy exited with code 3; restarting in 0.2 s",
        "restarted crashy (restart 2)",
        "crashy exited with code 3; restarting in 0.2 s",  # 0.25 capped, shown with one decimal
        "restarted crashy (restart 3)",
        messages[-1],
    ]
    assert messages[-1].startswith("GIVING UP on crashy: it exited (code 3) after 3 restarts within 30 s")
    assert str(sup.log_path("crashy")) in messages[-1]
    assert m.restarts == 3
    # the gaps between an exit notice and the restart grow with the backoff
    times = {msg: t for t, msg in said}
    gaps = [
        times[f"restarted crashy (restart {i})"] - t
        for i, (t, msg) in zip((1, 2, 3), [x for x in said if "restarting in" in x[1]])
    ]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.25
    assert gaps[0] < gaps[1]
    # each run saw its restart count in the environment
    log = sup.log_path("crashy").read_text().split()
    assert [w for w in log if w.isdigit()] == ["0", "1", "2", "3"]


def test_given_up_process_stays_down(make):
    sup, said = make(max_restarts=0, window=30, backoff_initial=0.05, backoff_max=0.05)
    sup.start([ProcessSpec("once", py("raise SystemExit(7)"))])
    run_until(sup, lambda: sup.procs["once"].failed, timeout=5)
    assert len(said) == 1 and said[0][1].startswith("GIVING UP on once: it exited (code 7) after 0 restarts")
    for _ in range(20):
        sup.tick()
        time.sleep(0.01)
    assert sup.procs["once"].restarts == 0 and len(said) == 1


def test_restarts_outside_the_window_do_not_count(make):
    # each run lives ~0.3 s, the window is 0.25 s: never two restarts within the window
    sup, said = make(max_restarts=1, window=0.25, backoff_initial=0.05, backoff_max=0.05)
    sup.start([ProcessSpec("slow", py("import time; time.sleep(0.3); raise SystemExit(1)"))])
    m = sup.procs["slow"]
    run_until(sup, lambda: m.restarts >= 3, timeout=8)
    assert not m.failed
    assert not any("GIVING UP" in msg for _, msg in said)


def test_backoff_starts_over_after_a_long_run(make):
    # each run outlives the 0.1 s window, so every restart waits the initial backoff again
    sup, said = make(max_restarts=10, window=0.1, backoff_initial=0.2, backoff_max=1.0)
    sup.start([ProcessSpec("p", py("import time; time.sleep(0.3); raise SystemExit(1)"))])
    m = sup.procs["p"]
    run_until(sup, lambda: m.restarts >= 2 and m.restart_at is None, timeout=8)
    restarting = [msg for _, msg in said if "restarting in" in msg]
    assert restarting[:2] == ["p exited with code 1; restarting in 0.2 s"] * 2  # not 0.4 the second time


def test_backoff_grows_without_a_long_run(make):
    sup, said = make(max_restarts=10, window=5, backoff_initial=0.1, backoff_max=1.0)
    sup.start([ProcessSpec("p", py("raise SystemExit(1)"))])
    m = sup.procs["p"]
    run_until(sup, lambda: m.restarts >= 2 and m.restart_at is not None, timeout=8)
    restarting = [msg.rsplit(" ", 2)[1] for _, msg in said if "restarting in" in msg]
    assert restarting[:3] == ["0.1", "0.2", "0.4"]


def test_clean_exit_is_restarted_too(make):
    sup, said = make(max_restarts=1, window=30, backoff_initial=0.05, backoff_max=0.05)
    sup.start([ProcessSpec("zero", py("pass"))])
    run_until(sup, lambda: sup.procs["zero"].failed, timeout=5)
    assert said[0][1] == "zero exited with code 0; restarting in 0.1 s"
    assert sup.procs["zero"].restarts == 1


def wait_for_text(path, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.01)


def test_stop_all_terminates_and_kills(make):
    sup, _ = make()
    sup.start(
        [
            ProcessSpec("polite", py("import time; print('ready', flush=True); time.sleep(60)")),
            ProcessSpec(
                "stubborn",
                py(
                    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                    "time.sleep(60)"
                ),
            ),
        ]
    )
    wait_for_text(sup.log_path("polite"), "ready")
    wait_for_text(sup.log_path("stubborn"), "ready")
    polite, stubborn = sup.procs["polite"].proc, sup.procs["stubborn"].proc
    t0 = time.monotonic()
    sup.stop_all(timeout=0.5)
    elapsed = time.monotonic() - t0
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    assert 0.4 <= elapsed < 3.0


def test_stop_all_is_quick_when_processes_obey(make):
    sup, _ = make()
    sup.start([ProcessSpec("polite", py("import time; print('ready', flush=True); time.sleep(60)"))])
    wait_for_text(sup.log_path("polite"), "ready")
    t0 = time.monotonic()
    sup.stop_all(timeout=5.0)
    assert time.monotonic() - t0 < 2.0
    assert sup.procs["polite"].proc.returncode == -signal.SIGTERM


def test_no_restarts_after_stop_all(make):
    sup, said = make(backoff_initial=0.01, backoff_max=0.01)
    sup.start([ProcessSpec("p", py("import time; print('ready', flush=True); time.sleep(60)"))])
    wait_for_text(sup.log_path("p"), "ready")
    proc = sup.procs["p"].proc
    sup.stop_all(timeout=2.0)
    for _ in range(10):
        sup.tick()
        time.sleep(0.02)
    assert sup.procs["p"].proc is proc and sup.procs["p"].restarts == 0 and said == []


def test_stop_all_goes_highest_tier_first(make, tmp_path):
    stamp = tmp_path / "order.txt"
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        f"    open({str(stamp)!r}, 'a').write(sys.argv[1] + '\\n'); time.sleep(0.2); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    sup, _ = make()
    for name, tier in (("broker", 0), ("service", 2), ("sim", 1)):
        sup.start([ProcessSpec(name, [sys.executable, "-c", code, name], tier=tier)])
        wait_for_text(sup.log_path(name), "ready")
    sup.stop_all(timeout=3.0)
    assert stamp.read_text().split() == ["service", "sim", "broker"]


def test_start_fails_when_process_dies_before_ready(make):
    sup, _ = make()
    with pytest.raises(RuntimeError, match="exited with code 4 during start-up"):
        sup.start([ProcessSpec("dead", py("raise SystemExit(4)"), ready_port=("127.0.0.1", 1))], ready_timeout=5)
