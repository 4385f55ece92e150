"""The control UI in the native stack: Node-RED (generated flows) behind the nginx gateway.

Started after the device services when `ui.enabled` and both are installed
(nodered/node_modules from scripts/install.sh, nginx from apt); otherwise the
stack runs without them and says why. The dashboard's logins are people's, from
the accounts directory's users.json (`slowctl user`), which Node-RED re-reads
when it changes; the editor's is a random password in the state directory's
credentials.json (never printed): see `LOGINS`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from slowctl.config import StackConfig
from slowctl.stack import gateway, nodered
from slowctl.stack.broker import accounts_dir, load_credentials
from slowctl.stack.supervisor import ProcessSpec, port_open
from slowctl.stack.tls import TlsFiles, ensure_tls

# credentials.json key -> user name (the editor's; the dashboard's are people's, `slowctl user`)
LOGINS = {"nodered-admin": "admin"}
SECRET_KEY = "nodered-credential-secret"
NODERED_HOST = "127.0.0.1"


class UiError(RuntimeError):
    """The stack reports it and stops (RuntimeError: NativeStack.up's error path)."""


def nodered_dir() -> Path:
    from slowctl.stack.paths import REPO

    return REPO / "nodered"


def missing_parts() -> list[str]:
    """What stops the UI from running here, as advice; empty when everything is installed."""
    out = []
    red = nodered_dir() / "node_modules" / "node-red" / "red.js"
    if not shutil.which("node"):
        out.append("node not found (Node.js 18 or newer)")
    if not red.exists():
        out.append(f"{red.parent.parent} missing (run scripts/install.sh, or npm ci in nodered/)")
    if not gateway.find_nginx():
        out.append("nginx not found (apt-get install nginx-light)")
    return out


def tls_files(stack: StackConfig, state_dir: Path) -> TlsFiles:
    return ensure_tls(state_dir / "tls", [stack.ui.hostname, "localhost"])


class NativeUi:
    def __init__(self, stack: StackConfig, state_dir: Path, enabled: bool = True) -> None:
        self.stack = stack
        self.ui = stack.ui
        self.state_dir = state_dir
        self.missing = missing_parts() if enabled and stack.ui.enabled else []
        self.reason = (
            "off (--no-ui)"
            if not enabled
            else "off (ui.enabled: false)"
            if not stack.ui.enabled
            else "not started: " + "; ".join(self.missing)
            if self.missing
            else ""
        )
        self.active = not self.reason
        self.tls: TlsFiles | None = None

    def ports(self) -> list[tuple[str, int, str]]:
        if not self.active:
            return []
        host = "127.0.0.1" if self.ui.bind in ("0.0.0.0", "::") else self.ui.bind
        return [
            (NODERED_HOST, self.ui.nodered_port, "Node-RED"),
            (host, self.ui.https_port, "gateway https"),
            (host, self.ui.http_port, "gateway http"),
        ]

    def check_ports(self) -> None:
        busy = [f"{what} port {port}" for host, port, what in self.ports() if port_open(host, port)]
        if busy:
            raise UiError(
                f"already in use: {', '.join(busy)} (another slowctl stack? `slowctl up --no-ui` "
                "runs without the control UI)"
            )

    def specs(self, broker_creds: dict[str, str], tls: TlsFiles | None = None) -> list[ProcessSpec]:
        """Writes the flows and the gateway config; returns Node-RED and the gateway to start, in order."""
        if not self.active:
            return []
        if "nodered" not in broker_creds:
            raise UiError("the broker has no user 'nodered' (services/slowctl/broker.py ROLES)")
        creds = load_credentials(self.state_dir / "credentials.json", [*LOGINS, SECRET_KEY])
        tls = self.tls = tls or tls_files(self.stack, self.state_dir)
        user_dir = self.state_dir / "nodered"
        try:
            dropped = nodered.write_flows(self.stack, user_dir / "flows.json", creds[SECRET_KEY])
        except nodered.FlowError as exc:
            raise UiError(f"control UI flows: {exc}") from None
        if dropped:
            print(
                f"[slowctl] control UI: removed {len(dropped)} node(s) that were added to generated tabs "
                f"(kept in {user_dir / 'flows.json.bak'}); lab flows belong on tabs of their own",
                flush=True,
            )
        b = self.stack.broker
        broker_host = "127.0.0.1" if b.bind in ("0.0.0.0", "::") else b.bind
        red = nodered_dir()
        env = {
            "NODERED_HOST": NODERED_HOST,
            "NODERED_PORT": str(self.ui.nodered_port),
            "NODERED_ADMIN_USER": LOGINS["nodered-admin"],
            "NODERED_ADMIN_PASSWORD": creds["nodered-admin"],
            "SLOWCTL_ACCOUNTS_FILE": str(self.accounts_file()),
            "NODERED_CREDENTIAL_SECRET": creds[SECRET_KEY],
            "MQTT_HOST": broker_host,
            "MQTT_PORT": str(b.port),
            "MQTT_PASSWORD_NODERED": broker_creds["nodered"],
        }
        node_red = ProcessSpec(
            "nodered",
            [
                shutil.which("node") or "node",
                str(red / "node_modules" / "node-red" / "red.js"),
                "--settings",
                str(red / "settings.js"),
                "--userDir",
                str(user_dir),
            ],
            env=env,
            ready_port=(NODERED_HOST, self.ui.nodered_port),
            tier=3,
        )
        gw_dir = self.state_dir / "gateway"
        nginx = gateway.find_nginx()
        assert nginx
        try:
            gateway.write_native(
                gw_dir,
                gateway.native_values(
                    bind=self.ui.bind,
                    https_port=self.ui.https_port,
                    http_port=self.ui.http_port,
                    nodered=f"{NODERED_HOST}:{self.ui.nodered_port}",
                    grafana=self.ui.grafana,
                    mqtt_ws=f"{broker_host}:{b.websockets_port}",
                    cert=tls.cert,
                    key=tls.key,
                    hostname=self.ui.hostname,
                ),
            )
            gateway.check(nginx, gw_dir)
        except gateway.GatewayError as exc:
            raise UiError(str(exc)) from None
        host = "127.0.0.1" if self.ui.bind in ("0.0.0.0", "::") else self.ui.bind
        return [node_red, gateway.spec(nginx, gw_dir, (host, self.ui.https_port))]

    def accounts_file(self) -> Path:
        return accounts_dir(self.state_dir) / "users.json"

    def people(self) -> str:
        """Who can log in to the dashboard, for the summary."""
        from slowctl.stack.accounts import AccountError, Accounts

        try:
            users = Accounts(accounts_dir(self.state_dir), list(self.stack.devices)).users.values()
        except AccountError as exc:
            return f"nobody: {exc}"
        if not users:
            return "nobody yet: add people with `slowctl user add NAME --role operator` (or viewer)"
        roles = [a.role for a in users]
        counts = ", ".join(f"{roles.count(r)} {r}{'s' if roles.count(r) > 1 else ''}" for r in sorted(set(roles)))
        return f"{counts} (`slowctl user list`)"

    def summary(self) -> list[str]:
        if not self.active:
            return [f"control UI       {self.reason}"]
        base = f"https://{self.ui.hostname}:{self.ui.https_port}"
        creds = self.state_dir / "credentials.json"
        return [
            f"control UI       {base}/dashboard/  editor {base}/nodered/  MQTT over websockets {base.replace('https', 'wss')}/mqtt",
            f"                 CA certificate {self.tls.ca_cert if self.tls else '?'} (http://{self.ui.hostname}:{self.ui.http_port} redirects)",
            f"                 dashboard logins: people, each their own: {self.people()}",
            f"                 editor user 'admin', password under the key 'nodered-admin' in {creds}",
        ]
