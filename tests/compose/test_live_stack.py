"""The compose stack for real: `docker compose up` of production + dummy, then use it as a lab would.

Needs a Docker engine, which the CI machines do not have: opt in with
SLOWCTL_LIVE_COMPOSE=1 on a machine with one (docs/verification.md). It runs
as its own compose project (`slowctl-test`) on free ports and removes it,
volumes included, at the end; the lab's own stack is not touched.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request

import pytest
from tests.harness import REPO, Probe, free_port, wait_until

from slowctl.stack.init import read_env

PROJECT = "slowctl-test"


def _docker_ready() -> str | None:
    if os.environ.get("SLOWCTL_LIVE_COMPOSE") != "1":
        return "set SLOWCTL_LIVE_COMPOSE=1 to run the compose stack (needs a Docker engine; takes minutes)"
    if not shutil.which("docker"):
        return "docker is not installed"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"no Docker engine: {r.stderr.strip()[:200]}"
    return None


pytestmark = pytest.mark.skipif(_docker_ready() is not None, reason=str(_docker_ready()))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    ports = {
        "SLOWCTL_HTTPS_PORT": str(free_port()),
        "SLOWCTL_HTTP_PORT": str(free_port()),
        "SLOWCTL_MQTTS_PORT": str(free_port()),
    }
    if not (REPO / ".env").exists():
        subprocess.run(["slowctl", "init", "--hostname", "localhost"], cwd=REPO, check=True)
    env = {**os.environ, **ports}
    compose = ["docker", "compose", "-p", PROJECT, "-f", "docker-compose.yml", "-f", "docker-compose.dummy.yml"]
    subprocess.run(
        [*compose, "up", "-d", "--build", "--wait", "--wait-timeout", "300"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=1800,
    )
    try:
        yield {"compose": compose, "env": env, "secrets": read_env(REPO / ".env"), **ports}
    finally:
        subprocess.run([*compose, "down", "-v", "--remove-orphans"], cwd=REPO, env=env, timeout=300)


def https(live, path: str, auth: tuple[str, str] | None = None) -> tuple[int, dict, bytes]:
    ctx = ssl.create_default_context(cafile=str(REPO / "secrets" / "tls" / "ca.crt"))
    req = urllib.request.Request(f"https://localhost:{live['SLOWCTL_HTTPS_PORT']}{path}")
    if auth:
        import base64

        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def tls_probe(live, role: str) -> Probe:
    return Probe(
        "localhost",
        int(live["SLOWCTL_MQTTS_PORT"]),
        role,
        live["secrets"][f"MQTT_PASSWORD_{role.upper()}"],
        tls_ca=str(REPO / "secrets" / "tls" / "ca.crt"),
    )


def test_every_device_online_over_mqtt_tls(live):
    p = tls_probe(live, "viewer")
    try:
        p.subscribe("slowctl/+/availability")
        import yaml

        devices = yaml.safe_load((REPO / "config" / "bench.yaml").read_text())["devices"]
        wait_until(
            lambda: all(
                p.last.get(f"slowctl/{d}/availability") and p.last[f"slowctl/{d}/availability"].payload == b"online"
                for d in devices
            ),
            60,
            what="every device online",
        )
    finally:
        p.close()


def test_command_through_tls_gets_its_reply(live):
    p = tls_probe(live, "operator")
    try:
        p.subscribe("slowctl/hv/reply")
        p.publish("slowctl/hv/cmd", json.dumps({"action": "vset", "channel": 0, "value": 12, "id": "live-1"}))
        reply = p.wait_json("slowctl/hv/reply", lambda d: d["id"] == "live-1", timeout=10)
        assert reply["ok"] is True
    finally:
        p.close()


def test_gateway_routes_and_grafana_provisioning(live):
    s = live["secrets"]
    code, headers, _ = https(live, "/")
    assert code in (301, 302) and headers["Location"].endswith("/dashboard/")
    assert "max-age" in headers.get("Strict-Transport-Security", "")
    code, _, body = https(live, "/grafana/api/health")
    assert code == 200 and json.loads(body)["database"] == "ok"
    auth = (s["GRAFANA_ADMIN_USER"], s["GRAFANA_ADMIN_PASSWORD"])
    code, _, body = https(live, "/grafana/api/search?type=dash-db", auth)
    assert code == 200 and len(json.loads(body)) >= 5
    code, _, body = https(live, "/grafana/api/datasources", auth)
    uid = json.loads(body)[0]["uid"]
    code, _, body = https(live, f"/grafana/api/datasources/uid/{uid}/health", auth)
    assert code == 200 and json.loads(body)["status"] == "OK", body
    assert https(live, "/grafana/api/search", ("admin", "admin"))[0] == 401


def test_archive_receives_metrics(live):
    flux = 'from(bucket: "%s") |> range(start: -10m) |> filter(fn: (r) => r._measurement == "supply") |> count()'
    s = live["secrets"]

    def rows() -> int:
        r = subprocess.run(
            [*live["compose"], "exec", "-T", "influxdb", "influx", "query", "--raw", flux % s["INFLUXDB_BUCKET"]],
            cwd=REPO,
            env=live["env"],
            capture_output=True,
            text=True,
        )
        return r.stdout.count("_value")

    wait_until(rows, 90, interval=5, what="supply rows in InfluxDB")


def test_mongo_check_succeeded(live):
    r = subprocess.run(
        [*live["compose"], "ps", "-a", "--format", "json", "mongo-check"],
        cwd=REPO,
        env=live["env"],
        capture_output=True,
        text=True,
        check=True,
    )
    states = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert states and states[0]["ExitCode"] == 0, states


def test_the_recorder_writes_to_mongodb_and_a_person_is_recorded(live):
    """The records path against MongoDB itself: a person added with `slowctl user add --compose` commands,
    and `slowctl log` in the recorder's container finds it, with the person and the outcome."""
    add = subprocess.run(
        ["slowctl", "user", "add", "livetest", "--role", "operator", "--password-stdin", "--compose"],
        cwd=REPO,
        env=live["env"],
        input="a long live-test password\n",
        capture_output=True,
        text=True,
    )
    assert add.returncode == 0 and "reloaded" in add.stdout, add.stdout + add.stderr
    p = Probe("localhost", int(live["SLOWCTL_MQTTS_PORT"]), "livetest", "a long live-test password",
              tls_ca=str(REPO / "secrets" / "tls" / "ca.crt"))  # fmt: skip
    try:
        p.subscribe("slowctl/hv/reply")
        p.publish(
            "slowctl/hv/by/livetest/cmd", json.dumps({"action": "vset", "channel": 0, "value": 11, "id": "rec-1"})
        )
        assert p.wait_json("slowctl/hv/reply", lambda d: d["id"] == "rec-1", timeout=10)["by"] == "livetest"
    finally:
        p.close()

    def logged() -> list[dict]:
        r = subprocess.run(
            [*live["compose"], "exec", "-T", "recorder", "slowctl", "log", "--json", "--user", "livetest"],
            cwd=REPO,
            env=live["env"],
            capture_output=True,
            text=True,
        )
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    wait_until(lambda: any(e["what"] == "vset 11" and e["outcome"] == "ok" for e in logged()), 30)


def test_unhealthy_nothing(live):
    time.sleep(1)
    r = subprocess.run(
        [*live["compose"], "ps", "--format", "json"],
        cwd=REPO,
        env=live["env"],
        capture_output=True,
        text=True,
        check=True,
    )
    services = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    bad = [s["Service"] for s in services if s.get("Health") not in ("", "healthy")]
    assert not bad, bad
