"""Scenario files: validation messages, silence and garbage on the wire."""

from __future__ import annotations

import pytest

from slowctl_dummy.scenario import ScenarioError, bundled_scenarios, load_scenario, parse_scenario
from slowctl_dummy.sims import SIMULATORS
from slowctl_dummy.sims.caen_n1470 import CaenN1470
from slowctl_dummy.sims.climate import ClimateBox


@pytest.mark.parametrize(
    "events, message",
    [
        (
            [{"at": 1, "set": {"humidity": 50}}, {"at": 2, "set": {"humidty": 80}}],
            "events[1].set.humidty: unknown parameter for climate (expected one of fault, humidity, tau, temperature)",
        ),
        ([{"at": 1, "explode": True}], "events[0].explode: unknown action (expected one of set, silence, garbage)"),
        ([{"at": -1, "silence": 3}], "events[0].at: expected a number >= 0, got -1"),
        ([{"silence": 3}], "events[0].at: missing"),
        ([{"at": 1}], "events[0]: no action"),
        ([{"at": 1, "silence": 2, "garbage": 2}], "events[0]: more than one action (silence, garbage)"),
        (
            [{"at": 1, "channel": 3, "set": {"humidity": 50}}],
            "events[0].channel: 3 out of range for climate (expected 1..2)",
        ),
        ([{"at": 1, "set": {"humidity": 120}}], "events[0].set.humidity: expected a number >= 0 and <= 100, got 120"),
        ([{"at": 1, "set": {"fault": "yes"}}], "events[0].set.fault: expected true or false, got 'yes'"),
        ([{"at": 1, "silence": 0}], "events[0].silence: expected a duration in seconds > 0, got 0"),
        ([{"at": 1, "channel": 1, "silence": 2}], "events[0].channel: only allowed with set"),
        ([{"at": 1, "model": "keithley", "silence": 2}], "events[0].model: unknown model 'keithley'"),
        (
            [{"at": 1, "model": "caen-n1470", "set": {"humidity": 2}}],
            "events[0].set.humidity: unknown parameter for caen-n1470",
        ),
    ],
)
def test_validation_names_the_bad_key(events, message):
    with pytest.raises(ScenarioError) as exc:
        parse_scenario({"events": events}, ClimateBox())
    assert message in str(exc.value)


def test_board_parameter_with_channel_and_top_level_key():
    with pytest.raises(ScenarioError, match=r"events\[0\]\.set\.local: board parameter"):
        parse_scenario({"events": [{"at": 0, "channel": 1, "set": {"local": True}}]}, CaenN1470())
    with pytest.raises(ScenarioError, match="evnts: unknown top-level key"):
        parse_scenario({"evnts": []}, CaenN1470())


def test_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("events: [ {at: 1, set: {humidity: 50}")
    with pytest.raises(ScenarioError, match="invalid YAML"):
        load_scenario(bad, ClimateBox())
    with pytest.raises(ScenarioError, match="scenario file not found: nope.yaml"):
        load_scenario("nope.yaml", ClimateBox())


@pytest.mark.parametrize("name", bundled_scenarios())
def test_bundled_scenarios_are_valid_for_some_model(name):
    loaded = {}
    for model, cls in SIMULATORS.items():
        try:
            loaded[model] = load_scenario(name, cls())
        except ScenarioError:
            pass
    assert any(loaded.values()), name


def test_bench_demo_splits_by_model():
    hv = load_scenario("bench-demo", CaenN1470())
    assert [(e.at, e.action) for e in hv] == [(60, "set"), (90, "silence")]
    assert hv[0].channel == 2
    climate = load_scenario("bench-demo.yaml", ClimateBox())
    assert [(e.at, e.values) for e in climate] == [(30, {"humidity": 80.0})]


def test_silence_then_garbage_on_the_wire(serve, connect, clock, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("events:\n  - {at: 5, silence: 10}\n  - {at: 20, garbage: 5}\n")
    box = ClimateBox(clock=clock, seed=1)
    box.schedule(load_scenario(path, box))
    client = connect(serve(box))
    assert client.ask("*IDN?") == b"SLOWCTL,CLIMATE,0001,1.0\n"
    clock.advance(5)
    assert client.no_reply("*IDN?")
    assert client.no_reply("NSENS?")
    clock.advance(10)  # silence over; same connection answers again
    assert client.ask("NSENS?") == b"2\n"
    clock.advance(5)
    garbled = [client.ask("*IDN?") for _ in range(5)]
    for reply in garbled:
        assert reply.endswith(b"\n") and reply[:-1].isascii() and reply[:-1].decode().isprintable()
        assert b"\n" not in reply[:-1] and reply != b"SLOWCTL,CLIMATE,0001,1.0\n"
    clock.advance(5)
    assert client.ask("*IDN?") == b"SLOWCTL,CLIMATE,0001,1.0\n"


def test_scenario_trips_hv_channel(clock):
    """hv-trip: at t=60 the load on channel 2 drops and the channel trips."""
    hv = CaenN1470(clock=clock, seed=1)
    hv.schedule(load_scenario("hv-trip", hv))
    for line in ("CMD:SET,CH:4,PAR:VSET,VAL:100", "CMD:SET,CH:4,PAR:ON"):
        assert hv.handle(f"$BD:00,{line}") == b"#BD:00,CMD:OK\r\n"
    clock.advance(59)
    assert hv.handle("$BD:00,CMD:MON,CH:2,PAR:STAT") == b"#BD:00,CMD:OK,VAL:00001\r\n"
    clock.advance(3)  # 1 s default TRIP time
    assert hv.handle("$BD:00,CMD:MON,CH:4,PAR:STAT") == b"#BD:00,CMD:OK,VAL:00001;00001;00128;00001\r\n"
