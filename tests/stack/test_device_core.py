"""Device core v2 through the real broker: honest setpoints, safe start-up, events, latches that outlive a
restart of the service, and changes nobody commanded (an instrument power-cycled under a running service)."""

import json
import os
import signal

import pytest
import yaml

from harness import DUMMY_CONFIG, channel, send, wait_until
from slowctl.drivers import DRIVERS, kind_of

pytestmark = pytest.mark.stack

# every device of the example bench with outputs (supplies and chillers; not the climate box)
SUPPLIES = tuple(
    d
    for d, c in yaml.safe_load(DUMMY_CONFIG.read_text())["devices"].items()
    if kind_of(DRIVERS[c["model"]]) != "sensor"
)


def events(probe, device):
    return [json.loads(m.payload) for m in probe.seen(f"slowctl/{device}/event")]


def test_fresh_stack_starts_without_alarms_and_says_so(own_stack):
    s = own_stack().start()
    viewer = s.probe("viewer")
    viewer.subscribe("slowctl/+/status", "slowctl/+/capabilities")
    for dev in SUPPLIES:
        status = viewer.wait_json(f"slowctl/{dev}/status", lambda d: d["state"] == "ok", timeout=10)
        for ch in status["channels"]:
            assert ch.get("alarms") == [], (dev, ch)
        caps = viewer.wait_json(f"slowctl/{dev}/capabilities", timeout=5)
        assert caps["channels"] and all("on" in c["actions"] for c in caps["channels"]), dev
    # the start-up settings were applied while the outputs were off, and said so in the service log
    assert "setting_applied" in s.service_log("service-hv")


def test_sub_resolution_setpoint_is_refused_and_replies_carry_the_read_back(own_stack):
    s = own_stack().start()
    op = s.probe("operator")
    op.subscribe("slowctl/hv/reply", "slowctl/hv/event", "slowctl/hv/status")
    reply = send(op, "slowctl/hv/cmd/vset/1", "12.34")
    assert not reply["ok"] and "is finer than the caen-n1470's 0.1 V step" in reply["error"]
    reply = send(op, "slowctl/hv/cmd/vset/1", "12.3")
    assert reply["ok"] and reply["applied"] == pytest.approx(12.3)
    reply = send(op, "slowctl/hv/cmd/iset/1", "1.5e-5")
    assert reply["ok"] and reply["applied"] == pytest.approx(1.5e-5)
    wait_until(
        lambda: {"command_refused", "command_applied"} <= {e["kind"] for e in events(op, "hv")},
        5,
        what="command events",
    )
    applied = [e for e in events(op, "hv") if e["kind"] == "command_applied"]
    assert applied[0]["channel"] == 1 and applied[0]["after"] == pytest.approx(12.3)


def test_power_cycled_instrument_is_reported_latched_and_survives_a_service_restart(own_stack):
    s = own_stack(lambda c: c["supervisor"].update(backoff_initial=1)).start()
    op = s.probe("operator")
    op.subscribe("slowctl/hv/reply", "slowctl/hv/event", "slowctl/hv/status", "slowctl/hv/metrics")
    assert send(op, "slowctl/hv/cmd/vset/2", "30")["ok"]
    assert send(op, "slowctl/hv/cmd/on/2", "")["ok"]
    channel(op, "hv", 2, lambda c: c["state"] == "ON", timeout=10)
    os.kill(s.pids()["sim-hv"], signal.SIGKILL)  # the supervisor restarts it: a fresh instrument, all off
    wait_until(
        lambda: any(e["kind"] == "output_changed" for e in events(op, "hv")),
        20,
        what="the service to report the lost output",
    )
    lost = next(e for e in events(op, "hv") if e["kind"] == "output_changed")
    assert lost["channel"] == 2 and lost["before"] is True and lost["after"] is False
    assert lost["severity"] == "major" and "OUTPUT_LOST" in lost["message"]
    kinds = {e["kind"] for e in events(op, "hv")}
    assert {"instrument_lost", "instrument_back", "setpoint_changed"} <= kinds
    ch = channel(op, "hv", 2, lambda c: "OUTPUT_LOST" in c.get("alarms", []), timeout=5)
    assert not ch["on"]
    assert any(
        m.payload.startswith(b"event,") and b"kind=output_changed" in m.payload for m in op.seen("slowctl/hv/metrics")
    ), "events also go out as line protocol"
    # the latch outlives the service
    os.kill(s.pids()["service-hv"], signal.SIGTERM)
    wait_until(lambda: any(e["kind"] == "service_stop" for e in events(op, "hv")), 10, what="service_stop")

    def since_stop() -> list[str]:  # the first start's instrument_connected may also have been seen
        kinds = [e["kind"] for e in events(op, "hv")]
        return kinds[kinds.index("service_stop") :]

    wait_until(lambda: "instrument_connected" in since_stop(), 20, what="the restarted service")
    ch = channel(op, "hv", 2, lambda c: "OUTPUT_LOST" in c.get("alarms", []), timeout=10)
    assert not ch["on"]
    reply = send(op, "slowctl/hv/cmd/on/2", "")
    assert not reply["ok"] and "OUTPUT_LOST" in reply["error"] and "clear" in reply["error"]
    assert send(op, "slowctl/hv/cmd/clear/2", "")["ok"]
    assert channel(op, "hv", 2, lambda c: "OUTPUT_LOST" not in c.get("alarms", []), timeout=5)
    assert any(e["kind"] == "alarms_cleared" for e in events(op, "hv"))


def test_unreadable_latch_file_keeps_channels_latched(own_stack):
    s = own_stack()
    devices = s.state / "devices"
    devices.mkdir(parents=True)
    (devices / "lv2.json").write_text("{garbage")
    s.start()
    op = s.probe("operator")
    op.subscribe("slowctl/lv2/reply", "slowctl/lv2/status")
    status = op.wait_json("slowctl/lv2/status", lambda d: d["state"] == "ok", timeout=10)
    assert all("LATCH_STATE_UNREADABLE" in c["alarms"] for c in status["channels"])
    reply = send(op, "slowctl/lv2/cmd/on/0", "")
    assert not reply["ok"] and "LATCH_STATE_UNREADABLE" in reply["error"]
    assert "unreadable" in s.service_log("service-lv2")
    assert send(op, "slowctl/lv2/cmd/clear/0", "")["ok"]
    assert send(op, "slowctl/lv2/cmd/on/0", "")["ok"]


def test_reply_is_not_ok_when_the_instrument_holds_another_value(own_stack):
    """A JULABO that holds its setpoint at 0.1 °C while the config declares the default 0.01 °C
    (`setpoint_resolution`): 18.06 is on the declared grid, so it is sent, and the chiller holds 18.1.
    The reply says so with both values and the read-back, and so does an event."""

    def coarse(c):
        c["devices"]["chiller"]["simulator"]["args"] = ["--option", "setpoint_resolution=0.1"]

    s = own_stack(coarse).start()
    op = s.probe("operator")
    op.subscribe("slowctl/chiller/reply", "slowctl/chiller/event", "slowctl/chiller/status")
    before = channel(op, "chiller", 0, lambda c: c["tset"] is not None, timeout=10)["tset"]
    reply = send(op, "slowctl/chiller/cmd/tset/0", "18.06")
    assert not reply["ok"], reply
    assert "18.06" in reply["error"] and "reads 18.1" in reply["error"], reply["error"]
    assert reply["applied"] == pytest.approx(18.1) and reply["before"] == pytest.approx(before)
    wait_until(lambda: any(e["kind"] == "command_failed" for e in events(op, "chiller")), 5, what="the event")
    failed = next(e for e in events(op, "chiller") if e["kind"] == "command_failed")
    assert failed["channel"] == 0 and failed["severity"] == "major"
    assert "18.06" in failed["message"] and "18.1" in failed["message"] and failed["after"] == pytest.approx(18.1)
    # what the chiller holds now was read back for the reply: not a change behind our back
    seq = op.wait_json("slowctl/chiller/status", lambda d: d["channels"][0]["tset"] == pytest.approx(18.1))["seq"]
    op.wait_json("slowctl/chiller/status", lambda d: d["seq"] >= seq + 2, timeout=10)  # polls since
    assert not [e for e in events(op, "chiller") if e["kind"] == "setpoint_changed"]
    # on the chiller's own grid the same command is applied
    reply = send(op, "slowctl/chiller/cmd/tset/0", "18.2")
    assert reply["ok"] and reply["applied"] == pytest.approx(18.2), reply
