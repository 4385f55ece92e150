"""Interlock rules without a broker: validation against the stack, hysteresis, delays, latching, fail-safe."""

import pytest
import yaml

from slowctl.config import ConfigError, parse_config
from slowctl.safety.rules import DeviceView, Interlocks

BENCH = {
    "lv-before-hv": {"kind": "requires", "protects": ["hv.*", "hv2.*"], "requires": ["lv.0"]},
    "dewpoint-box": {
        "kind": "dewpoint",
        "protects": ["hv.*"],
        "cold": "chiller.0.temperature",
        "humidity": "climate.0",
        "margin": 3.0,
        "hysteresis": 0.5,
    },
    "bath-hot": {
        "kind": "threshold",
        "protects": ["hv.*"],
        "reading": "chiller.0.temperature",
        "above": 30,
        "delay": 5,
        "hysteresis": 1,
    },
    "climate-fresh": {"kind": "stale", "protects": ["hv.*"], "devices": ["climate"], "max_age": 10, "latch": True},
}


def status(state="ok", **channels):
    return {"state": state, "channels": [{"channel": int(ch[2:]), **c} for ch, c in channels.items()]}


def view(now=100.0, lv_on=True, bath=15.0, dew=5.0, climate_age=1.0, **over):
    v = {
        "lv": DeviceView(True, status(ch0={"on": lv_on, "state": "ON" if lv_on else "OFF"}), now),
        "chiller": DeviceView(True, status(ch0={"temperature": bath, "tset": bath, "on": True, "state": "ON"}), now),
        "climate": DeviceView(
            True, status(ch0={"temperature": 21.0, "humidity": 40.0, "dewpoint": dew}), now - climate_age
        ),
    }
    v.update(over)
    return v


def with_rules(rules):
    """The example bench with these interlock rules, through the config loader as a user's file goes."""
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).parents[2] / "config" / "bench.yaml").read_text())
    raw["interlocks"] = rules
    return parse_config(raw)


@pytest.fixture
def rules():
    stack = with_rules(BENCH)
    return Interlocks.for_stack(stack.interlocks, stack.devices)


def states(rules, v, now=100.0):
    return {s.name: s for s in rules.evaluate(v, now)}


def test_all_satisfied(rules):
    s = states(rules, view())
    assert not any(x.active for x in s.values()), {n: x.reason for n, x in s.items()}
    assert ("hv", 0) in s["lv-before-hv"].protects and ("hv2", 1) in s["lv-before-hv"].protects


def test_requires_lv_on_and_ok(rules):
    s = states(rules, view(lv_on=False))
    assert s["lv-before-hv"].active and "lv.0 is not on and ok (state OFF)" in s["lv-before-hv"].reason
    assert not states(rules, view())["lv-before-hv"].active, "clears when LV is back (no latch)"


def test_dewpoint_margin_with_hysteresis(rules):
    s = states(rules, view(bath=7.5, dew=5.0))  # margin 2.5 K < 3 K
    assert s["dewpoint-box"].active and "margin 2.5 K < 3.0 K" in s["dewpoint-box"].reason
    assert states(rules, view(bath=8.2, dew=5.0))["dewpoint-box"].active, "3.2 K: within the 0.5 K hysteresis"
    assert not states(rules, view(bath=8.6, dew=5.0))["dewpoint-box"].active


def test_threshold_waits_for_its_delay(rules):
    assert not states(rules, view(bath=31), 100.0)["bath-hot"].active
    assert not states(rules, view(bath=31), 104.0)["bath-hot"].active
    s = states(rules, view(bath=31), 105.0)
    assert s["bath-hot"].active and s["bath-hot"].since == 105.0
    assert states(rules, view(bath=29.5), 106.0)["bath-hot"].active, "1 K hysteresis"
    assert not states(rules, view(bath=28.9), 107.0)["bath-hot"].active


def test_missing_data_acts_at_once(rules):
    v = view()
    v["chiller"] = DeviceView(False, None, None)
    s = states(rules, v)
    assert s["bath-hot"].active and "chiller is offline" in s["bath-hot"].reason, "no delay for missing data"
    assert s["dewpoint-box"].active
    v = view()
    v["chiller"].status["state"] = "disconnected"
    assert states(rules, v)["bath-hot"].active


def test_stale_data_latches_until_cleared(rules):
    s = states(rules, view(climate_age=12.0))
    assert s["climate-fresh"].active and "last reported 12.0 s ago (max 10 s)" in s["climate-fresh"].reason
    assert rules.clear("climate-fresh") == "interlock climate-fresh is not latched", "not while it holds"
    s = states(rules, view())
    assert s["climate-fresh"].active and s["climate-fresh"].latched and "latched" in s["climate-fresh"].reason
    assert rules.clear("climate-fresh") is None
    assert not states(rules, view())["climate-fresh"].active
    assert "no interlock rule 'nope'" in rules.clear("nope")


@pytest.mark.parametrize(
    "rule,expected",
    [
        ({"kind": "requires", "protects": ["hv.7"], "requires": ["lv.0"]}, "protects.0: 'hv.7' matches no configured"),
        ({"kind": "requires", "protects": ["climate.*"], "requires": ["lv.0"]}, "have no output to protect"),
        ({"kind": "requires", "protects": ["hv.0"], "requires": ["lv.9"]}, "requires.0: lv.9 is not a configured"),
        (
            {
                "kind": "dewpoint",
                "protects": ["hv.0"],
                "cold": "chiller.0.temperature",
                "humidity": "lv.0",
                "margin": 3,
            },
            "humidity: lv.0 is a supply channel; this needs a climate sensor",
        ),
        (
            {
                "kind": "dewpoint",
                "protects": ["hv.0"],
                "cold": "chiller.0.pressure",
                "humidity": "climate.0",
                "margin": 3,
            },
            "cold: a chiller has no reading 'pressure'",
        ),
        ({"kind": "threshold", "protects": ["hv.0"], "reading": "chiller.0.temperature"}, "needs `above` or `below`"),
        (
            {"kind": "threshold", "protects": ["hv.0"], "reading": "chiller.0.temperature", "above": 1, "delay": -1},
            "delay: Input should be greater than or equal to 0",
        ),
        (
            {"kind": "threshold", "protects": ["hv.0"], "reading": "chiller.0.temperature", "above": 1, "colour": 2},
            "colour: unknown key",
        ),
        ({"kind": "magic", "protects": ["hv.0"]}, "kind must be one of"),
        ({"kind": "stale", "protects": ["hv.0"], "devices": ["nope"]}, "devices.0: 'nope' is not a configured device"),
    ],
)
def test_bad_rules_name_the_key(rule, expected):
    with pytest.raises(ConfigError) as info:
        with_rules({"r": rule})
    assert any(e.startswith("interlocks.r") and expected in e for e in info.value.errors), info.value.errors


def test_a_cycle_of_requirements_is_refused():
    cycle = {
        "a": {"kind": "requires", "protects": ["hv.0"], "requires": ["lv.0"]},
        "b": {"kind": "requires", "protects": ["lv.0"], "requires": ["hv.0"]},
    }
    with pytest.raises(ConfigError) as info:
        with_rules(cycle)
    assert "cycle" in str(info.value) and "hv.0 -> lv.0 -> hv.0" in str(info.value)


def test_a_rule_name_must_be_a_plain_word():
    with pytest.raises(ConfigError) as info:
        with_rules({"Bad Name": BENCH["lv-before-hv"]})
    assert any(e.startswith("interlocks.Bad Name") for e in info.value.errors), info.value.errors
