"""Climate box simulator against its documented protocol (dummy/README.md): every request, form and error."""

from __future__ import annotations

import re

import pytest

from slowctl_dummy.sims.climate import ClimateBox

PAIR = r"-?\d+\.\d{2},\d+\.\d{2}"


@pytest.mark.parametrize(
    "request_, pattern",
    [
        ("*IDN?", r"SLOWCTL,CLIMATE,0001,1\.0"),
        ("*idn?", r"SLOWCTL,CLIMATE,0001,1\.0"),
        ("NSENS?", r"16"),
        ("read?", rf"{PAIR}(;{PAIR}){{15}}"),
        ("READ?   16", PAIR),  # one or more spaces before the argument
        ("READ? 007", PAIR),
        ("NSENS", r"ERR 1 unknown command"),
        ("NSENS? 1", r"ERR 2 bad argument"),
        ("READ? 17", r"ERR 2 bad argument"),
        ("READ? -1", r"ERR 2 bad argument"),
        ("READ? 1.0", r"ERR 2 bad argument"),
    ],
)
def test_every_documented_request(serve, connect, request_, pattern):
    client = connect(serve(ClimateBox(seed=1, channels=16)))
    reply = client.ask(request_, term=b"\r\n").decode()
    assert reply.endswith("\n") and not reply.endswith("\r\n")
    assert re.fullmatch(pattern, reply.removesuffix("\n")), reply


def test_negative_temperature_format_and_lowest_faulty_sensor(clock):
    box = ClimateBox(clock=clock, seed=1, channels=4)
    box.set_param("temperature", -25.0)
    box.set_param("tau", 0.1)
    clock.advance(10)
    assert re.fullmatch(r"-\d+\.\d{2},\d+\.\d{2}\n", box.handle("READ? 4").decode())
    box.set_param("fault", True, channel=4)
    box.set_param("fault", True, channel=3)
    assert box.handle("READ?") == b"ERR 3 sensor 3 not responding\n"
    assert box.handle("READ? 4") == b"ERR 3 sensor 4 not responding\n"
    assert box.handle("NSENS?") == b"4\n"  # a faulty sensor still counts
