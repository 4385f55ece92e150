"""One native dummy stack with the control UI for the module, and headless Chromium against its gateway."""

import base64
import hashlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from tests.tools import tool

from harness import DummyStack

CHROMIUM = "/usr/bin/chromium"
# without these the browser stalls on the closed network (updates, sync, QUIC probes)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _need_ui() -> None:
    from slowctl.stack.native import StackError, find_mosquitto
    from slowctl.stack.ui import missing_parts

    try:
        find_mosquitto()
    except StackError as exc:
        pytest.skip(str(exc))
    if missing := missing_parts():
        pytest.skip("control UI not installed: " + "; ".join(missing))


class UiStack:
    def __init__(self, stack: DummyStack) -> None:
        self.stack = stack
        ui = stack.config["ui"]
        self.https_port, self.http_port, self.nodered_port = ui["https_port"], ui["http_port"], ui["nodered_port"]
        self.base = f"https://localhost:{self.https_port}"
        self.ca = stack.state / "tls" / "ca.crt"
        self.admin = ("admin", stack.credentials["nodered-admin"])
        # the dashboard's logins are people's (users.json), added while Node-RED runs
        self.operator = self.add_person("alice", "operator")
        self.viewer = self.add_person("victor", "viewer")

    def user(self, action: str, name: str, role: str | None = None, password: str | None = None) -> None:
        """`slowctl user ACTION NAME` on this stack's accounts, as an administrator runs it."""
        args = ["user", action, name, "--config", str(self.stack.config_path), "--state-dir", str(self.stack.state)]
        args += ["--role", role] if role else []
        args += ["--password-stdin"] if password is not None else []
        r = subprocess.run(
            [sys.executable, "-m", "slowctl", *args],
            input=f"{password or ''}\n",
            capture_output=True,
            text=True,
            timeout=30,
            cwd=self.stack.workdir,
        )
        assert r.returncode == 0, r.stderr

    def add_person(self, name: str, role: str) -> tuple[str, str]:
        password = secrets.token_urlsafe(18)
        self.user("add", name, role, password)
        return name, password

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def spki(self) -> str:
        """base64 SHA-256 of the server key: Chromium trusts exactly this key (and nothing else untrusted)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert = x509.load_pem_x509_certificate((self.stack.state / "tls" / "server.crt").read_bytes())
        der = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


# the box gets humid 5 s after the start and stays so: the alarm page's alarm (climate.0.humidity HIHI,
# the example bench's limit) is raised by the simulator, as a real box would raise it
HUMID_BOX = "events:\n  - {at: 5, channel: 1, set: {humidity: 75, tau: 0.3}}\n"


def humid_box(config: dict) -> None:
    config["devices"]["climate"]["simulator"]["scenario"] = "ui-humid-box.yaml"
    # one of the bench's rules, for the alarm page's interlock table: never active here (the bath is at
    # 20 °C) and protecting only hv2, so the other tests switch HV on as they need
    config["interlocks"] = {
        "bath-hot": {
            "kind": "threshold",
            "protects": ["hv2.*"],
            "reading": "chiller.0.temperature",
            "above": 30.0,
            "hysteresis": 1.0,
            "delay": 5,
        }
    }


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory):
    _need_ui()
    # with the record (FerretDB): the log and procedures pages read their history through the recorder
    os.environ.setdefault("SLOWCTL_FERRETDB", str(tool("ferretdb")))  # fails, not skips, when it is not built
    stack = DummyStack(tmp_path_factory.mktemp("ui"), ui=True, tweak=humid_box, records=True)
    (stack.workdir / "ui-humid-box.yaml").write_text(HUMID_BOX)
    s = stack.start(timeout=60)
    yield UiStack(s)
    s.stop()
    from slowctl.stack.supervisor import port_open

    ui = s.config["ui"]
    left = [p for p in (ui["nodered_port"], ui["https_port"], ui["http_port"]) if port_open("127.0.0.1", p)]
    assert not left, f"ports still open after the stack stopped: {left}"


@pytest.fixture(scope="module")
def browser(ui_stack):
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_FLAGS, f"--ignore-certificate-errors-spki-list={ui_stack.spki()}"],
        )
        yield b
        b.close()


class Console:
    """Browser console errors and CSP violations of a page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def csp(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e or "Content-Security-Policy" in e]


def login(person: tuple[str, str]) -> dict:
    return {"username": person[0], "password": person[1]}


SCREEN = {"width": 1280, "height": 800}  # a control-room screen; the screenshots in docs/img have this size


def screenshot(page, name: str) -> Path:
    """A PNG of the page as a test artefact (SLOWCTL_UI_SCREENSHOTS, default /tmp/slowctl-ui-screenshots):
    docs/img/ui-<name>.png are these."""
    folder = Path(os.environ.get("SLOWCTL_UI_SCREENSHOTS", "/tmp/slowctl-ui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ui-{name}.png"
    page.screenshot(path=str(path))
    return path


@pytest.fixture
def dashboard(browser, ui_stack):
    """A dashboard page logged in as an operator (HTTP Basic answered by the browser) and its console."""
    ctx = browser.new_context(http_credentials=login(ui_stack.operator), viewport=SCREEN)
    page = ctx.new_page()
    page.set_default_timeout(15000)
    console = Console(page)
    yield page, console
    ctx.close()


def json_of(text: str):
    return json.loads(text)


class DashboardSocket:
    """Dashboard 2's socket.io connection as a browser opens it (engine.io 4, long polling through the gateway),
    without a browser: to try logins on it, and to send what a page could send but our widgets never do."""

    PATH = "/dashboard/socket.io/?EIO=4&transport=polling"

    def __init__(self, ui_stack, person: tuple[str, str] | None) -> None:
        self.ui = ui_stack
        self.headers = {}
        if person:
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{person[0]}:{person[1]}".encode()).decode()
        status, body = self._request("GET", self.PATH)
        assert status == 200 and body.startswith("0"), (status, body)
        self.sid = json.loads(body[1:])["sid"]
        self.packets: list[str] = []

    def _request(self, method: str, path: str, body: str | None = None, timeout: float = 10) -> tuple[int, str]:
        import http.client

        conn = http.client.HTTPSConnection(
            "localhost", self.ui.https_port, context=self.ui.ssl_context(), timeout=timeout
        )
        try:
            headers = dict(self.headers, **({"Content-Type": "text/plain;charset=UTF-8"} if body is not None else {}))
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def post(self, packet: str) -> None:
        status, body = self._request("POST", f"{self.PATH}&sid={self.sid}", packet)
        assert status == 200 and body == "ok", (status, body)

    def poll(self) -> list[str]:
        """The next batch of packets (the server holds the request until it has some, at most its ping
        interval, 25 s: a poll is never cut short, engine.io would close the session); [] when the session
        is gone (HTTP 400: the server closed it)."""
        status, body = self._request("GET", f"{self.PATH}&sid={self.sid}", timeout=40)
        if status == 400:
            return []
        assert status == 200, (status, body)
        got = body.split("\x1e")
        self.packets += got
        if "2" in got:
            self.post("3")  # pong
        return got

    def connect(self) -> str:
        """Joins the default namespace: '40{"sid":…}' when the middleware lets us in, '44{"message":…}' if not."""
        self.post("40")
        while True:
            for p in self.poll():
                if p.startswith(("40", "44")):
                    return p

    def emit(self, event: str, *args) -> None:
        self.post("42" + json.dumps([event, *args]))

    def received(self, name: str) -> list:
        """The arguments of every `name` event received so far."""
        events = (json.loads(p[2:]) for p in self.packets if p.startswith("42"))
        return [e[1:] for e in events if e[0] == name]

    def wait_event(self, name: str, predicate=lambda args: True, polls: int = 10):
        """The arguments of the first `name` event that satisfies predicate, polling for it; None if none came."""
        for _ in range(polls + 1):
            found = next((args for args in self.received(name) if predicate(args)), None)
            if found is not None or not self.poll():
                return found
        return None

    def closed(self, polls: int = 10) -> bool:
        """Whether the server closes this connection within `polls` polls (statuses flow every second)."""
        for _ in range(polls):
            got = self.poll()
            if not got or any(p == "1" or p.startswith("41") for p in got):
                return True
        return False
