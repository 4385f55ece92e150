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

    r = stack.slowctl("get", "climate", "--json", *state)
    assert r.returncode == 0 and json.loads(r.stdout)["device"] == "climate"
    r = stack.slowctl("get", "climate", *state)
    assert r.returncode == 0 and r.stdout.startswith("climate (climate): ok, status "), r.stdout
    assert " %" in r.stdout and " °C" in r.stdout, r.stdout

    r = stack.slowctl("set", "lv", "2", "iset", "0.75", *state)
    assert r.returncode == 0 and r.stdout.startswith("lv.2 iset 0.75 A: ok (before: "), r.stdout
    r = stack.slowctl("set", "lv", "2", "iset", "0.5", "--json", *state)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] and json.loads(r.stdout)["before"] == 0.75
    r = stack.slowctl("set", "lv", "2", "vset", "99", "--json", *state)
    assert r.returncode == 1 and "exceeds the configured limit" in json.loads(r.stdout)["error"]
    r = stack.slowctl("set", "lv", "2", "vset", "99", *state)
    assert r.returncode == 1 and r.stdout.startswith("lv.2 vset 99 V: refused: vset 99 V exceeds"), r.stdout
    r = stack.slowctl("set", "lv", "2", "vset", "abc", *state)
    assert r.returncode == 1 and "must be a number" in r.stdout


@pytest.mark.stack
def test_hv_currents_in_microamps(stack):
    """As the control UI shows them; --json keeps the SI units of the payloads."""
    state = ["--state-dir", str(stack.state)]
    r = stack.slowctl("set", "hv", "0", "iset", "0.00005", *state)
    assert r.returncode == 0 and r.stdout.startswith("hv.0 iset 50 µA: ok (before: "), r.stdout
    r = stack.slowctl("get", "hv", *state)
    assert r.returncode == 0, r.stderr
    head, row = r.stdout.splitlines()[1:3]
    cells = dict(zip(head.split(), row.replace(" µA", "µA").replace(" V", "V").split()))
    assert cells["CH"] == "0" and cells["ISET"] == "50µA", r.stdout
    assert cells["IMON"].endswith("µA"), r.stdout
    r = stack.slowctl("get", "hv", "--json", *state)
    assert json.loads(r.stdout)["channels"][0]["iset"] == pytest.approx(0.00005)
    r = stack.slowctl("get", "lv", *state)
    assert " µA" not in r.stdout and " A" in r.stdout, r.stdout


@pytest.mark.stack
def test_refusals_come_at_once_and_say_why(stack):
    """A mistyped device, a viewer commanding, an unknown action: answered at once, nothing sent or changed."""
    import time

    state = ["--state-dir", str(stack.state)]
    known = ", ".join(sorted(stack.config["devices"]))
    for cmd in (("get", "nope"), ("set", "nope", "0", "on")):
        t0 = time.monotonic()
        r = stack.slowctl(*cmd, *state)
        assert r.returncode == 1 and f"unknown device 'nope' (known: {known})" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 3, "answered without waiting for a timeout"

    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in stack.slowctl("env", "--role", "viewer", *state).stdout.splitlines()
    )
    env = {k: v.strip("'") for k, v in env.items()}
    before = stack.slowctl("get", "lv", "--json", *state)
    t0 = time.monotonic()
    r = stack.slowctl("set", "lv", "1", "vset", "2.5", env=env)
    assert r.returncode == 1 and "not authorised (viewer may not command lv" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 3, "the broker's refusal, not a reply timeout"
    assert stack.slowctl("ack", "lv", env=env).stderr.startswith(
        "slowctl ack: not authorised (viewer may not command alarms"
    )
    after = stack.slowctl("get", "lv", "--json", *state)
    assert json.loads(after.stdout)["channels"][1]["vset"] == json.loads(before.stdout)["channels"][1]["vset"]


def test_one_action_list():
    """`set --help`, the CLI's refusal and the device's refusal name the actions the core declares."""
    from slowctl.device.capabilities import ACTIONS, Capabilities, CommandError

    names = ", ".join(ACTIONS)
    assert f"{names} (`slowctl actions`)" in " ".join(slowctl("set", "--help").stdout.split())
    r = slowctl("set", "hv", "0", "frobnicate")
    assert r.returncode == 2 and "invalid choice: 'frobnicate'" in r.stderr
    assert ", ".join(f"'{n}'" for n in ACTIONS) in r.stderr
    with pytest.raises(CommandError, match=f"expected one of {names}"):
        Capabilities(model="m", kind="supply", channels={}, names={}, soft_ramp=frozenset()).get("x", 0)


@pytest.mark.stack
def test_env_only_mqtt_logins(stack):
    """credentials.json also holds the control UI's secrets: they are never printed as MQTT credentials."""
    from slowctl.stack.broker import load_credentials
    from slowctl.stack.ui import LOGINS, SECRET_KEY

    state = ["--state-dir", str(stack.state)]
    creds = load_credentials(stack.state / "credentials.json", [SECRET_KEY, *LOGINS])  # as the UI makes them
    for key in (SECRET_KEY, *LOGINS):
        r = stack.slowctl("env", "--role", key, *state)
        assert r.returncode == 1 and f"unknown role '{key}' (MQTT logins of this stack: viewer, operator" in r.stderr
        assert r.stdout == "" and creds[key] not in r.stderr
    assert stack.slowctl("env", "--role", "hv", *state).returncode == 0  # a device service's own login


def test_stack_found_from_any_directory(own_stack, tmp_path, monkeypatch):
    """`slowctl up` registers its state directory while it runs; a client elsewhere finds it, and says so
    when it has stopped."""
    import os
    import signal

    monkeypatch.setenv("SLOWCTL_RUNTIME_DIR", str(tmp_path / "running"))
    s = own_stack().start()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = slowctl("status", cwd=elsewhere)
    assert r.returncode == 0 and "online" in r.stdout, r.stderr
    r = slowctl("env", "--role", "viewer", cwd=elsewhere)
    assert f"SLOWCTL_MQTT_PORT={s.port}" in r.stdout
    # a directory whose own stack has stopped: the running one is named, not used unasked
    mine = tmp_path / "mine"
    (mine / ".slowctl").mkdir(parents=True)
    (mine / ".slowctl" / "credentials.json").write_text("{}")
    r = slowctl("status", cwd=mine)
    assert r.returncode == 1 and r.stderr.strip() == (
        f"slowctl status: the native stack in {mine / '.slowctl'} has stopped; running: {s.state} (--state-dir DIR)"
    )

    os.kill(s.proc.pid, signal.SIGKILL)  # no cleaning up: its files say it runs
    s.proc.wait()
    r = slowctl("status", cwd=elsewhere)
    assert r.returncode == 1, r.stdout
    assert f"the native stack in {s.state} has stopped (its slowctl up, process {s.proc.pid}, is gone" in r.stderr


def test_up_says_everything_stopped(own_stack, tmp_path, monkeypatch):
    monkeypatch.setenv("SLOWCTL_RUNTIME_DIR", str(tmp_path / "running"))
    s = own_stack().start()
    n = 1 + 2 * len(s.config["devices"]) + 2  # broker, simulators and services, interlock, procedure runner
    s.stop()
    assert f"[slowctl] stopped: all {n} processes have exited" in s.log().splitlines()[-1], s.log()[-2000:]
    assert not list((tmp_path / "running").iterdir()), "unregistered"
    r = slowctl("status", cwd=tmp_path)
    assert r.returncode == 1 and "no running native stack: none in" in r.stderr, r.stderr
    r = slowctl("status", "--state-dir", str(s.state))
    assert r.returncode == 1 and f"the native stack in {s.state} has stopped (start it again" in r.stderr


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
