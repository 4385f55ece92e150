"""Alarm management without a broker: levels, hysteresis, delay, latching, acknowledgement, lost data."""

from pathlib import Path

import pytest
import yaml

from slowctl.config import ConfigError, parse_config
from slowctl.safety.alarms import AlarmHandler
from slowctl.safety.rules import DeviceView, RuleState, device_shapes

BENCH = Path(__file__).parents[2] / "config" / "bench.yaml"
LIMITS = {
    "climate.0.humidity": {"high": 50, "hihi": 60, "hysteresis": 2, "delay": 3},
    "climate.*.temperature": {"lolo": 5, "low": 10, "high": 35, "latch": False},
    "hv.*.imon": {"high": 8e-6, "severity": {"high": "major"}},
}


def stack_with(limits, **alarms):
    raw = yaml.safe_load(BENCH.read_text())
    raw["alarms"] = {"limits": limits, **alarms}
    return parse_config(raw)


@pytest.fixture
def handler():
    stack = stack_with(LIMITS)
    return AlarmHandler.for_stack(stack.alarms, stack.devices, device_shapes(stack.devices), now=0.0)


def status(**channels):
    return {"state": "ok", "channels": [{"channel": int(ch[2:]), **c} for ch, c in channels.items()]}


def view(now, humidity=40.0, temperature=21.0, hv_imon=1e-6, hv_flags=(), climate=None):
    """Every device of the bench online and fresh; climate and hv with the readings given."""
    stack = stack_with({})
    v = {dev: DeviceView(True, status(ch0={}), now) for dev in stack.devices}
    v["climate"] = climate or DeviceView(
        True,
        status(
            ch0={"temperature": temperature, "humidity": humidity, "dewpoint": 5.0},
            ch1={"temperature": 21.0, "humidity": 40.0, "dewpoint": 5.0},
        ),
        now,
    )
    quiet = {"imon": 1e-6, "alarms": [], "state": "ON"}
    hv = status(ch0={"imon": hv_imon, "alarms": list(hv_flags), "state": "ON"}, ch1=quiet, ch2=quiet, ch3=quiet)
    v["hv"] = DeviceView(True, hv, now)
    return v


def run(handler, now, rules=(), **kw):
    return [(c.what, c.alarm.where, c.alarm.kind) for c in handler.evaluate(view(now, **kw), rules, now, 1000 + now)]


def listed(handler):
    return {(a.where, a.kind): a for a in handler.listed()}


def test_quiet_bench_has_no_alarms(handler):
    assert run(handler, 1.0) == []
    assert handler.summary() == {"active": 0, "unacked": 0, "highest": None, "alarms": []}


def test_delay_then_raise_then_latch_until_gone_and_acked(handler):
    assert run(handler, 1.0, humidity=55) == [], "HIGH must hold 3 s first"
    assert run(handler, 3.9, humidity=55) == []
    assert run(handler, 4.0, humidity=55) == [("raised", "climate.0", "humidity.HIGH")]
    alarm = listed(handler)[("climate.0", "humidity.HIGH")]
    assert (alarm.severity, alarm.active, alarm.acked_by) == ("minor", True, None)
    assert alarm.message == "climate.0 humidity 55 > HIGH 50" and alarm.since == 1004.0
    # gone but not acknowledged: still listed, inactive
    assert run(handler, 5.0, humidity=40) == [("cleared", "climate.0", "humidity.HIGH")]
    assert not listed(handler)[("climate.0", "humidity.HIGH")].active
    assert handler.summary()["unacked"] == 1 and handler.summary()["active"] == 0
    changes, error = handler.ack("climate", 0, "HIGH", "alice", 1010.0)
    assert error is None and [c.what for c in changes] == ["acked"]
    assert handler.listed() == [], "gone and acknowledged: off the list"


def test_ack_while_active_then_gone(handler):
    run(handler, 0.0, hv_imon=9e-6)
    [a] = handler.listed()
    assert (a.kind, a.severity) == ("imon.HIGH", "major"), "the severity the config gives"
    _, error = handler.ack("hv", None, None, "bob", 1001.0)
    assert error is None and a.acked_by == "bob" and a.acked_at == 1001.0 and a.active
    assert handler.summary() == {**handler.summary(), "active": 1, "unacked": 0}
    assert handler.ack("hv", 0, None, "bob", 1002.0)[1] == "the alarms on hv.0 are already acknowledged"
    assert run(handler, 2.0) == [("cleared", "hv.0", "imon.HIGH")]
    assert handler.listed() == []


def test_hysteresis_holds_the_level(handler):
    run(handler, 0.0, humidity=61)
    run(handler, 3.0, humidity=61)
    assert set(listed(handler)) == {("climate.0", "humidity.HIHI")}, "levels are exclusive"
    run(handler, 4.0, humidity=59)  # below HIHI 60 but within the 2 %RH hysteresis: still HIHI
    assert listed(handler)[("climate.0", "humidity.HIHI")].active
    assert ("climate.0", "humidity.HIGH") not in listed(handler)
    # past the hysteresis: HIHI goes, and HIGH is due at once (its limit has been passed since t=0)
    assert run(handler, 5.0, humidity=57.5) == [
        ("raised", "climate.0", "humidity.HIGH"),
        ("cleared", "climate.0", "humidity.HIHI"),
    ]
    run(handler, 9.0, humidity=49)  # within the hysteresis of HIGH
    assert listed(handler)[("climate.0", "humidity.HIGH")].active
    run(handler, 10.0, humidity=47.9)
    assert not listed(handler)[("climate.0", "humidity.HIGH")].active


def test_a_reading_between_the_levels_is_never_without_an_alarm(handler):
    """HIGH raised; the reading then goes to and fro across HIHI, never for its 3 s delay: HIGH stays."""
    run(handler, 0.0, humidity=55)
    run(handler, 3.0, humidity=55)
    assert listed(handler)[("climate.0", "humidity.HIGH")].active
    for i, h in enumerate([61, 58, 61, 58, 61, 58, 61, 58]):
        run(handler, 4.0 + i, humidity=h)
        assert listed(handler)[("climate.0", "humidity.HIGH")].active, f"t={4 + i}"
    for t in (20.0, 21.0, 22.0, 23.0):
        run(handler, t, humidity=61)
    assert listed(handler)[("climate.0", "humidity.HIHI")].active, "above HIHI for its delay: HIHI"
    assert not listed(handler)[("climate.0", "humidity.HIGH")].active


def test_a_reading_that_goes_missing_holds_its_alarm(handler):
    run(handler, 0.0, hv_imon=9e-6)
    assert listed(handler)[("hv.0", "imon.HIGH")].active
    quiet = {"alarms": [], "state": "ON"}
    hv = status(ch0=quiet, ch1={**quiet, "imon": 1e-6}, ch2={**quiet, "imon": 1e-6}, ch3={**quiet, "imon": 1e-6})
    v = view(1.0)
    v["hv"] = DeviceView(True, hv, 1.0)
    changes = handler.evaluate(v, (), 1.0, 1001.0)
    assert [(c.what, c.alarm.kind) for c in changes] == [("raised", "imon.INVALID")]
    assert listed(handler)[("hv.0", "imon.HIGH")].active, "no data is no reason to clear"


def test_non_latching_alarm_leaves_the_list_when_gone(handler):
    assert run(handler, 0.0, temperature=4) == [("raised", "climate.0", "temperature.LOLO")]
    assert listed(handler)[("climate.0", "temperature.LOLO")].severity == "major"
    assert run(handler, 1.0, temperature=21) == [("cleared", "climate.0", "temperature.LOLO")]
    assert handler.listed() == []


def test_flags_and_trips_of_the_devices(handler):
    run(handler, 0.0, hv_flags=["OVC", "INTERLOCKED"])
    assert {k: a.severity for k, a in listed(handler).items()} == {("hv.0", "OVC"): "major"}
    run(handler, 1.0, hv_flags=["CC"])
    assert listed(handler)[("hv.0", "CC")].severity == "minor"
    assert not listed(handler)[("hv.0", "OVC")].active, "latched: waits for its acknowledgement"


def test_reading_missing_is_invalid(handler):
    climate = DeviceView(True, status(ch0={"temperature": 21.0}, ch1={"temperature": 21.0}), 0.0)
    handler.evaluate(view(0.0, climate=climate), (), 0.0, 1000.0)
    alarm = listed(handler)[("climate.0", "humidity.INVALID")]
    assert alarm.severity == "invalid" and "climate.0.humidity is not reported" in alarm.message


def test_lost_device_is_invalid_and_holds_its_alarms(handler):
    run(handler, 0.0, humidity=70)
    run(handler, 3.0, humidity=70)
    assert listed(handler)[("climate.0", "humidity.HIHI")].active
    offline = DeviceView(False, None, None)
    changes = handler.evaluate(view(4.0, climate=offline), (), 4.0, 1004.0)
    assert [(c.what, c.alarm.kind) for c in changes] == [("raised", "OFFLINE")]
    assert listed(handler)[("climate.0", "humidity.HIHI")].active, "no data is no reason to clear"
    assert listed(handler)[("climate", "OFFLINE")].severity == "invalid"
    silent = DeviceView(True, status(ch0={"humidity": 40.0, "temperature": 21.0}), 4.0)
    handler.evaluate(view(30.0, climate=silent), (), 30.0, 1030.0)
    stale = listed(handler)[("climate", "STALE")]
    assert stale.active and "last reported 26 s ago (max 15 s)" in stale.message
    disconnected = DeviceView(True, {"state": "disconnected", "error": "no reply", "channels": []}, 31.0)
    handler.evaluate(view(31.0, climate=disconnected), (), 31.0, 1031.0)
    assert "climate is disconnected: no reply" in listed(handler)[("climate", "DISCONNECTED")].message


def test_devices_get_time_to_announce_themselves(handler):
    empty = {}
    assert handler.evaluate(empty, (), 1.0, 1001.0) == [], "at start-up, before the retained messages"
    kinds = {(c.alarm.device, c.alarm.kind) for c in handler.evaluate(empty, (), 15.0, 1015.0)}
    assert ("climate", "OFFLINE") in kinds and ("chiller", "OFFLINE") in kinds


def test_active_interlock_is_an_alarm(handler):
    rule = RuleState("dewpoint-box", True, "margin 1.4 K < 3.0 K", [("hv", 0)], "ramp_down")
    assert run(handler, 0.0, rules=[rule]) == [("raised", "interlock", "dewpoint-box")]
    alarm = listed(handler)[("interlock", "dewpoint-box")]
    assert alarm.severity == "major" and alarm.message == "interlock dewpoint-box: margin 1.4 K < 3.0 K"
    assert handler.ack("interlock", None, "dewpoint-box", "alice", 1001.0)[1] is None


def test_ack_refusals_say_why(handler):
    assert handler.ack("nosuch", None, None, "a", 0.0)[1].startswith("no device 'nosuch' (devices: bias, chiller")
    assert handler.ack("hv", None, None, "a", 0.0)[1] == "no alarm on hv; hv has none"
    run(handler, 0.0, hv_imon=9e-6)
    assert handler.ack("hv", 3, None, "a", 0.0)[1] == "no alarm on hv.3 (alarms on hv: hv.0 imon.HIGH)"
    assert handler.ack("hv", 0, "LOW", "a", 0.0)[1] == "no alarm on hv.0 LOW (alarms on hv: hv.0 imon.HIGH)"
    assert handler.listed()[0].acked_by is None, "a refused ack changes nothing"


def fresh_handler():
    stack = stack_with(LIMITS)
    return AlarmHandler.for_stack(stack.alarms, stack.devices, device_shapes(stack.devices), now=0.0)


def test_unacked_alarms_survive_a_restart(handler, tmp_path):
    run(handler, 0.0, hv_imon=9e-6)
    run(handler, 1.0)
    handler.save(tmp_path / "alarms.json")
    again = fresh_handler()
    assert again.load(tmp_path / "alarms.json") is None
    [a] = again.listed()
    assert (a.where, a.kind, a.active, a.acked_by) == ("hv.0", "imon.HIGH", False, None)


def test_active_alarms_survive_a_restart_while_their_cause_lasts(handler, tmp_path):
    offline = DeviceView(False, None, None)
    rule = RuleState("lv-before-hv", True, "lv.0 is not on and ok (state OFF)", [("hv", 0)], "ramp_down")
    rule.kind = "requires"
    handler.evaluate(view(20.0, climate=offline), [rule], 20.0, 1020.0, acted={"lv-before-hv"})
    handler.ack("climate", None, None, "alice", 1021.0)
    handler.save(tmp_path / "alarms.json")
    again = fresh_handler()
    again.load(tmp_path / "alarms.json")
    again.hold(3.0)  # the service holds them after connecting
    assert again.evaluate({}, [rule], 1.0, 2001.0) == [], "held: the statuses are on their way"
    changes = again.evaluate(view(4.0, climate=offline), [rule], 4.0, 2004.0)  # `acted` is not kept
    assert changes == [] and set(listed(again)) == {("climate", "OFFLINE"), ("interlock", "lv-before-hv")}
    assert listed(again)[("climate", "OFFLINE")].acked_by == "alice"


@pytest.mark.parametrize(
    "text",
    [
        "{",
        '{"version": 2, "alarms": []}',
        '{"version": 1, "alarms": [{"device": "hv", "channel": [0]}]}',
        '{"version": 1, "alarms": [{"device": "hv", "channel": 0, "kind": "TRIP", "severity": "major", "message": "",'
        ' "since": "x", "active": true, "latch": true, "value": null, "acked_by": null, "acked_at": null}]}',
    ],
)
def test_an_unreadable_alarm_file_is_said_and_changes_nothing(tmp_path, text):
    (tmp_path / "alarms.json").write_text(text)
    again = fresh_handler()
    assert "unreadable" in again.load(tmp_path / "alarms.json")
    assert again.listed() == []


@pytest.mark.parametrize(
    "limits, error",
    [
        ({"climate.0.humidity": {}}, "alarms.limits.climate.0.humidity: needs at least one of hihi, high, low, lolo"),
        ({"climate.0.humidity": {"high": 60, "hihi": 50}}, "high 60 must be below hihi 50"),
        ({"climate.0.humidity": {"high": 60, "severity": {"hihi": "major"}}}, "severity given for hihi"),
        ({"climate.0.humidity": {"high": 60, "hysteresis": -1}}, "alarms.limits.climate.0.humidity.hysteresis"),
        (
            {"climate.0.humidity": {"low": 30, "high": 50, "hysteresis": 20}},
            "hysteresis 20 must be smaller than the gap from low to high",
        ),
        ({"climate.0.humidity": {"high": 60, "colour": "red"}}, "alarms.limits.climate.0.humidity.colour: unknown key"),
        ({"climate.9.humidity": {"high": 60}}, "alarms.limits.climate.9.humidity: matches no configured channel"),
        ({"hv.*.humidity": {"high": 60}}, "matches no configured channel with a reading 'humidity'"),
        ({"humidity": {"high": 60}}, "alarms.limits.humidity: expected <device>.<channel>.<reading>"),
        (
            {"climate.*.humidity": {"high": 60}, "climate.0.humidity": {"high": 50}},
            "alarms.limits.climate.0.humidity: climate.0.humidity already has limits under "
            "alarms.limits.climate.*.humidity",
        ),
    ],
)
def test_bad_limits_name_the_key(limits, error):
    with pytest.raises(ConfigError) as exc:
        stack_with(limits)
    assert any(error in e for e in exc.value.errors), exc.value.errors


def test_bad_stale_after():
    with pytest.raises(ConfigError) as exc:
        stack_with({}, stale_after=0)
    assert exc.value.errors[0].startswith("alarms.stale_after:")
