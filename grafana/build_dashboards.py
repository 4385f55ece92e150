#!/usr/bin/env python3
"""Writes grafana/dashboards/*.json (provisioned into Grafana 12.3.1).

The JSON files are committed; this is how they are made, so that five dashboards
share one set of conventions. After editing: `python3 grafana/build_dashboards.py`
(tests/archive checks the files are up to date and that every query runs).

Every query is raw InfluxQL that InfluxDB 1.8+, 2.x (through the DBRP mapping)
and 3.x accept: no subqueries, no Flux. Grafana replaces $timeFilter,
$__interval and the template variables before sending it.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "influxdb", "uid": "slowctl-influxdb"}

# --- building blocks ------------------------------------------------------------------------

STATE_COLORS = {
    "OFF": "text",
    "RAMP_UP": "blue",
    "ON": "green",
    "COMPLIANCE": "orange",
    "RAMP_DOWN": "blue",
    "TRIPPED": "red",
    "ERROR": "red",
}


def target(query: str, ref: str = "A", alias: str = "", fmt: str = "time_series") -> dict:
    t = {"refId": ref, "datasource": DS, "rawQuery": True, "query": query, "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


def panel(
    kind: str,
    title: str,
    targets: list[dict],
    unit: str = "",
    description: str = "",
    defaults: dict | None = None,
    options: dict | None = None,
    overrides: list | None = None,
) -> dict:
    d = {"unit": unit} if unit else {}
    d.update(defaults or {})
    p = {
        "type": kind,
        "title": title,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": d, "overrides": overrides or []},
        "options": options or {},
    }
    if description:
        p["description"] = description
    return p


def timeseries(title: str, targets: list[dict], unit: str, **kw) -> dict:
    opts = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "none"},
    }
    return panel("timeseries", title, targets, unit, options=opts, **kw)


def state_timeline(title: str, targets: list[dict], mappings: list | None = None, **kw) -> dict:
    opts = {
        "showValue": "never",
        "mergeValues": True,
        "rowHeight": 0.8,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
    }
    defaults = {"color": {"mode": "thresholds"}, "mappings": mappings or []}
    return panel("state-timeline", title, targets, options=opts, defaults=defaults, **kw)


def stat(
    title: str,
    targets: list[dict],
    unit: str = "",
    fields: str = "",
    thresholds: list | None = None,
    mappings: list | None = None,
    defaults: dict | None = None,
    **kw,
) -> dict:
    """One value per series; fields="/^Time$/" shows the time of the last point instead."""
    opts = {
        "reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": fields},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": "value_and_name",
        "orientation": "auto",
    }
    d = {
        "mappings": mappings or [],
        "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
    }
    d.update(defaults or {})
    return panel("stat", title, targets, unit, options=opts, defaults=d, **kw)


def table(title: str, targets: list[dict], **kw) -> dict:
    return panel("table", title, targets, options={"showHeader": True, "cellHeight": "sm"}, **kw)


def text_map(colors: dict[str, str]) -> list[dict]:
    return [{"type": "value", "options": {k: {"color": c, "index": i} for i, (k, c) in enumerate(colors.items())}}]


def bool_map(true: tuple[str, str], false: tuple[str, str]) -> list[dict]:
    """Value mappings for booleans (and their 1/0 form)."""
    opts = {"true": true, "1": true, "false": false, "0": false}
    return [
        {
            "type": "value",
            "options": {k: {"text": t, "color": c, "index": i} for i, (k, (t, c)) in enumerate(opts.items())},
        }
    ]


def variable(name: str, query: str, current: list[str] | None = None, label: str = "") -> dict:
    """A multi-value query variable; `current` preselects values (else All)."""
    cur = {"text": current, "value": current} if current else {"text": ["All"], "value": ["$__all"]}
    return {
        "name": name,
        "label": label or name.capitalize(),
        "type": "query",
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": 1,
        "multi": True,
        "includeAll": True,
        "current": cur,
        "sort": 1,
        "hide": 0,
        "options": [],
    }


def annotation(name: str, query: str, color: str) -> dict:
    """An InfluxQL annotation: the query at the top level (how Grafana's InfluxDB annotations have read it) and as
    the target (the editor's form); the event's message is the text, its kind and who caused it the tags."""
    columns = {"textColumn": "message", "tagsColumn": "kind,cause", "titleColumn": ""}
    return {
        "name": name,
        "datasource": DS,
        "enable": True,
        "iconColor": color,
        "query": query,
        **columns,
        "target": {"refId": "Anno", "rawQuery": True, "query": query, **columns},
    }


def device_annotations(of_device: bool = True) -> list[dict]:
    """What happened on the devices of the dashboard (`of_device`), or on the whole bench: commands (who, what)
    and the other events (trips, interlock actions, changes nobody commanded), from the `event` measurement."""
    where = '$timeFilter AND "device" =~ /^$device$/' if of_device else "$timeFilter"
    base = f'SELECT "message", "kind", "cause" FROM "event" WHERE {where} AND "kind" '
    whose = "" if of_device else " (all devices)"
    return [
        annotation("Commands" + whose, base + "=~ /^command_/", "blue"),
        annotation("Events" + whose, base + "!~ /^command_/", "red"),
    ]


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict],
    variables: list[dict] | None = None,
    links: bool = True,
    annotations: list[dict] | None = None,
) -> dict:
    # two panels per row, 8 high; a panel with "w" set keeps its width
    x = y = 0
    for i, p in enumerate(panels, 1):
        w = p.pop("w", 12)
        if x + w > 24:
            x, y = 0, y + 8
        p["id"] = i
        p["gridPos"] = {"h": 8, "w": w, "x": x, "y": y}
        x += w
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["slowctl"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 41,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "timepicker": {},
        "annotations": {"list": annotations or []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["slowctl"],
                "asDropdown": True,
                "title": "slowctl",
                "includeVars": False,
                "keepTime": True,
            }
        ]
        if links
        else [],
        "templating": {"list": variables or []},
        "panels": panels,
    }


def wide(p: dict, w: int = 24) -> dict:
    p["w"] = w
    return p


# --- queries ------------------------------------------------------------------------------

SUPPLY_WHERE = """$timeFilter AND "device" =~ /^$device$/ AND "channel" =~ /^$channel$/"""
BY_CHANNEL = """"device", "channel", "name\""""


def mean_by_channel(meas: str, fld: str, where: str) -> str:
    return (
        f'SELECT mean("{fld}") AS "{fld}" FROM "{meas}" WHERE {where} '
        f"GROUP BY time($__interval), {BY_CHANNEL} fill(none)"
    )


def channel_state(where: str) -> str:
    return (
        f'SELECT last("state") AS "state" FROM "supply" WHERE {where} '
        f"GROUP BY time($__interval), {BY_CHANNEL} fill(none)"
    )


def channels_now(where: str) -> str:
    return (
        'SELECT last("state") AS "state", last("on") AS "on", last("vset") AS "vset", last("vmon") AS "vmon", '
        'last("iset") AS "iset", last("imon") AS "imon" '
        f'FROM "supply" WHERE {where} GROUP BY {BY_CHANNEL}'
    )


def tripped_count(where: str) -> str:
    return f'SELECT count("tripped") AS "tripped readings" FROM "supply" WHERE {where} AND "tripped" = true GROUP BY {BY_CHANNEL}'


ALIAS = "$tag_device $tag_name"
STATE_MAP = text_map(STATE_COLORS)


# --- dashboards ----------------------------------------------------------------------------


def overview() -> dict:
    return dashboard(
        "slowctl-overview",
        "slowctl — overview",
        "Every device of the bench at a glance",
        [
            wide(
                stat(
                    "Service availability (now)",
                    [target('SELECT last("online") FROM "availability" GROUP BY "device"', alias="$tag_device")],
                    mappings=bool_map(("online", "green"), ("offline", "red")),
                    thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
                    description="Last availability each service announced (retained, last will); "
                    "no time range: it changes only at (re)connects",
                )
            ),
            timeseries(
                "Supply voltages", [target(mean_by_channel("supply", "vmon", "$timeFilter"), alias=ALIAS)], "volt"
            ),
            timeseries(
                "Supply currents", [target(mean_by_channel("supply", "imon", "$timeFilter"), alias=ALIAS)], "amp"
            ),
            timeseries(
                "Climate: temperature and dew point",
                [
                    target(mean_by_channel("environment", "temperature", "$timeFilter"), "A", "$tag_name temperature"),
                    target(mean_by_channel("environment", "dewpoint", "$timeFilter"), "B", "$tag_name dew point"),
                ],
                "celsius",
            ),
            timeseries(
                "Chiller: bath and setpoint",
                [
                    target(mean_by_channel("chiller", "temperature", "$timeFilter"), "A", "$tag_device bath"),
                    target(mean_by_channel("chiller", "tset", "$timeFilter"), "B", "$tag_device setpoint"),
                ],
                "celsius",
            ),
            wide(state_timeline("Channel states", [target(channel_state("$timeFilter"), alias=ALIAS)], STATE_MAP)),
            stat(
                "Tripped channels in the time range",
                [target(tripped_count("$timeFilter"), alias=ALIAS)],
                thresholds=[{"color": "red", "value": None}],
                description="Channels that reported TRIPPED at least once; empty when none did",
            ),
            table("Supply channels now", [target(channels_now("$timeFilter"), fmt="table")]),
        ],
    )


def supply(uid: str, title: str, description: str, kind: str, current_unit: str) -> dict:
    where = SUPPLY_WHERE
    return dashboard(
        uid,
        title,
        description,
        [
            timeseries(
                "Voltage: monitored and set",
                [
                    target(mean_by_channel("supply", "vmon", where), "A", "$tag_device $tag_name vmon"),
                    target(mean_by_channel("supply", "vset", where), "B", "$tag_device $tag_name vset"),
                ],
                "volt",
            ),
            timeseries(
                "Current: monitored and limit",
                [
                    target(mean_by_channel("supply", "imon", where), "A", "$tag_device $tag_name imon"),
                    target(mean_by_channel("supply", "iset", where), "B", "$tag_device $tag_name iset"),
                ],
                current_unit,
            ),
            wide(state_timeline("Channel state", [target(channel_state(where), alias=ALIAS)], STATE_MAP)),
            state_timeline(
                "Trips",
                [
                    target(
                        f'SELECT last("tripped") AS "tripped" FROM "supply" WHERE {where} '
                        f"GROUP BY time($__interval), {BY_CHANNEL} fill(none)",
                        alias=ALIAS,
                    )
                ],
                bool_map(("TRIPPED", "red"), ("ok", "green")),
            ),
            stat(
                "Tripped readings in the time range",
                [target(tripped_count(where), alias=ALIAS)],
                thresholds=[{"color": "red", "value": None}],
            ),
            timeseries(
                "Power",
                [
                    target(
                        f'SELECT mean("vmon") * mean("imon") AS "power" FROM "supply" WHERE {where} '
                        f"GROUP BY time($__interval), {BY_CHANNEL} fill(none)",
                        alias=ALIAS,
                    )
                ],
                "watt",
            ),
            timeseries(
                "Ramp rates",
                [
                    target(mean_by_channel("supply", "rampup", where), "A", "$tag_device $tag_name up"),
                    target(mean_by_channel("supply", "rampdown", where), "B", "$tag_device $tag_name down"),
                ],
                "suffix: V/s",
            ),
            wide(table("Channels now", [target(channels_now(where), fmt="table")])),
        ],
        [
            # the services tag supplies with their kind (hv: sensor bias or above SELV; lv)
            variable("device", f'SHOW TAG VALUES FROM "supply" WITH KEY = "device" WHERE "kind" = \'{kind}\''),
            variable("channel", 'SHOW TAG VALUES FROM "supply" WITH KEY = "channel" WHERE "device" =~ /^$device$/'),
        ],
        annotations=device_annotations(),
    )


def environment() -> dict:
    where = """$timeFilter AND "device" =~ /^$device$/ AND "channel" =~ /^$channel$/"""
    margin = (
        'SELECT mean("temperature") - mean("dewpoint") AS "margin" FROM "environment" '
        f"WHERE {where} GROUP BY time($__interval), {BY_CHANNEL} fill(none)"
    )
    margin_now = (
        'SELECT last("temperature") - last("dewpoint") AS "margin" FROM "environment" '
        f"WHERE {where} GROUP BY {BY_CHANNEL}"
    )
    margin_steps = [{"color": "red", "value": None}, {"color": "orange", "value": 3}, {"color": "green", "value": 5}]
    return dashboard(
        "slowctl-environment",
        "slowctl — environment",
        "Climate box: temperature, humidity, dew point and the margin to condensation; chiller",
        [
            timeseries(
                "Temperature", [target(mean_by_channel("environment", "temperature", where), alias=ALIAS)], "celsius"
            ),
            timeseries(
                "Relative humidity",
                [target(mean_by_channel("environment", "humidity", where), alias=ALIAS)],
                "humidity",
            ),
            timeseries(
                "Dew point", [target(mean_by_channel("environment", "dewpoint", where), alias=ALIAS)], "celsius"
            ),
            timeseries(
                "Dew-point margin (temperature − dew point)",
                [target(margin, alias=ALIAS)],
                "celsius",
                defaults={
                    "thresholds": {"mode": "absolute", "steps": margin_steps},
                    "custom": {"thresholdsStyle": {"mode": "line+area"}},
                },
                description="Condensation risk below 3 °C: the alert 'Dew-point margin low' fires there",
            ),
            stat("Dew-point margin now", [target(margin_now, alias=ALIAS)], "celsius", thresholds=margin_steps),
            timeseries(
                "Chiller: bath and setpoint",
                [
                    target(mean_by_channel("chiller", "temperature", "$timeFilter"), "A", "$tag_device bath"),
                    target(mean_by_channel("chiller", "tset", "$timeFilter"), "B", "$tag_device setpoint"),
                ],
                "celsius",
            ),
        ],
        [
            variable("device", 'SHOW TAG VALUES FROM "environment" WITH KEY = "device"'),
            variable(
                "channel",
                'SHOW TAG VALUES FROM "environment" WITH KEY = "channel" WHERE "device" =~ /^$device$/',
                label="Sensor channel",
            ),
        ],
        # the climate box is where the bench's commands and protections are felt: all of them
        annotations=device_annotations(of_device=False),
    )


def service_health() -> dict:
    where = """$timeFilter AND "device" =~ /^$device$/"""
    last_reading = [
        target(f'SELECT last("vset") FROM "supply" WHERE {where} GROUP BY "device"', "A", "$tag_device"),
        target(f'SELECT last("temperature") FROM "environment" WHERE {where} GROUP BY "device"', "B", "$tag_device"),
        target(f'SELECT last("tset") FROM "chiller" WHERE {where} GROUP BY "device"', "C", "$tag_device"),
    ]
    age = {"color": {"mode": "fixed", "fixedColor": "text"}}
    return dashboard(
        "slowctl-service-health",
        "slowctl — service health",
        "Device services: availability, last update, restarts, errors, poll time",
        [
            stat(
                "Availability (now)",
                [
                    target(
                        'SELECT last("online") FROM "availability" WHERE "device" =~ /^$device$/ GROUP BY "device"',
                        alias="$tag_device",
                    )
                ],
                mappings=bool_map(("online", "green"), ("offline", "red")),
                thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
            ),
            state_timeline(
                "Availability",
                [
                    target(
                        f'SELECT last("online") FROM "availability" WHERE {where} '
                        'GROUP BY time($__interval), "device" fill(previous)',
                        alias="$tag_device",
                    )
                ],
                bool_map(("online", "green"), ("offline", "red")),
            ),
            stat(
                "Last health report",
                [
                    target(
                        f'SELECT last("poll_cycles") FROM "service_health" WHERE {where} GROUP BY "device"',
                        alias="$tag_device",
                    )
                ],
                "dateTimeFromNow",
                fields="/^Time$/",
                defaults=age,
                description="Age of the newest health message (every poll and every state change)",
            ),
            stat(
                "Last reading",
                last_reading,
                "dateTimeFromNow",
                fields="/^Time$/",
                defaults=age,
                description="Age of the newest metrics line: none are published while the instrument "
                "is disconnected or its polls fail",
            ),
            stat(
                "Restarts (supervisor)",
                [
                    target(
                        f'SELECT last("restarts") FROM "service_health" WHERE {where} GROUP BY "device"',
                        alias="$tag_device",
                    )
                ],
                thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
            ),
            state_timeline(
                "Instrument connected",
                [
                    target(
                        f'SELECT last("connected") FROM "service_health" WHERE {where} '
                        'GROUP BY time($__interval), "device" fill(none)',
                        alias="$tag_device",
                    )
                ],
                bool_map(("connected", "green"), ("disconnected", "red")),
            ),
            timeseries(
                "Errors (cumulative) and consecutive errors",
                [
                    target(
                        f'SELECT max("errors") FROM "service_health" WHERE {where} '
                        'GROUP BY time($__interval), "device" fill(none)',
                        "A",
                        "$tag_device errors",
                    ),
                    target(
                        f'SELECT max("consecutive_errors") FROM "service_health" WHERE {where} '
                        'GROUP BY time($__interval), "device" fill(none)',
                        "B",
                        "$tag_device consecutive",
                    ),
                ],
                "short",
            ),
            timeseries(
                "Poll duration",
                [
                    target(
                        f'SELECT mean("last_poll_duration") FROM "service_health" WHERE {where} '
                        'GROUP BY time($__interval), "device" fill(none)',
                        alias="$tag_device",
                    )
                ],
                "s",
            ),
            timeseries(
                "Uptime",
                [
                    target(
                        f'SELECT last("uptime") FROM "service_health" WHERE {where} '
                        'GROUP BY time($__interval), "device" fill(none)',
                        alias="$tag_device",
                    )
                ],
                "s",
            ),
        ],
        [
            variable("device", 'SHOW TAG VALUES FROM "service_health" WITH KEY = "device"'),
        ],
    )


def build() -> dict[str, dict]:
    """File name -> dashboard."""
    return {
        "overview.json": overview(),
        "hv.json": supply(
            "slowctl-hv", "slowctl — HV supplies", "High-voltage channels: vmon/imon, states, trips", "hv", "amp"
        ),
        "lv.json": supply(
            "slowctl-lv", "slowctl — LV supplies", "Low-voltage channels: voltage, current, power", "lv", "amp"
        ),
        "environment.json": environment(),
        "service-health.json": service_health(),
    }


def render(d: dict) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, d in build().items():
        (OUT / name).write_text(render(d))
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
