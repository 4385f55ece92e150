"""Instrument behaviour through the whole stack: ramps, trips, scenarios, immediate status, legacy topics."""

import json
import time

import pytest

from harness import channel, send, wait_until

pytestmark = pytest.mark.stack


@pytest.fixture
def op(operator):
    operator.subscribe("slowctl/+/reply", "slowctl/+/status", "slowctl/+/availability", "/+/status")
    operator.clear()
    return operator


def states_until(probe, device, ch, final, timeout):
    """Channel states seen in status messages until `final` is reached; returns (states, seconds)."""
    t0 = time.monotonic()
    seen = []

    def done():
        msgs = probe.seen(f"slowctl/{device}/status")
        for m in msgs[len(seen) :]:
            seen.append(json.loads(m.payload)["channels"][ch])
        return seen and seen[-1].get("state") == final

    wait_until(done, timeout, what=f"{device}/{ch} to reach {final}")
    return seen, time.monotonic() - t0


def test_hardware_ramp_timing(op):
    assert send(op, "slowctl/hv/cmd/vset/0", "100")["ok"]
    op.clear()
    assert send(op, "slowctl/hv/cmd/on/0", "")["ok"]
    seen, took = states_until(op, "hv", 0, "ON", timeout=10)
    # 100 V at rampup 20 V/s: 5 s, seen through 1 Hz polls
    assert 4.0 <= took <= 6.5, took
    ramping = [c for c in seen if c["state"] == "RAMP_UP"]
    assert len(ramping) >= 3 and all(0 <= c["vmon"] <= 100 for c in ramping)
    assert ramping[0]["vmon"] < ramping[-1]["vmon"]
    op.clear()
    assert send(op, "slowctl/hv/cmd/off/0", "")["ok"]
    seen, took = states_until(op, "hv", 0, "OFF", timeout=10)
    assert 1.5 <= took <= 4.0, took  # rampdown 40 V/s: 2.5 s
    assert any(c["state"] == "RAMP_DOWN" for c in seen)


def test_software_ramp_on_lv(op):
    """The HMP cannot ramp: the framework steps channel 0 at its configured rate."""
    assert send(op, "slowctl/lv/cmd/rampup/0", "1")["ok"]
    assert send(op, "slowctl/lv/cmd/vset/0", "2")["ok"]
    op.clear()
    assert send(op, "slowctl/lv/cmd/on/0", "")["ok"]
    seen, took = states_until(op, "lv", 0, "ON", timeout=6)
    assert 1.6 <= took <= 3.0, took  # 2 V at 1 V/s
    ramping = [c for c in seen if c["state"] == "RAMP_UP"]
    assert ramping and all(c["vset"] == 2 for c in ramping), "status shows the target as vset"
    assert any(0.2 < c["vmon"] < 1.8 for c in ramping)
    op.clear()
    assert send(op, "slowctl/lv/cmd/off/0", "")["ok"]
    seen, took = states_until(op, "lv", 0, "OFF", timeout=5)
    assert any(c["state"] == "RAMP_DOWN" for c in seen)
    assert seen[-1]["vset"] == 2 and not seen[-1]["on"]
    assert send(op, "slowctl/lv/cmd/rampup/0", "2")["ok"]


def test_kill_mode_switches_off_without_ramp(op):
    assert send(op, "slowctl/hv/cmd/vset/3", "50")["ok"]
    assert send(op, "slowctl/hv/cmd/on/3", "")["ok"]
    channel(op, "hv", 3, lambda c: c["state"] == "ON", timeout=10)
    op.clear()
    assert send(op, "slowctl/hv/cmd/off/3", "")["ok"]
    seen, _ = states_until(op, "hv", 3, "OFF", timeout=3)
    assert not any(c["state"] == "RAMP_DOWN" for c in seen)
    assert seen[-1]["vmon"] < 1


def test_legacy_topics(op):
    status = op.wait_json("/hv/status", lambda d: len(d) == 4)
    assert status[0].keys() == {"number", "on", "vreq"}
    assert send(op, "/hv/cmd/setv/1", "42.5")["ok"]
    op.wait_json("/hv/status", lambda d: d[1]["vreq"] == 42.5)
    assert send(op, "/hv/cmd/switch/1", "on")["ok"]
    op.wait_json("/hv/status", lambda d: d[1]["on"] == 1)
    assert send(op, "/hv/cmd/switch/1", "off")["ok"]
    op.wait_json("/hv/status", lambda d: d[1]["on"] == 0)
    for topic, payload, reason in [
        ("/hv/cmd/setv/1", "abc", "not a number"),
        ("/hv/cmd/setv/1", "9999", "vmax=600"),
        ("/hv/cmd/switch/1", "maybe", "on or off"),
        ("/hv/cmd/setv/8", "1", "unknown channel"),
    ]:
        reply = send(op, topic, payload)
        assert not reply["ok"] and reason in reply["error"], reply
    assert send(op, "/lv/cmd/setv/2", "5")["ok"]
    op.wait_json("/lv/status", lambda d: d[2]["vreq"] == 5)


def test_status_is_published_when_the_command_takes_effect(own_stack):
    """With a 30 s poll period, only the command path can publish the new setpoint quickly."""
    s = own_stack(lambda c: c["devices"]["hv"].update(poll_period=30)).start()
    op = s.probe("operator")
    op.subscribe("slowctl/hv/status", "slowctl/hv/reply")
    op.wait_json("slowctl/hv/status", lambda d: d["state"] == "ok", timeout=5)
    op.clear()
    t0 = time.monotonic()
    assert send(op, "slowctl/hv/cmd/vset/2", "123")["ok"]
    channel(op, "hv", 2, lambda c: c["vset"] == 123, timeout=1)
    assert time.monotonic() - t0 < 1.0


def test_scenario_trip_clear_and_silence(own_stack, tmp_path):
    hv_scenario = tmp_path / "hv.yaml"
    hv_scenario.write_text("events:\n  - {at: 6, channel: 2, set: {load: 10000}}\n  - {at: 14, silence: 3}\n")
    climate_scenario = tmp_path / "climate.yaml"
    climate_scenario.write_text("events:\n  - {at: 0.5, set: {humidity: 85}}\n")

    def tweak(c):
        c["devices"]["hv"]["simulator"]["scenario"] = str(hv_scenario)
        c["devices"]["climate"]["simulator"]["scenario"] = str(climate_scenario)

    s = own_stack(tweak).start()
    op = s.probe("operator")
    op.subscribe("slowctl/+/status", "slowctl/+/reply")
    assert send(op, "slowctl/hv/cmd/vset/2", "60")["ok"]
    assert send(op, "slowctl/hv/cmd/on/2", "")["ok"]
    tripped = channel(op, "hv", 2, lambda c: c["state"] == "TRIPPED", timeout=12)
    assert "TRIP" in tripped["alarms"] and not tripped["on"]
    reply = send(op, "slowctl/hv/cmd/on/2", "")
    assert not reply["ok"] and "clear first" in reply["error"]
    assert send(op, "slowctl/hv/cmd/clear/2", "")["ok"]
    channel(op, "hv", 2, lambda c: c["state"] == "OFF" and "TRIP" not in c["alarms"], timeout=3)
    # humidity relaxes toward 85 %RH; the dew point follows
    box = channel(op, "climate", 0, lambda c: c["humidity"] > 70, timeout=20)
    assert box["dewpoint"] > 12
    # the supply goes silent: disconnected, commands refused, then recovery without a restart
    pid = s.pids()["service-hv"]
    down = op.wait_json("slowctl/hv/status", lambda d: d["state"] == "disconnected", timeout=15)
    assert "link" in down["error"] and "vmon" not in down["channels"][0]
    reply = send(op, "slowctl/hv/cmd/vset/0", "5")
    assert not reply["ok"] and "not connected" in reply["error"]
    op.wait_json("slowctl/hv/status", lambda d: d["state"] == "ok" and d["seq"] > down["seq"], timeout=10)
    assert s.pids()["service-hv"] == pid


@pytest.mark.parametrize("device,ch,volts", [("hv2", 1, 50.0), ("bias", 0, 20.0), ("lv2", 1, 3.3)])
def test_every_supply_model_of_the_dummy_bench_works_through_mqtt(op, device, ch, volts):
    """iseg (hardware ramp), Keithley (software ramp in steps), TTi (no ramp): the same contract."""
    assert send(op, f"slowctl/{device}/cmd/vset/{ch}", str(volts))["ok"]
    assert send(op, f"slowctl/{device}/cmd/on/{ch}", "")["ok"]
    on = channel(
        op,
        device,
        ch,
        lambda c: c["on"] and c["state"] in ("ON", "COMPLIANCE") and abs((c["vmon"] or 0) - volts) < 0.05 * volts,
        timeout=15,
    )
    assert on["vset"] == volts
    assert send(op, f"slowctl/{device}/cmd/off/{ch}", "")["ok"]
    channel(op, device, ch, lambda c: not c["on"] and c["state"] == "OFF", timeout=15)


def test_chiller_through_mqtt(op):
    assert send(op, "slowctl/chiller/cmd/tset/0", "12.5")["ok"]
    reply = send(op, "slowctl/chiller/cmd/tset/0", "40")
    assert not reply["ok"] and "tmax=25" in reply["error"]
    assert not send(op, "slowctl/chiller/cmd/vset/0", "1")["ok"]  # not a supply
    assert send(op, "slowctl/chiller/cmd/on/0", "")["ok"]
    bath = channel(op, "chiller", 0, lambda c: c["on"] and c["tset"] == 12.5, timeout=10)
    assert bath["state"] == "ON" and isinstance(bath["temperature"], float) and bath["status_code"] >= 0
    assert send(op, "slowctl/chiller/cmd/off/0", "")["ok"]
    channel(op, "chiller", 0, lambda c: not c["on"] and c["state"] == "OFF", timeout=10)
