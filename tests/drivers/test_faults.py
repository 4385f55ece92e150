"""Link faults, for every driver: silence, garbage, a stopped simulator, reconnect."""

from __future__ import annotations

import math

import pytest
from drvkit import KINDS, SHORT_TIMEOUT, settings_for, tcp, timed_link_error

from slowctl.drivers.base import SupplyDriver
from slowctl.drivers.link import LinkError, open_link
from slowctl_dummy.scenario import parse_scenario

FAULT_KINDS = ["caen", "hmp", "climate"]


@pytest.fixture(params=FAULT_KINDS)
def bench(request, clock, serve, make_driver):
    """(simulator instrument, server, connect()) for one driver kind."""
    factory, driver_cls, channels, options = KINDS[request.param]
    inst = factory(clock)
    server = serve(inst)

    def connect(address=None):
        drv = make_driver(driver_cls, address or tcp(server), channels, options, timeout=SHORT_TIMEOUT)
        drv.connect()
        return drv

    return inst, server, connect


def test_silence_from_a_scenario_then_recovery(bench, clock):
    inst, server, connect = bench
    drv = connect()
    inst.schedule(parse_scenario({"events": [{"at": 10, "silence": 5}]}, inst))
    clock.advance(11)
    elapsed, msg = timed_link_error(lambda: drv.read(drv.channels, full=False))
    assert "timeout" in msg and elapsed >= SHORT_TIMEOUT * 0.9
    clock.advance(5)  # silence over: the same driver talks again
    assert sorted(drv.read(drv.channels, full=True)) == drv.channels


def test_silent_until_makes_connect_fail(bench):
    inst, server, connect = bench
    inst.silent_until = math.inf
    _, msg = timed_link_error(connect)
    assert "timeout" in msg


@pytest.mark.parametrize("kind", ["caen", "hmp"])
def test_silence_fails_actions_too(kind, clock, serve, make_driver):
    factory, driver_cls, channels, options = KINDS[kind]
    inst = factory(clock)
    drv = make_driver(driver_cls, tcp(serve(inst)), channels, options, timeout=SHORT_TIMEOUT)
    drv.connect()
    inst.silent_until = inst.now() + 5
    timed_link_error(lambda: drv.set_voltage(0, 1.0))
    timed_link_error(lambda: drv.switch(0, True))


def test_garbage_replies_give_link_error_then_recovery(bench, clock):
    inst, server, connect = bench
    drv = connect()
    inst.schedule(parse_scenario({"events": [{"at": 10, "garbage": 5}]}, inst))
    clock.advance(11)
    for _ in range(5):  # several different garbage replies
        timed_link_error(lambda: drv.read(drv.channels, full=True))
    if isinstance(drv, SupplyDriver):
        timed_link_error(lambda: drv.set_voltage(0, 1.0))
    timed_link_error(lambda: connect())
    clock.advance(5)
    assert sorted(drv.read(drv.channels, full=True)) == drv.channels


def test_stopped_simulator_then_a_new_driver_connects_again(bench, serve):
    inst, server, connect = bench
    drv = connect()
    port = server.port
    server.stop()
    timed_link_error(lambda: drv.read(drv.channels, full=False))
    with pytest.raises(LinkError, match="cannot open"):
        open_link(tcp(server), settings_for(type(drv), tcp(server)))
    again = serve(inst, port=port)  # the simulator is back on the same port
    assert again.port == port
    drv2 = connect()
    assert sorted(drv2.read(drv2.channels, full=True)) == drv2.channels
    if isinstance(drv2, SupplyDriver):
        drv2.set_voltage(1, 2.0)
        assert drv2.read([1], full=True)[1].vset == 2.0


def test_simulator_stopped_during_a_command_sequence(clock, serve, make_driver):
    factory, driver_cls, channels, options = KINDS["hmp"]
    inst = factory(clock)
    server = serve(inst)
    drv = make_driver(driver_cls, tcp(server), channels, options, timeout=SHORT_TIMEOUT)
    drv.connect()
    calls = []
    real_query = drv.link.query

    def query(request):  # stop the simulator between the setting and its error-queue read
        calls.append(request)
        if request == "SYST:ERR?":
            server.stop()
        return real_query(request)

    drv.link.query = query
    timed_link_error(lambda: drv.set_voltage(0, 1.0))
    assert calls == ["SYST:ERR?"]
