"""What telegraf/telegraf.conf does to an MQTT message, done in Python for the tests.

The tests have no Telegraf; they write what the dummy stack publishes to a real
InfluxDB 1.x through this module instead. It reads telegraf.conf itself (topics,
topic parsing, parsers, json_v2 field types, the enum processor) and refuses
every option it does not implement, so the config cannot grow a conversion that
the tests silently skip.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from paho.mqtt.client import topic_matches_sub

CONF = Path(__file__).resolve().parents[2] / "telegraf" / "telegraf.conf"

# mqtt_consumer options that change nothing in the data (connection, session, credentials)
_TRANSPORT = {"servers", "topics", "qos", "persistent_session", "client_id", "username", "password"}
_PER_FORMAT = {
    "influx": {"influx_timestamp_precision"},
    "value": {"data_type", "value_field_name", "name_override"},
    "json_v2": {"json_v2"},
}
_COMMON = {"data_format", "topic_tag", "topic_parsing"}


class Unsupported(Exception):
    """telegraf.conf uses something this mirror does not implement."""


@dataclass
class Metric:
    name: str
    tags: dict[str, str]
    fields: dict[str, Any]
    ts_ms: int

    def line(self) -> str:
        tags = "".join(f",{_esc_key(k)}={_esc_key(v)}" for k, v in sorted(self.tags.items()))
        fields = ",".join(f"{_esc_key(k)}={_field(v)}" for k, v in sorted(self.fields.items()))
        return f"{_esc_name(self.name)}{tags} {fields} {self.ts_ms}"


def _esc_name(s: str) -> str:
    return s.replace(",", r"\,").replace(" ", r"\ ")


def _esc_key(s: str) -> str:
    return _esc_name(s).replace("=", r"\=")


def _field(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Telegraf:
    conf: dict = field(default_factory=lambda: tomllib.loads(CONF.read_text()))

    def __post_init__(self) -> None:
        if not self.conf.get("agent", {}).get("omit_hostname"):
            raise Unsupported("agent.omit_hostname must be true (a host tag is not mirrored)")
        extra_inputs = set(self.conf.get("inputs", {})) - {"mqtt_consumer", "internal"}
        extra_processors = set(self.conf.get("processors", {})) - {"enum"}
        if extra_inputs or extra_processors:
            raise Unsupported(f"not mirrored: {sorted(extra_inputs | extra_processors)}")
        self.consumers = self.conf["inputs"]["mqtt_consumer"]
        for c in self.consumers:
            fmt = c.get("data_format")
            if fmt not in _PER_FORMAT:
                raise Unsupported(f"data_format {fmt!r}")
            unknown = set(c) - _TRANSPORT - _COMMON - _PER_FORMAT[fmt]
            if unknown:
                raise Unsupported(f"mqtt_consumer options {sorted(unknown)} for {c['topics']}")

    def topics(self) -> list[str]:
        return [t for c in self.consumers for t in c["topics"]]

    def consumer(self, topic: str) -> dict:
        found = [c for c in self.consumers if any(topic_matches_sub(t, topic) for t in c["topics"])]
        if len(found) != 1:
            raise ValueError(f"{len(found)} mqtt_consumer sections subscribe {topic}")
        return found[0]

    def convert(self, topic: str, payload: bytes, received_ms: int) -> list[str]:
        """Line protocol (ms timestamps) as Telegraf would write it for this message."""
        c = self.consumer(topic)
        fmt = c["data_format"]
        tags = self._topic_tags(c, topic)
        if fmt == "influx":
            return [self._retag(line, tags) for line in self._influx(c, payload)]
        if fmt == "value":
            metrics = [self._value(c, payload, tags, received_ms)]
        else:
            metrics = self._json_v2(c, payload, tags, received_ms)
        return [self._process(m).line() for m in metrics]

    # --- parsers ---------------------------------------------------------------------
    def _influx(self, c: dict, payload: bytes) -> list[str]:
        if c.get("influx_timestamp_precision") != "1ms":
            raise Unsupported("the services publish ms timestamps: influx_timestamp_precision must be 1ms")
        if c.get("topic_tag", "topic"):
            raise Unsupported("a topic tag added to line protocol is not mirrored")
        return [line for line in payload.decode().splitlines() if line.strip()]

    @staticmethod
    def _retag(line: str, tags: dict[str, str]) -> str:
        """Telegraf's AddTag on a parsed line: topic tags replace the line's own (tags stay sorted)."""
        head, rest = re.split(r"(?<!\\) ", line, maxsplit=1)
        name, *pairs = re.split(r"(?<!\\),", head)
        own = dict(re.split(r"(?<!\\)=", p, maxsplit=1) for p in pairs)
        own.update(tags)
        return ",".join([name, *(f"{k}={v}" for k, v in sorted(own.items()))]) + " " + rest

    def _topic_tags(self, c: dict, topic: str) -> dict[str, str]:
        tags = {}
        if c.get("topic_tag", "topic"):
            tags[c.get("topic_tag", "topic")] = topic
        for rule in c.get("topic_parsing", []):
            if set(rule) - {"topic", "tags"}:
                raise Unsupported(f"topic_parsing keys {sorted(set(rule) - {'topic', 'tags'})}")
            if not topic_matches_sub(rule["topic"], topic):
                continue
            for name, part in zip(rule["tags"].split("/"), topic.split("/"), strict=True):
                if name != "_":
                    tags[name] = part
        return tags

    def _value(self, c: dict, payload: bytes, tags: dict, ts: int) -> Metric:
        if c.get("data_type") != "string":
            raise Unsupported(f"value data_type {c.get('data_type')!r}")
        return Metric(
            c.get("name_override", "mqtt_consumer"),
            tags,
            {c.get("value_field_name", "value"): payload.decode().strip()},
            ts,
        )

    def _json_v2(self, c: dict, payload: bytes, tags: dict, ts: int) -> list[Metric]:
        doc = json.loads(payload)
        out = []
        for spec in c["json_v2"]:
            if set(spec) - {"measurement_name", "timestamp_path", "timestamp_format", "field"}:
                raise Unsupported(f"json_v2 keys {sorted(spec)}")
            if spec.get("timestamp_path"):
                if spec.get("timestamp_format") != "unix_ms":
                    raise Unsupported("json_v2 timestamp_format")
                ts = int(doc[spec["timestamp_path"]])
            fields = {}
            for f in spec["field"]:
                if set(f) - {"path", "type"} or "." in f["path"]:
                    raise Unsupported(f"json_v2 field {f}")
                if f["path"] not in doc:  # json_v2 drops the whole message (the field is not optional)
                    raise ValueError(f"{f['path']} missing in {doc}")
                if doc[f["path"]] is not None:  # json_v2 leaves out null values
                    fields[f["path"]] = {"int": int, "float": float, "bool": bool, "string": str}[f["type"]](
                        doc[f["path"]]
                    )
            out.append(Metric(spec["measurement_name"], dict(tags), fields, ts))
        return out

    # --- processors ---------------------------------------------------------------------
    def _process(self, m: Metric) -> Metric:
        for proc in self.conf.get("processors", {}).get("enum", []):
            if set(proc) - {"namepass", "mapping"}:
                raise Unsupported(f"enum options {sorted(proc)}")
            if not any(fnmatchcase(m.name, p) for p in proc.get("namepass", ["*"])):
                continue
            for mapping in proc["mapping"]:
                if set(mapping) - {"fields", "dest", "value_mappings", "default"}:
                    raise Unsupported(f"enum mapping options {sorted(mapping)}")
                for name in [f for f in list(m.fields) if any(fnmatchcase(f, g) for g in mapping["fields"])]:
                    value = mapping["value_mappings"].get(m.fields[name], mapping.get("default"))
                    if value is not None:
                        m.fields[mapping.get("dest", name)] = value
        return m
