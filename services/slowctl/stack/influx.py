"""InfluxDB 2 for the archive, initialised through its HTTP API: the one init path of the compose stack
(the `influxdb-init` job) and of the tests.

- first setup: admin user, the org, the bucket with its retention, the admin token from `.env`;
- the DBRP mapping database `<bucket>` / retention policy `autogen` (default) -> the bucket, so that
  Grafana's InfluxQL queries (db=<bucket>) read it;
- scoped tokens, one file each in the token directory: `telegraf` may only write the bucket, `grafana`
  may only read it. InfluxDB makes up token values itself, so they are handed over as files; the admin
  token stays out of both services.

Idempotent: what exists is kept (a token file is kept while InfluxDB still knows its token).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCOPES = {  # token file name -> what its token may do with the bucket
    "telegraf": ("write",),
    "grafana": ("read",),
}


class InfluxError(Exception):
    pass


@dataclass(frozen=True)
class InfluxSetup:
    url: str
    org: str
    bucket: str
    retention: str  # "0" (forever) or a duration: 8760h, 30d, 90m
    admin_user: str
    admin_password: str
    admin_token: str

    @classmethod
    def from_env(cls, url: str, env: dict[str, str] | None = None) -> InfluxSetup:
        """From the `.env` variables slowctl init writes (INFLUXDB_*); a missing one is named."""
        env = dict(os.environ if env is None else env)
        keys = {
            "org": "INFLUXDB_ORG",
            "bucket": "INFLUXDB_BUCKET",
            "retention": "INFLUXDB_RETENTION",
            "admin_user": "INFLUXDB_ADMIN_USER",
            "admin_password": "INFLUXDB_ADMIN_PASSWORD",
            "admin_token": "INFLUXDB_TOKEN",
        }
        missing = [var for var in keys.values() if not env.get(var)]
        if missing:
            raise InfluxError(f"not set: {', '.join(missing)} (run slowctl init)")
        return cls(url.rstrip("/"), **{k: env[v] for k, v in keys.items()})


def retention_seconds(text: str) -> int:
    """'0' -> 0 (forever); '8760h', '30d', '90m', '3600s' -> seconds."""
    m = re.fullmatch(r"(\d+)([smhdw]?)", text.strip())
    if not m or (m.group(2) == "" and m.group(1) != "0"):
        raise InfluxError(f"INFLUXDB_RETENTION: {text!r} is not 0 or a duration such as 8760h or 30d")
    return int(m.group(1)) * {"": 0, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def request(
    url: str, token: str | None, method: str = "GET", body: Any = None, timeout: float = 10, missing: Any = ...
) -> Any:
    """One API call; its JSON answer. `missing`: what a 404 returns instead of an error."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and missing is not ...:
            return missing
        detail = exc.read().decode(errors="replace")[:300]
        raise InfluxError(f"{method} {urllib.parse.urlsplit(url).path}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InfluxError(f"{method} {url}: {exc}") from None
    return json.loads(text) if text else None


def init(setup: InfluxSetup, token_dir: Path) -> list[str]:
    """Bring InfluxDB to the state above; returns what was done, one line each."""
    done = []
    api = f"{setup.url}/api/v2"
    seconds = retention_seconds(setup.retention)
    if request(f"{api}/setup", None)["allowed"]:
        request(
            f"{api}/setup",
            None,
            "POST",
            {
                "username": setup.admin_user,
                "password": setup.admin_password,
                "org": setup.org,
                "bucket": setup.bucket,
                "retentionPeriodSeconds": seconds,
                "token": setup.admin_token,
            },
        )
        done.append(f"set up: org {setup.org}, bucket {setup.bucket} (retention {setup.retention}), admin user")
    token = setup.admin_token
    orgs = request(f"{api}/orgs?org={urllib.parse.quote(setup.org)}", token, missing={}).get("orgs", [])
    if not orgs:
        raise InfluxError(f"no org {setup.org!r} in InfluxDB (INFLUXDB_ORG)")
    org_id = orgs[0]["id"]
    found = request(f"{api}/buckets?orgID={org_id}&name={urllib.parse.quote(setup.bucket)}", token, missing={})
    buckets = found.get("buckets", [])
    if not buckets:
        raise InfluxError(f"no bucket {setup.bucket!r} in org {setup.org!r} (INFLUXDB_BUCKET)")
    bucket_id = buckets[0]["id"]
    dbrps = request(f"{api}/dbrps?orgID={org_id}&db={urllib.parse.quote(setup.bucket)}", token)["content"]
    explicit = [d for d in dbrps if not d.get("virtual")]  # InfluxDB answers with a virtual one until then
    if not any(d["bucketID"] == bucket_id and d["retention_policy"] == "autogen" for d in explicit):
        body = {"orgID": org_id, "bucketID": bucket_id, "database": setup.bucket, "retention_policy": "autogen"}
        request(f"{api}/dbrps", token, "POST", {**body, "default": True})
        done.append(f"InfluxQL mapping: database {setup.bucket}, retention policy autogen -> bucket {setup.bucket}")
    known = {a["token"]: a for a in request(f"{api}/authorizations?orgID={org_id}", token)["authorizations"]}
    token_dir.mkdir(parents=True, exist_ok=True)
    for name, actions in SCOPES.items():
        path = token_dir / name
        if path.exists() and path.read_text().strip() in known:
            continue
        permissions = [
            {"action": action, "resource": {"type": "buckets", "id": bucket_id, "orgID": org_id}} for action in actions
        ]
        description = f"slowctl {name}: {'/'.join(actions)} bucket {setup.bucket}"
        created = request(
            f"{api}/authorizations",
            token,
            "POST",
            {"orgID": org_id, "description": description, "permissions": permissions},
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_text(created["token"])  # no newline: Grafana's $__file{} takes the bytes as they are
        tmp.chmod(0o644)  # read by the telegraf or grafana container user; the volume is the boundary
        tmp.replace(path)
        done.append(f"token {path}: {'/'.join(actions)} bucket {setup.bucket}")
    return done
