import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import DummyStack

# the stacks the tests start register here, not where a person's own `slowctl up` does (slowctl.running)
os.environ["SLOWCTL_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="slowctl-tests-running-")


def _need_mosquitto() -> None:
    from slowctl.stack.native import StackError, find_mosquitto

    try:
        find_mosquitto()
    except StackError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """One shared native dummy stack for the tests that do not break it."""
    _need_mosquitto()
    s = DummyStack(tmp_path_factory.mktemp("stack")).start()
    yield s
    s.stop()


@pytest.fixture
def own_stack(tmp_path):
    """A private stack for tests that kill or restart parts of it; tweak before start()."""
    _need_mosquitto()
    stacks = []

    def make(tweak=None):
        s = DummyStack(tmp_path / f"s{len(stacks)}", tweak)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.stop()


@pytest.fixture
def operator(stack):
    p = stack.probe("operator")
    p.wait_connected()
    return p


@pytest.fixture
def clock():
    """Manual simulator time: tests move it with ``advance``; nothing sleeps."""
    from slowctl_dummy.base import ManualClock

    return ManualClock()


@pytest.fixture
def serve() -> Iterator[Callable[..., object]]:
    """Start simulator servers (127.0.0.1, port 0 unless given); all are stopped after the test."""
    from slowctl_dummy.server import SimulatorServer

    servers = []

    def start(instrument, **kwargs):
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        server = SimulatorServer(instrument, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()  # safe to call twice
