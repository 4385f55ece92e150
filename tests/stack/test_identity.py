"""Who did it is the broker's word: per-person accounts on the running native stack.

`slowctl user` changes the broker's accounts while it runs (SIGHUP, nobody disconnected); a person
publishes commands only under their own name; front-ends say for whom they act; devices record it.
"""

from __future__ import annotations

import json
import time

import pytest

from harness import send, wait_until

NOT_AUTHORIZED = 135
PW = "a long enough password"


def add(stack, name, role, password=PW):
    return stack.user_add(name, role, password)


@pytest.fixture(scope="module")
def people(stack):
    watch = stack.probe("viewer")
    watch.subscribe("slowctl/+/availability")
    for name, role in (("alice", "operator"), ("victor", "viewer")):
        r = add(stack, name, role)
        assert r.returncode == 0 and "the broker has reloaded its accounts" in r.stdout, r.stdout + r.stderr
    time.sleep(0.5)
    offline = [m.topic for m in watch.seen() if m.payload == b"offline" and not m.retain]
    assert offline == [], f"a reload must not disconnect anyone: {offline}"
    return stack


def login(stack, name, password=PW):
    p = stack.probe(name, password)
    assert not p.wait_connected().is_failure, f"{name} cannot log in"
    return p


def test_a_person_commands_under_their_own_name_and_the_device_records_it(people):
    alice = login(people, "alice")
    alice.subscribe("slowctl/hv/reply", "slowctl/hv/event")
    reply = send(alice, "slowctl/hv/by/alice/cmd/vset/1", "12")
    assert reply["ok"] and reply["by"] == "alice" and reply["for"] is None, reply
    assert "before" in reply and reply["applied"] == 12.0
    wait_until(
        lambda: any(
            e["kind"] == "command_applied" and e["cause"] == "alice"
            for e in [json.loads(m.payload) for m in alice.seen("slowctl/hv/event")]
        ),
        5,
        what="the event naming alice",
    )


def test_a_forged_identity_is_refused_by_the_broker(people):
    alice = login(people, "alice")
    spy = people.probe("viewer")
    spy.subscribe("slowctl/hv/#")
    # under someone else's name, on the shared plain topic, as a viewer: the broker refuses, the device never sees it
    assert alice.publish("slowctl/hv/by/bob/cmd/vset/1", "13") == NOT_AUTHORIZED
    assert alice.publish("slowctl/hv/by/operator/cmd/vset/1", "13") == NOT_AUTHORIZED
    assert alice.publish("slowctl/hv/cmd/vset/1", "13") == NOT_AUTHORIZED
    victor = login(people, "victor")
    assert victor.publish("slowctl/hv/by/victor/cmd/vset/1", "13") == NOT_AUTHORIZED
    time.sleep(0.3)
    assert not [m for m in spy.seen() if "/cmd" in m.topic or m.topic.endswith("/reply")], "nothing got through"


def test_only_a_front_end_acts_for_a_person(people):
    nodered = people.probe("nodered")
    nodered.subscribe("slowctl/hv/reply")
    body = {"action": "vset", "channel": 1, "value": 14, "for": "alice"}
    reply = send(nodered, "slowctl/hv/by/nodered/cmd", json.dumps(body))
    assert reply["ok"] and (reply["by"], reply["for"]) == ("nodered", "alice"), reply
    alice = login(people, "alice")
    alice.subscribe("slowctl/hv/reply")
    reply = send(alice, "slowctl/hv/by/alice/cmd", json.dumps({**body, "for": "victor"}))
    assert not reply["ok"] and "only a front-end" in reply["error"], reply


def test_the_shared_operator_login_keeps_the_plain_topics(people, operator):
    operator.subscribe("slowctl/hv/reply")
    reply = send(operator, "slowctl/hv/cmd/vset/1", "10")
    assert reply["ok"] and reply["by"] == "operator", reply


def test_password_change_and_removal_take_effect_without_a_restart(people):
    r = add(people, "carol", "operator")
    assert r.returncode == 0, r.stderr
    carol, alice = login(people, "carol"), login(people, "alice")
    import subprocess
    import sys

    def run(*args, stdin=""):
        return subprocess.run(
            [sys.executable, "-m", "slowctl", "user", *args, "--config", str(people.config_path)],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=people.workdir,
            timeout=20,
        )

    assert run("passwd", "carol", "--password-stdin", stdin="another long password\n").returncode == 0
    assert people.probe("carol", PW).wait_connected().is_failure, "the old password is refused"
    assert not people.probe("carol", "another long password").wait_connected().is_failure
    # Mosquitto checks open sessions against the reloaded file: the changed password ends carol's, not others'
    wait_until(lambda: not carol.client.is_connected(), 5, what="carol's old session to end")
    assert alice.client.is_connected(), "another person's session stays"
    listed = run("list").stdout
    assert "alice" in listed and "operator" in listed and "victor" in listed and "viewer" in listed
    assert run("remove", "carol").returncode == 0
    assert people.probe("carol", "another long password").wait_connected().is_failure


def test_bad_input_changes_nothing_on_the_running_stack(people):
    before = (people.state / "accounts" / "users.json").read_bytes()
    for name, role, pw, error in (
        ("alice", "operator", PW, "exists already"),
        ("dave", "boss", PW, "unknown role 'boss'"),
        ("dave", "operator", "short", "too short"),
        ("dave", "operator", "", "empty"),
        ("hv", "viewer", PW, "taken by a service"),
    ):
        r = add(people, name, role, pw)
        assert r.returncode == 2 and error in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
    assert (people.state / "accounts" / "users.json").read_bytes() == before


def test_a_client_id_taken_by_someone_else_throws_no_service_off(people):
    """Mosquitto cannot bind client ids to logins; the services' ids are unguessable, so that a viewer
    connecting as "slowctl-hv" (the old fixed id) or "slowctl-interlock" disconnects nobody."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    watch = people.probe("viewer")
    watch.subscribe("slowctl/+/availability")
    intruders = []
    for cid in ("slowctl-hv", "slowctl-interlock", "slowctl-recorder"):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        c.username_pw_set("viewer", people.credentials["viewer"])
        c.connect("127.0.0.1", people.port)
        c.loop_start()
        intruders.append(c)
    try:
        time.sleep(1.0)
        offline = [m.topic for m in watch.seen() if m.payload == b"offline" and not m.retain]
        assert offline == [], offline
    finally:
        for c in intruders:
            c.disconnect()
            c.loop_stop()
