"""Smoke test of a running compose stack: Grafana, its data source and provisioning, data in the bucket.

Runs only when told where the stack is (the development overlay publishes both on 127.0.0.1):

    SLOWCTL_GRAFANA_URL=http://127.0.0.1:3000/grafana     # or https://<host>/grafana through the gateway
    SLOWCTL_INFLUXDB_URL=http://127.0.0.1:8086
    python3 -m pytest tests/archive/test_compose_smoke.py

Credentials (GRAFANA_ADMIN_*, INFLUXDB_TOKEN, INFLUXDB_ORG, INFLUXDB_BUCKET) come from the
environment, else from the stack's .env (SLOWCTL_ENV_FILE, default ./.env). An https URL is
verified against SLOWCTL_CA_FILE, default secrets/tls/ca.crt when it exists.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from .grafana_queries import DATASOURCE_UID, alert_rules, dashboards, rule_queries

REPO = Path(__file__).resolve().parents[2]
GRAFANA_URL = os.environ.get("SLOWCTL_GRAFANA_URL", "").rstrip("/")
INFLUXDB_URL = os.environ.get("SLOWCTL_INFLUXDB_URL", "").rstrip("/")

needs_grafana = pytest.mark.skipif(
    not GRAFANA_URL,
    reason="no compose stack: set SLOWCTL_GRAFANA_URL (e.g. http://127.0.0.1:3000/grafana with docker-compose.dev.yml)",
)
needs_influxdb = pytest.mark.skipif(
    not INFLUXDB_URL,
    reason="no compose stack: set SLOWCTL_INFLUXDB_URL (e.g. http://127.0.0.1:8086 with docker-compose.dev.yml)",
)


def setting(name: str) -> str:
    if os.environ.get(name):
        return os.environ[name]
    env_file = Path(os.environ.get("SLOWCTL_ENV_FILE", REPO / ".env"))
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == name:
                return value.strip().strip("'\"")
    pytest.fail(f"{name} is neither in the environment nor in {env_file}")


def http(method: str, url: str, headers: dict | None = None, body: dict | None = None) -> tuple[int, object]:
    ca = os.environ.get("SLOWCTL_CA_FILE") or (REPO / "secrets" / "tls" / "ca.crt")
    context = ssl.create_default_context(cafile=str(ca)) if url.startswith("https") and Path(ca).exists() else None
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=20, context=context) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def admin() -> dict:
    token = base64.b64encode(f"{setting('GRAFANA_ADMIN_USER')}:{setting('GRAFANA_ADMIN_PASSWORD')}".encode())
    return {"Authorization": "Basic " + token.decode()}


def influx_auth() -> dict:
    return {"Authorization": "Token " + setting("INFLUXDB_TOKEN")}


# --- Grafana -------------------------------------------------------------------------


@needs_grafana
def test_grafana_is_healthy_and_refuses_anonymous_users():
    status, body = http("GET", f"{GRAFANA_URL}/api/health")
    assert status == 200 and body["database"] == "ok", body
    status, _ = http("GET", f"{GRAFANA_URL}/api/search")
    assert status == 401
    default = ":".join(("admin", "admin")).encode()  # Grafana's out-of-the-box login
    status, _ = http(
        "GET", f"{GRAFANA_URL}/api/search", {"Authorization": "Basic " + base64.b64encode(default).decode()}
    )
    assert status == 401, "Grafana's default admin login works"


@needs_grafana
def test_datasource_health_through_grafana():
    status, body = http("GET", f"{GRAFANA_URL}/api/datasources/uid/{DATASOURCE_UID}/health", admin())
    assert status == 200 and body["status"] == "OK", body


@needs_grafana
def test_dashboards_and_alert_rules_are_provisioned():
    status, found = http("GET", f"{GRAFANA_URL}/api/search?tag=slowctl&type=dash-db", admin())
    assert status == 200
    assert {d["uid"] for d in dashboards().values()} <= {d["uid"] for d in found}
    status, rules = http("GET", f"{GRAFANA_URL}/api/v1/provisioning/alert-rules", admin())
    assert status == 200
    assert {r["uid"] for r in alert_rules()} <= {r["uid"] for r in rules}


@needs_grafana
@pytest.mark.parametrize("q", list(rule_queries()), ids=lambda q: q.where)
def test_alert_queries_run_through_grafana(q):
    """Grafana's own macro expansion against InfluxDB 2 through the DBRP mapping."""
    body = {
        "from": f"now-{q.relative_s}s",
        "to": "now",
        "queries": [
            {
                "refId": "A",
                "datasource": {"uid": DATASOURCE_UID},
                "rawQuery": True,
                "query": q.text,
                "resultFormat": "time_series",
                "intervalMs": 1000,
                "maxDataPoints": 1000,
            }
        ],
    }
    status, answer = http("POST", f"{GRAFANA_URL}/api/ds/query", admin(), body)
    assert status == 200 and "error" not in answer["results"]["A"], answer
    if "availability" in q.text or "service_health" in q.text:
        assert answer["results"]["A"]["frames"], f"no data: is Telegraf writing? {q.text}"


# --- InfluxDB 2 ------------------------------------------------------------------------


@needs_influxdb
def test_dbrp_mapping_of_the_bucket():
    org, bucket = setting("INFLUXDB_ORG"), setting("INFLUXDB_BUCKET")
    query = urllib.parse.urlencode({"org": org, "db": bucket})
    status, body = http("GET", f"{INFLUXDB_URL}/api/v2/dbrps?{query}", influx_auth())
    assert status == 200, body
    physical = [m for m in body["content"] if not m.get("virtual")]
    assert [(m["database"], m["retention_policy"], m["default"]) for m in physical] == [(bucket, "autogen", True)]


@needs_influxdb
@pytest.mark.parametrize("measurement", ["supply", "environment", "chiller", "availability", "service_health"])
def test_telegraf_writes_the_bucket(measurement):
    """The dummy (or real) bench publishes; Telegraf's rows are in the bucket, readable with InfluxQL."""
    if measurement == "availability":
        where = ""  # written only when a service (re)connects
    else:
        where = " WHERE time > now() - 10m"
    q = urllib.parse.urlencode({"db": setting("INFLUXDB_BUCKET"), "q": f'SELECT count(*) FROM "{measurement}"{where}'})
    status, body = http("GET", f"{INFLUXDB_URL}/query?{q}", influx_auth())
    assert status == 200, body
    assert body["results"][0].get("series"), f"no {measurement} rows in the bucket: {body}"
