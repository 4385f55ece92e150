"""Helpers shared by the driver tests (importable; conftest only holds fixtures)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from slowctl.config import DeviceConfig
from slowctl.device.adapter import link_settings
from slowctl.drivers.base import Driver
from slowctl.drivers.link import LinkSettings
from slowctl_dummy.server import SimulatorServer

SHORT_TIMEOUT = 0.3  # s; link timeout of the fault tests

# round trips per poll, filled by test_poll_cost.py and printed at the end of the run
POLL_COSTS: dict[str, str] = {}


class CountingLink:
    """Wraps a real link; records every request so tests can count round trips."""

    def __init__(self, link: Any) -> None:
        self.inner = link
        self.lock = link.lock
        self.queries: list[str] = []
        self.writes: list[str] = []
        self.log: list[tuple[str, str]] = []  # ("query" | "write", request) in order
        self.wire_bytes = 0  # bytes on the line: requests, replies and echoes with their terminators

    def _count(self, request: str, reply: str | None) -> None:
        s = self.inner.settings
        line = len(request) + len(s.write_termination)
        self.wire_bytes += line * (2 if s.echo else 1)
        if reply is not None:
            self.wire_bytes += len(reply) + len(s.read_termination)

    def query(self, request: str) -> str:
        self.queries.append(request)
        self.log.append(("query", request))
        reply = self.inner.query(request)
        self._count(request, reply)
        return reply

    def write(self, request: str) -> None:
        self.writes.append(request)
        self.log.append(("write", request))
        self.inner.write(request)
        self._count(request, None)

    def close(self) -> None:
        self.inner.close()

    @property
    def sent(self) -> int:
        return len(self.queries) + len(self.writes)

    def reset(self) -> None:
        self.queries.clear()
        self.writes.clear()
        self.log.clear()
        self.wire_bytes = 0


def settings_for(driver_cls: type[Driver], address: str, timeout: float = 1.0, **device: Any) -> LinkSettings:
    """The driver's link settings as the service derives them from a device config."""
    cfg = DeviceConfig(
        model=driver_cls.model, address=address, timeout=timeout, channels={0: {"name": "ch0"}}, **device
    )
    return link_settings(driver_cls, cfg)


def tcp(server: SimulatorServer) -> str:
    return f"socket://127.0.0.1:{server.port}"


# the three drivers with their simulators: sim factory(clock), driver class, channels, options
def _kinds() -> dict[str, tuple[Any, type[Driver], list[int], dict]]:
    from slowctl.drivers.caen_n1470 import CaenN1470 as CaenDriver
    from slowctl.drivers.climate import ClimateBox as ClimateDriver
    from slowctl.drivers.hmp4040 import Hmp4040 as HmpDriver
    from slowctl_dummy.sims.caen_n1470 import CaenN1470 as CaenSim
    from slowctl_dummy.sims.climate import ClimateBox as ClimateSim
    from slowctl_dummy.sims.hmp4040 import Hmp4040 as HmpSim

    return {
        "caen": (lambda clock: CaenSim(clock=clock, seed=1), CaenDriver, [0, 1, 2, 3], {}),
        "caen-allch": (
            lambda clock: CaenSim(clock=clock, seed=1),
            CaenDriver,
            [0, 1, 2, 3],
            {"all_channels_query": True},
        ),
        "hmp": (lambda clock: HmpSim(clock=clock, seed=1), HmpDriver, [0, 1, 2, 3], {}),
        "climate": (lambda clock: ClimateSim(clock=clock, seed=1), ClimateDriver, [0, 1], {}),
    }


KINDS = _kinds()


def timed_link_error(fn) -> tuple[float, str]:
    """Run `fn`, expect a LinkError within the short timeout (plus slack); returns (seconds, message)."""
    import pytest

    from slowctl.drivers.link import LinkError

    start = time.monotonic()
    with pytest.raises(LinkError) as err:
        fn()
    elapsed = time.monotonic() - start
    assert elapsed < SHORT_TIMEOUT + 0.7, f"LinkError after {elapsed:.2f} s"
    return elapsed, str(err.value)


def link_error_message(fn) -> str:
    return timed_link_error(fn)[1]


@dataclass
class PollCost:
    full: int  # round trips of read(full=True)
    partial: int  # round trips of read(full=False), the ordinary poll
    seconds: float  # one poll with the simulator emulating a 9600-baud line
    wire_bytes: int  # bytes of that poll on the line

    @property
    def wire(self) -> float:
        return self.wire_bytes * 10 / 9600  # 10 bits a character (8N1, 7E1)


def measure_poll(drv: Any, server: Any, channels: list[int], settle: float = 0.0) -> PollCost:
    """Round trips of a full read and of a poll, then the time of one poll at 9600 baud."""
    drv.link.reset()
    drv.read(channels, full=True)
    full = len(drv.link.queries)
    drv.link.reset()
    drv.read(channels, full=False)
    partial = len(drv.link.queries)
    assert not drv.link.writes  # a poll only asks
    server.baud = 9600  # from now on the simulator delays bytes like a 9600-baud line
    drv.link.reset()
    time.sleep(settle)  # e.g. an instrument's quiet time, which a poll period always covers
    start = time.monotonic()
    drv.read(channels, full=False)
    seconds = time.monotonic() - start
    assert len(drv.link.queries) == partial
    return PollCost(full, partial, seconds, drv.link.wire_bytes)


def record_poll_cost(name: str, text: str) -> None:
    POLL_COSTS[name] = text
    print(f"\n{name} {text}")
