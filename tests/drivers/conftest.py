"""Fixtures for driver-versus-simulator tests.

Every test talks to a real ``SimulatorServer`` on 127.0.0.1 (ephemeral port)
through ``open_link`` with the driver's own link settings, exactly as the
device service builds them (``service.link_settings(driver_cls, DeviceConfig)``).
Simulators get a fake clock so ramps, trips and fuses need no sleeping.
Everything a fixture starts (servers, links) is stopped/closed afterwards.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from slowctl.drivers.base import Driver
from slowctl.drivers.link import open_link

sys.path.insert(0, str(Path(__file__).parent))  # drvkit, whatever the import mode
from drvkit import POLL_COSTS, CountingLink, settings_for


@pytest.fixture(autouse=True)
def _nothing_left_running() -> Iterator[None]:
    """Every test stops what it starts: no simulator thread may outlive the test."""
    yield
    deadline = time.monotonic() + 3.0
    while True:
        left = [t.name for t in threading.enumerate() if t.name.startswith("sim-")]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not left, f"simulator threads still running: {left}"


@pytest.fixture
def make_driver() -> Iterator[Callable[..., Any]]:
    """Open a link (driver's own settings) and build a driver on a CountingLink; links closed after."""
    links: list[CountingLink] = []

    def make(
        driver_cls: type[Driver],
        address: str,
        channels: list[int],
        options: dict | None = None,
        timeout: float = 1.0,
        **device: Any,
    ) -> Any:
        settings = settings_for(driver_cls, address, timeout=timeout, **device)
        link = CountingLink(open_link(address, settings))
        links.append(link)
        return driver_cls(link, driver_cls.parse_options(options or {}), channels)

    yield make
    # pyserial sleeps 0.3 s in every socket close: close the links side by side
    closers = [threading.Thread(target=link.close) for link in links]
    for t in closers:
        t.start()
    for t in closers:
        t.join(5)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if POLL_COSTS:
        terminalreporter.write_sep("-", "round trips per poll (read full=False / full=True)")
        for name, text in POLL_COSTS.items():
            terminalreporter.write_line(f"{name}: {text}")
