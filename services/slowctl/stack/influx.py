"""InfluxDB 2 for the archive, initialised through its HTTP API: the one init path of the compose stack
(the `influxdb-init` job) and of the tests.

- first setup: admin user, the org, the bucket with its retention, the admin token from `.env`;
- the DBRP mapping database `<bucket>` / retention policy `autogen` (default) -> the bucket, so that
  Grafana's InfluxQL queries (db=<bucket>) read it;
- scoped tokens, one directory each in the token directory (`telegraf/token`, `grafana/token`, with the
  authorization's `id` beside): `telegraf` may only write the bucket, `grafana` may only read it. InfluxDB
  makes up token values itself, so they are handed over as files (compose: one volume per service); the
  admin token stays out of both services.

Idempotent: what exists is kept; a token whose authorization is gone, inactive or no longer scoped as
above is replaced, and the replaced ones are deleted. The retention of an existing bucket is not changed
(a warning says when it differs).
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

SCOPES = {  # token directory name -> what its token may do with the bucket
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
    try:
        return json.loads(text) if text else None
    except ValueError:
        raise InfluxError(f"{method} {urllib.parse.urlsplit(url).path}: not JSON: {text[:120]!r}") from None


def init(setup: InfluxSetup, token_dir: Path) -> list[str]:
    """Bring InfluxDB to the state above; returns what was done, one line each."""
    done = []
    api = f"{setup.url}/api/v2"
    seconds = retention_seconds(setup.retention)
    if (request(f"{api}/setup", None) or {}).get("allowed"):
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
    retention = [r.get("everySeconds", 0) for r in buckets[0].get("retentionRules", [])] or [0]
    if retention[0] != seconds:
        done.append(
            f"WARNING: bucket {setup.bucket} keeps data {retention[0]} s, INFLUXDB_RETENTION says {seconds} s: "
            "not changed here (influx bucket update --retention, docs/data-model.md)"
        )
    for name, actions in SCOPES.items():
        done += _scoped_token(api, token, org_id, bucket_id, setup.bucket, name, actions, token_dir / name)
    return done


def _scoped_token(
    api: str, token: str, org_id: str, bucket_id: str, bucket: str, name: str, actions: tuple[str, ...], where: Path
) -> list[str]:
    """`<where>/token` (the value) and `<where>/id` (its authorization): kept while InfluxDB holds that
    authorization active with exactly these permissions, else replaced and the old ones deleted."""
    wanted = sorted((a, bucket_id) for a in actions)
    token_file, id_file = where / "token", where / "id"
    if token_file.exists() and id_file.exists():
        auth = request(f"{api}/authorizations/{id_file.read_text().strip()}", token, missing=None)
        held = sorted((p["action"], p["resource"].get("id")) for p in (auth or {}).get("permissions", []))
        if auth and auth.get("status") == "active" and held == wanted:
            return []
    description = f"slowctl {name}: {'/'.join(actions)} bucket {bucket}"
    permissions = [{"action": a, "resource": {"type": "buckets", "id": bucket_id, "orgID": org_id}} for a in actions]
    created = request(
        f"{api}/authorizations",
        token,
        "POST",
        {"orgID": org_id, "description": description, "permissions": permissions},
    )
    where.mkdir(parents=True, exist_ok=True, mode=0o700)  # natively; in compose, the volume is the directory
    for path, value in ((token_file, created["token"]), (id_file, created["id"])):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value)  # no newline: Grafana's $__file{} reads the file as it is
        tmp.chmod(0o644)  # for the telegraf or grafana container user: the volume of each is its own
        tmp.replace(path)
    old = [
        a["id"]
        for a in request(f"{api}/authorizations?orgID={org_id}", token)["authorizations"]
        if a.get("description", "").startswith(f"slowctl {name}:") and a["id"] != created["id"]
    ]
    for auth_id in old:  # a replaced token must stop working
        request(f"{api}/authorizations/{auth_id}", token, "DELETE")
    revoked = f"; {len(old)} earlier one(s) deleted" if old else ""
    return [f"token {token_file}: {'/'.join(actions)} bucket {bucket}{revoked}"]
