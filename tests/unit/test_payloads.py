"""Status dicts, InfluxDB line protocol and the tracker_dcs legacy status."""

import json
import re
import subprocess
import sys

import pytest

from slowctl.device.payloads import channel_dict, legacy_status, metrics_lines
from slowctl.drivers.readings import ChannelState, SensorChannel, SupplyChannel

TS = 1_700_000_000_123


def supply(**kw) -> SupplyChannel:
    base = dict(on=True, vset=100, vmon=99.5, iset=1e-4, imon=2e-6, state=ChannelState.ON, rampup=10, rampdown=20)
    base.update(kw)
    return SupplyChannel(**base)


def split_line(line: str) -> tuple[str, dict[str, str], dict[str, str], str]:
    """measurement,tags fields timestamp (no spaces inside field values here except escaped tags)."""
    head, fields, ts = re.split(r"(?<!\\) ", line)
    measurement, *tags = re.split(r"(?<!\\),", head)
    tag_map = dict(re.split(r"(?<!\\)=", t, maxsplit=1) for t in tags)
    field_map = dict(f.split("=", 1) for f in re.split(r",(?=[a-z]+=)", fields))
    return measurement, tag_map, field_map, ts


def test_supply_line():
    line = metrics_lines("hv", {0: "sensor-A"}, {0: supply()}, TS)
    assert "\n" not in line
    measurement, tags, fields, ts = split_line(line)
    assert measurement == "supply"
    assert tags == {"device": "hv", "channel": "0", "name": "sensor-A"}
    assert ts == str(TS)  # milliseconds, unchanged
    assert fields["on"] == "true" and fields["tripped"] == "false"
    assert fields["state"] == '"ON"'
    assert set(fields) == {"on", "tripped", "vset", "vmon", "iset", "imon", "rampup", "rampdown", "state"}
    assert float(fields["vset"]) == 100 and float(fields["iset"]) == pytest.approx(1e-4)


def test_supply_kind_tag():
    _, tags, _, _ = split_line(metrics_lines("hv", {0: "a"}, {0: supply()}, TS, kind="hv"))
    assert tags == {"device": "hv", "channel": "0", "name": "a", "kind": "hv"}
    sensor = metrics_lines(
        "climate", {0: "box"}, {0: SensorChannel(temperature=21, humidity=45, dewpoint=8.5)}, TS, kind="lv"
    )
    assert "kind=" not in sensor  # supplies only


@pytest.mark.parametrize(
    "model,vmax,kind",
    [
        ("caen-n1470", [10.0], "hv"),
        ("iseg-shr", [None], "hv"),
        ("keithley-2410", [5.0], "hv"),
        ("hmp4040", [5.0, 12.0], "lv"),
        ("tti-mx100tp", [5.0], "lv"),
        ("hmp4040", [5.0, 60.5], "hv"),  # a channel allowed above SELV is HV, whatever the instrument
        ("climate", [None], None),
        ("julabo", [None], None),
    ],
)
def test_supply_kind(model, vmax, kind):
    from slowctl.drivers import supply_kind

    assert supply_kind(model, vmax) == kind


def test_numbers_are_floats_never_integers():
    r = supply(vset=100, vmon=0, iset=1, imon=0, rampup=5, rampdown=7, on=False, state=ChannelState.OFF)
    line = metrics_lines("hv", {3: "spare"}, {3: r}, TS)
    _, _, fields, _ = split_line(line)
    assert fields["vset"] == "100"  # line protocol: a bare number is a float, an integer needs 'i'
    assert not re.search(r"=-?\d+i(,| |$)", line), line
    for key in ("vset", "vmon", "iset", "imon", "rampup", "rampdown"):
        assert re.fullmatch(r"-?[0-9.e+-]+", fields[key]), (key, fields[key])
    assert fields["on"] == "false"


def test_booleans_are_line_protocol_booleans():
    line = metrics_lines("hv", {0: "a"}, {0: supply(on=1, state=ChannelState.TRIPPED)}, TS)
    _, _, fields, _ = split_line(line)
    assert fields["on"] == "true" and fields["tripped"] == "true" and fields["state"] == '"TRIPPED"'


def test_missing_ramp_rates_are_left_out():
    line = metrics_lines("lv", {1: "fe-digital"}, {1: supply(rampup=None, rampdown=None)}, TS)
    _, _, fields, _ = split_line(line)
    assert "rampup" not in fields and "rampdown" not in fields


def test_environment_line():
    line = metrics_lines("climate", {0: "box"}, {0: SensorChannel(temperature=21, humidity=45, dewpoint=8.5)}, TS)
    measurement, tags, fields, ts = split_line(line)
    assert measurement == "environment"
    assert tags == {"device": "climate", "channel": "0", "name": "box"}
    assert fields == {"temperature": "21", "humidity": "45", "dewpoint": "8.5"}
    assert not re.search(r"=-?\d+i(,| |$)", line), line
    assert ts == str(TS)


def test_one_line_per_channel_sorted():
    readings = {2: supply(), 0: supply(), 1: supply()}
    lines = metrics_lines("hv", {0: "a", 1: "b", 2: "c"}, readings, TS).split("\n")
    assert [split_line(line)[1]["channel"] for line in lines] == ["0", "1", "2"]


def test_tag_escaping():
    line = metrics_lines("hv", {0: "sensor A,1=x"}, {0: supply()}, TS)
    assert line.startswith("supply,channel=0,device=hv,name=sensor\\ A\\,1\\=x "), line
    _, tags, _, _ = split_line(line)
    assert tags["name"] == "sensor\\ A\\,1\\=x"


def test_channel_dict():
    assert channel_dict(2, "x", None) == {"channel": 2, "name": "x"}
    d = channel_dict(0, "sensor-A", supply(state=ChannelState.RAMP_UP, alarms=["OVC"]))
    assert d["state"] == "RAMP_UP" and isinstance(d["state"], str) and type(d["state"]) is str
    assert d["alarms"] == ["OVC"] and d["channel"] == 0 and d["name"] == "sensor-A"
    assert json.loads(json.dumps(d)) == d
    env = channel_dict(1, "room", SensorChannel(20.0, 50.0, 9.26))
    assert env == {"channel": 1, "name": "room", "temperature": 20.0, "humidity": 50.0, "dewpoint": 9.26}


def test_legacy_status_shape():
    readings = {1: supply(on=True, vset=150), 0: supply(on=False, vset=0), 5: SensorChannel(20, 50, 9)}
    status = legacy_status(readings)
    assert status == [{"number": 0, "on": 0, "vreq": 0.0}, {"number": 1, "on": 1, "vreq": 150.0}]
    assert type(status[0]["on"]) is int and type(status[0]["vreq"]) is float
    assert json.dumps(status[0]) == '{"number": 0, "on": 0, "vreq": 0.0}'


@pytest.mark.parametrize(
    "tags,fields",
    [
        ({"device": "hv", "channel": "0", "name": "sensor A,1=x"}, {"vset": 100.0, "on": True, "state": "ON"}),
        ({"name": "ends\\", "kind": "hv"}, {"x": 1e-7, "y": -0.0, "s": 'quote " and \\ backslash'}),
        ({"a": "b"}, {"big": 1.5e300, "nan": float("nan"), "small": 123456789.123}),
    ],
)
def test_line_protocol_same_as_influxdb_client(tags, fields):
    from influxdb_client import Point, WritePrecision  # the reference writer, a test dependency only

    from slowctl.device.payloads import line

    p = Point("supply")
    for k, v in tags.items():
        p.tag(k, v)
    for k, v in fields.items():
        p.field(k, v)
    assert line("supply", tags, fields, TS) == p.time(TS, WritePrecision.MS).to_line_protocol()


def test_device_service_does_not_load_influxdb_client():
    code = "import sys, slowctl.device.adapter; assert 'influxdb_client' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_event_fields_keep_one_type():
    """InfluxDB refuses a field whose type changes: before/after are JSON text whatever they hold."""
    from slowctl.device.events import Event
    from slowctl.device.payloads import event_line

    for value in (300.0, True, "ON", ["TRIP"], None):
        text = event_line(Event("hv", "state_changed", "m", 0, after=value, ts=1.0))
        assert ("after=" not in text) if value is None else (f"after={_quoted(json.dumps(value))}" in text)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_event_line():
    from slowctl.device.events import Event
    from slowctl.device.payloads import event_line

    e = Event(
        "hv",
        "setpoint_changed",
        'vset changed "externally"',
        0,
        before=300.0,
        after=0.0,
        cause="instrument",
        ts=TS / 1000,
    )
    assert event_line(e) == (
        "event,channel=0,device=hv,kind=setpoint_changed,severity=major "
        'after="0.0",before="300.0",cause="instrument",message="vset changed \\"externally\\"" '
        f"{TS}"
    )
