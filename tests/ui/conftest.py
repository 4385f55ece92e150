"""One native dummy stack with the control UI for the module, and headless Chromium against its gateway."""

import base64
import hashlib
import json
import shutil
import ssl

import pytest

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
        creds = stack.credentials
        self.dashboard = ("dashboard", creds["dashboard"])
        self.admin = ("admin", creds["nodered-admin"])

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


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory):
    _need_ui()
    s = DummyStack(tmp_path_factory.mktemp("ui"), ui=True).start(timeout=60)
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


@pytest.fixture
def dashboard(browser, ui_stack):
    """A logged-in dashboard page (HTTP Basic answered by the browser) and its console."""
    ctx = browser.new_context(http_credentials={"username": ui_stack.dashboard[0], "password": ui_stack.dashboard[1]})
    page = ctx.new_page()
    page.set_default_timeout(15000)
    console = Console(page)
    yield page, console
    ctx.close()


def json_of(text: str):
    return json.loads(text)
