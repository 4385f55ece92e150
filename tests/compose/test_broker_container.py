"""The compose broker, natively: mosquitto/docker-entrypoint.sh with the project's config on loopback.

The same script, ACL and template the eclipse-mosquitto container runs; only
paths and ports are moved (BROKER_* variables) so that it runs here.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from tests.harness import REPO, Probe, die_with_parent, free_port, wait_until

from slowctl.config import load_config
from slowctl.stack.init import read_env, variables, write_env
from slowctl.stack.supervisor import port_open
from slowctl.stack.tls import ensure_tls

NOT_AUTHORIZED = 135
ENTRYPOINT = REPO / "mosquitto" / "docker-entrypoint.sh"


def _need_mosquitto() -> None:
    if not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")):
        pytest.skip("mosquitto is not installed: run scripts/install.sh")


class Broker:
    def __init__(self, env_values: dict[str, str], tls_dir: Path) -> None:
        # the broker drops to user 'mosquitto' when started as root: its directories must be reachable
        self.root = Path(tempfile.mkdtemp(prefix="slowctl-broker-"))
        os.chmod(self.root, 0o755)
        self.ports = {"mqtt": free_port(), "mqtts": free_port(), "ws": free_port()}
        self.env = {
            "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin",
            "BROKER_CONF_DIR": str(REPO / "mosquitto"),
            "BROKER_RUN_DIR": str(self.root / "run"),
            "BROKER_DATA_DIR": str(self.root / "data"),
            "BROKER_TLS_DIR": str(tls_dir),
            "BROKER_MQTT_PORT": str(self.ports["mqtt"]),
            "BROKER_MQTTS_PORT": str(self.ports["mqtts"]),
            "BROKER_WS_PORT": str(self.ports["ws"]),
            "BROKER_BIND": "127.0.0.1",
            "BROKER_ACCOUNTS_DIR": str(self.root / "accounts"),
            **{k: v for k, v in env_values.items() if k.startswith("MQTT_PASSWORD_")},
        }
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "broker.log"

    def start(self) -> Broker:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["sh", str(ENTRYPOINT)], env=self.env, stdout=log, stderr=log, preexec_fn=die_with_parent
            )
        wait_until(
            lambda: all(port_open("127.0.0.1", p) for p in self.ports.values()) or self.proc.poll() is not None,
            10,
            what="the broker's three listeners",
        )
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("secrets")
    write_env(d / ".env", variables(load_config(REPO / "config" / "bench.yaml"), "localhost", "bench.yaml"))
    return d, read_env(d / ".env"), ensure_tls(d / "tls", ["localhost"])


@pytest.fixture(scope="module")
def broker(secrets_dir):
    _need_mosquitto()
    _, env, tls = secrets_dir
    b = Broker(env, tls.cert.parent).start()
    yield b
    b.close()


@pytest.fixture
def connect(broker, secrets_dir):
    probes: list[Probe] = []
    env = secrets_dir[1]

    def make(user: str | None, kind: str = "mqtt", password: str | None = None, ca: str | None = None) -> Probe:
        pw = password if password is not None else (env[f"MQTT_PASSWORD_{user.upper()}"] if user else None)
        transport = "websockets" if kind == "ws" else "tcp"
        tls_ca = (ca or str(secrets_dir[2].ca_cert)) if kind == "mqtts" else None
        p = Probe("localhost" if tls_ca else "127.0.0.1", broker.ports[kind], user, pw, transport, tls_ca)
        probes.append(p)
        p.wait_connected()
        return p

    yield make
    for p in probes:
        p.close()


def test_password_file_built_from_env_and_private(broker):
    passwd = broker.root / "run" / "passwd"
    users = [line.split(":", 1)[0] for line in passwd.read_text().splitlines()]
    assert sorted(users) == sorted(
        ["viewer", "operator", "nodered", "telegraf", "interlock", "recorder", "procedures"]
        + list(load_config(REPO / "config" / "bench.yaml").devices)
    )
    assert all(line.split(":", 1)[1].startswith("$7$") for line in passwd.read_text().splitlines())
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o600
    if os.getuid() == 0:  # the broker runs as 'mosquitto' and owns what it reads
        import pwd

        assert pwd.getpwuid(passwd.stat().st_uid).pw_name == "mosquitto"
        assert pwd.getpwuid((broker.root / "data").stat().st_uid).pw_name == "mosquitto"


@pytest.mark.parametrize("kind", ["mqtt", "mqtts", "ws"])
def test_anonymous_and_wrong_password_refused(connect, kind):
    assert connect(None, kind).connack.is_failure
    assert connect("viewer", kind, password="wrong").connack.is_failure
    assert not connect("viewer", kind).connack.is_failure


def test_viewer_cannot_command_operator_and_ui_can(connect):
    assert connect("viewer").publish("slowctl/hv/cmd/on/0", b"") == NOT_AUTHORIZED
    assert connect("telegraf").publish("slowctl/hv/cmd", b"{}") == NOT_AUTHORIZED
    for user, topic in (("operator", "cmd"), ("operator", "by/operator/cmd"), ("nodered", "by/nodered/cmd")):
        code = connect(user).publish(f"slowctl/hv/{topic}/vset/0", b"10")
        assert code.value in (0, 16), f"{user}: {code}"  # success / no matching subscribers
    assert connect("nodered").publish("slowctl/hv/cmd/vset/0", b"10") == NOT_AUTHORIZED, "the plain topics: operator's"


def test_people_come_from_the_accounts_dir_and_a_reload_takes_them_in(broker, connect):
    """`slowctl user add --compose` writes secrets/accounts and runs the entrypoint's `reload`: no restart."""
    from slowctl.stack.accounts import Accounts

    watcher = connect("viewer")
    watcher.subscribe("slowctl/#")
    accounts = Accounts(broker.root / "accounts", list(load_config(REPO / "config" / "bench.yaml").devices))
    accounts.add("alice", "operator", "alice's long password")
    r = subprocess.run(["sh", str(ENTRYPOINT), "reload"], env=broker.env, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "reloaded" in r.stdout, r.stderr
    alice = Probe("127.0.0.1", broker.ports["mqtt"], "alice", "alice's long password")
    assert not alice.wait_connected().is_failure
    try:
        assert alice.publish("slowctl/hv/by/alice/cmd/vset/0", b"1").value in (0, 16)
        assert alice.publish("slowctl/hv/by/bob/cmd/vset/0", b"1") == NOT_AUTHORIZED
        assert alice.publish("slowctl/hv/cmd/vset/0", b"1") == NOT_AUTHORIZED
    finally:
        alice.close()
    assert watcher.client.is_connected(), "a reload disconnects nobody whose login stays valid"
    accounts.remove("alice")
    subprocess.run(["sh", str(ENTRYPOINT), "reload"], env=broker.env, check=True, capture_output=True, timeout=20)
    gone = Probe("127.0.0.1", broker.ports["mqtt"], "alice", "alice's long password")
    try:
        assert gone.wait_connected().is_failure
    finally:
        gone.close()


def test_acl_is_the_one_slowctl_up_writes(broker):
    from tests.unit.test_broker import parse_acl

    from slowctl.stack.broker import acl, users_for

    stack = load_config(REPO / "config" / "bench.yaml")
    users = users_for(stack)
    rendered = parse_acl((broker.root / "run" / "acl").read_text(), users)
    assert rendered == parse_acl(acl(stack), users)


def test_roles_cannot_pose_as_a_device(connect):
    for role in ("viewer", "telegraf", "operator", "nodered"):
        p = connect(role)
        for topic in (f"slowctl/{role}/metrics", f"slowctl/{role}/status", f"/{role}/status"):
            assert p.publish(topic, b"supply,device=hv,channel=0 vmon=0") == NOT_AUTHORIZED, (role, topic)


def test_healthcheck_login_file(broker):
    env = {"PATH": broker.env["PATH"], "XDG_CONFIG_HOME": str(broker.root / "run" / "healthcheck")}
    r = subprocess.run(
        ["mosquitto_sub", "-p", str(broker.ports["mqtt"]), "-t", "$SYS/broker/uptime", "-C", "1", "-W", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("seconds"), r.stderr


def test_device_publishes_only_its_own_topics(connect):
    hv = connect("hv")
    for topic in ("slowctl/hv/status", "slowctl/hv/availability", "slowctl/hv/reply/x", "/hv/status"):
        assert hv.publish(topic, b"{}").value in (0, 16), topic
    for topic in ("slowctl/lv/status", "slowctl/lv/availability", "slowctl/hv/cmd/on/0", "/lv/status"):
        assert hv.publish(topic, b"{}") == NOT_AUTHORIZED, topic


def test_tls_verifies_against_the_generated_ca_only(connect, secrets_dir, tmp_path):
    probe = connect("viewer", "mqtts")
    assert not probe.connack.is_failure
    sock = probe.client.socket()
    assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    other = ensure_tls(tmp_path / "other-ca", ["localhost"])
    with pytest.raises(ssl.SSLCertVerificationError):
        connect("viewer", "mqtts", ca=str(other.ca_cert))


def test_websockets_carry_mqtt(connect):
    sub = connect("viewer", "ws")
    sub.subscribe("slowctl/hv/cmd/#")
    assert connect("operator").publish("slowctl/hv/cmd/vset/1", b"5").value == 0
    assert sub.wait_message("slowctl/hv/cmd/vset/1").payload == b"5"


def test_retained_state_survives_a_restart(broker, connect):
    hv = connect("hv")
    hv.publish("slowctl/hv/availability", b"online", retain=True)
    hv.close()
    broker.stop()  # SIGTERM: the broker writes its persistence file
    assert (broker.root / "data" / "mosquitto.db").exists()
    broker.start()
    viewer = connect("viewer")
    viewer.subscribe("slowctl/hv/availability")
    assert viewer.wait_message("slowctl/hv/availability").payload == b"online"


def test_password_with_trailing_equals_signs_kept(secrets_dir):
    _need_mosquitto()
    _, env, tls = secrets_dir
    b = Broker({**env, "MQTT_PASSWORD_VIEWER": "abc=", "MQTT_PASSWORD_OPERATOR": "x==y="}, tls.cert.parent).start()
    try:
        for user, pw in (("viewer", "abc="), ("operator", "x==y=")):
            p = Probe("127.0.0.1", b.ports["mqtt"], user, pw)
            try:
                assert not p.wait_connected().is_failure, user
            finally:
                p.close()
    finally:
        b.close()


def test_missing_password_refuses_to_start(secrets_dir, tmp_path):
    _need_mosquitto()
    _, env, tls = secrets_dir
    b = Broker({**env, "MQTT_PASSWORD_HV": ""}, tls.cert.parent)
    try:
        with open(b.log, "wb") as log:
            rc = subprocess.run(["sh", str(ENTRYPOINT)], env=b.env, stdout=log, stderr=log, timeout=10).returncode
        assert rc != 0
        assert "MQTT_PASSWORD_HV is empty: run 'slowctl init'" in b.log.read_text()
        assert not any(port_open("127.0.0.1", p) for p in b.ports.values())
    finally:
        b.close()
