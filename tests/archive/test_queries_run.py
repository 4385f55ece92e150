"""Every dashboard and alert query runs on the real InfluxDB 2 that the real Telegraf filled from a dummy stack, with
Grafana's read-only token, and returns data."""

from __future__ import annotations

import pytest
import yaml

from harness import DUMMY_CONFIG

from .grafana_queries import (
    annotation_queries,
    expand,
    panel_queries,
    resolve_variables,
    rule_queries,
    variable_queries,
)
from .influx2 import series, tag_values

pytestmark = pytest.mark.stack

DEVICES = set(yaml.safe_load(DUMMY_CONFIG.read_text())["devices"])  # the example bench


def test_every_contract_topic_kind_was_archived(archive):
    kinds = {t.split("/")[2] for t in archive.topics}
    assert kinds == {"metrics", "availability", "health"}
    assert {t.split("/")[1] for t in archive.topics if not t.endswith("/availability")} == DEVICES
    # the interlock process (interlocks and alarm handler) and the procedure runner are archived by their availability
    services = DEVICES | {"interlock", "procedures"}
    assert {t.split("/")[1] for t in archive.topics if t.endswith("/availability")} == services
    for measurement in ("supply", "environment", "chiller", "event", "availability", "service_health"):
        assert series(archive.influx.query(f'SELECT count(*) FROM "{measurement}"', archive.db)), measurement


def test_field_types_are_those_of_the_data_model(archive):
    """docs/data-model.md lists these types; a field that changed type would be refused by InfluxDB."""
    body = archive.influx.query("SHOW FIELD KEYS", archive.db)
    types = {(s["name"], k): t for s in series(body) for k, t in s["values"]}
    expected = {
        ("supply", "on"): "boolean",
        ("supply", "tripped"): "boolean",
        ("supply", "state"): "string",
        ("supply", "vset"): "float",
        ("supply", "vmon"): "float",
        ("supply", "iset"): "float",
        ("supply", "imon"): "float",
        ("supply", "rampup"): "float",
        ("supply", "rampdown"): "float",
        ("environment", "temperature"): "float",
        ("environment", "humidity"): "float",
        ("environment", "dewpoint"): "float",
        ("chiller", "on"): "boolean",
        ("chiller", "tset"): "float",
        ("chiller", "temperature"): "float",
        ("chiller", "status_code"): "float",
        ("chiller", "state"): "string",
        ("availability", "status"): "string",
        ("availability", "online"): "integer",
        ("service_health", "uptime"): "float",
        ("service_health", "restarts"): "integer",
        ("service_health", "poll_cycles"): "integer",
        ("service_health", "errors"): "integer",
        ("service_health", "consecutive_errors"): "integer",
        ("service_health", "last_poll_duration"): "float",
        ("service_health", "connected"): "boolean",
        ("event", "message"): "string",
        ("event", "cause"): "string",
        ("event", "before"): "string",
        ("event", "after"): "string",
    }
    assert types == expected
    tags = archive.influx.query("SHOW TAG KEYS", archive.db)
    assert {s["name"]: sorted(v[0] for v in s["values"]) for s in series(tags)} == {
        "supply": ["channel", "device", "kind", "name"],
        "environment": ["channel", "device", "name"],
        "chiller": ["channel", "device", "name"],
        "availability": ["device"],
        "service_health": ["device"],
        "event": ["channel", "device", "kind", "severity"],
    }


@pytest.mark.parametrize("q", list(variable_queries()), ids=lambda q: q.where)
def test_template_variables_list_devices_and_channels(archive, q):
    run = lambda text: tag_values(archive.influx, archive.db, text)  # noqa: E731
    values = resolve_variables(q.variables, run, archive.from_ms, archive.to_ms)[q.variable]
    assert values, q.where
    if q.variable == "device":
        assert set(values) <= DEVICES


@pytest.mark.parametrize("q", list(panel_queries()), ids=lambda q: q.where)
def test_every_panel_query_returns_data(archive, q):
    run = lambda text: tag_values(archive.influx, archive.db, text)  # noqa: E731
    values = resolve_variables(q.variables, run, archive.from_ms, archive.to_ms)
    text = expand(q.text, archive.from_ms, archive.to_ms, "5s", values)
    result = series(archive.influx.query(text, archive.db, method="POST"))
    assert result, f"no series for {q.where}: {text}"
    assert any(v is not None for s in result for row in s["values"] for v in row[1:]), text


@pytest.mark.parametrize("q", list(annotation_queries()), ids=lambda q: q.where)
def test_every_annotation_query_finds_events_with_their_text(archive, q):
    """Commands and events on the device dashboards: each annotation finds events with a message, a kind and,
    for commands, who sent them."""
    run = lambda text: tag_values(archive.influx, archive.db, text)  # noqa: E731
    values = resolve_variables(q.variables, run, archive.from_ms, archive.to_ms)
    text = expand(q.text, archive.from_ms, archive.to_ms, "5s", values)
    result = series(archive.influx.query(text, archive.db, method="POST"))
    assert result, f"no events for {q.where}: {text}"
    columns = result[0]["columns"]
    rows = [dict(zip(columns, row, strict=True)) for s in result for row in s["values"]]
    assert all(r["message"] and r["kind"] for r in rows), rows[:3]
    if "Commands" in q.where:
        assert all(r["kind"].startswith("command_") and r["cause"] for r in rows), rows[:3]


@pytest.mark.parametrize("q", list(rule_queries()), ids=lambda q: q.where)
def test_every_alert_query_returns_data(archive, q):
    # the rule's own relative range, ending now; the data is from the last seconds
    assert q.relative_s >= 60
    text = expand(q.text, archive.to_ms - q.relative_s * 1000, archive.to_ms)
    result = series(archive.influx.query(text, archive.db, method="POST"))
    assert result, f"no series for {q.where}: {text}"
    # alert expressions need numbers: a boolean or string column would fail to evaluate
    for s in result:
        for row in s["values"]:
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row[1:]), (text, row)


def test_alert_queries_find_what_they_are_meant_to_find(archive):
    """The trips of hv channel 2 and lv channel 1 are what 'Channel tripped' reports; every service is online."""
    rules = {q.where.split(" / ")[0]: q for q in rule_queries()}

    def run(where: str) -> list[dict]:
        q = rules[where]
        return series(
            archive.influx.query(expand(q.text, archive.to_ms - q.relative_s * 1000, archive.to_ms), archive.db)
        )

    tripped = {(s["tags"]["device"], s["tags"]["channel"]) for s in run("alert Channel tripped")}
    assert tripped == {("hv", "2"), ("lv", "1")}
    online = {s["tags"]["device"]: s["values"][-1][1] for s in run("alert Device offline")}
    services = DEVICES | {"interlock", "procedures"}
    assert online == dict.fromkeys(services, 1), "'Device offline' covers the interlock process and the runner"
    stale = {s["tags"]["device"]: s["values"][-1][1] for s in run("alert Stale data")}
    assert set(stale) == DEVICES and all(v > 0 for v in stale.values()), stale
    margin = run("alert Dew-point margin low")
    assert {s["tags"]["name"] for s in margin} == {"box", "room"}
    assert all(0 < s["values"][-1][1] < 40 for s in margin)
