"""`slowctl init`: the compose stack's .env (random secrets) and TLS material.

Idempotent: a variable that already has a value is never replaced and the
file's other lines are kept as they are; only what is missing is appended.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slowctl.config import StackConfig
from slowctl.stack.tls import TlsFiles, ensure_tls


class InitError(Exception):
    pass


LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def _secret() -> str:
    return secrets.token_urlsafe(24)


def _token() -> str:
    return secrets.token_urlsafe(48)


@dataclass(frozen=True)
class Var:
    name: str
    make: Callable[[], str]


def password_var(user: str) -> str:
    """The .env variable holding a broker user's password (the broker entrypoint reverses it)."""
    return "MQTT_PASSWORD_" + user.upper()


# documented in .env.example, never written by `slowctl init`: Grafana's alert notifications stay off until set
OPTIONAL = (
    "GRAFANA_NOTIFY",
    "GRAFANA_ALERT_WEBHOOK_URL",
    "GRAFANA_ALERT_EMAIL",
    "GRAFANA_SMTP_HOST",
    "GRAFANA_SMTP_USER",
    "GRAFANA_SMTP_PASSWORD",
    "GRAFANA_SMTP_FROM",
)


def variables(stack: StackConfig, hostname: str, config_name: str) -> list[Var]:
    from slowctl.stack.broker import ROLES

    fixed = lambda value: lambda: value  # noqa: E731 - a default that is not a secret
    return [
        Var("SLOWCTL_HOSTNAME", fixed(hostname)),
        Var("SLOWCTL_HTTPS_PORT", fixed("443")),
        Var("SLOWCTL_HTTP_PORT", fixed("80")),
        Var("SLOWCTL_MQTTS_PORT", fixed("8883")),
        Var("SLOWCTL_CONFIG", fixed(config_name)),
        *(Var(password_var(user), _secret) for user in (*ROLES, *stack.devices)),
        Var("INFLUXDB_ADMIN_USER", fixed("slowctl-admin")),
        Var("INFLUXDB_ADMIN_PASSWORD", _secret),
        Var("INFLUXDB_TOKEN", _token),
        Var("INFLUXDB_ORG", fixed("slowctl")),
        Var("INFLUXDB_BUCKET", fixed("slowctl")),
        Var("INFLUXDB_RETENTION", fixed("0")),
        Var("GRAFANA_ADMIN_USER", fixed("slowctl-admin")),
        Var("GRAFANA_ADMIN_PASSWORD", _secret),
        Var("NODERED_ADMIN_USER", fixed("slowctl-admin")),
        Var("NODERED_ADMIN_PASSWORD", _secret),
        Var("NODERED_CREDENTIAL_SECRET", _token),
        Var("MONGO_ROOT_USER", fixed("slowctl-root")),
        Var("MONGO_ROOT_PASSWORD", _secret),
        Var("MONGO_DATABASE", fixed("slowctl")),
        Var("MONGO_USER", fixed("slowctl")),
        Var("MONGO_PASSWORD", _secret),
    ]


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            m = LINE.match(line)
            if m and not line.lstrip().startswith("#"):
                values[m.group(1)] = m.group(2).strip().strip("'\"")
    return values


def write_env(path: Path, wanted: list[Var]) -> list[str]:
    """Appends the variables that are missing or empty; returns their names."""
    have = read_env(path)
    added = [v for v in wanted if not have.get(v.name)]
    text = path.read_text() if path.exists() else "# slowctl compose stack: written by `slowctl init`, keep it secret\n"
    lines = [
        line for line in text.splitlines() if not ((m := LINE.match(line)) and m.group(1) in {v.name for v in added})
    ]  # drop empty ones
    lines += [f"{v.name}={v.make()}" for v in added]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return [v.name for v in added]


def init(
    stack: StackConfig, config_name: str, env_path: Path, tls_dir: Path, hostname: str | None = None
) -> tuple[list[str], TlsFiles]:
    have = read_env(env_path).get("SLOWCTL_HOSTNAME")
    if hostname and have and hostname != have:
        raise InitError(
            f"--hostname {hostname}: {env_path} already says SLOWCTL_HOSTNAME={have}; edit it there "
            f"(and remove secrets/tls/server.crt to issue a certificate for the new name)"
        )
    host = hostname or have or socket.gethostname() or "localhost"
    added = write_env(env_path, variables(stack, host, config_name))
    host = read_env(env_path)["SLOWCTL_HOSTNAME"]
    tls = ensure_tls(tls_dir, [host, "localhost"])
    # people's accounts (`slowctl user add --compose`), mounted by Node-RED: made here by this user, as docker
    # would make a missing one root's
    (tls_dir.parent / "accounts").mkdir(mode=0o755, exist_ok=True)
    return added, tls
