"""The slowctl command as a user types it, against the running dummy stack."""

import json
import shutil
import subprocess
import sys

import pytest

from harness import REPO

SUBCOMMANDS = ["up", "run", "status", "get", "set", "check", "env"]


def slowctl(*args, **kw):
    return subprocess.run([sys.executable, "-m", "slowctl", *args], capture_output=True, text=True, timeout=30, **kw)


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_help(sub):
    r = slowctl(sub, "--help")
    assert r.returncode == 0 and "usage: slowctl" in r.stdout


def test_sim_help_and_bad_model():
    r = slowctl("sim", "--help")
    assert r.returncode == 0 and "--scenario" in r.stdout
    r = slowctl("sim", "toaster", "--tcp", "127.0.0.1:1")
    assert r.returncode != 0 and "toaster" in r.stderr and "Traceback" not in r.stderr


def test_no_command_is_an_error():
    assert slowctl().returncode != 0


def test_check_good_and_bad(tmp_path):
    r = slowctl("check", str(REPO / "config" / "bench.yaml"))
    import yaml

    n = len(yaml.safe_load((REPO / "config" / "bench.yaml").read_text())["devices"])
    assert r.returncode == 0 and f"{n} devices" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "devices:\n  hv:\n    model: caen-n1470\n    address: x\n    colour: red\n"
        "    channels: {0: {name: a, vmax: 9000, imax: 1e-4}}\n"
    )
    r = slowctl("check", str(bad))
    assert r.returncode == 1
    assert "devices.hv.colour: unknown key" in r.stderr
    assert "devices.hv.channels.0.vmax: 9000 outside the caen-n1470 range" in r.stderr
    assert "Traceback" not in r.stderr
    r = slowctl("check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "cannot read" in r.stderr
    bad.write_text("devices: [unclosed\n")
    r = slowctl("check", str(bad))
    assert r.returncode == 1 and "invalid YAML" in r.stderr


def test_run_unknown_device():
    r = slowctl("run", "nope", "--config", str(REPO / "config" / "bench.yaml"))
    assert r.returncode == 2 and "'nope' is not in" in r.stderr


def test_client_without_stack(tmp_path):
    r = slowctl("status", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "no running native stack" in r.stderr


@pytest.mark.stack
def test_env_status_get_set(stack):
    state = ["--state-dir", str(stack.state)]
    r = stack.slowctl("env", "--role", "viewer", *state)
    assert r.returncode == 0
    env = dict(line.removeprefix("export ").split("=", 1) for line in r.stdout.splitlines())
    assert env["SLOWCTL_MQTT_PORT"] == str(stack.port) and env["SLOWCTL_MQTT_USERNAME"] == "viewer"
    assert stack.slowctl("env", "--role", "root", *state).returncode == 1

    r = stack.slowctl("status", *state)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-2].startswith("interlock process online: 0 rules, active: none; alarms: ")
    assert lines[-1] == "procedure runner online: running: none (slowctl procedure list)", r.stdout
    rows = {line.split()[0]: line.split() for line in lines[1:-2]}
    assert set(rows) == set(stack.config["devices"])
    assert all(row[1] == "online" and row[2] == "ok" for row in rows.values()), r.stdout

    r = stack.slowctl("get", "climate", *state)
    assert r.returncode == 0 and json.loads(r.stdout)["device"] == "climate"
    assert stack.slowctl("get", "nope", *state).returncode == 1

    r = stack.slowctl("set", "lv", "2", "iset", "0.75", *state)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"]
    r = stack.slowctl("set", "lv", "2", "vset", "99", *state)
    assert r.returncode == 1 and "exceeds the configured limit" in json.loads(r.stdout)["error"]
    r = stack.slowctl("set", "lv", "2", "vset", "abc", *state)
    assert r.returncode == 1 and "must be a number" in r.stdout


@pytest.mark.stack
@pytest.mark.skipif(not shutil.which("mosquitto_pub"), reason="mosquitto-clients not installed")
def test_mosquitto_clients_with_env(stack):
    """The README's mosquitto_pub / mosquitto_sub recipe."""

    def creds(role):
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in stack.slowctl("env", "--role", role, "--state-dir", str(stack.state)).stdout.splitlines()
        )
        return [
            "-h",
            env["SLOWCTL_MQTT_HOST"],
            "-p",
            env["SLOWCTL_MQTT_PORT"],
            "-u",
            env["SLOWCTL_MQTT_USERNAME"],
            "-P",
            env["SLOWCTL_MQTT_PASSWORD"].strip("'"),
        ]

    sub = subprocess.Popen(
        ["mosquitto_sub", *creds("viewer"), "-t", "slowctl/lv/reply", "-C", "1", "-W", "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    import time

    time.sleep(0.5)
    subprocess.run(["mosquitto_pub", *creds("operator"), "-t", "slowctl/lv/cmd/iset/1", "-m", "0.5"], check=True)
    out, _ = sub.communicate(timeout=15)
    reply = json.loads(out)
    assert isinstance(reply.pop("before"), float), "the setting before the command"
    assert reply == {
        "id": None,
        "action": "iset",
        "channel": 1,
        "value": 0.5,
        "by": "operator",
        "for": None,
        "ok": True,
        "error": None,
        "applied": 0.5,
    }
