"""`from slowctl import Client` against the native dummy stack: one connection, many calls, many threads."""

from __future__ import annotations

import threading

import pytest

from slowctl import Client, ClientError, Refused

pytestmark = pytest.mark.stack


@pytest.fixture
def client(stack):
    with Client(state_dir=stack.state) as c:
        yield c


def test_status_set_and_the_reply(client):
    status = client.status("lv")
    assert status["device"] == "lv" and status["state"] == "ok"
    reply = client.set("lv", 1, "iset", 0.45)
    assert reply["ok"] and reply["applied"] == 0.45 and reply["by"] == "operator"
    client.wait_until("lv", 1, "iset", equals=0.45, timeout=5)
    assert client.channel("lv", 1)["iset"] == 0.45


def test_a_refusal_raises_with_the_devices_reason(client):
    with pytest.raises(Refused, match="exceeds the configured limit") as info:
        client.set("hv", 0, "vset", 99999)
    assert info.value.reply["ok"] is False and "vmax" in info.value.reason
    with pytest.raises(ClientError, match=r"unknown device 'hw' \(known: .*hv"):
        client.set("hw", 0, "on")
    with pytest.raises(ClientError, match="timed out after 0.3 s"):
        client.wait_until("lv", 1, "iset", equals=99, timeout=0.3)


def test_ramp_to_waits_for_the_ramp_and_events_reach_a_subscriber(client):
    seen: list[tuple[str, str]] = []
    stop = client.subscribe(lambda kind, dev, data: seen.append((dev, data["kind"])), device="hv", kinds=("event",))
    client.set("hv", 2, "rampup", 50)
    client.set("hv", 2, "rampdown", 50)
    client.set("hv", 2, "vset", 0)
    client.set("hv", 2, "on")
    try:
        ch = client.ramp_to("hv", 2, 40)
        assert ch["state"] == "ON" and abs(ch["vmon"] - 40) <= 1, ch
    finally:
        client.ramp_to("hv", 2, 0)
        client.set("hv", 2, "off")
    stop()
    assert ("hv", "command_applied") in seen


def test_one_connection_shared_by_threads(client):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(5):
                assert client.set("lv", 2, "iset", round(0.3 + 0.01 * ((i + k) % 5), 2))["ok"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_a_wrong_password_is_a_clear_error(stack):
    with pytest.raises(ClientError, match="cannot connect .* as viewer"):
        Client("127.0.0.1", stack.port, "viewer", "wrong", timeout=3).connect()
