"""Grafana provisioning: data source, dashboards provider, dashboards and alert rules, statically."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from .grafana_queries import (
    ALARM_RULES,
    ALERT_RULES,
    DASHBOARDS,
    DATASOURCE_UID,
    GRAFANA,
    PROVISIONING,
    alert_rules,
    dashboards,
    panel_queries,
    rule_queries,
)


def load_builder():
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_provisioning_file_parses():
    files = sorted(PROVISIONING.rglob("*.yaml"))
    assert {f.parent.name for f in files} == {"datasources", "dashboards", "alerting"}
    for f in files:
        assert yaml.safe_load(f.read_text())["apiVersion"] == 1, f


def test_datasource_is_influxql_with_the_read_only_token_of_influx_init():
    (ds,) = yaml.safe_load((PROVISIONING / "datasources" / "influxdb.yaml").read_text())["datasources"]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "influxdb" and ds["access"] == "proxy"
    assert ds["url"] == "http://influxdb:8086"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["dbName"] == "${INFLUXDB_BUCKET}"  # the DBRP mapping's database
    assert ds["jsonData"]["httpHeaderName1"] == "Authorization"
    # the file `slowctl influx-init` writes (the compose job influxdb-init), on the volume grafana mounts
    assert ds["secureJsonData"] == {"httpHeaderValue1": "Token $__file{/var/lib/slowctl/influxdb-token/token}"}
    compose = yaml.safe_load((GRAFANA.parent / "docker-compose.yml").read_text())["services"]
    # each service mounts the volume of its own token, read-only, and no other
    for service in ("grafana", "telegraf"):
        mounts = [v for v in compose[service]["volumes"] if isinstance(v, str) and "influxdb-token" in v]
        assert mounts == [f"influxdb-token-{service}:/var/lib/slowctl/influxdb-token:ro"], mounts
        assert (
            f"influxdb-token-{service}:/var/lib/slowctl/influxdb-tokens/{service}"
            in compose["influxdb-init"]["volumes"]
        )
    assert compose["influxdb-init"]["command"][-2:] == ["--token-dir", "/var/lib/slowctl/influxdb-tokens"]
    assert "INFLUXDB_TOKEN" not in compose["grafana"]["environment"], "the admin token stays in influxdb-init"
    assert "INFLUXDB_TOKEN" not in compose["telegraf"]["environment"]
    assert not {"password", "user", "basicAuth", "token"} & (set(ds) | set(ds["jsonData"]))


def test_dashboards_provider_loads_the_dashboard_directory():
    (p,) = yaml.safe_load((PROVISIONING / "dashboards" / "slowctl.yaml").read_text())["providers"]
    assert p["type"] == "file" and p["options"]["path"] == "/etc/grafana/dashboards"
    assert p["allowUiUpdates"] is False


def test_dashboard_files_are_what_the_builder_writes():
    """grafana/dashboards/*.json are generated: run `python3 grafana/build_dashboards.py` after a change."""
    builder = load_builder()
    built = builder.build()
    assert sorted(built) == sorted(p.name for p in DASHBOARDS.glob("*.json"))
    for name, d in built.items():
        assert (DASHBOARDS / name).read_text() == builder.render(d), name


def _fields(d: dict) -> set[tuple[str, str]]:
    """(measurement, field) pairs a dashboard's queries read."""
    pairs = set()
    for p in d["panels"]:
        for t in p["targets"]:
            meas = re.search(r'FROM "(\w+)"', t["query"]).group(1)
            pairs |= {(meas, f) for f in re.findall(r'\w+\("(\w+)"', t["query"])}
    return pairs


EXPECTED = {
    "overview.json": {
        ("availability", "online"),
        ("supply", "vmon"),
        ("supply", "imon"),
        ("supply", "state"),
        ("supply", "tripped"),
        ("environment", "temperature"),
        ("environment", "dewpoint"),
        ("chiller", "temperature"),
    },
    "hv.json": {("supply", "vmon"), ("supply", "imon"), ("supply", "state"), ("supply", "tripped")},
    "lv.json": {("supply", "vmon"), ("supply", "imon"), ("supply", "vset"), ("supply", "iset")},
    "environment.json": {("environment", "temperature"), ("environment", "humidity"), ("environment", "dewpoint")},
    "service-health.json": {
        ("availability", "online"),
        ("service_health", "restarts"),
        ("service_health", "poll_cycles"),
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_dashboard_has_its_panels(name):
    d = dashboards()[name]
    assert EXPECTED[name] <= _fields(d), EXPECTED[name] - _fields(d)
    assert d["uid"].startswith("slowctl-") and "slowctl" in d["tags"]
    ids = [p["id"] for p in d["panels"]]
    assert len(set(ids)) == len(ids)
    for p in d["panels"]:
        assert p["datasource"]["uid"] == DATASOURCE_UID
        for t in p["targets"]:
            assert t["rawQuery"] is True and t["datasource"]["uid"] == DATASOURCE_UID


def test_margin_and_age_panels():
    env = dashboards()["environment.json"]
    margin = [t["query"] for p in env["panels"] for t in p["targets"] if "margin" in p["title"].lower()]
    assert margin and all('"temperature") - ' in q and '("dewpoint")' in q for q in margin)
    health = dashboards()["service-health.json"]
    ages = [p for p in health["panels"] if p["fieldConfig"]["defaults"].get("unit") == "dateTimeFromNow"]
    assert {p["title"] for p in ages} == {"Last health report", "Last reading"}
    assert all(p["options"]["reduceOptions"]["fields"] == "/^Time$/" for p in ages)


@pytest.mark.parametrize(
    "name,variables",
    [
        ("hv.json", ["device", "channel"]),
        ("lv.json", ["device", "channel"]),
        ("environment.json", ["device", "channel"]),
        ("service-health.json", ["device"]),
    ],
)
def test_template_variables(name, variables):
    d = dashboards()[name]
    assert [v["name"] for v in d["templating"]["list"]] == variables
    for v in d["templating"]["list"]:
        assert v["query"].startswith("SHOW TAG VALUES") and v["datasource"]["uid"] == DATASOURCE_UID
    for p in d["panels"]:
        for t in p["targets"]:
            for var in re.findall(r"\$(\w+)", t["query"]):
                assert var in variables + ["timeFilter", "__interval"], (p["title"], var)


def test_queries_use_only_what_grafana_replaces_for_influxql():
    # $__timeFilter is a SQL data source macro: the InfluxQL backend leaves it in the query
    for q in list(panel_queries()) + list(rule_queries()):
        assert "$__timeFilter" not in q.text and "$__interval_ms" not in q.text, q.where
        assert not re.search(r"\bFROM\s*\(", q.text, re.I), f"subquery in {q.where}"


def test_alert_rules():
    rules = {r["title"]: r for r in alert_rules((ALERT_RULES,))}
    assert set(rules) == {"Device offline", "Channel tripped", "Dew-point margin low", "Stale data"}
    doc = yaml.safe_load(ALERT_RULES.read_text())
    (group,) = doc["groups"]
    assert group["folder"] and group["interval"] == "1m"
    assert rules["Stale data"]["noDataState"] == "Alerting"  # silence is the very thing it reports


def test_every_alert_rule_is_well_formed():
    rules = {r["title"]: r for r in alert_rules()}
    uids = [r["uid"] for r in rules.values()]
    assert len(set(uids)) == len(uids) == len(alert_rules()), "titles and uids unique across the files"
    assert all(len(uid) <= 40 for uid in uids), "Grafana's limit"
    for title, r in rules.items():
        refs = {q["refId"]: q for q in r["data"]}
        assert r["condition"] in refs
        sources = [q for q in r["data"] if q["datasourceUid"] != "__expr__"]
        assert sources and all(q["datasourceUid"] == DATASOURCE_UID for q in sources)
        for q in sources:
            m = q["model"]
            assert m["rawQuery"] is True and m["query"].startswith("SELECT ") and "$timeFilter" in m["query"]
            assert q["relativeTimeRange"]["from"] > q["relativeTimeRange"]["to"] == 0
            # no dashboard variables in alert rules: nothing would replace them
            assert re.findall(r"\$(\w+)", m["query"]) == ["timeFilter"], title
        for q in r["data"]:
            if q["datasourceUid"] == "__expr__":
                assert q["model"]["expression"] in refs
        # titles and labels are expanded from the environment at provisioning: no "$" there
        assert "$" not in title and "$" not in json.dumps(r.get("labels", {}))
        assert r["noDataState"] in ("OK", "NoData", "Alerting", "KeepLast")
        assert r["execErrState"] in ("OK", "Error", "Alerting", "KeepLast")
        assert re.fullmatch(r"\d+[smh]", r["for"])
        assert r["annotations"]["summary"]
        for c in next(q for q in r["data"] if q["refId"] == r["condition"])["model"].get("conditions", []):
            if "unloadEvaluator" in c:  # a recovery threshold on the safe side of the firing one
                fire, recover = c["evaluator"], c["unloadEvaluator"]
                assert {fire["type"], recover["type"]} == {"gt", "lt"}
                assert (recover["params"][0] < fire["params"][0]) == (fire["type"] == "gt"), title


def test_alarm_rules_are_the_config_alarm_limits():
    """The committed file is what `slowctl grafana-alerts` makes of the example bench: regenerate after a change."""
    from slowctl.config import load_config
    from slowctl.stack.grafana import render

    config = Path(__file__).parents[2] / "config" / "bench.yaml"
    assert ALARM_RULES.read_text() == render(load_config(config), "config/bench.yaml"), (
        "run: slowctl grafana-alerts --config config/bench.yaml --out grafana/provisioning/alerting/slowctl-alarms.yaml"
    )
    stack = load_config(config)
    rules = {r["title"]: r for r in alert_rules((ALARM_RULES,))}
    for key, limits in stack.alarms.limits.items():
        for level in ("hihi", "high", "low", "lolo"):
            limit = getattr(limits, level)
            if limit is None:
                assert f"{key} {level.upper()}" not in rules
                continue
            r = rules[f"{key} {level.upper()}"]
            (cond,) = next(q for q in r["data"] if q["refId"] == "C")["model"]["conditions"]
            assert cond["evaluator"]["params"] == [limit]
            assert ("unloadEvaluator" in cond) == bool(limits.hysteresis)
            assert int(r["for"][:-1]) >= limits.delay
            assert r["labels"]["severity"] == {"major": "critical", "minor": "warning"}[limits.severity_of(level)]


def test_alert_thresholds_match_the_dashboards():
    rules = {r["title"]: r for r in alert_rules()}
    margin_rule = next(q for q in rules["Dew-point margin low"]["data"] if q["refId"] == "C")
    threshold = margin_rule["model"]["conditions"][0]["evaluator"]["params"][0]
    env = dashboards()["environment.json"]
    steps = [
        s["value"]
        for p in env["panels"]
        if "margin" in p["title"].lower()
        for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]
    ]
    assert threshold in steps


def test_notification_files():
    """grafana/notify/<GRAFANA_NOTIFY>.yaml is mounted over provisioning/alerting/notify.yaml (docker-compose.yml)."""
    compose = yaml.safe_load((GRAFANA.parent / "docker-compose.yml").read_text())["services"]["grafana"]
    mount = {
        "type": "bind",
        "source": "./grafana/notify/${GRAFANA_NOTIFY:-off}.yaml",
        "target": "/etc/grafana/provisioning/alerting/notify.yaml",
        "read_only": True,
        "bind": {"create_host_path": False},  # a GRAFANA_NOTIFY naming no file must fail, not mount a directory
    }
    assert mount in compose["volumes"]
    assert compose["environment"]["GF_SMTP_ENABLED"] == "${GRAFANA_SMTP_HOST:+true}", "no relay, no mail"
    assert (PROVISIONING / "alerting" / "notify.yaml").is_file(), "the mount point must exist in the ro mount"
    files = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((GRAFANA / "notify").glob("*.yaml"))}
    assert set(files) == {"off", "webhook", "email", "webhook-email"}
    assert files["off"] == {"apiVersion": 1} == yaml.safe_load((PROVISIONING / "alerting" / "notify.yaml").read_text())
    receivers = {}
    for name, doc in files.items():
        if name == "off":
            continue
        (cp,) = doc["contactPoints"]
        (policy,) = doc["policies"]
        assert policy["receiver"] == cp["name"] == "slowctl"
        receivers[name] = {r["uid"]: r for r in cp["receivers"]}
        text = (GRAFANA / "notify" / f"{name}.yaml").read_text()
        for var in re.findall(r"\$(\w+)", text):
            assert var in compose["environment"], f"{name}.yaml expands {var}, which Grafana's container lacks"
    assert receivers["webhook-email"] == {**receivers["webhook"], **receivers["email"]}
    assert receivers["webhook"]["slowctl-webhook"]["settings"]["url"] == "$GRAFANA_ALERT_WEBHOOK_URL"
    assert receivers["email"]["slowctl-email"]["settings"]["addresses"] == "$GRAFANA_ALERT_EMAIL"
