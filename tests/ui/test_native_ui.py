"""The native stack's UI switch: when it runs, what it says when it does not, and its config."""

import socket

import pytest
import yaml

from harness import DUMMY_CONFIG
from slowctl.config import ConfigError, parse_config
from slowctl.stack import ui


def stack_with(**ui_section):
    raw = yaml.safe_load(DUMMY_CONFIG.read_text())
    raw["ui"] = ui_section
    return parse_config(raw)


def test_off_by_flag_by_config_or_when_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(ui, "missing_parts", lambda: [])
    assert ui.NativeUi(stack_with(), tmp_path).active
    off = ui.NativeUi(stack_with(), tmp_path, enabled=False)
    assert not off.active and off.summary() == ["control UI       off (--no-ui)"] and off.specs({}) == []
    assert ui.NativeUi(stack_with(enabled=False), tmp_path).summary() == ["control UI       off (ui.enabled: false)"]
    monkeypatch.setattr(ui, "missing_parts", lambda: ["nginx not found (apt-get install nginx-light)"])
    missing = ui.NativeUi(stack_with(), tmp_path)
    assert not missing.active and missing.ports() == []
    assert missing.summary() == ["control UI       not started: nginx not found (apt-get install nginx-light)"]


def test_a_busy_port_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ui, "missing_parts", lambda: [])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        native = ui.NativeUi(stack_with(nodered_port=port), tmp_path)
        with pytest.raises(ui.UiError, match=f"Node-RED port {port}.*--no-ui"):
            native.check_ports()


def test_summary_names_the_files_not_the_passwords(tmp_path, monkeypatch):
    monkeypatch.setattr(ui, "missing_parts", lambda: [])
    native = ui.NativeUi(stack_with(hostname="bench.lab", https_port=9443), tmp_path)
    text = "\n".join(native.summary())
    assert "https://bench.lab:9443/dashboard/" in text and "credentials.json" in text
    assert "'nodered-admin'" in text and "'dashboard'" not in text  # no shared dashboard login any more
    assert "nobody yet: add people with `slowctl user add NAME --role operator`" in text


def test_dashboard_logins_are_the_peoples(tmp_path, monkeypatch):
    """Node-RED gets the accounts file (not a login); the summary counts the people in it."""
    from slowctl.stack.accounts import Accounts
    from slowctl.stack.tls import TlsFiles

    monkeypatch.setattr(ui, "missing_parts", lambda: [])
    stack = stack_with()
    people = Accounts(tmp_path / "accounts", list(stack.devices))
    for name, role in (("alice", "operator"), ("bob", "operator"), ("victor", "viewer")):
        people.add(name, role, "a-long-enough-password")
    native = ui.NativeUi(stack, tmp_path)
    assert "dashboard logins: people, each their own: 2 operators, 1 viewer" in "\n".join(native.summary())
    monkeypatch.setattr(ui.gateway, "write_native", lambda *a, **k: None)
    monkeypatch.setattr(ui.gateway, "check", lambda *a, **k: None)
    monkeypatch.setattr(ui.gateway, "find_nginx", lambda: "/usr/sbin/nginx")
    red = native.specs(
        {"nodered": "pw"}, tls=TlsFiles(*(tmp_path / n for n in ("ca.crt", "ca.key", "s.crt", "s.key")))
    )[0]
    assert red.env["SLOWCTL_ACCOUNTS_FILE"] == str(tmp_path / "accounts" / "users.json")
    assert not [k for k in red.env if "DASHBOARD" in k]


@pytest.mark.parametrize(
    "section,error",
    [
        ({"https_port": 8080}, "must differ"),
        ({"grafana": "grafana"}, "ui.grafana"),
        ({"hostname": "a b"}, "ui.hostname"),
        ({"colour": "red"}, "ui.colour: unknown key"),
    ],
)
def test_bad_ui_config_is_refused(section, error):
    with pytest.raises(ConfigError, match=error):
        stack_with(**section)
