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
from paho.mqtt.enums import CallbackAPIVersion

from harness import wait_until

pytestmark = pytest.mark.stack

DEVICE_PAGES = ["hv", "hv2", "bias", "lv", "lv2", "chiller", "climate"]


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


def test_dashboard_needs_its_login(ui_stack):
    for auth in (None, ("dashboard", "wrong"), ("admin", ui_stack.admin[1]), ("wrong", ui_stack.dashboard[1])):
        r, _ = request(ui_stack, "GET", "/dashboard/", auth=auth)
        assert r.status == 401, auth
        assert r.getheader("WWW-Authenticate").startswith("Basic ")
    r, body = request(ui_stack, "GET", "/dashboard/", auth=ui_stack.dashboard)
    assert r.status == 200 and b"<html" in body.lower()
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
    url = f"wss://localhost:{ui_stack.https_port}/dashboard/socket.io/?EIO=4&transport=websocket"
    anon = browser.new_context()
    try:
        page = anon.new_page()
        page.goto(f"{ui_stack.base}/healthz")  # same origin, no credentials
        got = page.evaluate(SOCKET_PROBE, url)
        assert any(m.startswith("44") and "login required" in m for m in got), got
    finally:
        anon.close()
    user = browser.new_context(http_credentials=dict(zip(("username", "password"), ui_stack.dashboard)))
    try:
        page = user.new_page()
        page.goto(f"{ui_stack.base}/dashboard/")  # the browser learns the login here
        got = page.evaluate(SOCKET_PROBE, url)
        assert any(m.startswith("40{") for m in got), got
    finally:
        user.close()


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
    for user, password in (("admin", "wrong"), ui_stack.dashboard, ("nobody", ui_stack.admin[1])):
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
    from conftest import Console

    watch = ui_stack.stack.probe("viewer")
    # cmd/# matches cmd itself too (one filter each: overlapping ones would deliver twice)
    watch.subscribe("slowctl/+/cmd/#", "/+/cmd/#", "slowctl/lv/status")
    operator = ui_stack.stack.probe("operator")
    operator.wait_connected()

    def commands():
        return [(m.topic, m.payload) for m in watch.seen() if "/cmd" in m.topic]

    ctx = browser.new_context(http_credentials=dict(zip(("username", "password"), ui_stack.dashboard)))
    try:
        pages = []
        for name in ["health", "environment", *DEVICE_PAGES]:
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

    # set the voltage: a confirmation first, nothing sent before it
    ch.locator("[data-test=vset-input]").fill("50")
    ch.locator("[data-test=vset-set]").click()
    assert "vset 50 V" in text(page.locator("[data-test=confirm-text]"))
    time.sleep(0.5)
    assert not probe.seen("slowctl/hv/cmd")
    page.locator("[data-test=confirm-ok]").click()
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: vset ch 1 = 50", what="the vset reply")
    cmd = json.loads(probe.seen("slowctl/hv/cmd")[0].payload)
    assert cmd["action"] == "vset" and cmd["channel"] == 1 and cmd["value"] == 50 and cmd["id"].startswith("ui-")
    reply = probe.wait_json("slowctl/hv/reply", lambda r: r["id"] == cmd["id"])
    assert reply["ok"] is True

    # a cancelled confirmation sends nothing
    page.locator('[data-channel="2"] [data-test=on]').click()
    page.locator("[data-test=confirm-cancel]").click()
    time.sleep(0.5)
    assert len(probe.seen("slowctl/hv/cmd")) == 1

    # switch on: confirmed, the device ramps, the page follows
    ch.locator("[data-test=on]").click()
    assert "on" in text(page.locator("[data-test=confirm-text]"))
    page.locator("[data-test=confirm-ok]").click()
    status = probe.wait_json("slowctl/hv/status", lambda s: s["channels"][1]["on"] and s["channels"][1]["vset"] == 50)
    assert status["channels"][1]["state"] in ("RAMP_UP", "ON")
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: on ch 1", what="the on reply")
    wait_text(ch.locator("[data-test=channel-state]"), lambda t: t in ("RAMP_UP", "ON"), what="RAMP_UP/ON shown")
    wait_text(ch.locator("[data-test=vmon]"), lambda t: t != "–" and float(t.split()[0]) > 0, what="rising vmon")
    assert ch.locator("[data-test=channel-state]").get_attribute("class").split()[-1] in ("sc-st-RAMP_UP", "sc-st-ON")

    # a refused command: the operator sees the service's reason
    ch.locator("[data-test=vset-input]").fill("9999")
    ch.locator("[data-test=vset-set]").click()
    page.locator("[data-test=confirm-ok]").click()
    wait_text(
        page.locator("[data-test=last-reply]"),
        lambda t: t.startswith("REFUSED: vset ch 1 = 9999") and "exceeds the configured limit vmax=600 V" in t,
        what="the refusal",
    )
    # not a number: refused in the page, nothing sent
    sent = len(probe.seen("slowctl/hv/cmd"))
    ch.locator("[data-test=vset-input]").fill("abc")
    ch.locator("[data-test=vset-set]").click()
    assert "not a number" in text(page.locator("[data-test=last-reply]"))
    assert len(probe.seen("slowctl/hv/cmd")) == sent

    ch.locator("[data-test=off]").click()  # off needs no confirmation
    probe.wait_json("slowctl/hv/status", lambda s: s["channels"][1]["state"] in ("RAMP_DOWN", "OFF"))
    assert not console.csp(), console.csp()


def test_low_voltage_and_chiller_without_confirmation(dashboard, ui_stack):
    page, _ = dashboard
    probe = ui_stack.stack.probe("viewer")
    probe.subscribe("slowctl/lv/status", "slowctl/chiller/status")
    open_page(page, ui_stack, "lv")
    ch = page.locator('[data-channel="0"]')
    wait_text(page.locator("[data-test=device-state]"), lambda t: t == "ok")
    ch.locator("[data-test=iset-input]").fill("1.5")
    ch.locator("[data-test=iset-set]").click()
    assert page.locator("[data-test=confirm-dialog]").count() == 0
    wait_text(page.locator("[data-test=last-reply]"), lambda t: t == "OK: iset ch 0 = 1.5")
    probe.wait_json("slowctl/lv/status", lambda s: s["channels"][0]["iset"] == 1.5)

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


def test_environment_and_health_pages(dashboard, ui_stack):
    page, _ = dashboard
    open_page(page, ui_stack, "environment")
    box = page.locator('[data-sensor="climate/0"]')
    wait_text(box.locator("[data-test=humidity]"), lambda t: t.endswith("%RH"))
    t, d, m = (float(text(box.locator(f"[data-test={k}]")).split()[0]) for k in ("temperature", "dewpoint", "margin"))
    assert abs((t - d) - m) < 0.11
    wait_text(page.locator('[data-chiller="chiller/0"] [data-test=chiller-margin]'), lambda t: t.endswith(" K"))

    open_page(page, ui_stack, "health")
    for dev in DEVICE_PAGES:
        row = page.locator(f'tr[data-device="{dev}"]')
        wait_text(row.locator("[data-test=availability]"), lambda t: t == "online", what=f"{dev} online")
        wait_text(row.locator("[data-test=state]"), lambda t: t.startswith("ok"))
        wait_text(row.locator("[data-test=restarts]"), lambda t: t == "0")
        wait_text(row.locator("[data-test=age]"), lambda t: t.endswith(" s") and float(t.split()[0]) < 5)


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
