"""Climate box simulator: its documented protocol and relaxation physics."""

from __future__ import annotations

import re

import pytest

from slowctl_dummy.base import Event
from slowctl_dummy.sims.climate import ClimateBox

PAIR = r"-?\d+\.\d{2},\d+\.\d{2}"


def read(box: ClimateBox, n: int) -> tuple[float, float]:
    reply = box.handle(f"READ? {n}")
    assert reply is not None
    t, rh = reply.decode().strip().split(",")
    return float(t), float(rh)


def test_protocol_over_tcp(serve, connect):
    client = connect(serve(ClimateBox(seed=1)))
    assert client.ask("*IDN?") == b"SLOWCTL,CLIMATE,0001,1.0\n"
    assert client.ask("nsens?", term=b"\r\n") == b"2\n"
    assert re.fullmatch(rf"{PAIR};{PAIR}\n", client.ask("READ?").decode())
    assert re.fullmatch(rf"{PAIR}\n", client.ask("READ? 2").decode())


@pytest.mark.parametrize(
    "request_, reply",
    [
        ("HELLO", b"ERR 1 unknown command\n"),
        ("READ", b"ERR 1 unknown command\n"),
        ("READ? 0", b"ERR 2 bad argument\n"),
        ("READ? 3", b"ERR 2 bad argument\n"),
        ("READ? one", b"ERR 2 bad argument\n"),
        ("READ? 1 2", b"ERR 2 bad argument\n"),
        ("*IDN? x", b"ERR 2 bad argument\n"),
    ],
)
def test_errors(serve, connect, request_, reply):
    client = connect(serve(ClimateBox(seed=1)))
    assert client.ask(request_) == reply


def test_faulty_sensor(clock):
    box = ClimateBox(clock=clock, seed=1, channels=3)
    box.schedule([Event(at=1, action="set", values={"fault": True}, channel=2)])
    assert box.handle("READ?").count(b";") == 2
    clock.advance(1)
    assert box.handle("READ? 2") == b"ERR 3 sensor 2 not responding\n"
    assert box.handle("READ?") == b"ERR 3 sensor 2 not responding\n"
    assert box.handle("READ? 3") != b"ERR 3 sensor 3 not responding\n"


def test_relaxes_toward_scenario_target(clock):
    box = ClimateBox(clock=clock, seed=2)
    box.schedule([Event(at=30, action="set", values={"humidity": 80.0})])
    clock.advance(29)
    assert read(box, 1)[1] == pytest.approx(40, abs=1)
    clock.advance(1 + 10)  # one time constant after the step: 40 + 40*(1-1/e)
    assert read(box, 1)[1] == pytest.approx(40 + 40 * (1 - 1 / 2.718281828), abs=1)
    clock.advance(90)
    t, rh = read(box, 2)
    assert rh == pytest.approx(80, abs=1)
    assert t == pytest.approx(20, abs=0.3)


def test_humidity_clamped_and_temperature_target(clock):
    box = ClimateBox(clock=clock, seed=3)
    box.set_param("humidity", 100.0)
    box.set_param("temperature", -10.0, channel=1)
    box.set_param("tau", 1.0)
    clock.advance(60)
    for _ in range(20):
        t, rh = read(box, 1)
        assert rh <= 100.0
        assert t == pytest.approx(-10, abs=0.3)


def test_noise_is_small_and_seeded(clock):
    a, b = ClimateBox(clock=clock, seed=7), ClimateBox(clock=clock, seed=7)
    clock.advance(5)
    readings = [a.handle("READ? 1") for _ in range(50)]
    assert readings == [b.handle("READ? 1") for _ in range(50)]
    temps = [float(r.split(b",")[0]) for r in readings]
    assert 0 < max(temps) - min(temps) < 0.3
