"""The control UI end to end: the real Node-RED with the project's settings and generated flows, behind the
real nginx with the project's gateway template, against the native dummy stack, in headless Chromium."""

import http.client
import json
import socket
import ssl
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from harness import DUMMY_CONFIG, send, wait_until

pytestmark = pytest.mark.stack

DEVICE_PAGES = list(yaml.safe_load(DUMMY_CONFIG.read_text())["devices"])  # the example bench
BENCH_PAGES = ["overview", "alarms", "log", "procedures", "trends", "environment", "health"]
UI_CMD = "slowctl/%s/by/nodered/cmd"  # where the control UI's commands go (the broker lets `nodered` write only there)
QUESTIONS = "slowctl/recorder/by/nodered/cmd"  # the log and procedures pages read the record: not commands


def ui_commands(probe) -> list:
    """What the control UI commanded, as the probe saw it (its read-only questions to the recorder apart)."""
    return [m for m in probe.seen() if "/by/nodered/cmd" in m.topic and m.topic != QUESTIONS]


def request(ui_stack, method, path, *, auth=None, headers=None, body=None, port=None):
    conn = http.client.HTTPSConnection(
        "localhost", port or ui_stack.https_port, context=ui_stack.ssl_context(), timeout=10
    )
    headers = dict(headers or {})
    if auth:
        import base64

        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r, data


# --- TLS, redirects, headers ------------------------------------------------------------------


def test_certificate_verifies_against_the_generated_ca(ui_stack):
    with socket.create_connection(("127.0.0.1", ui_stack.https_port), timeout=5) as raw:
        with ui_stack.ssl_context().wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError):  # and not against the system's CAs
        with socket.create_connection(("127.0.0.1", ui_stack.https_port), timeout=5) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")


def test_http_redirects_to_https(ui_stack):
    conn = http.client.HTTPConnection("127.0.0.1", ui_stack.http_port, timeout=5)
    conn.request("GET", "/dashboard/hv?x=1", headers={"Host": "localhost"})
    r = conn.getresponse()
    assert r.status == 301
    assert r.getheader("Location") == f"https://localhost:{ui_stack.https_port}/dashboard/hv?x=1"


@pytest.mark.parametrize("path,status", [("/", 302), ("/healthz", 200), ("/dashboard/", 401), ("/grafana/", 503)])
def test_security_headers_on_every_answer(ui_stack, path, status):
    r, _ = request(ui_stack, "GET", path)
    assert r.status == status
    assert r.getheader("Strict-Transport-Security").startswith("max-age=")
    assert r.getheader("X-Content-Type-Options") == "nosniff"
    assert r.getheader("X-Frame-Options") == "SAMEORIGIN"
    assert r.getheader("Referrer-Policy") == "same-origin"
    csp = r.getheader("Content-Security-Policy")
    assert "default-src 'self'" in csp and "frame-ancestors 'self'" in csp
    assert len(r.headers.get_all("X-Frame-Options")) == 1


def test_root_goes_to_the_dashboard_and_grafana_absent_is_explained(ui_stack):
    r, _ = request(ui_stack, "GET", "/")
    assert r.getheader("Location").endswith("/dashboard/")
    r, body = request(ui_stack, "GET", "/grafana/d/abc")
    assert r.status == 503 and b"Grafana unavailable" in body and b"slowctl up" in body


# --- logins -----------------------------------------------------------------------------------


def test_dashboard_needs_a_persons_login(ui_stack):
    """Each person logs in with their own account (users.json); an unknown login and a wrong password look alike."""
    operator, viewer = ui_stack.operator, ui_stack.viewer
    refused = [
        None,
        (operator[0], "wrong-password-x"),
        (operator[0], viewer[1]),  # someone else's password
        ("nobody", operator[1]),  # unknown person
        ("dashboard", operator[1]),  # the shared login of old is gone
        ui_stack.admin,  # the editor's login is not a person's
        (operator[0].upper(), operator[1]),
    ]
    answers = set()
    for auth in refused:
        r, body = request(ui_stack, "GET", "/dashboard/", auth=auth)
        assert r.status == 401, auth
        assert r.getheader("WWW-Authenticate").startswith("Basic ")
        answers.add((r.status, r.getheader("WWW-Authenticate"), body))
    assert len(answers) == 1, "every refusal is the same answer"
    for person in (operator, viewer):  # a viewer logs in too, and sees everything
        r, body = request(ui_stack, "GET", "/dashboard/", auth=person)
        assert r.status == 200 and b"<html" in body.lower(), person[0]
    # Node-RED itself checks it, not only the gateway
    conn = http.client.HTTPConnection("127.0.0.1", ui_stack.nodered_port, timeout=5)
    conn.request("GET", "/dashboard/_setup")
    assert conn.getresponse().status == 401


SOCKET_PROBE = """async (url) => {
    const ws = new WebSocket(url)
    const got = []
    return await new Promise(resolve => {
        ws.onmessage = e => { got.push(String(e.data)); if (String(e.data).startsWith('0')) ws.send('40');
                              if (/^4[04]/.test(String(e.data))) { ws.close(); resolve(got) } }
        ws.onerror = () => resolve(got.concat(['error']))
        ws.onclose = () => resolve(got.concat(['closed']))
        setTimeout(() => resolve(got.concat(['timeout'])), 5000)
    })
}"""


def test_dashboard_websocket_needs_the_login_too(browser, ui_stack):
    """socket.io does not go through Node-RED's httpNodeAuth: the settings' ioMiddleware refuses it."""
    from conftest import DashboardSocket, login

    url = f"wss://localhost:{ui_stack.https_port}/dashboard/socket.io/?EIO=4&transport=websocket"
    anon = browser.new_context()
    try:
        page = anon.new_page()
        page.goto(f"{ui_stack.base}/healthz")  # same origin, no credentials
        got = page.evaluate(SOCKET_PROBE, url)
        assert any(m.startswith("44") and "login required" in m for m in got), got
    finally:
        anon.close()
    user = browser.new_context(http_credentials=login(ui_stack.operator))
    try:
        page = user.new_page()
        page.goto(f"{ui_stack.base}/dashboard/")  # the browser learns the login here
        got = page.evaluate(SOCKET_PROBE, url)
        assert any(m.startswith("40{") for m in got), got
    finally:
        user.close()
    # the same door with exact credentials (long polling): a wrong password and an unknown person are refused
    for person in (None, (ui_stack.operator[0], "wrong-password-x"), ("nobody", ui_stack.operator[1])):
        answer = DashboardSocket(ui_stack, person).connect()
        assert answer.startswith("44") and "login required" in answer, (person, answer)
    for person in (ui_stack.operator, ui_stack.viewer):
        assert DashboardSocket(ui_stack, person).connect().startswith("40{"), person[0]


def editor_token(ui_stack, username, password):
    body = json.dumps(
        {
            "client_id": "node-red-editor",
            "grant_type": "password",
            "scope": "*",
            "username": username,
            "password": password,
        }
    )
    return request(ui_stack, "POST", "/nodered/auth/token", body=body, headers={"Content-Type": "application/json"})


def test_editor_and_admin_api_need_the_admin_login(ui_stack):
    r, _ = request(ui_stack, "GET", "/nodered/flows")
    assert r.status == 401
    for user, password in (("admin", "wrong"), ui_stack.operator, ("nobody", ui_stack.admin[1])):
        r, _ = editor_token(ui_stack, user, password)
        assert r.status in (401, 403), (user, r.status)
    r, body = editor_token(ui_stack, *ui_stack.admin)
    assert r.status == 200
    token = json.loads(body)["access_token"]
    r, body = request(ui_stack, "GET", "/nodered/flows", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200
    ids = {n["id"] for n in json.loads(body)}
    assert {"slowctl.tab.hv", "slowctl.tab.health", "slowctl.broker"} <= ids


def test_editor_opens_in_the_browser_under_the_csp(browser, ui_stack):
    from conftest import Console

    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        console = Console(page)
        page.goto(f"{ui_stack.base}/nodered/")
        page.fill("#node-dialog-login-username", ui_stack.admin[0])
        page.fill("#node-dialog-login-password", ui_stack.admin[1])
        page.click(".red-ui-login-form button[type=submit], #node-dialog-login-submit")
        page.get_by_text("slowctl: hv", exact=True).first.wait_for(timeout=30000)
        assert not console.csp(), console.csp()
    finally:
        ctx.close()


# --- the dashboard ----------------------------------------------------------------------------


def open_page(page, ui_stack, name):
    page.goto(f"{ui_stack.base}/dashboard/{name}")


def text(locator):
    return locator.inner_text().strip()


def wait_text(locator, predicate, timeout=15, what="text"):
    return wait_until(lambda: (lambda t: t if predicate(t) else None)(text(locator)), timeout, interval=0.1, what=what)


def test_no_command_without_a_user_action(browser, ui_stack):
    """Every page open while statuses flow, and a setpoint changed by someone else: the UI sends nothing."""
    from conftest import Console, login

    watch = ui_stack.stack.probe("viewer")
    # cmd/# matches cmd itself too (one filter each: overlapping ones would deliver twice)
    watch.subscribe("slowctl/+/cmd/#", "slowctl/+/by/+/cmd/#", "/+/cmd/#", "slowctl/lv/status")
    operator = ui_stack.stack.probe("operator")
    operator.wait_connected()

    def commands():
        return [(m.topic, m.payload) for m in watch.seen() if "/cmd" in m.topic and m.topic != QUESTIONS]

    ctx = browser.new_context(http_credentials=login(ui_stack.operator))
    try:
        pages = []
        for name in [*BENCH_PAGES, *DEVICE_PAGES]:
            page = ctx.new_page()
            page.set_default_timeout(20000)
            consoles = Console(page)
            open_page(page, ui_stack, name)
            pages.append((name, page, consoles))
            assert not commands(), f"commands after opening {name}: {commands()[:3]}"  # fail fast on a loop
        for name, page, _ in pages:
            if name in DEVICE_PAGES:
                wait_text(page.locator("[data-test=device-state]"), lambda t: t == "ok", what=f"{name} status")
            assert not commands(), f"commands while {name} was open: {commands()[:3]}"  # fail fast on a loop
        # someone else changes a setpoint: the new status reaches every open widget
        operator.publish("slowctl/lv/cmd", json.dumps({"action": "vset", "channel": 1, "value": 1.1, "id": "other"}))
        watch.wait_json("slowctl/lv/status", lambda s: s["channels"][1]["vset"] == 1.1)
        lv = next(p for n, p, _ in pages if n == "lv")
        wait_text(lv.locator('[data-channel="1"] [data-test=vset]'), lambda t: t.startswith("1.10"))
        assert lv.locator('[data-channel="1"] [data-test=vset-input]').input_value() == ""  # no echo into drafts
        time.sleep(3)  # three more polls of every device
        for _name, page, _ in pages:
            page.reload()
        time.sleep(2)
        seen = commands()
        assert seen == [
            ("slowctl/lv/cmd", json.dumps({"action": "vset", "channel": 1, "value": 1.1, "id": "other"}).encode())
        ]
        asked = [json.loads(m.payload)["action"] for m in watch.seen(QUESTIONS)]
        assert asked and set(asked) <= {"log", "runs"}, asked  # reads only, one per page opened (and reloaded)
        for name, _, console in pages:
            assert not console.csp(), (name, console.csp())
    finally:
        ctx.close()


def test_live_values_and_hv_commands_with_confirmation(dashboard, ui_stack):
    page, console = dashboard
    probe = ui_stack.stack.probe("viewer")
    probe.subscribe("slowctl/hv/#")
    open_page(page, ui_stack, "hv")
    ch = page.locator('[data-channel="1"]')
    wait_text(ch.locator("[data-test=vmon]"), lambda t: t.endswith(" V") and t != "–", what="live vmon")
    first_age = text(page.locator("[data-test=status-age]"))
    assert first_age.startswith("status ")

    # state-aware controls: the switch shows the output (off), ON is offered, nothing to clear on a fresh channel
    assert ch.locator("[data-test=switch]").get_attribute("data-output") == "off"
    assert ch.locator("[data-test=off]").get_attribute("aria-pressed") == "true"
    assert ch.locator("[data-test=on]").is_enabled() and ch.locator("[data-test=clear]").count() == 0
    # the inputs are wide enough for their hints (the "up V/s, max 5" for a limit of 50)
    ramp = ch.locator("[data-test=rampup-input]")
    assert ramp.get_attribute("placeholder") == "up V/s, max 50"
    assert ramp.evaluate("e => e.scrollWidth <= e.clientWidth && e.clientWidth > 0")
    hint_fits = "e => { const c = document.createElement('canvas').getContext('2d'); c.font = getComputedStyle(e).font;"
    hint_fits += " return c.measureText(e.placeholder).width < e.clientWidth }"
    for field in ("vset", "iset", "rampup", "rampdown"):
        assert ch.locator(f"[data-test={field}-input]").evaluate(hint_fits), f"{field}'s hint is cut off"

    # set the voltage: a confirmation naming channel, target, rate and limit first, nothing sent before it
    ch.locator("[data-test=vset-input]").fill("50")
    ch.locator("[data-test=vset-set]").click()
    assert text(page.locator("[data-test=confirm-where]")) == "hv channel 1 (sensor-B)"
    assert text(page.locator("[data-test=confirm-text]")) == (
        "sensor-B: set to 50.00 V (output off: reached at the next ON at 20.00 V/s), limit 20.00 µA"
    )
    time.sleep(0.5)
    assert not probe.seen(UI_CMD % "hv")
    page.locator("[data-test=confirm-ok]").click()
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: vset ch 1 = 50", what="the vset reply")
    cmd = json.loads(probe.seen(UI_CMD % "hv")[0].payload)
    assert cmd["action"] == "vset" and cmd["channel"] == 1 and cmd["value"] == 50 and cmd["id"].startswith("ui-")
    assert cmd["for"] == ui_stack.operator[0]  # the person logged in, on Node-RED's own topic
    reply = probe.wait_json("slowctl/hv/reply", lambda r: r["id"] == cmd["id"])
    assert reply["ok"] is True

    # a cancelled confirmation sends nothing
    page.locator('[data-channel="2"] [data-test=on]').click()
    page.locator("[data-test=confirm-cancel]").click()
    time.sleep(0.5)
    assert len(probe.seen(UI_CMD % "hv")) == 1

    # switch on: the confirmation says to which voltage at which rate with which limit; the page follows
    wait_text(ch.locator("[data-test=vset]"), lambda t: t == "50.00 V", what="the new vset")
    ch.locator("[data-test=on]").click()
    assert text(page.locator("[data-test=confirm-text]")) == (
        "sensor-B: switch on, ramp to 50.00 V at 20.00 V/s, limit 20.00 µA"
    )
    page.locator("[data-test=confirm-ok]").click()
    status = probe.wait_json("slowctl/hv/status", lambda s: s["channels"][1]["on"] and s["channels"][1]["vset"] == 50)
    assert status["channels"][1]["state"] in ("RAMP_UP", "ON")
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: on ch 1", what="the on reply")
    wait_text(ch.locator("[data-test=channel-state]"), lambda t: t in ("RAMP_UP", "ON"), what="RAMP_UP/ON shown")
    wait_text(ch.locator("[data-test=vmon]"), lambda t: t != "–" and float(t.split()[0]) > 0, what="rising vmon")
    assert ch.locator("[data-test=channel-state]").get_attribute("class").split()[-1] in ("sc-st-RAMP_UP", "sc-st-ON")
    assert ch.locator("[data-test=switch]").get_attribute("data-output") == "on"
    assert ch.locator("[data-test=on]").get_attribute("aria-pressed") == "true"
    assert ch.locator("[data-test=on]").is_disabled() and ch.locator("[data-test=off]").is_enabled()

    # beyond the limit: refused in the page with the limit, before any confirmation, nothing sent
    sent = len(probe.seen(UI_CMD % "hv"))
    ch.locator("[data-test=vset-input]").fill("9999")
    ch.locator("[data-test=vset-set]").click()
    assert page.locator("[data-test=confirm-dialog]").count() == 0
    assert text(page.locator("[data-test=last-reply]")) == (
        "REFUSED: vset ch 1 = 9999: 9999 V exceeds the limit 600 V of sensor-B (nothing sent)"
    )
    ch.locator("[data-test=iset-input]").fill("150")  # µA, the limit is 100 µA
    ch.locator("[data-test=iset-set]").click()
    assert "150 µA exceeds the limit 100 µA of sensor-B" in text(page.locator("[data-test=last-reply]"))
    ch.locator("[data-test=rampup-input]").fill("0")
    ch.locator("[data-test=rampup-set]").click()
    assert "rampup must be > 0 V/s (nothing sent)" in text(page.locator("[data-test=last-reply]"))
    # a ramp to a lower voltage names the ramp-down rate
    wait_text(ch.locator("[data-test=vmon]"), lambda t: float(t.split()[0]) > 45, what="the ramp near 50 V")
    ch.locator("[data-test=vset-input]").fill("40")
    ch.locator("[data-test=vset-set]").click()
    assert text(page.locator("[data-test=confirm-text]")).startswith("sensor-B: ramp to 40.00 V at 40.00 V/s")
    page.locator("[data-test=confirm-cancel]").click()
    # what only the service knows (the instrument's 0.1 V step): its refusal with its reason
    ch.locator("[data-test=vset-input]").fill("50.05")
    ch.locator("[data-test=vset-set]").click()
    page.locator("[data-test=confirm-ok]").click()
    wait_text(
        page.locator("[data-test=last-reply]"),
        lambda t: t.startswith("REFUSED: vset ch 1 = 50.05") and "finer than the caen-n1470's 0.1 V step" in t,
        what="the service's refusal",
    )
    assert len(probe.seen(UI_CMD % "hv")) == sent + 1
    # not a number: refused in the page, nothing sent
    ch.locator("[data-test=vset-input]").fill("abc")
    ch.locator("[data-test=vset-set]").click()
    assert "not a number" in text(page.locator("[data-test=last-reply]"))
    assert len(probe.seen(UI_CMD % "hv")) == sent + 1

    ch.locator("[data-test=off]").click()  # off needs no confirmation
    probe.wait_json("slowctl/hv/status", lambda s: s["channels"][1]["state"] in ("RAMP_DOWN", "OFF"))
    assert not console.csp(), console.csp()


def test_low_voltage_and_chiller_without_confirmation(dashboard, ui_stack):
    page, _ = dashboard
    probe = ui_stack.stack.probe("viewer")
    probe.subscribe("slowctl/lv/status", "slowctl/chiller/status", "slowctl/lv/event", UI_CMD % "lv")
    open_page(page, ui_stack, "lv")
    ch = page.locator('[data-channel="0"]')
    wait_text(page.locator("[data-test=device-state]"), lambda t: t == "ok")
    ch.locator("[data-test=iset-input]").fill("1.5")
    ch.locator("[data-test=iset-set]").click()
    assert page.locator("[data-test=confirm-dialog]").count() == 0
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: iset ch 0 = 1.5")
    probe.wait_json("slowctl/lv/status", lambda s: s["channels"][0]["iset"] == 1.5)
    # sent for the person logged in, and recorded by the device as Node-RED acting for them
    alice = ui_stack.operator[0]
    cmd = probe.wait_json(UI_CMD % "lv", lambda c: c["action"] == "iset")
    assert cmd["for"] == alice and cmd["value"] == 1.5
    probe.wait_json("slowctl/lv/event", lambda e: e["cause"] == f"nodered for {alice} id={cmd['id']}")

    open_page(page, ui_stack, "chiller")
    wait_text(page.locator("[data-test=temperature]"), lambda t: t.endswith("°C"))
    page.locator("[data-test=tset-input]").fill("18.5")
    page.locator("[data-test=tset-set]").click()
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: tset ch 0 = 18.5")
    page.locator("[data-test=start]").click()
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: on ch 0")
    probe.wait_json("slowctl/chiller/status", lambda s: s["channels"][0]["on"] and s["channels"][0]["tset"] == 18.5)
    page.locator("[data-test=stop]").click()
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: off ch 0")


def test_a_power_cycled_instrument_shows_the_lost_output_and_offers_clear(dashboard, ui_stack):
    """The issue's case: the HV instrument power-cycled under an ON channel. The page shows the output off,
    the latched alarm on the channel, and offers clear there (only there); clear ends it."""
    import os
    import signal

    from harness import channel, send

    page, _ = dashboard
    op = ui_stack.stack.probe("operator")
    op.subscribe("slowctl/hv/reply", "slowctl/hv/status", "slowctl/hv/event")
    assert send(op, "slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 3, "value": 30}))["ok"]
    assert send(op, "slowctl/hv/cmd", json.dumps({"action": "on", "channel": 3}))["ok"]
    channel(op, "hv", 3, lambda c: c["state"] == "ON", timeout=10)
    open_page(page, ui_stack, "hv")
    ch3 = page.locator('[data-channel="3"]')
    wait_text(ch3.locator("[data-test=channel-state]"), lambda t: t == "ON")
    assert page.locator("[data-test=clear]").count() == 0  # nothing to clear anywhere
    os.kill(ui_stack.stack.pids()["sim-hv"], signal.SIGKILL)  # the supervisor restarts it: all outputs off
    channel(op, "hv", 3, lambda c: "OUTPUT_LOST" in c.get("alarms", []), timeout=20)
    lost = ch3.locator(".sc-alarm", has_text="OUTPUT_LOST")
    wait_until(lambda: lost.count() == 1, 10, what="the latched alarm on the page")
    assert "sc-card-alarm" in ch3.get_attribute("class").split()
    assert ch3.locator("[data-test=switch]").get_attribute("data-output") == "off"
    clear = ch3.locator("[data-test=clear]")
    wait_text(clear, lambda t: t.startswith("Clear OUTPUT_LOST"), what="clear offered for the latch")
    # offered exactly where the status shows a latch (the fresh instrument's settings changed on every channel)
    from slowctl.stack.nodered import LATCHED

    def offered_where_latched():
        latest = json.loads(op.seen("slowctl/hv/status")[-1].payload)
        return latest["state"] == "ok" and all(
            page.locator(f'[data-channel="{c["channel"]}"] [data-test=clear]').count()
            == (1 if set(c["alarms"]) & set(LATCHED) or c["state"] == "TRIPPED" else 0)
            for c in latest["channels"]
        )

    wait_until(offered_where_latched, 10, interval=0.2, what="clear offered where a latch is shown, only there")
    clear.click()  # clear raises nothing: no confirmation
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: clear ch 3", what="the clear reply")
    # the latches are gone; what is not latched (the fresh instrument's own current limit) is still shown
    wait_until(lambda: ch3.locator("[data-test=clear]").count() == 0, 10, what="clear gone with the latches")
    assert lost.count() == 0
    wait_text(ch3.locator("[data-test=channel-state]"), lambda t: t == "OFF")


# --- people: who may command, and who did ------------------------------------------------------


def test_a_viewer_sees_everything_and_commands_nothing(browser, ui_stack):
    from conftest import Console, login

    probe = ui_stack.stack.probe("viewer")
    probe.subscribe("slowctl/+/cmd/#", "slowctl/+/by/+/cmd/#")
    viewer = ui_stack.viewer[0]
    refusal = f"{viewer} is a viewer: commands need an operator account"
    ctx = browser.new_context(http_credentials=login(ui_stack.viewer))
    try:
        page = ctx.new_page()
        page.set_default_timeout(15000)
        console = Console(page)
        open_page(page, ui_stack, "lv")
        wait_text(page.locator("[data-test=device-state]"), lambda t: t == "ok", what="the status, for a viewer")
        ch = page.locator('[data-channel="0"]')
        wait_text(ch.locator("[data-test=vmon]"), lambda t: t.endswith(" V"), what="live values, for a viewer")
        ch.locator("[data-test=iset-input]").fill("1.2")
        ch.locator("[data-test=iset-set]").click()
        wait_text(page.locator("[data-test=last-reply]"), lambda t: t == f"REFUSED: iset ch 0 = 1.2: {refusal}")
        open_page(page, ui_stack, "hv")  # confirmed, and refused all the same
        wait_text(page.locator("[data-test=device-state]"), lambda t: t == "ok")
        page.locator('[data-channel="0"] [data-test=on]').click()
        page.locator("[data-test=confirm-ok]").click()
        wait_text(page.locator("[data-test=last-reply]"), lambda t: t == f"REFUSED: on ch 0: {refusal}")
        time.sleep(1)
        assert not probe.seen(), [(m.topic, m.payload) for m in probe.seen()]
        assert not console.csp(), console.csp()
    finally:
        ctx.close()


def test_the_person_is_the_login_not_what_the_page_says(ui_stack):
    """A page can put anything into what it sends (msg._client, "for"): the person is the socket's login."""
    from conftest import DashboardSocket

    probe = ui_stack.stack.probe("viewer")
    probe.subscribe("slowctl/lv/cmd/#", "slowctl/lv/by/+/cmd/#")
    alice, victor = ui_stack.operator[0], ui_stack.viewer[0]
    widget = "slowctl.lv.widget"

    def iset(cmd_id, person):
        return {"action": "iset", "channel": 0, "value": 1.3, "id": cmd_id, "for": person}

    viewer, operator = DashboardSocket(ui_stack, ui_stack.viewer), DashboardSocket(ui_stack, ui_stack.operator)
    assert viewer.connect().startswith("40{") and operator.connect().startswith("40{")
    # a viewer's page claiming to be the operator: refused, answered on that page only, nothing published
    forged = {"user": {"username": alice, "role": "operator"}, "socketId": operator.sid}
    viewer.emit("widget-send", widget, {"payload": iset("forged-1", alice), "_client": forged})
    answer = viewer.wait_event(
        f"msg-input:{widget}", lambda a: (a[0]["payload"].get("reply") or {}).get("id") == "forged-1"
    )
    assert answer, "no refusal on the viewer's page"
    assert answer[0]["payload"]["reply"]["error"] == f"{victor} is a viewer: commands need an operator account"
    # an operator's page naming someone else: the command is the operator's
    operator.emit(
        "widget-send", widget, {"payload": iset("forged-2", victor), "_client": {"user": {"username": victor}}}
    )
    cmd = probe.wait_json(UI_CMD % "lv", lambda c: c["id"] == "forged-2")
    assert cmd["for"] == alice and set(cmd) == {"action", "channel", "value", "id", "ts", "for"}
    time.sleep(1)
    assert [json.loads(m.payload)["id"] for m in probe.seen()] == ["forged-2"]
    # the operator's page gets the device's reply to its command, sent after the refusal, but not the refusal
    answered = operator.wait_event(
        f"msg-input:{widget}", lambda a: (a[0]["payload"].get("reply") or {}).get("id") == "forged-2"
    )
    assert answered and answered[0]["payload"]["reply"]["ok"] is True
    assert not any("forged-1" in p for p in operator.packets), "a refusal goes to its own page only"


def test_people_come_and_go_while_node_red_runs(ui_stack):
    """users.json changes (slowctl user): Node-RED follows at once, without a restart, and closes what a
    removed person (or an old password) still had open."""
    import secrets

    from conftest import DashboardSocket

    def status(person):
        return request(ui_stack, "GET", "/dashboard/", auth=person)[0].status

    name = "carol"
    assert status((name, "not-a-person-yet")) == 401
    carol = ui_stack.add_person(name, "operator")
    assert status(carol) == 200
    open_socket = DashboardSocket(ui_stack, carol)
    assert open_socket.connect().startswith("40{")

    renewed = (name, secrets.token_urlsafe(18))
    ui_stack.user("passwd", name, password=renewed[1])
    assert status(carol) == 401 and status(renewed) == 200
    assert open_socket.closed(), "the connection made with the old password is still open"
    assert DashboardSocket(ui_stack, carol).connect().startswith("44")

    open_socket = DashboardSocket(ui_stack, renewed)
    assert open_socket.connect().startswith("40{")
    ui_stack.user("remove", name)
    assert status(renewed) == 401
    assert DashboardSocket(ui_stack, renewed).connect().startswith("44")
    assert open_socket.closed(), "a removed person's connection is still open"


def test_environment_and_health_pages(dashboard, ui_stack):
    from conftest import screenshot

    page, _ = dashboard
    open_page(page, ui_stack, "environment")
    box = page.locator('[data-sensor="climate/0"]')
    wait_text(box.locator("[data-test=humidity]"), lambda t: t.endswith("%RH"))
    t, d, m = (float(text(box.locator(f"[data-test={k}]")).split()[0]) for k in ("temperature", "dewpoint", "margin"))
    assert abs((t - d) - m) < 0.11
    wait_text(page.locator('[data-chiller="chiller/0"] [data-test=chiller-margin]'), lambda t: t.endswith(" K"))
    screenshot(page, "environment")

    open_page(page, ui_stack, "health")
    for dev in DEVICE_PAGES:
        row = page.locator(f'tr[data-device="{dev}"]')
        wait_text(row.locator("[data-test=availability]"), lambda t: t == "online", what=f"{dev} online")
        wait_text(row.locator("[data-test=state]"), lambda t: t.startswith("ok"))
        wait_text(row.locator("[data-test=restarts]"), lambda t: t == "0")
        wait_text(row.locator("[data-test=age]"), lambda t: t.endswith(" s") and float(t.split()[0]) < 5)
    screenshot(page, "health")


# --- MQTT over websockets through the gateway -------------------------------------------------


def ws_client(ui_stack, username, password):
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"ws-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
        transport="websockets",
    )
    c.ws_set_options(path="/mqtt")
    c.tls_set(ca_certs=str(ui_stack.ca))
    if username:
        c.username_pw_set(username, password)
    result = {"connack": None, "messages": []}
    connected = threading.Event()

    def on_connect(client, userdata, flags, reason, properties):
        result["connack"] = reason
        connected.set()
        if not reason.is_failure:
            client.subscribe("slowctl/hv/status", qos=1)

    c.on_connect = on_connect
    c.on_message = lambda client, userdata, msg: result["messages"].append(msg)
    c.connect("localhost", ui_stack.https_port, keepalive=10)
    c.loop_start()
    assert connected.wait(10), "no CONNACK over websockets"
    return c, result


def test_mqtt_over_websockets_through_the_gateway(ui_stack):
    c, result = ws_client(ui_stack, "viewer", ui_stack.stack.credentials["viewer"])
    try:
        assert not result["connack"].is_failure
        wait_until(lambda: result["messages"], 10, what="a retained status over wss")
        assert json.loads(result["messages"][0].payload)["device"] == "hv"
    finally:
        c.disconnect()
        c.loop_stop()
    for user, password in ((None, None), ("viewer", "wrong")):
        c, result = ws_client(ui_stack, user, password)
        try:
            assert result["connack"].is_failure, (user, result["connack"])
        finally:
            c.loop_stop()


# --- the bench pages: overview, alarms, log, all HV off --------------------------------------------


def test_the_overview_is_the_landing_page_with_every_channel(dashboard, ui_stack):

    page, console = dashboard
    page.goto(f"{ui_stack.base}/dashboard/")
    page.wait_for_url("**/dashboard/overview")  # the landing page
    config = yaml.safe_load(ui_stack.stack.config_path.read_text())["devices"]
    for dev, d in config.items():
        box = page.locator(f'.sc-ov-dev[data-device="{dev}"]')
        wait_text(box.locator("[data-test=device-state]"), lambda t: t == "ok", what=f"{dev} ok")
        assert text(box.locator("[data-test=availability]")) == "online"
        assert float(text(box.locator("[data-test=status-age]")).split()[0]) < 5
        assert box.locator("[data-channel]").count() == len(d["channels"]), dev
    hv0 = page.locator('.sc-ov-dev[data-device="hv"] [data-channel="0"]')
    assert text(hv0.locator("[data-test=vmon]")).endswith(" V") and text(hv0.locator("[data-test=imon]")).endswith(
        " µA"
    )
    assert text(page.locator('.sc-ov-dev[data-device="lv"] [data-channel="0"] [data-test=imon]')).endswith(" A")
    box = page.locator('.sc-ov-dev[data-device="climate"] [data-channel="0"]')
    assert text(box.locator("[data-test=humidity]")).endswith("%RH")
    assert text(page.locator('.sc-ov-dev[data-device="chiller"] [data-test=temperature]')).endswith("°C")
    # the humid box of the simulator's scenario: its alarm on the channel and in the count
    wait_text(page.locator("[data-test=alarm-count]"), lambda t: not t.startswith("0 "), timeout=40, what="an alarm")
    wait_until(lambda: box.locator("[data-test=alarm]", has_text="humidity").count(), 10, what="the alarm on climate.0")
    assert text(page.locator("[data-test=interlock-count]")) == "no interlock active"
    hv0.click()  # a channel opens its device page
    page.wait_for_url("**/dashboard/hv")
    wait_text(page.locator("[data-test=device-state]"), lambda t: t == "ok")
    # a tablet at the bench: the pages reflow, nothing sideways out of reach
    page.set_viewport_size({"width": 768, "height": 1024})
    for name in ("overview", "hv", "alarms", "procedures", "trends"):
        open_page(page, ui_stack, name)
        page.locator("[data-test=all-hv-off]").wait_for(state="visible")
        time.sleep(0.5)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{name} scrolls sideways"
    assert not console.csp(), console.csp()


def test_an_alarm_raised_by_the_simulator_is_acknowledged_on_the_alarm_page(browser, dashboard, ui_stack):
    from conftest import Console, login

    page, console = dashboard
    probe = ui_stack.stack.probe("viewer")
    probe.subscribe("slowctl/alarms/#")
    open_page(page, ui_stack, "alarms")
    row = page.locator('[data-alarm="climate.0.humidity.HIHI"]')
    wait_until(lambda: row.count() == 1, 40, interval=0.2, what="the humid box's HIHI alarm on the page")
    assert text(row.locator("[data-test=severity]")) == "major" and text(row.locator("[data-test=state]")) == "active"
    assert text(row.locator("[data-test=message]")).startswith("climate.0 humidity")
    rule = page.locator('[data-rule="bath-hot"]')
    assert text(rule.locator("[data-test=rule-state]")) == "clear"
    assert text(rule.locator("[data-test=rule-reason]")).startswith("chiller.0.temperature ")  # with the reading

    # a viewer's acknowledgement: refused on the page, nothing sent
    ctx = browser.new_context(http_credentials=login(ui_stack.viewer))
    try:
        vpage = ctx.new_page()
        vconsole = Console(vpage)
        open_page(vpage, ui_stack, "alarms")
        vrow = vpage.locator('[data-alarm="climate.0.humidity.HIHI"]')
        wait_until(lambda: vrow.count() == 1, 15, what="the alarm, for a viewer")
        vrow.locator("[data-test=ack]").click()
        wait_text(
            vpage.locator("[data-test=last-reply]"),
            lambda t: t == f"REFUSED: ack: {ui_stack.viewer[0]} is a viewer: commands need an operator account",
        )
        assert not vconsole.csp()
    finally:
        ctx.close()
    assert not probe.seen("slowctl/alarms/by/nodered/cmd")

    row.locator("[data-test=ack]").click()
    wait_text(
        page.locator("[data-test=last-reply]"),
        lambda t: t == "OK: acknowledged climate.0 humidity.HIHI",
        what="the acknowledgement's reply",
    )
    cmd = json.loads(probe.seen("slowctl/alarms/by/nodered/cmd")[0].payload)
    assert cmd["for"] == ui_stack.operator[0] and cmd["device"] == "climate" and cmd["kind"] == "humidity.HIHI"
    wait_text(row.locator("[data-test=acked]"), lambda t: t.startswith(f"nodered for {ui_stack.operator[0]} "))
    listed = probe.wait_json("slowctl/alarms/summary", lambda s: any(a["acked"] for a in s["alarms"]))
    acked = next(a for a in listed["alarms"] if a["kind"] == "humidity.HIHI")
    assert acked["acked_by"] == f"nodered for {ui_stack.operator[0]}"
    assert not console.csp(), console.csp()


def test_the_log_shows_commands_with_their_person_after_a_reload(dashboard, ui_stack):
    from conftest import screenshot

    page, console = dashboard
    alice = ui_stack.operator[0]
    open_page(page, ui_stack, "lv")  # a command from the page, so that the log has one of alice's
    ch = page.locator('[data-channel="1"]')
    wait_text(page.locator("[data-test=device-state]"), lambda t: t == "ok")
    ch.locator("[data-test=vset-input]").fill("1.25")
    ch.locator("[data-test=vset-set]").click()
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: vset ch 1 = 1.25")
    open_page(page, ui_stack, "log")
    # from the record (the recorder's answer): the command as `slowctl log` shows it
    entry = page.locator('[data-test=entry][data-type="command"][data-kind="vset 1.25"][data-device="lv"]')
    wait_until(lambda: entry.count() >= 1, 15, what="the command in the log")
    first = entry.first
    assert text(first.locator("[data-test=who]")) == f"nodered for {alice}"
    assert text(first.locator("[data-test=outcome]")) == "ok"
    assert page.locator("[data-test=source]").count() == 0  # no note: the record answered
    page.reload()  # the page asks again: it is there again
    wait_until(lambda: entry.count() >= 1, 15, what="the log after a reload")
    page.locator("[data-test=device-filter]").select_option("lv")  # the page asks the record for lv's

    def entries(attr: str) -> set:  # read at once: the rows change when the record's answer comes
        return set(page.eval_on_selector_all("[data-test=entry]", f"els => els.map(e => e.getAttribute('{attr}'))"))

    wait_until(lambda: entries("data-device") == {"lv"}, 15, what="only lv in the log")
    wait_until(lambda: entry.count() >= 1, 15, what="alice's command among lv's")
    page.locator("[data-test=device-filter]").select_option("")
    wait_until(lambda: len(entries("data-device")) > 1, 15, what="every device's entries again")
    screenshot(page, "log")
    page.locator("[data-test=commands-only]").check()
    assert entries("data-type") == {"command"}
    assert not console.csp(), console.csp()


def test_a_procedure_started_watched_and_aborted(dashboard, ui_stack):
    """An IV scan from the form built from the catalog: confirmed, run for the person, its curve drawn from
    the progress; a burn-in started and aborted from the page."""
    page, console = dashboard
    alice = ui_stack.operator[0]
    probe = ui_stack.stack.probe("viewer")
    probe.subscribe("slowctl/procedures/by/nodered/cmd", "slowctl/procedures/progress/+")
    open_page(page, ui_stack, "procedures")
    page.locator("[data-test=procedure]").select_option("iv_scan")
    assert "required" in page.locator("[data-test=param-stop]").get_attribute("placeholder")
    page.locator("[data-test=start]").click()  # the required parameters are missing: refused here
    assert "channel is required (nothing sent)" in text(page.locator("[data-test=last-reply]"))
    page.locator("[data-test=param-channel]").fill("bias.0")
    page.locator("[data-test=param-stop]").fill("-40")
    page.locator("[data-test=param-step]").fill("0")
    page.locator("[data-test=start]").click()
    assert "step must be > 0 V (nothing sent)" in text(page.locator("[data-test=last-reply]"))
    page.locator("[data-test=param-step]").fill("10")
    page.locator("[data-test=param-settle]").fill("0.2")
    page.locator("[data-test=param-samples]").fill("1")
    page.locator("[data-test=start]").click()
    assert text(page.locator("[data-test=confirm-text]")) == (
        "IV scan: channel=bias.0, stop=-40 V, step=10 V, settle=0.2 s, samples=1"
    )
    time.sleep(0.5)
    assert not probe.seen("slowctl/procedures/by/nodered/cmd")  # nothing before the confirmation
    page.locator("[data-test=confirm-ok]").click()
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t.startswith("OK: start "), what="the runner's reply")
    run = text(page.locator("[data-test=last-reply]")).split()[-1]
    cmd = json.loads(probe.seen("slowctl/procedures/by/nodered/cmd")[0].payload)
    assert cmd["for"] == alice and cmd["procedure"] == "iv_scan" and cmd["params"]["channel"] == "bias.0"
    row = page.locator(f'[data-run="{run}"]')
    wait_text(
        row.locator("[data-test=run-state]"), lambda t: t in ("completed", "stopped"), timeout=60, what="the scan"
    )
    final = probe.wait_json(f"slowctl/procedures/progress/{run}", lambda p: p["state"] in ("completed", "stopped"))
    assert final["by"] == f"nodered for {alice}"  # the runner's record: who asked for the run
    wait_until(lambda: page.locator("[data-test=curve]").count(), 10, what="the curve")
    drawn = len(page.locator("[data-test=curve]").get_attribute("points").split())
    assert drawn == final["points"] == 5  # 0, -10, ..., -40 V
    assert "5 points" in text(page.locator("[data-test=run-message]"))

    # a burn-in, aborted from the page
    page.locator("[data-test=procedure]").select_option("burn_in")
    for name, value in (("channels", "bias.0"), ("voltage", "-20"), ("duration", "1h"), ("interval", "1")):
        page.locator(f"[data-test=param-{name}]").fill(value)
    page.locator("[data-test=start]").click()
    page.locator("[data-test=confirm-ok]").click()
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t.startswith("OK: start "), what="the burn-in started")
    burn = text(page.locator("[data-test=last-reply]")).split()[-1]
    brow = page.locator(f'[data-run="{burn}"]')
    wait_text(brow.locator("[data-test=run-state]"), lambda t: t == "running", timeout=30, what="the burn-in running")
    brow.locator("[data-test=abort]").click()
    wait_text(brow.locator("[data-test=run-state]"), lambda t: t == "aborted", timeout=60, what="the burn-in aborted")
    aborted = probe.wait_json(f"slowctl/procedures/progress/{burn}", lambda p: p["state"] == "aborted")
    assert alice in aborted["reason"]
    assert not console.csp(), console.csp()


def test_a_past_run_from_the_record_with_its_plot(dashboard, ui_stack):
    """A run made with the Python API (not the page) is in the page's past runs, read from the record through
    the recorder, and drawn from the record's points as the procedure declares its plot (IV: I against V)."""
    from conftest import screenshot
    from slowctl import Client

    page, console = dashboard
    alice, pw = ui_stack.operator
    with Client("127.0.0.1", ui_stack.stack.port, alice, pw, timeout=10) as c:
        params = {"channel": "bias.0", "stop": -30, "step": 10, "settle": 0.2, "samples": 1}
        run = c.start_procedure("iv_scan", params)
        final = c.wait_for_run(run, 90)
    assert final["state"] == "completed", final
    open_page(page, ui_stack, "procedures")
    row = page.locator(f'[data-past-run="{run}"]')

    def listed() -> int:  # the result journal writes the run's end a moment after it
        if not row.count():
            page.locator("[data-test=past-refresh]").click()
            time.sleep(0.5)
        return row.count()

    wait_until(listed, 20, interval=0.5, what="the run in the record's list")
    assert alice in text(row) and "completed" in text(row)
    row.locator("a").click()
    wait_text(page.locator("[data-test=run-message]"), lambda t: t.endswith("4 points (the record)"), what="its points")
    assert text(page.locator("[data-test=plot-title]")).startswith(f"IV scan {run} (bias.0)")
    curve = page.locator('[data-test=curve][data-series="i"]')
    assert len(curve.get_attribute("points").split()) == final["points"] == 4  # 0, -10, -20, -30 V
    assert "bias voltage (V)" in page.locator("[data-test=plot]").text_content()  # an SVG: no inner text
    screenshot(page, "procedures")
    assert not console.csp(), console.csp()


def test_a_trend_moves_with_the_channel(dashboard, ui_stack):
    from conftest import screenshot
    from harness import channel, send

    page, console = dashboard
    op = ui_stack.stack.probe("operator")
    op.subscribe("slowctl/hv/reply", "slowctl/hv/status")
    open_page(page, ui_stack, "trends")
    chart = page.locator('[data-chart="HV Vmon"]')
    line = chart.locator('polyline[data-series="hv.2.vmon"]')
    last = chart.locator('.sc-tr-item[data-series="hv.2.vmon"] [data-test=last]')
    wait_text(last, lambda t: t.endswith(" V"), what="a first point")
    assert text(page.locator('[data-chart="HV Imon"] .sc-tr-item[data-series="hv.2.imon"] [data-test=last]')).endswith(
        "µA"
    )
    assert text(page.locator('[data-chart="Humidity"] .sc-tr-item[data-series="climate.0.humidity"] [data-test=last]'))
    before = len(line.get_attribute("points").split())
    assert send(op, "slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 2, "value": 60}))["ok"]
    assert send(op, "slowctl/hv/cmd", json.dumps({"action": "on", "channel": 2}))["ok"]
    wait_text(last, lambda t: float(t.split()[0]) > 50, timeout=30, what="the trend following the ramp")
    assert len(line.get_attribute("points").split()) > before
    assert text(page.locator("[data-test=no-grafana]")).startswith("no Grafana here")  # natively: no Grafana
    # natively no archive either: asked for a range, Node-RED says so, and the live hour comes back
    page.select_option("[data-test=view]", "24h")
    wait_text(page.locator("[data-test=archive-state]"), lambda t: t.startswith("no archive here"), what="no archive")
    page.select_option("[data-test=view]", "live")
    wait_text(last, lambda t: t.endswith(" V"), what="the live hour again")
    screenshot(page, "trends")
    assert send(op, "slowctl/hv/cmd", json.dumps({"action": "off", "channel": 2}))["ok"]
    channel(op, "hv", 2, lambda c: not c["on"], timeout=10)
    assert not console.csp(), console.csp()


def test_all_hv_off_from_every_page_with_one_confirmation(browser, dashboard, ui_stack):
    from conftest import login, screenshot
    from harness import channel, send
    from slowctl.config import load_config
    from slowctl.safety.rules import hv_outputs

    page, console = dashboard
    outputs = hv_outputs(load_config(ui_stack.stack.config_path).devices)
    op = ui_stack.stack.probe("operator")
    op.subscribe("slowctl/hv/reply", "slowctl/hv/status", "slowctl/+/by/nodered/cmd")
    assert send(op, "slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 0, "value": 40}))["ok"]
    assert send(op, "slowctl/hv/cmd", json.dumps({"action": "on", "channel": 0}))["ok"]
    channel(op, "hv", 0, lambda c: c["on"], timeout=10)
    for name in [*BENCH_PAGES, "lv", "climate"]:  # on every page, and who is logged in beside it
        open_page(page, ui_stack, name)
        page.locator("[data-test=all-hv-off]").wait_for(state="visible")
        wait_text(page.locator("[data-test=user]"), lambda t: t == f"{ui_stack.operator[0]} · operator", what=name)
    page.locator("[data-test=all-hv-off]").click()
    dialog_text = text(page.locator("[data-test=all-hv-off-text]"))
    devices = load_config(ui_stack.stack.config_path).devices
    names = ", ".join(f"{d}.{c} {devices[d].channels[c].name}" for d, c in outputs)
    assert dialog_text == f"{len(outputs)} outputs: {names}" and "hv.0 sensor-A" in names
    page.locator("[data-test=all-hv-off-cancel]").click()
    time.sleep(0.5)
    assert not ui_commands(op)

    # a viewer: refused on the page, nothing sent
    ctx = browser.new_context(http_credentials=login(ui_stack.viewer))
    try:
        vpage = ctx.new_page()
        open_page(vpage, ui_stack, "overview")
        wait_text(vpage.locator("[data-test=user]"), lambda t: t == f"{ui_stack.viewer[0]} · viewer")
        vpage.locator("[data-test=all-hv-off]").click()
        vpage.locator("[data-test=all-hv-off-confirm]").click()
        wait_text(vpage.locator("[data-test=all-hv-off-summary]"), lambda t: t.startswith("REFUSED: all HV off: "))
    finally:
        ctx.close()
    time.sleep(0.5)
    assert not ui_commands(op)

    page.locator("[data-test=all-hv-off]").click()
    screenshot(page, "all-hv-off")
    page.locator("[data-test=all-hv-off-confirm]").click()
    wait_text(
        page.locator("[data-test=all-hv-off-summary]"),
        lambda t: t.endswith(f"{len(outputs)} of {len(outputs)} outputs confirmed off"),
        what="every HV output confirmed off",
    )
    sent = [json.loads(m.payload) | {"topic": m.topic} for m in ui_commands(op)]
    assert sorted((c["topic"].split("/")[1], c["channel"]) for c in sent) == sorted(outputs)
    assert {(c["action"], c["for"]) for c in sent} == {("off", ui_stack.operator[0])}
    channel(op, "hv", 0, lambda c: not c["on"] or c["state"] == "RAMP_DOWN", timeout=10)
    assert text(page.locator("[data-test=all-hv-off-summary]")).startswith(f"All HV off by {ui_stack.operator[0]} at ")
    screenshot(page, "all-hv-off-result")
    assert not console.csp(), console.csp()


def test_the_log_outlives_a_node_red_restart_and_shows_what_happened_meanwhile(dashboard, ui_stack):
    """The history is the record's, read through the recorder: a command made while Node-RED was down is on
    the page after its restart, with its person; the live log (Node-RED's file-backed context) is kept too
    (last: it restarts Node-RED under the other tests' feet)."""
    import signal

    import psutil

    from slowctl.stack.supervisor import port_open

    page, _ = dashboard
    alice = ui_stack.operator[0]
    open_page(page, ui_stack, "log")
    mine = page.locator('[data-test=entry][data-type="command"]', has_text=f"nodered for {alice}")
    wait_until(lambda: mine.count() >= 1, 15, what="alice's commands in the log")
    before = mine.count()

    def node_red():
        # Node-RED names its process "node-red" (process.title): its cmdline says so, not red.js
        children = psutil.Process(ui_stack.stack.proc.pid).children(recursive=True)
        return next((c for c in children if any("node-red" in a or a.endswith("red.js") for a in c.cmdline())), None)

    old = node_red()
    old.send_signal(signal.SIGTERM)  # a clean stop writes the file context store
    old.wait(30)
    # alice with her own MQTT account (as `slowctl set` does) while Node-RED is down: it never sees this one
    probe = ui_stack.stack.probe(alice, ui_stack.operator[1])
    probe.subscribe("slowctl/lv/reply")
    assert send(probe, f"slowctl/lv/by/{alice}/cmd/vset/1", "1.37")["ok"]
    assert not port_open("127.0.0.1", ui_stack.nodered_port), "Node-RED came back too soon for this test"
    wait_until(lambda: (lambda n: n and n.pid != old.pid)(node_red()), 30, what="Node-RED restarted")
    wait_until(lambda: port_open("127.0.0.1", ui_stack.nodered_port), 60, what="Node-RED listening again")
    # its HTTP server answers before the flows (and the dashboard in them) have started
    setup = "/dashboard/_setup"
    wait_until(lambda: request(ui_stack, "GET", setup, auth=ui_stack.operator)[0].status == 200, 30, interval=0.5)
    open_page(page, ui_stack, "log")
    wait_until(lambda: mine.count() >= before, 30, interval=0.5, what="the kept log after the restart")
    meanwhile = page.locator('[data-test=entry][data-type="command"][data-kind="vset 1.37"][data-device="lv"]')
    wait_until(lambda: meanwhile.count() == 1, 15, what="the command made while Node-RED was down")
    assert text(meanwhile.locator("[data-test=who]")) == alice
    assert text(meanwhile.locator("[data-test=outcome]")) == "ok"
    assert meanwhile.get_attribute("data-live") == "no"  # the record's row, not a live event


def focused(page) -> str:
    """The focused element's data-test (and its channel), '' for one without."""
    return page.evaluate(
        "() => { const e = document.activeElement; const ch = e && e.closest('[data-channel]');"
        " return (e && e.dataset.test || '') + (ch ? '@' + ch.dataset.channel : '') }"
    )


def tab_to(page, target: str, limit: int = 250) -> None:
    """Tab (the keyboard only) from the top of the page until `target` (focused()'s form) has the focus."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    for _ in range(limit):
        page.keyboard.press("Tab")
        if focused(page) == target:
            return
    pytest.fail(f"{target} not reached with {limit} Tabs")


def outlined(page) -> bool:
    """The focus is visible: the focused control has the focus outline of common.css."""
    return page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement); return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2 }"
    )


def test_a_device_and_all_hv_off_are_operated_with_the_keyboard_only(dashboard, ui_stack):
    page, console = dashboard
    op = ui_stack.stack.probe("operator")
    op.subscribe("slowctl/+/by/nodered/cmd", "slowctl/hv/status")
    open_page(page, ui_stack, "hv")
    wait_text(page.locator('[data-channel="1"] [data-test=vmon]'), lambda t: t.endswith(" V"), what="live vmon")
    # Tab to channel 1's voltage, type it, Enter: the HV confirmation opens with the focus on Cancel
    tab_to(page, "vset-input@1")
    assert outlined(page)
    page.keyboard.type("30")
    page.keyboard.press("Enter")
    dialog = page.locator("[data-test=confirm-dialog]")
    dialog.wait_for(state="visible")
    assert text(page.locator("[data-test=confirm-text]")).startswith("sensor-B: set to 30.00 V")
    wait_until(lambda: focused(page) == "confirm-cancel", 5, what="the focus in the dialog")
    assert outlined(page)
    # Escape cancels: nothing sent, the focus back where it was
    page.keyboard.press("Escape")
    dialog.wait_for(state="detached")
    wait_until(lambda: focused(page) == "vset-input@1", 5, what="the focus back on the input")
    # Tab to the Set button, Space: the dialog again; Tab stays in it (Confirm, then round to Cancel)
    page.keyboard.press("Tab")
    assert focused(page) == "vset-set@1" and outlined(page)
    page.keyboard.press("Space")
    dialog.wait_for(state="visible")
    wait_until(lambda: focused(page) == "confirm-cancel", 5, what="the focus in the dialog")
    page.keyboard.press("Tab")
    assert focused(page) == "confirm-ok"
    page.keyboard.press("Tab")
    assert focused(page) == "confirm-cancel"
    page.keyboard.press("Shift+Tab")
    assert focused(page) == "confirm-ok"
    time.sleep(0.5)
    assert not ui_commands(op)  # nothing before the confirmation
    page.keyboard.press("Enter")
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: vset ch 1 = 30", what="the vset reply")
    (cmd,) = [json.loads(m.payload) for m in ui_commands(op)]
    assert (cmd["action"], cmd["channel"], cmd["value"]) == ("vset", 1, 30)
    wait_until(lambda: focused(page) == "vset-set@1", 5, what="the focus back on the Set button")

    # All HV off: reached by Tab, Escape cancels its confirmation, Tab and Enter confirm it (with an output on)
    from harness import channel, send

    op.subscribe("slowctl/hv/reply")
    assert send(op, "slowctl/hv/cmd", json.dumps({"action": "on", "channel": 0}))["ok"]
    channel(op, "hv", 0, lambda c: c["on"], timeout=10)
    tab_to(page, "all-hv-off")
    assert outlined(page)
    page.keyboard.press("Enter")
    page.locator("[data-test=all-hv-off-dialog]").wait_for(state="visible")
    wait_until(lambda: focused(page) == "all-hv-off-cancel", 5, what="the focus in the All HV off dialog")
    page.keyboard.press("Escape")
    page.locator("[data-test=all-hv-off-dialog]").wait_for(state="detached")
    wait_until(lambda: focused(page) == "all-hv-off", 5, what="the focus back on ALL HV OFF")
    time.sleep(0.5)
    assert len(ui_commands(op)) == 1
    page.keyboard.press("Space")
    wait_until(lambda: focused(page) == "all-hv-off-cancel", 5, what="the focus in the All HV off dialog")
    page.keyboard.press("Tab")
    assert focused(page) == "all-hv-off-confirm"
    page.keyboard.press("Enter")
    wait_text(
        page.locator("[data-test=all-hv-off-summary]"),
        lambda t: t.startswith(f"All HV off by {ui_stack.operator[0]} at ") and "outputs confirmed off" in t,
        timeout=20,
        what="All HV off done",
    )
    offs = [json.loads(m.payload) | {"device": m.topic.split("/")[1]} for m in ui_commands(op)[1:]]
    assert {c["action"] for c in offs} == {"off"} and ("hv", 0) in {(c["device"], c["channel"]) for c in offs}
    channel(op, "hv", 0, lambda c: not c["on"] or c["state"] == "RAMP_DOWN", timeout=10)
    assert not console.csp(), console.csp()
