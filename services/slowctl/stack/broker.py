"""Mosquitto for the native stack, from the same files as the compose broker.

mosquitto/acl and mosquitto/mosquitto.conf.template are shared with the
compose stack (mosquitto/docker-entrypoint.sh). Users:
  viewer    reads everything under the root
  operator  reads, and sends commands
  nodered   the control UI: an operator of its own
  telegraf  reads (the archive)
  interlock the interlock process: reads, publishes slowctl/interlock/# and slowctl/alarms/#, sends commands (`off` only)
  procedures the procedure runner: its own topics, and commands for the person who started a run
  <device>  one per device service, named like the device: publishes only its own topics
            (its ACL block: mosquitto/acl-device.template)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import re
import secrets
import signal
from pathlib import Path

from slowctl.atomic import write_text
from slowctl.config import StackConfig
from slowctl.stack.paths import render, repo_file
from slowctl.stack.tls import TlsFiles

ROLES = ("viewer", "operator", "nodered", "telegraf", "interlock", "recorder", "procedures")
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's own default
ACL_ROOT = "slowctl"  # the topic root written in mosquitto/acl


def service_user(device: str) -> str:
    """The broker user of a device service: the device id, so that the ACL's %u patterns apply."""
    return device


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Mosquitto 2 '$7$' entry: PBKDF2-SHA512, base64 salt and hash."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def load_credentials(path: Path, users: list[str]) -> dict[str, str]:
    """Random passwords, kept across runs: existing ones are never replaced."""
    creds: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [u for u in users if u not in creds]
    if missing or not path.exists():
        for user in missing:
            creds[user] = secrets.token_urlsafe(24)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f, indent=2)
    return creds


def users_for(stack: StackConfig) -> list[str]:
    return [*ROLES, *(service_user(d) for d in stack.devices)]


def acl(stack: StackConfig) -> str:
    """mosquitto/acl (roles) plus a block per device from mosquitto/acl-device.template, as the
    compose entrypoint builds it; with the topic root of this stack."""
    device = repo_file("mosquitto", "acl-device.template").read_text()
    text = repo_file("mosquitto", "acl").read_text()
    text += "".join("\n" + device.replace("${DEVICE}", service_user(d)) for d in stack.devices)
    root = stack.mqtt.topic_root
    if root == ACL_ROOT:
        return text
    return re.sub(rf"^(topic (?:read|write|readwrite) ){ACL_ROOT}/", rf"\g<1>{root}/", text, flags=re.M)


def password_file(creds: dict[str, str], users: list[str]) -> str:
    return "".join(f"{u}:{hash_password(creds[u])}\n" for u in users)


def mosquitto_conf(stack: StackConfig, state_dir: Path, tls: TlsFiles) -> str:
    broker = state_dir / "broker"
    b = stack.broker
    return render(
        repo_file("mosquitto", "mosquitto.conf.template").read_text(),
        {
            "PASSWORD_FILE": str(broker / "passwd"),
            "ACL_FILE": str(broker / "acl"),
            # started as root, mosquitto would switch to user 'mosquitto' and lose access to our 0600 files
            "RUN_USER": pwd.getpwuid(os.getuid()).pw_name,
            "DATA_DIR": str(broker / "data"),
            "PID_FILE": str(broker / "mosquitto.pid"),
            "MQTT_PORT": str(b.port),
            "MQTTS_PORT": str(b.tls_port),
            "WS_PORT": str(b.websockets_port),
            "BIND": b.bind,
            "TLS_CERT": str(tls.cert),
            "TLS_KEY": str(tls.key),
        },
        "mosquitto/mosquitto.conf.template",
    )


def accounts_dir(state_dir: Path) -> Path:
    """The native stack's people (`slowctl user`): users.json, users.passwd, users.acl."""
    return state_dir / "accounts"


def write_broker_files(stack: StackConfig, state_dir: Path, tls: TlsFiles) -> tuple[Path, dict[str, str]]:
    """Writes conf, passwd and acl under state_dir/broker; returns the conf path and credentials."""
    creds = write_access_files(stack, state_dir)
    broker = state_dir / "broker"
    write_text(broker / "mosquitto.conf", mosquitto_conf(stack, state_dir, tls), 0o644)
    return broker / "mosquitto.conf", creds


def write_access_files(stack: StackConfig, state_dir: Path) -> dict[str, str]:
    """passwd and acl: the services' (credentials.json) and the people's (`slowctl user`). Each file is
    replaced by a rename, so that a broker reloading meanwhile reads the old or the new one, whole."""
    users = users_for(stack)
    creds = load_credentials(state_dir / "credentials.json", users)
    broker = state_dir / "broker"
    (broker / "data").mkdir(parents=True, exist_ok=True)
    people = accounts_dir(state_dir)
    passwd, acl_text = password_file(creds, users), acl(stack)
    if (people / "users.json").exists():
        named = set(json.loads((people / "users.json").read_text()).get("users", {}))
        clash = sorted(named & set(users))
        if clash:  # one ACL block for two: the person could publish as the device
            raise ValueError(
                f"{people / 'users.json'}: {', '.join(clash)} is a person and a service of this stack; "
                "remove the person (slowctl user remove) or rename the device"
            )
    if (people / "users.passwd").exists():
        passwd += (people / "users.passwd").read_text()
        acl_text += "\n" + (people / "users.acl").read_text()
    write_text(broker / "passwd", passwd, 0o600)
    write_text(broker / "acl", acl_text, 0o644)
    return creds


def reload_broker(stack: StackConfig, state_dir: Path) -> bool:
    """New access files, then SIGHUP to the running broker (it re-reads them; nobody is disconnected).
    False when no broker of this state directory runs (the files are used at its next start)."""
    write_access_files(stack, state_dir)
    pid_file = state_dir / "broker" / "mosquitto.pid"
    try:
        pid = int(pid_file.read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() != "mosquitto":
            return False  # a pid file left by a broker that died: its number may be another program's now
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return False
    return True
