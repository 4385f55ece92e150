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
    assert "'dashboard'" in text and "'nodered-admin'" in text


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
