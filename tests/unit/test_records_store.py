"""What a message becomes in the record: the topic decides, forged shapes stay what they are."""

from __future__ import annotations

import json

from slowctl.records.store import COMMANDS, EVENTS, to_write

T = 1796000000.0


def w(topic, body):
    return to_write("slowctl", "k1", topic, body if isinstance(body, str) else json.dumps(body), T)


def test_a_command_topic_is_a_command_whatever_its_last_level_says():
    fake_event = w("slowctl/hv/by/alice/cmd/event", {"device": "hv", "kind": "trip", "message": "x", "cause": "bob"})
    assert fake_event.collection == COMMANDS and fake_event.doc["user"] == "alice"
    fake_reply = w("slowctl/hv/by/alice/cmd/hv/reply", {"ok": True, "by": "bob", "action": "off", "channel": 0})
    assert fake_reply.collection == COMMANDS and fake_reply.match is None and fake_reply.doc["user"] == "alice"
    assert fake_reply.doc["reason"]  # the device refuses it too: a channel must be a number
    assert w("slowctl/hv/cmd/x/event", "1").doc["user"] == "operator"
    assert w("slowctl/hv/status/event", {"kind": "trip"}) is None, "an event only on <root>/<target>/event"
    assert w("slowctl/hv/reply/mine", {"ok": True}) is None, "replies on response topics are copies"


def test_a_device_speaks_for_itself_the_alarm_handler_for_the_device_it_names():
    assert w("slowctl/hv/event", {"device": "lv", "kind": "trip", "message": "m"}).doc["device"] == "hv"
    alarm = w("slowctl/alarms/event", {"device": "climate", "kind": "alarm_raised", "message": "m", "ts": 1})
    assert alarm.collection == EVENTS and alarm.doc["device"] == "climate"
    assert alarm.doc["ts"].timestamp() == 0.001
    silly = w("slowctl/hv/event", {"kind": "trip", "message": "m", "ts": 10**20, "channel": "2", "after": {"a": 1}})
    assert silly.doc["ts"].timestamp() == T and silly.doc["channel"] is None and silly.doc["after"] == '{"a": 1}'


def test_replies_are_matched_by_the_fields_the_device_echoes():
    cmd = w("slowctl/hv/by/alice/cmd", {"action": "vset", "channel": 1, "value": 5, "id": 7})
    reply = w("slowctl/hv/reply", {"id": 7, "action": "vset", "channel": 1, "value": 5.0, "by": "alice",
                                   "for": None, "ok": True, "error": None, "applied": 5.0, "before": 0.0})  # fmt: skip
    assert cmd.doc["reply_key"] == reply.match["reply_key"]
    ack = w(
        "slowctl/alarms/by/alice/cmd", {"action": "ack", "device": "climate", "channel": 0, "kind": "HIGH", "id": "a"}
    )
    ack_reply = w("slowctl/alarms/reply", {"id": "a", "action": "ack", "by": "alice", "ok": True, "acked": []})
    assert ack.doc["reply_key"] == ack_reply.match["reply_key"]
    assert ack.doc["value"] == {"device": "climate", "channel": 0, "kind": "HIGH"}


def test_for_is_recorded_only_from_a_front_end_and_values_are_kept_storable():
    forged = w("slowctl/hv/by/alice/cmd", {"action": "off", "channel": 0, "for": "bob"})
    assert forged.doc["for"] is None and forged.doc["who"] == "alice" and "only a front-end" in forged.doc["reason"]
    ui = w("slowctl/hv/by/nodered/cmd", {"action": "off", "channel": 0, "for": "bob"})
    assert (ui.doc["who"], ui.doc["for"]) == ("nodered for bob", "bob")
    huge = w("slowctl/hv/by/alice/cmd", '{"action": "vset", "channel": 0, "value": 1' + "0" * 400 + "}")
    assert huge.doc["value"] is None or isinstance(huge.doc["value"], (str, float))
    assert w("slowctl/hv/by/alice/cmd", "{not json").doc["reason"].startswith("malformed JSON")


def test_procedure_commands_replies_and_events_are_the_runners():
    start = w(
        "slowctl/procedures/by/alice/cmd",
        {"action": "start", "procedure": "iv_scan", "params": {"channel": "bias.0", "a.b": 1, "$x": [1]}, "id": "s"},
    )
    assert start.collection == COMMANDS and start.doc["reason"] is None and start.doc["action"] == "start"
    assert start.doc["value"] == {"procedure": "iv_scan", "params": {"channel": "bias.0", "a_b": 1, "x": "[1]"}}
    reply = w("slowctl/procedures/reply", {"id": "s", "action": "start", "by": "alice", "ok": True, "run": "r1"})
    assert start.doc["reply_key"] == reply.match["reply_key"]
    event = w("slowctl/procedures/event", {"device": "bias", "channel": 0, "kind": "run_started", "message": "m"})
    assert event.collection == EVENTS and event.doc["device"] == "bias" and event.doc["source"] == "procedures"
