"""Every InfluxQL query of the provisioned dashboards and alert rules, and Grafana's macro expansion.

Expansion follows Grafana's InfluxQL backend: $timeFilter becomes
`time >= <from>ms and time <= <to>ms`, $__interval / $interval a duration,
$__interval_ms milliseconds; template variables in a regex (`/^$device$/`)
become `(a|b)` of their regex-escaped values, as the data source formats
multi-value variables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
ALERT_RULES = PROVISIONING / "alerting" / "slowctl-rules.yaml"  # written by hand
ALARM_RULES = PROVISIONING / "alerting" / "slowctl-alarms.yaml"  # `slowctl grafana-alerts` from the alarm limits
DATASOURCE_UID = "slowctl-influxdb"

_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass
class Query:
    where: str  # "hv.json: Voltage: monitored and set / A"
    text: str
    variables: list[dict]  # the dashboard's template variables (none for alert rules)
    relative_s: int | None = None  # an alert query's time range, seconds back from now
    variable: str = ""  # the template variable this query fills


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def alert_rules(files: tuple[Path, ...] = (ALERT_RULES, ALARM_RULES)) -> list[dict]:
    docs = [yaml.safe_load(f.read_text()) for f in files]
    return [rule for doc in docs for group in doc["groups"] for rule in group["rules"]]


def panel_queries() -> Iterator[Query]:
    for name, d in dashboards().items():
        variables = d.get("templating", {}).get("list", [])
        for p in d["panels"]:
            for t in p.get("targets", []):
                yield Query(f"{name}: {p['title']} / {t['refId']}", t["query"], variables)


def annotation_queries() -> Iterator[Query]:
    for name, d in dashboards().items():
        variables = d.get("templating", {}).get("list", [])
        for a in d.get("annotations", {}).get("list", []):
            assert a["query"] == a["target"]["query"], f"{name}: annotation {a['name']}: one query in both places"
            yield Query(f"{name}: annotation {a['name']}", a["query"], variables)


def rule_queries() -> Iterator[Query]:
    for rule in alert_rules():
        for q in rule["data"]:
            if q["datasourceUid"] != "__expr__":
                yield Query(
                    f"alert {rule['title']} / {q['refId']}", q["model"]["query"], [], q["relativeTimeRange"]["from"]
                )


def variable_queries() -> Iterator[Query]:
    for name, d in dashboards().items():
        variables = d.get("templating", {}).get("list", [])
        for v in variables:
            yield Query(f"{name}: variable {v['name']}", v["query"], variables, variable=v["name"])


def _regex_value(values: list[str]) -> str:
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}/])", r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand(
    text: str, from_ms: int, to_ms: int, interval: str = "5s", variables: dict[str, list[str]] | None = None
) -> str:
    """Grafana's replacements; raises KeyError for an unknown $variable, so nothing is left over."""
    variables = variables or {}
    out = text.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    out = out.replace("$__interval_ms", str(_ms(interval))).replace("$__interval", interval)
    out = out.replace("$interval", interval)

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return _regex_value(variables[name])

    out = _VAR.sub(sub, out)
    assert not _VAR.search(out), out  # a "$" left is a regex anchor, as in /^hv$/
    return out


def _ms(interval: str) -> int:
    unit = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    num, suffix = re.fullmatch(r"(\d+)(ms|s|m|h)", interval).groups()
    return int(num) * unit[suffix]


def resolve_variables(
    variables: list[dict], run: Callable[[str], list[str]], from_ms: int, to_ms: int
) -> dict[str, list[str]]:
    """Values of a dashboard's variables, in order (a later one may use an earlier one), all selected."""
    values: dict[str, list[str]] = {}
    for v in variables:
        values[v["name"]] = run(expand(v["query"], from_ms, to_ms, variables=values))
    return values
