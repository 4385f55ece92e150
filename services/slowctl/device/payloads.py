"""Payload builders for the status, metrics, event and legacy topics.

Metrics are InfluxDB line protocol, written here in a few lines rather than through influxdb-client,
whose package import alone costs a device service more memory than everything else it loads.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from slowctl.device.events import Event
from slowctl.drivers.readings import ChannelState, ChillerChannel, Reading, SensorChannel, SupplyChannel

_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})


def _field(value: float | bool | str) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.translate(_STRING) + '"'
    if not math.isfinite(value):
        return None  # line protocol has no NaN or infinity
    text = str(float(value))  # a bare number is a float; integers would need 'i'
    return text[:-2] if text.endswith(".0") else text


def line(measurement: str, tags: dict[str, str], fields: dict[str, float | bool | str], ts_ms: int) -> str:
    """One line of InfluxDB line protocol: tags and fields sorted by key, millisecond timestamp."""
    tag_text = "".join(f",{k.translate(_KEY)}={_tag_value(v)}" for k, v in sorted(tags.items()) if v != "")
    field_text = ",".join(
        f"{k.translate(_KEY)}={text}" for k, v in sorted(fields.items()) if (text := _field(v)) is not None
    )
    return f"{measurement.translate(_MEASUREMENT)}{tag_text} {field_text} {ts_ms}"


def _tag_value(value: str) -> str:
    text = value.translate(_KEY)
    return text + " " if text.endswith("\\") else text


def channel_dict(channel: int, name: str, reading: Reading | None) -> dict[str, Any]:
    out: dict[str, Any] = {"channel": channel, "name": name}
    if reading is not None:
        values = asdict(reading)
        if isinstance(reading, (SupplyChannel, ChillerChannel)):
            values["state"] = reading.state.value
        out.update(values)
    return out


def metrics_lines(
    device: str, names: dict[int, str], readings: dict[int, Reading], ts_ms: int, kind: str | None = None
) -> str:
    """One line per channel; numbers always float, booleans as booleans, state as string.

    `kind` ('hv' or 'lv', supplies only) becomes a tag, so dashboards tell HV from LV supplies.
    """
    lines = []
    for ch, r in sorted(readings.items()):
        tags = {"device": device, "channel": str(ch), "name": names[ch]}
        fields: dict[str, float | bool | str] = {}
        if isinstance(r, SupplyChannel):
            if kind:
                tags["kind"] = kind
            fields = {"on": bool(r.on), "tripped": r.state is ChannelState.TRIPPED, "state": r.state.value}
            for key in ("vset", "vmon", "iset", "imon", "rampup", "rampdown"):
                value = getattr(r, key)
                if value is not None:
                    fields[key] = float(value)
        elif isinstance(r, SensorChannel):
            fields = {key: float(getattr(r, key)) for key in ("temperature", "humidity", "dewpoint")}
        elif isinstance(r, ChillerChannel):
            fields = {
                "on": bool(r.on),
                "tset": float(r.tset),
                "temperature": float(r.temperature),
                "state": r.state.value,
            }
            if r.status_code is not None:
                fields["status_code"] = float(r.status_code)
        lines.append(line(r.KIND, tags, fields, ts_ms))
    return "\n".join(lines)


def event_line(event: Event) -> str:
    """An event on the metrics path (measurement `event`), for annotations in Grafana."""
    tags = {"device": event.device, "kind": event.kind, "severity": event.severity}
    if event.channel is not None:
        tags["channel"] = str(event.channel)
    fields: dict[str, float | bool | str] = {"message": event.message}
    if event.cause:
        fields["cause"] = event.cause
    for key in ("before", "after"):  # JSON text: a field keeps one type whatever the event carries
        value = getattr(event, key)
        if value is not None:
            fields[key] = json.dumps(value, default=str)
    return line("event", tags, fields, int(event.ts * 1000))


def legacy_status(readings: dict[int, Reading]) -> list[dict[str, Any]]:
    """tracker_dcs status: [{"number": 0, "on": 0, "vreq": 0.0}, ...]."""
    return [
        {"number": ch, "on": int(r.on), "vreq": float(r.vset)}
        for ch, r in sorted(readings.items())
        if isinstance(r, SupplyChannel)
    ]
