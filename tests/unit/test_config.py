"""Stack config: the shipped file loads; every bad input names its key path."""

import math

import pytest

from slowctl.config import ConfigError, load_config, parse_config

from .conftest import DUMMY_YAML


def errors_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.errors, "a ConfigError must list at least one problem"
    return info.value.errors


def has(errors: list[str], path: str, *words: str) -> bool:
    return any(e.startswith(path + ":") and all(w in e for w in words) for e in errors)


def test_shipped_dummy_config_loads():
    stack = load_config(DUMMY_YAML)
    from slowctl.drivers import DRIVERS

    # one device of each model, each simulated by `slowctl up --dummy`: a new model adds its device here
    assert sorted(d.model for d in stack.devices.values()) == sorted(DRIVERS)
    assert all(d.simulator and d.simulator.port for d in stack.devices.values())
    hv = stack.devices["hv"]
    assert hv.model == "caen-n1470" and hv.legacy_name == "hv"
    assert sorted(hv.channels) == [0, 1, 2, 3]
    assert hv.channels[0].vmax == 600 and hv.channels[0].imax == pytest.approx(100e-6)
    assert hv.channels[3].off_mode == "kill"
    assert stack.devices["climate"].options == {"sensors": 2}
    assert stack.supervisor.max_restarts == 5


# --- unknown keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    "where,path",
    [
        (lambda d: d, "colour"),
        (lambda d: d["mqtt"], "mqtt.colour"),
        (lambda d: d["broker"], "broker.colour"),
        (lambda d: d["supervisor"], "supervisor.colour"),
        (lambda d: d["devices"]["hv"], "devices.hv.colour"),
        (lambda d: d["devices"]["lv"]["channels"][2], "devices.lv.channels.2.colour"),
        (lambda d: d["devices"]["hv"]["simulator"], "devices.hv.simulator.colour"),
    ],
    ids=["top", "mqtt", "broker", "supervisor", "device", "channel", "simulator"],
)
def test_unknown_key_is_named(raw, where, path):
    where(raw)["colour"] = "red"
    errors = errors_of(raw)
    assert has(errors, path, "unknown key"), errors


@pytest.mark.parametrize("device", ["hv", "lv", "climate"])
def test_unknown_driver_option_is_named(raw, device):
    raw["devices"][device].setdefault("options", {})["colour"] = "red"
    errors = errors_of(raw)
    assert has(errors, f"devices.{device}.options.colour", "unknown"), errors


# --- wrong types and ranges ---------------------------------------------------------


@pytest.mark.parametrize(
    "mutate,path",
    [
        (lambda d: d["mqtt"].update(port="abc"), "mqtt.port"),
        (lambda d: d["mqtt"].update(keepalive=[1]), "mqtt.keepalive"),
        (lambda d: d["devices"]["hv"].update(poll_period="fast"), "devices.hv.poll_period"),
        (lambda d: d["devices"]["hv"].update(address=5), "devices.hv.address"),
        (lambda d: d["devices"]["hv"]["channels"][0].update(name=7), "devices.hv.channels.0.name"),
        (lambda d: d["devices"]["hv"]["channels"][0].update(vmax="high"), "devices.hv.channels.0.vmax"),
        (lambda d: d["devices"]["hv"]["channels"][0].update(off_mode="explode"), "devices.hv.channels.0.off_mode"),
        (lambda d: d["devices"]["hv"]["options"].update(board="zero"), "devices.hv.options.board"),
        (lambda d: d["devices"]["hv"]["options"].update(board=32), "devices.hv.options.board"),
        (lambda d: d["supervisor"].update(window=0), "supervisor.window"),
        (lambda d: d["devices"]["hv"].update(timeout=31), "devices.hv.timeout"),
    ],
    ids=[
        "port-str",
        "keepalive-list",
        "poll-str",
        "address-int",
        "name-int",
        "vmax-str",
        "off_mode",
        "board-str",
        "board-range",
        "window-0",
        "timeout-range",
    ],
)
def test_wrong_type_or_range_is_named(raw, mutate, path):
    mutate(raw)
    errors = errors_of(raw)
    assert has(errors, path), errors


@pytest.mark.parametrize("section,port", [("mqtt", 0), ("mqtt", 65536), ("broker", 70000), ("broker", -1)])
def test_out_of_range_port(raw, section, port):
    raw[section]["port"] = port
    errors = errors_of(raw)
    assert has(errors, f"{section}.port"), errors


def test_simulator_port_out_of_range(raw):
    raw["devices"]["lv"]["simulator"]["port"] = 65536
    assert has(errors_of(raw), "devices.lv.simulator.port")


def test_negative_channel_number(raw):
    raw["devices"]["lv"]["channels"][-1] = {"name": "neg", "vmax": 1, "imax": 1}
    errors = errors_of(raw)
    assert has(errors, "devices.lv.channels", "-1"), errors


def test_non_integer_channel_number(raw):
    raw["devices"]["lv"]["channels"]["x"] = {"name": "x", "vmax": 1, "imax": 1}
    errors = errors_of(raw)
    assert any(e.startswith("devices.lv.channels.x") for e in errors), errors


def test_no_channels(raw):
    raw["devices"]["lv"]["channels"] = {}
    assert has(errors_of(raw), "devices.lv.channels", "at least one channel")


def test_unknown_model(raw):
    raw["devices"]["hv"]["model"] = "caen-n9999"
    errors = errors_of(raw)
    assert has(errors, "devices.hv.model", "unknown model", "caen-n9999", "caen-n1470"), errors


def test_missing_model_and_devices():
    errors = errors_of({"mqtt": {}})
    assert has(errors, "devices", "required"), errors


def test_top_level_must_be_a_mapping():
    assert errors_of(["devices"]) == ["top level: expected a mapping"]
    assert errors_of(None) == ["top level: expected a mapping"]


@pytest.mark.parametrize("dev_id", ["HV", "1hv", "h v", "hv/x", "hv+", "a" * 33, ""])
def test_bad_device_id(raw, dev_id):
    raw["devices"][dev_id] = raw["devices"].pop("lv")
    errors = errors_of(raw)
    assert has(errors, f"devices.{dev_id}", "device id"), errors


def test_device_id_with_trailing_newline_is_refused(raw):
    # the id becomes part of MQTT topics and ACL lines; "$" in DEVICE_ID lets "hv\n" through
    raw["devices"]["lv\n"] = raw["devices"].pop("lv")
    errors = errors_of(raw)
    assert any("device id" in e for e in errors), errors


def test_legacy_name_with_trailing_newline_is_refused(raw):
    raw["devices"]["lv"]["legacy_name"] = "lv\n"
    errors = errors_of(raw)
    assert has(errors, "devices.lv.legacy_name"), errors


@pytest.mark.parametrize("name", ["LV", "l v", "/lv", "lv/x"])
def test_bad_legacy_name(raw, name):
    raw["devices"]["lv"]["legacy_name"] = name
    assert has(errors_of(raw), "devices.lv.legacy_name", "must match")


def test_legacy_name_other_than_the_device_id(raw):
    raw["devices"]["lv"]["legacy_name"] = "hv"
    errors = errors_of(raw)
    assert has(errors, "devices.lv.legacy_name", "must equal the device id 'lv'", "'hv'"), errors


@pytest.mark.parametrize(
    "dev_id", ["viewer", "operator", "nodered", "telegraf", "interlock", "alarms", "health", "environment"]
)
def test_device_id_of_a_broker_role_or_ui_page_is_refused(raw, dev_id):
    raw["devices"][dev_id] = raw["devices"].pop("climate")
    assert has(errors_of(raw), f"devices.{dev_id}", "reserved for a broker role or a UI page"), errors_of(raw)


def test_device_id_with_a_hyphen_is_refused(raw):
    raw["devices"]["hv-1"] = raw["devices"].pop("climate")
    assert has(errors_of(raw), "devices.hv-1", "must match [a-z][a-z0-9_]*")


def test_broker_ports_must_differ(raw):
    raw["broker"]["tls_port"] = raw["broker"]["port"]
    assert has(errors_of(raw), "broker", "must differ")


def test_a_simulator_on_a_port_the_stack_already_uses_is_refused(raw):
    raw["devices"]["climate"]["simulator"]["port"] = raw["broker"]["port"]
    assert has(errors_of(raw), "devices.climate.simulator.port", "is also broker.port")
    raw["devices"]["climate"]["simulator"]["port"] = raw["devices"]["hv"]["simulator"]["port"]
    assert has(errors_of(raw), "devices.climate.simulator.port", "is also devices.hv.simulator.port")


def test_channel_the_model_does_not_have(raw):
    raw["devices"]["hv"]["options"]["channels"] = 2
    errors = errors_of(raw)
    assert has(errors, "devices.hv.channels.3", "caen-n1470 has channels 0..1"), errors
    assert has(errors, "devices.hv.channels.2"), errors
    assert not has(errors, "devices.hv.channels.1") and not has(errors, "devices.hv.channels.0")


def test_hmp_channel_beyond_model(raw):
    raw["devices"]["lv"]["options"] = {"channels": 3}
    errors = errors_of(raw)
    assert errors == ["devices.lv.channels.3: hmp4040 has channels 0..2"], errors


def test_climate_sensor_beyond_count(raw):
    raw["devices"]["climate"]["options"]["sensors"] = 1
    assert has(errors_of(raw), "devices.climate.channels.1")


@pytest.mark.parametrize(
    "dev,key,value,rng",
    [
        ("hv", "vmax", 9000, "0..8000"),
        ("hv", "imax", 0.01, "0..0.003"),
        ("hv", "ramp_max", 600, "1..500"),
        ("lv", "vmax", 40, "0..32.05"),
        ("lv", "imax", 11, "0..10"),
    ],
)
def test_limit_beyond_instrument_range(raw, dev, key, value, rng):
    ch = raw["devices"][dev]["channels"][0]
    ch[key] = value
    if key == "ramp_max":
        ch["rampup"] = ch["rampdown"] = 10
    errors = errors_of(raw)
    assert has(errors, f"devices.{dev}.channels.0.{key}", "outside", rng), errors


@pytest.mark.parametrize("key", ["vmax", "imax"])
def test_supply_channel_needs_limits(raw, key):
    del raw["devices"]["lv"]["channels"][1][key]
    errors = errors_of(raw)
    assert has(errors, f"devices.lv.channels.1.{key}", "required"), errors


def test_sensor_channel_needs_no_limits(raw):
    parse_config(raw)  # climate channels have no vmax/imax
    assert "vmax" not in raw["devices"]["climate"]["channels"][0]


@pytest.mark.parametrize("key", ["rampup", "rampdown"])
def test_ramp_rate_above_ramp_max(raw, key):
    raw["devices"]["hv"]["channels"][1][key] = 60  # ramp_max 50
    errors = errors_of(raw)
    assert has(errors, "devices.hv.channels.1", key, "ramp_max"), errors


@pytest.mark.parametrize("key", ["vmax", "imax", "ramp_max", "rampup", "rampdown"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_limits(raw, key, value):
    raw["devices"]["hv"]["channels"][0][key] = value
    errors = errors_of(raw)
    assert any(e.startswith(f"devices.hv.channels.0.{key}:") for e in errors), errors


def test_non_finite_limit_from_yaml(tmp_path):
    text = DUMMY_YAML.read_text().replace("0: {name: fe-analog, vmax: 2.5,", "0: {name: fe-analog, vmax: .nan,")
    assert ".nan" in text
    path = tmp_path / "nan.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(e.startswith("devices.lv.channels.0.vmax:") for e in info.value.errors), info.value.errors


def test_negative_limit(raw):
    raw["devices"]["lv"]["channels"][0]["imax"] = -1
    assert has(errors_of(raw), "devices.lv.channels.0.imax")


# --- files -------------------------------------------------------------------------


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("mqtt:\n  port: 1883\n  host: [a, b\ndevices: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("line 4: invalid YAML"), info.value.errors
    assert info.value.source == str(path)


def test_invalid_yaml_tab_line(tmp_path):
    path = tmp_path / "tab.yaml"
    path.write_text("mqtt:\n  port: 1883\n\tbad: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors[0].startswith("line 3:"), info.value.errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == ["cannot read: No such file or directory"]
    assert str(path) in str(info.value)


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.errors[0].startswith("cannot read:")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == ["top level: expected a mapping"]


def test_several_errors_reported_at_once(raw):
    raw["colour"] = "red"
    raw["mqtt"]["port"] = 70000
    raw["devices"]["hv"]["model"] = "nope"
    raw["devices"]["lv"]["channels"][0]["vmax"] = 40
    raw["devices"]["lv"]["channels"][1]["rampup"] = -1
    raw["devices"]["climate"]["legacy_name"] = "hv"
    errors = errors_of(raw)
    assert has(errors, "colour", "unknown key")
    assert has(errors, "mqtt.port")
    assert has(errors, "devices.hv.model", "unknown model")
    assert has(errors, "devices.lv.channels.0.vmax", "outside")
    assert has(errors, "devices.lv.channels.1.rampup")
    assert has(errors, "devices.climate.legacy_name", "must equal the device id")
    assert len(errors) >= 6
