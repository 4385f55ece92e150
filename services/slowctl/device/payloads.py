"""Payload builders for the status, metrics and legacy topics.

Metrics are InfluxDB line protocol built with influxdb-client's `Point`.
Importing `influxdb_client` runs its package __init__, which loads every API
module (and numpy when present): ~37 MB per process, more than a whole device
service otherwise needs. We load only the three modules `Point` uses.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from dataclasses import asdict
from typing import Any

from slowctl.drivers.readings import ChannelState, ChillerChannel, Reading, SensorChannel, SupplyChannel


def _load_point() -> tuple[type, Any]:
    if "influxdb_client" in sys.modules:  # already imported the normal way
        from influxdb_client import Point, WritePrecision
        return Point, WritePrecision
    spec = importlib.util.find_spec("influxdb_client")
    assert spec and spec.origin
    root = os.path.dirname(spec.origin)
    stubs = ["influxdb_client", "influxdb_client.client", "influxdb_client.client.write",
             "influxdb_client.client.util", "influxdb_client.domain"]
    for name in stubs:
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(root, *name.split(".")[1:])]
        sys.modules[name] = pkg
    before = set(sys.modules)
    try:
        point = importlib.import_module("influxdb_client.client.write.point")
        precision = importlib.import_module("influxdb_client.domain.write_precision")
    finally:
        # forget everything loaded here: a later `import influxdb_client` gets the real, whole package
        for name in set(sys.modules) - before:
            if name.startswith("influxdb_client"):
                del sys.modules[name]
        for name in stubs:
            del sys.modules[name]
    return point.Point, precision.WritePrecision


Point, WritePrecision = _load_point()


def channel_dict(channel: int, name: str, reading: Reading | None) -> dict[str, Any]:
    out: dict[str, Any] = {"channel": channel, "name": name}
    if reading is not None:
        values = asdict(reading)
        if isinstance(reading, (SupplyChannel, ChillerChannel)):
            values["state"] = reading.state.value
        out.update(values)
    return out


def metrics_lines(device: str, names: dict[int, str], readings: dict[int, Reading], ts_ms: int,
                  kind: str | None = None) -> str:
    """One line per channel; numbers always float, booleans as booleans, state as string.

    `kind` ('hv' or 'lv', supplies only) becomes a tag, so dashboards tell HV from LV supplies.
    """
    lines = []
    for ch, r in sorted(readings.items()):
        p = Point(r.KIND).tag("device", device).tag("channel", str(ch)).tag("name", names[ch])
        if isinstance(r, SupplyChannel):
            if kind:
                p.tag("kind", kind)
            p.field("on", bool(r.on)).field("tripped", r.state is ChannelState.TRIPPED)
            for key in ("vset", "vmon", "iset", "imon", "rampup", "rampdown"):
                value = getattr(r, key)
                if value is not None:
                    p.field(key, float(value))
            p.field("state", r.state.value)
        elif isinstance(r, SensorChannel):
            for key in ("temperature", "humidity", "dewpoint"):
                p.field(key, float(getattr(r, key)))
        elif isinstance(r, ChillerChannel):
            p.field("on", bool(r.on)).field("tset", float(r.tset)).field("temperature", float(r.temperature))
            if r.status_code is not None:
                p.field("status_code", float(r.status_code))
            p.field("state", r.state.value)
        lines.append(p.time(ts_ms, WritePrecision.MS).to_line_protocol())
    return "\n".join(lines)


def legacy_status(readings: dict[int, Reading]) -> list[dict[str, Any]]:
    """tracker_dcs status: [{"number": 0, "on": 0, "vreq": 0.0}, ...]."""
    return [
        {"number": ch, "on": int(r.on), "vreq": float(r.vset)}
        for ch, r in sorted(readings.items())
        if isinstance(r, SupplyChannel)
    ]
