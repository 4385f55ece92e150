"""Poll cost: round trips of one read(full=False) per driver (printed in the run summary)."""

from __future__ import annotations

import time

import pytest

from drvkit import KINDS, POLL_COSTS, tcp

# loose upper bounds on the round trips of one read(full=False) with N channels
BOUNDS = {
    "caen": lambda n: 3 * n,  # VMON, IMON, STAT per channel
    "caen-allch": lambda n: 3,  # VMON, IMON, STAT for all channels at once
    "hmp": lambda n: n + 1,  # OUTP:GEN? + one joined query per channel
    "climate": lambda n: 1,  # READ?
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_round_trips_per_poll(kind, clock, serve, make_driver):
    factory, driver_cls, channels, options = KINDS[kind]
    n = len(channels)
    server = serve(factory(clock))
    drv = make_driver(driver_cls, tcp(server), channels, options)
    drv.connect()
    drv.link.reset()
    drv.read(channels, full=True)
    full = len(drv.link.queries)
    drv.link.reset()
    assert sorted(drv.read(channels, full=False)) == channels
    partial = len(drv.link.queries)
    assert not drv.link.writes  # a poll only asks
    server.baud = 9600  # from now on the simulator delays bytes like a 9600 8N1 line
    drv.link.reset()
    start = time.monotonic()
    drv.read(channels, full=False)
    seconds = time.monotonic() - start
    assert len(drv.link.queries) == partial
    wire = drv.link.wire_bytes * 10 / 9600  # 8N1: 10 bits a byte
    POLL_COSTS[kind] = (f"{n} channels: {partial} round trips per poll ({full} with full=True); "
                        f"read(full=False) at 9600 baud took {seconds * 1000:.0f} ms, "
                        f"wire time {wire * 1000:.0f} ms ({drv.link.wire_bytes} bytes)")
    assert seconds >= wire * 0.9, "the emulated line cannot be faster than the bytes on it"
    print(f"\n{driver_cls.model} [{kind}] {POLL_COSTS[kind]}")
    assert partial <= BOUNDS[kind](n), f"{partial} round trips for {n} channels"
    assert partial < full or kind == "climate"
