"""Command parsing and validation: every bad input is refused, never clamped."""

import json
import math
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from slowctl.config import DeviceConfig
from slowctl.device import commands
from slowctl.device.capabilities import Capabilities
from slowctl.device.commands import (
    CLOCK_SKEW,
    Command,
    CommandError,
    Request,
    check_size,
    parse_json,
    parse_legacy,
    parse_plain,
)
from slowctl.device.contract import MAX_PAYLOAD

NOW = 1_700_000_000.0


def validate(req: Request, caps: Capabilities, now_wall: float | None = None) -> Command:
    return commands.validate(req, caps, 10.0, now_wall=now_wall)


@pytest.fixture(scope="module")
def hv(stack_config):
    """The dummy HV (CAEN, hardware ramp; channels 0-2 vmax 600, channel 3 vmax 100)."""
    return Capabilities.build(stack_config.devices["hv"])


@pytest.fixture(scope="module")
def lv(stack_config):
    """The dummy LV (HMP4040, software ramp on channel 0 only)."""
    caps = Capabilities.build(stack_config.devices["lv"])
    assert caps.soft_ramp == {0}
    return caps


def js(**fields) -> bytes:
    return json.dumps(fields).encode()


def refused(req: Request, rules: Capabilities, *words: str, now: float = NOW) -> str:
    with pytest.raises(CommandError) as info:
        validate(req, rules, now_wall=now)
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    return msg


# --- accepted forms ----------------------------------------------------------------


def test_json_command_accepted(hv):
    cmd = validate(parse_json(js(action="vset", channel=1, value=100, id="a1")), hv, now_wall=NOW)
    assert isinstance(cmd, Command)
    assert (cmd.action, cmd.channel, cmd.value) == ("vset", 1, 100.0)
    assert isinstance(cmd.value, float)
    assert cmd.request.id == "a1"


def test_plain_command_accepted(hv):
    cmd = validate(parse_plain("iset", "2", b" 50e-6\n"), hv, now_wall=NOW)
    assert (cmd.action, cmd.channel) == ("iset", 2) and cmd.value == pytest.approx(50e-6)
    cmd = validate(parse_plain("on", "0", b""), hv, now_wall=NOW)
    assert (cmd.action, cmd.channel, cmd.value) == ("on", 0, None)


def test_value_exactly_at_limit_is_accepted(hv):
    assert validate(parse_plain("vset", "0", b"600"), hv, now_wall=NOW).value == 600.0
    assert validate(parse_plain("vset", "0", b"0"), hv, now_wall=NOW).value == 0.0


# --- malformed payloads ----------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"{not json", b"", b'{"action": "on",}', b"\xff\xfe"])
def test_malformed_json(hv, payload):
    req = parse_json(payload)
    assert req.error and "malformed JSON" in req.error
    refused(req, hv, "malformed JSON")


@pytest.mark.parametrize("payload", [b"[1, 2]", b"42", b'"on"', b"null", b"true"])
def test_non_object_json(hv, payload):
    refused(parse_json(payload), hv, "must be a JSON object")


def test_unknown_field(hv):
    msg = refused(parse_json(js(action="vset", channel=0, value=1, colour="red", size=2)), hv, "unknown field")
    assert "colour" in msg and "size" in msg


@pytest.mark.parametrize("action", ["explode", "VSET", "", None, 5, ["on"]])
def test_unknown_action_json(hv, action):
    refused(parse_json(js(action=action, channel=0)), hv, "unknown action")


def test_unknown_action_plain(hv):
    refused(parse_plain("explode", "0", b""), hv, "unknown action")


def test_action_not_supported_by_device(hv, lv, stack_config):
    climate = Capabilities.build(stack_config.devices["climate"])
    refused(parse_plain("on", "0", b""), climate, "not supported by this device")
    # software ramp rates only on channels that have a software ramp
    refused(parse_plain("rampup", "1", b"1"), lv, "not supported")
    assert validate(parse_plain("rampup", "0", b"1"), lv, now_wall=NOW).value == 1.0


# --- channel ---------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["0", 0.0, 1.5, True, False, None, [0]])
def test_channel_must_be_an_int(hv, channel):
    refused(parse_json(js(action="on", channel=channel)), hv, "channel must be an integer")


def test_negative_channel_json(hv):
    refused(parse_json(js(action="vset", channel=-1, value=1)), hv, "negative")


@pytest.mark.parametrize("channel", ["-1", "x", "1.0", "", "00001", " 1"])
def test_bad_plain_channel(hv, channel):
    req = parse_plain("vset", channel, b"1")
    assert req.error
    refused(req, hv, "not a channel number")


@pytest.mark.parametrize("channel", [7, 10_000, 2**70])
def test_unknown_channel(hv, channel):
    refused(parse_json(js(action="vset", channel=channel, value=1)), hv, f"unknown channel {channel}", "0, 1, 2, 3")


def test_unknown_plain_channel(hv):
    refused(parse_plain("vset", "7", b"1"), hv, "unknown channel 7")


# --- value ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["vset", "iset", "rampup", "rampdown"])
def test_value_missing(hv, action):
    refused(parse_json(js(action=action, channel=0)), hv, "needs a value")
    refused(parse_plain(action, "0", b"  "), hv, "needs a value")


@pytest.mark.parametrize("action", ["on", "off", "clear"])
def test_value_forbidden(hv, action):
    refused(parse_json(js(action=action, channel=0, value=1)), hv, "takes no value")
    refused(parse_json(js(action=action, channel=0, value=0)), hv, "takes no value")
    refused(parse_plain(action, "0", b"1"), hv, "takes no value")


@pytest.mark.parametrize("value", ["12", "", True, False, [1], {"v": 1}])
def test_json_value_not_a_number(hv, value):
    refused(parse_json(js(action="vset", channel=0, value=value)), hv, "must be a number")


@pytest.mark.parametrize(
    "text", [b"abc", b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"0x10", b"1,5", b"1_000", b"true", b"1 2", b"--1"]
)
def test_plain_value_not_a_number(hv, text):
    req = parse_plain("vset", "0", text)
    assert req.value is None
    refused(req, hv, "not a number")


def test_plain_overflowing_number_is_not_finite(hv):
    req = parse_plain("vset", "0", b"1e999")
    refused(req, hv, "finite")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_json_non_finite_value(hv, literal):
    req = parse_json(b'{"action": "vset", "channel": 0, "value": ' + literal + b"}")
    refused(req, hv, "finite")


def test_plain_not_utf8(hv):
    req = parse_plain("vset", "0", b"\xff")
    refused(req, hv, "UTF-8")


@pytest.mark.parametrize(
    "action,value,words",
    [
        ("vset", 601, ("vset 601 V", "configured limit vmax=600 V", "channel 0", "sensor-A")),
        ("vset", 600.5, ("configured limit vmax=600",)),
        ("iset", 1e-3, ("configured limit imax=0.0001 A",)),
        ("rampup", 51, ("configured limit ramp_max=50 V/s",)),
        ("rampdown", 499, ("ramp_max=50",)),
    ],
)
def test_beyond_configured_limit_is_refused_not_clamped(hv, action, value, words):
    req = parse_json(js(action=action, channel=0, value=value))
    refused(req, hv, "exceeds", *words)
    assert req.value == value  # nothing was clamped in place


def test_limit_is_per_channel(hv):
    refused(parse_plain("vset", "3", b"101"), hv, "vmax=100", "channel 3", "spare")
    assert validate(parse_plain("vset", "2", b"101"), hv, now_wall=NOW).value == 101.0


def test_beyond_instrument_range(stack_config):
    # a channel without its own limit still cannot exceed the instrument range
    rules = Capabilities.build(DeviceConfig(model="caen-n1470", address="socket://x:1", channels={0: {"name": "free"}}))
    refused(parse_plain("vset", "0", b"8001"), rules, "outside the instrument range 0..8000")
    refused(parse_plain("rampup", "0", b"0.5"), rules, "outside the instrument range 1..500")
    assert validate(parse_plain("vset", "0", b"8000"), rules, now_wall=NOW).value == 8000


@pytest.mark.parametrize("action", ["vset", "iset"])
def test_negative_setpoint(hv, action):
    refused(parse_plain(action, "0", b"-5"), hv, "must be >= 0")


@pytest.mark.parametrize("action", ["rampup", "rampdown"])
@pytest.mark.parametrize("value", [b"0", b"-1", b"-0.0"])
def test_ramp_rate_must_be_positive(hv, action, value):
    refused(parse_plain(action, "0", value), hv, "must be > 0")


# --- timestamps ---------------------------------------------------------------------------


def ts_req(ts) -> Request:
    return parse_json(js(action="vset", channel=0, value=1, ts=ts))


def test_fresh_timestamps_accepted(hv):
    iso = datetime.fromtimestamp(NOW - 1, UTC).isoformat().replace("+00:00", "Z")
    for ts in (NOW - 1, int((NOW - 1) * 1000), iso, NOW + CLOCK_SKEW - 0.5):
        assert validate(ts_req(ts), hv, now_wall=NOW).value == 1.0, ts


def test_stale_epoch_seconds(hv):
    refused(ts_req(NOW - 60), hv, "stale", "max 10 s")


def test_stale_epoch_milliseconds(hv):
    refused(ts_req(int((NOW - 60) * 1000)), hv, "stale")


def test_stale_iso_with_z(hv):
    refused(ts_req("2020-01-01T00:00:00Z"), hv, "stale")
    iso = datetime.fromtimestamp(NOW - 30, UTC).isoformat().replace("+00:00", "Z")
    refused(ts_req(iso), hv, "stale")


def test_stale_iso_with_offset(hv):
    # 11 s ago, written in UTC+2
    t = datetime.fromtimestamp(NOW - 11, timezone(timedelta(hours=2))).isoformat()
    assert "+02:00" in t
    refused(ts_req(t), hv, "stale")


def test_stale_against_real_clock(hv):
    with pytest.raises(CommandError, match="stale"):
        validate(ts_req(time.time() - 60), hv)


@pytest.mark.parametrize("ahead", [CLOCK_SKEW + 1, 600])
def test_future_timestamp(hv, ahead):
    refused(ts_req(NOW + ahead), hv, "future")
    refused(ts_req(int((NOW + ahead) * 1000)), hv, "future")


def test_iso_without_zone(hv):
    naive = datetime.fromtimestamp(NOW, UTC).replace(tzinfo=None).isoformat()
    refused(ts_req(naive), hv, "time zone")


@pytest.mark.parametrize("ts", ["yesterday", "", True, [1], {"t": 1}])
def test_unreadable_ts(hv, ts):
    refused(ts_req(ts), hv, "ts")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_ts(hv, literal):
    req = parse_json(b'{"action": "on", "channel": 0, "ts": ' + literal + b"}")
    refused(req, hv, "ts must be finite")


# --- legacy tracker_dcs topics ----------------------------------------------------------


def test_legacy_setv(hv):
    req = parse_legacy("setv", "2", b"150.5")
    assert (req.action, req.channel, req.value, req.error) == ("vset", 2, 150.5, None)
    assert validate(req, hv, now_wall=NOW).value == 150.5


@pytest.mark.parametrize(
    "word,action",
    [
        (b"on", "on"),
        (b"ON", "on"),
        (b" On\n", "on"),
        (b"1", "on"),
        (b"true", "on"),
        (b"off", "off"),
        (b"OFF", "off"),
        (b"0", "off"),
        (b"false", "off"),
    ],
)
def test_legacy_switch(hv, word, action):
    req = parse_legacy("switch", "1", word)
    assert (req.action, req.channel, req.value, req.error) == (action, 1, None, None)
    assert validate(req, hv, now_wall=NOW).action == action


@pytest.mark.parametrize("word", [b"maybe", b"", b"2", b"onn", b"\xff"])
def test_legacy_switch_bad_word(hv, word):
    req = parse_legacy("switch", "1", word)
    assert req.error
    refused(req, hv)


@pytest.mark.parametrize(
    "text,reason",
    [
        (b"", "not a number"),
        (b"abc", "not a number"),
        (b"nan", "not a number"),
        (b"inf", "not a number"),
        (b"1e999", "finite"),
        (b"601", "vmax=600"),
        (b"-1", ">= 0"),
    ],
)
def test_legacy_setv_bad_value(hv, text, reason):
    refused(parse_legacy("setv", "0", text), hv, reason)


def test_legacy_bad_channel(hv):
    refused(parse_legacy("setv", "x", b"1"), hv, "not a channel number")
    refused(parse_legacy("switch", "9", b"on"), hv, "unknown channel 9")


# --- size ------------------------------------------------------------------------------------


def test_check_size():
    check_size(b"x" * MAX_PAYLOAD)
    with pytest.raises(CommandError, match="payload too large"):
        check_size(b"x" * (MAX_PAYLOAD + 1))
    with pytest.raises(CommandError, match=str(MAX_PAYLOAD)):
        check_size(js(action="vset", channel=0, value=1, id="x" * 70_000))


# --- reply -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "12", True, [1], {"a": 1}, b"1"])
def test_reply_never_echoes_non_finite_or_non_numeric_value(value):
    body = Request(action="vset", channel=0, value=value, id="r").reply(False, "no")
    assert body["value"] is None
    json.dumps(body, allow_nan=False)  # strictly valid JSON


def test_reply_from_parsed_nan(hv):
    req = parse_json(b'{"action": "vset", "channel": 0, "value": NaN, "id": 7}')
    with pytest.raises(CommandError) as info:
        validate(req, hv, now_wall=NOW)
    body = req.reply(False, str(info.value))
    assert body == {
        "id": 7,
        "action": "vset",
        "channel": 0,
        "value": None,
        "ok": False,
        "error": "value must be a finite number",
        "by": None,
        "for": None,
    }
    json.dumps(body, allow_nan=False)


def test_reply_sanitises_other_fields():
    body = Request(action=["x"], channel=True, value=1, id={"a": 1}).reply(True)
    assert body == {
        "id": None,
        "action": None,
        "channel": None,
        "value": 1,
        "ok": True,
        "error": None,
        "by": None,
        "for": None,
    }
    assert Request(id=False).reply(True)["id"] is None


def test_reply_echoes_good_values():
    body = Request(action="vset", channel=2, value=12.5, id=3).reply(True)
    assert body == {
        "id": 3,
        "action": "vset",
        "channel": 2,
        "value": 12.5,
        "ok": True,
        "error": None,
        "by": None,
        "for": None,
    }


# --- huge integers: JSON allows them, floats cannot hold them -----------------------------------


def test_huge_integer_value_is_refused_as_command_error(hv):
    # 10**400 is valid JSON; float() of it raises OverflowError, which must become a refusal
    req = parse_json(b'{"action": "vset", "channel": 0, "value": 1' + b"0" * 400 + b"}")
    refused(req, hv)


def test_huge_integer_ts_is_refused_as_command_error(hv):
    req = parse_json(b'{"action": "on", "channel": 0, "ts": 1' + b"0" * 400 + b"}")
    refused(req, hv)


def test_reply_with_huge_integer_value_does_not_raise():
    body = Request(action="vset", channel=0, value=10**400).reply(False, "no")
    assert body["value"] is None


def test_integer_with_too_many_digits_is_malformed_not_a_crash(hv):
    # Python refuses int strings over 4300 digits with a plain ValueError (not JSONDecodeError)
    payload = b'{"action": "vset", "channel": 0, "value": ' + b"1" * 5000 + b"}"
    check_size(payload)
    req = parse_json(payload)
    assert req.error
    refused(req, hv)
