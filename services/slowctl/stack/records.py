"""The native stack's record: FerretDB (a MongoDB-wire server on SQLite) and the recorder, when installed.

FerretDB is found as $SLOWCTL_FERRETDB, `ferretdb` on the PATH, or the build of scripts/build-test-tools.sh
(~/.cache/slowctl/tools/ferretdb-*/bin/ferretdb; `scripts/install.sh` builds it where Go is installed).
Without it the stack runs without a recorder and says so; `slowctl log` then says where to look instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from slowctl import running
from slowctl.config import StackConfig
from slowctl.records.docstore import DocstoreError, MongoSettings
from slowctl.stack.supervisor import ProcessSpec

HOST = "127.0.0.1"
DATABASE = USER = "slowctl"
TOOLS = Path(os.environ.get("SLOWCTL_TOOLS_DIR") or Path.home() / ".cache" / "slowctl" / "tools")


def record_settings(state_dir: Path | None) -> MongoSettings:
    """Where the record is: SLOWCTL_MONGO_* (compose, or any MongoDB); else the FerretDB of the running native
    stack (in `state_dir`, else found: slowctl.running); DocstoreError saying why there is none."""
    import json

    if os.environ.get("SLOWCTL_MONGO_USER"):
        return MongoSettings.from_env()
    try:
        state_dir = running.find(state_dir)
    except running.NotRunning as exc:
        raise DocstoreError(
            f"{exc}; and no SLOWCTL_MONGO_* variables (compose: set them as for `slowctl db-check`)"
        ) from None
    records = json.loads((state_dir / "stack.json").read_text()).get("records", {})
    if "off" in records:
        raise DocstoreError(
            f"this native stack keeps no record: {records['off']} ({state_dir / 'logs'}; "
            "the compose stack records into MongoDB)"
        )
    password = Path(records["password_file"]).read_text().strip()
    return MongoSettings(HOST, int(records["mongo_port"]), DATABASE, USER, password)


def find_ferretdb() -> str | None:
    explicit = os.environ.get("SLOWCTL_FERRETDB")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("ferretdb")
    if found:
        return found
    built = sorted(TOOLS.glob("ferretdb-*/bin/ferretdb"))
    return str(built[-1]) if built else None


class NativeRecords:
    def __init__(self, stack: StackConfig, state_dir: Path) -> None:
        self.stack = stack
        self.dir = state_dir / "records"
        self.state_dir = state_dir
        self.ferretdb = find_ferretdb() if stack.records.enabled else None
        self.active = self.ferretdb is not None
        self.reason = (
            "records: off in the config (records.enabled: false)"
            if not stack.records.enabled
            else "records: no MongoDB-wire server installed (FerretDB: scripts/install.sh builds it where Go is); "
            "no recorder: commands and events are only in the services' logs"
        )

    def settings(self) -> MongoSettings:
        return MongoSettings(HOST, self.stack.records.mongo_port, DATABASE, USER, self._password())

    def _password(self) -> str:
        path = self.dir / "mongo-password"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def mongo_env(self) -> dict[str, str]:
        """SLOWCTL_MONGO_* for a process that writes the record (none when there is no record)."""
        if not self.active:
            return {}
        m = self.settings()
        return {
            "SLOWCTL_MONGO_HOST": m.host,
            "SLOWCTL_MONGO_PORT": str(m.port),
            "SLOWCTL_MONGO_DATABASE": m.database,
            "SLOWCTL_MONGO_USER": m.user,
            "SLOWCTL_MONGO_PASSWORD": m.password,
        }

    def specs(self, resolved_config: Path, recorder_password: str, mqtt_host: str, mqtt_port: int) -> list[ProcessSpec]:
        """FerretDB (tier 0, beside the broker) and the recorder (tier 2, with the services)."""
        if not self.active or self.ferretdb is None:
            return []
        m = self.settings()
        data = self.dir / "ferretdb"
        data.mkdir(parents=True, exist_ok=True)
        ferretdb = ProcessSpec(
            "ferretdb",
            [
                self.ferretdb,
                "--handler=sqlite",
                f"--sqlite-url=file:{data}/",
                f"--state-dir={self.dir}",
                f"--listen-addr={HOST}:{m.port}",
                "--debug-addr=-",
                "--telemetry=disable",
                "--log-level=warn",
                "--test-enable-new-auth",
                f"--setup-database={m.database}",
                f"--setup-username={m.user}",
            ],  # fmt: skip
            env={"FERRETDB_SETUP_PASSWORD": m.password},  # not on the command line: `ps` shows that to all
            ready_port=(HOST, m.port),
            tier=0,
        )
        recorder = ProcessSpec(
            "recorder",
            [sys.executable, "-m", "slowctl", "recorder", "--config", str(resolved_config)],
            env={
                "SLOWCTL_MQTT_HOST": mqtt_host,
                "SLOWCTL_MQTT_PORT": str(mqtt_port),
                "SLOWCTL_MQTT_USERNAME": "recorder",
                "SLOWCTL_MQTT_PASSWORD": recorder_password,
                **self.mongo_env(),
                "SLOWCTL_STATE_DIR": str(self.state_dir),
            },
            tier=2,
        )
        return [ferretdb, recorder]

    def summary(self) -> list[str]:
        if not self.active:
            return [self.reason]
        return [
            f"records          FerretDB mongodb://{HOST}:{self.stack.records.mongo_port}/{DATABASE} "
            f"({self.dir / 'ferretdb'}), recorder: slowctl log"
        ]
