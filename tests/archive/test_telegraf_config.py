"""telegraf/telegraf.conf, statically: subscribes exactly the contract's topics, loses nothing over a restart,
no secrets. The real Telegraf runs it in the archive tests (test_queries_run.py)."""

from __future__ import annotations

import re
import tomllib

from slowctl.device.contract import Topics

from .telegraf import CONF

ROOT = "slowctl"  # mqtt.topic_root of the stack config (the default)


def conf() -> dict:
    return tomllib.loads(CONF.read_text())


def consumers() -> list[dict]:
    return conf()["inputs"]["mqtt_consumer"]


def test_subscribes_exactly_the_contract_topics():
    any_device = Topics(ROOT, "+")
    expected = {any_device.metrics, any_device.availability, any_device.health}
    topics = [t for c in consumers() for t in c["topics"]]
    assert sorted(topics) == sorted(expected)  # each once, nothing else (no status, no cmd)


def test_data_format_per_topic():
    any_device = Topics(ROOT, "+")
    by_topic = {c["topics"][0]: c for c in consumers()}
    metrics = by_topic[any_device.metrics]
    assert metrics["data_format"] == "influx" and metrics["influx_timestamp_precision"] == "1ms"
    availability = by_topic[any_device.availability]
    assert (availability["data_format"], availability["data_type"]) == ("value", "string")
    assert availability["name_override"] == "availability"
    health = by_topic[any_device.health]
    assert health["data_format"] == "json_v2"
    assert health["json_v2"][0]["measurement_name"] == "service_health"
    assert {f["path"] for f in health["json_v2"][0]["field"]} == {
        "uptime",
        "restarts",
        "poll_cycles",
        "errors",
        "consecutive_errors",
        "last_poll_duration",
        "connected",
    }
    for c in (availability, health):
        assert c["topic_parsing"] == [{"topic": c["topics"][0], "tags": "_/device/_"}]


def test_a_restart_loses_nothing():
    """QoS 1 and a persistent session under a fixed, unique client id per subscription."""
    ids = [c["client_id"] for c in consumers()]
    assert len(set(ids)) == len(ids) and all(ids)
    for c in consumers():
        assert c["qos"] == 1 and c["persistent_session"] is True
        assert c["servers"] == ["${MQTT_SERVER:-tcp://mosquitto:1883}"]  # compose's broker unless told


def test_credentials_and_names_come_from_the_environment():
    c = conf()
    for consumer in consumers():
        assert consumer["username"] == "telegraf"
        assert consumer["password"] == "${MQTT_PASSWORD_TELEGRAF}"
    (out,) = c["outputs"]["influxdb_v2"]
    assert out["urls"] == ["${INFLUXDB_URL:-http://influxdb:8086}"]
    assert (out["token"], out["organization"], out["bucket"]) == (
        "${INFLUXDB_TOKEN}",
        "${INFLUXDB_ORG}",
        "${INFLUXDB_BUCKET}",
    )


def test_no_literal_secret_anywhere():
    text = re.sub(r"(?m)^\s*#.*$", "", CONF.read_text())
    for key in ("password", "token", "secret", "api_key"):
        for m in re.finditer(rf"^\s*\w*{key}\w*\s*=\s*(.+)$", text, re.M | re.I):
            assert re.fullmatch(r'"\$\{[A-Z0-9_]+\}"', m.group(1).strip()), m.group(0)
    # every ${VAR} without a fallback is one that .env defines (.env.example lists them), or the token
    # that compose hands over from influxdb-init's file
    env_names = set(re.findall(r"^([A-Z0-9_]+)=", (CONF.parents[1] / ".env.example").read_text(), re.M))
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= env_names


def test_health_endpoint_for_the_compose_healthcheck():
    (health,) = conf()["outputs"]["health"]
    assert health["service_address"] == "${TELEGRAF_HEALTH_ADDRESS:-http://:8080}"
