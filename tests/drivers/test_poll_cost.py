"""Poll cost: round trips of one read(full=False) per driver (printed in the run summary)."""

from __future__ import annotations

import pytest
from drvkit import KINDS, measure_poll, record_poll_cost, tcp

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
    cost = measure_poll(drv, server, channels)
    full, partial, seconds, wire = cost.full, cost.partial, cost.seconds, cost.wire
    assert sorted(drv.read(channels, full=False)) == channels
    assert seconds >= wire * 0.9, "the emulated line cannot be faster than the bytes on it"
    record_poll_cost(
        kind,
        f"{n} channels: {partial} round trips per poll ({full} with full=True); "
        f"read(full=False) at 9600 baud took {seconds * 1000:.0f} ms, "
        f"wire time {wire * 1000:.0f} ms ({cost.wire_bytes} bytes)",
    )
    assert partial <= BOUNDS[kind](n), f"{partial} round trips for {n} channels"
    assert partial < full or kind == "climate"
