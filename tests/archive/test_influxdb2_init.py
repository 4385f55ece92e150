"""`slowctl influx-init` against a real InfluxDB 2: setup, the InfluxQL mapping, scoped tokens."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from .influx2 import Influx2

ENV = {
    "INFLUXDB_ORG": "lab",
    "INFLUXDB_BUCKET": "slowctl",
    "INFLUXDB_RETENTION": "8760h",
    "INFLUXDB_ADMIN_USER": "slowctl-admin",
    "INFLUXDB_ADMIN_PASSWORD": "a-long-random-test-password-0123456789",
    "INFLUXDB_TOKEN": "test-admin-token-0123456789abcdef0123456789abcdef",
}


@pytest.fixture(scope="module")
def influx(tmp_path_factory):
    server = Influx2(tmp_path_factory.mktemp("influx2")).start()
    yield server
    server.stop()


def influx_init(influx, token_dir, **env):
    full = {**os.environ, **ENV, **env}
    cmd = [sys.executable, "-m", "slowctl", "influx-init", "--url", influx.url, "--token-dir", str(token_dir)]
    return subprocess.run([*cmd, "--wait", "5"], env=full, capture_output=True, text=True, timeout=60)


def http(method, url, token, data=None, content_type="text/plain"):
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Token {token}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def write(influx, token, line):
    q = urllib.parse.urlencode({"org": "lab", "bucket": "slowctl", "precision": "ms"})
    return http("POST", f"{influx.url}/api/v2/write?{q}", token, line.encode())


def influxql(influx, token, query):
    q = urllib.parse.urlencode({"db": "slowctl", "q": query})
    return http("GET", f"{influx.url}/query?{q}", token)


@pytest.fixture(scope="module")
def tokens(influx, tmp_path_factory):
    token_dir = tmp_path_factory.mktemp("tokens")
    r = influx_init(influx, token_dir)
    assert r.returncode == 0, r.stderr
    assert "set up: org lab, bucket slowctl" in r.stdout and "InfluxQL mapping" in r.stdout, r.stdout
    return token_dir, {name: (token_dir / name / "token").read_text() for name in ("telegraf", "grafana")}


def test_telegraf_writes_and_cannot_read(influx, tokens):
    _, t = tokens
    now = int(time.time() * 1000)
    assert write(influx, t["telegraf"], f"supply,device=hv,channel=0 vmon=12.5 {now}")[0] == 204
    query = 'SELECT last("vmon") FROM "supply"'
    wait_for(lambda: "12.5" in influxql(influx, t["grafana"], query)[1])  # there, and mapped for InfluxQL
    status, body = influxql(influx, t["telegraf"], query)
    assert "12.5" not in body and (status in (401, 403) or '"error"' in body), (status, body)
    flux = b'from(bucket: "slowctl") |> range(start: -1h)'
    status, body = http("POST", f"{influx.url}/api/v2/query?org=lab", t["telegraf"], flux, "application/vnd.flux")
    assert status in (401, 403, 404) and "12.5" not in body, (status, body)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_grafana_reads_through_influxql_and_cannot_write(influx, tokens):
    _, t = tokens
    now = int(time.time() * 1000)
    assert write(influx, t["telegraf"], f"environment,device=climate,channel=0 humidity=41.5 {now}")[0] == 204
    deadline = time.monotonic() + 10
    while True:  # the write is visible to queries within moments
        status, body = influxql(influx, t["grafana"], 'SELECT last("humidity") FROM "environment"')
        if "41.5" in body or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200 and "41.5" in body, body
    assert write(influx, t["grafana"], f"supply,device=hv,channel=0 vmon=1 {now}")[0] in (401, 403)


def test_the_admin_token_is_in_neither_file(tokens):
    token_dir, t = tokens
    assert ENV["INFLUXDB_TOKEN"] not in t.values() and t["telegraf"] != t["grafana"]
    assert {p.name for p in token_dir.iterdir()} == {"telegraf", "grafana"}  # one directory (compose: volume) each
    assert {p.name for p in (token_dir / "telegraf").iterdir()} == {"token", "id"}


def test_a_second_run_changes_nothing(influx, tokens):
    token_dir, t = tokens
    r = influx_init(influx, token_dir)
    assert r.returncode == 0 and "nothing to do" in r.stdout, (r.stdout, r.stderr)
    assert {name: (token_dir / name / "token").read_text() for name in t} == t


def test_a_lost_token_file_gets_a_new_token(influx, tokens, tmp_path):
    r = influx_init(influx, tmp_path)
    assert r.returncode == 0 and f"token {tmp_path}/telegraf/token" in r.stdout, r.stdout
    assert (tmp_path / "telegraf" / "token").read_text() not in tokens[1].values()
    assert "1 earlier one(s) deleted" in r.stdout, "the replaced token must stop working"
    now = int(time.time() * 1000)
    assert write(influx, tokens[1]["telegraf"], f"supply,device=hv,channel=1 vmon=1 {now}")[0] == 401


def test_a_deactivated_token_is_replaced(influx, tmp_path):
    assert influx_init(influx, tmp_path).returncode == 0
    auth_id = (tmp_path / "grafana" / "id").read_text()
    admin = ENV["INFLUXDB_TOKEN"]
    url = f"{influx.url}/api/v2/authorizations/{auth_id}"
    assert http("PATCH", url, admin, b'{"status": "inactive"}', "application/json")[0] == 200
    r = influx_init(influx, tmp_path)
    assert r.returncode == 0 and f"token {tmp_path}/grafana/token" in r.stdout, r.stdout
    assert (tmp_path / "grafana" / "id").read_text() != auth_id


def test_a_changed_retention_is_said_not_done(influx, tokens):
    token_dir, _ = tokens
    r = influx_init(influx, token_dir, INFLUXDB_RETENTION="30d")
    assert (
        r.returncode == 0
        and "WARNING: bucket slowctl keeps data 31536000 s, INFLUXDB_RETENTION says 2592000 s" in r.stdout
    )


@pytest.mark.parametrize(
    "env, error",
    [
        ({"INFLUXDB_TOKEN": "wrong-token"}, "HTTP 401"),
        ({"INFLUXDB_RETENTION": "a year"}, "INFLUXDB_RETENTION: 'a year' is not 0 or a duration"),
        ({"INFLUXDB_ORG": ""}, "not set: INFLUXDB_ORG (run slowctl init)"),
        ({"INFLUXDB_BUCKET": "other"}, "no bucket 'other' in org 'lab' (INFLUXDB_BUCKET)"),
    ],
)
def test_bad_settings_are_named(influx, tokens, tmp_path, env, error):
    r = influx_init(influx, tmp_path, **env)
    assert r.returncode == 1 and error in r.stderr and "Traceback" not in r.stderr, r.stderr
