"""Procedures without a broker: declared parameters and their refusals, the catalog, the IV scan's voltages,
procedure files of a lab (good, broken, a name taken twice), the checks of a bias voltage against a channel's
capabilities, and what `slowctl procedure show|export` make of a run's record."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from slowctl.client.api import ClientError
from slowctl.procedures import export
from slowctl.procedures.base import Procedure
from slowctl.procedures.bias import bias_problems, sign_of
from slowctl.procedures.builtin import BUILTIN
from slowctl.procedures.builtin.burn_in import BurnIn
from slowctl.procedures.builtin.iv_scan import IVScan
from slowctl.procedures.builtin.ramp_hold import RampAndHold
from slowctl.procedures.cli import parse_params
from slowctl.procedures.params import ChannelRef, Choice, Duration, Flag, Integer, ParamError, Readings
from slowctl.procedures.runner import load_catalog


def refused(cls: type[Procedure], **raw: Any) -> str:
    with pytest.raises(ParamError) as info:
        cls(**raw)
    return str(info.value)


IV = {"channel": "bias.0", "stop": -60, "step": 20}


# --- parameters --------------------------------------------------------------------------------------------------
def test_parameters_parse_from_text_and_json_with_defaults():
    scan = IVScan(channel="bias.0", stop="-60", step="20", settle="0.5", samples="2")
    assert scan.channel == ChannelRef("bias", 0) and str(scan.channel) == "bias.0"
    assert (scan.start, scan.stop, scan.step, scan.settle, scan.samples) == (0.0, -60.0, 20.0, 0.5, 2)
    assert isinstance(scan.samples, int) and isinstance(scan.stop, float)
    assert (scan.current_limit, scan.jump, scan.safe_voltage) == (None, 10.0, 0.0), "the defaults"
    assert IVScan(**IV, samples=2.0).samples == 2, "a whole JSON number is an integer"
    assert scan.parameters() == {
        "channel": "bias.0", "start": 0.0, "stop": -60.0, "step": 20.0, "settle": 0.5, "samples": 2,
        "current_limit": None, "jump": 10.0, "jump_floor": 1e-8, "safe_voltage": 0.0,
    }  # fmt: skip
    assert json.loads(json.dumps(scan.parameters())) == scan.parameters(), "the record's params are JSON"


def test_an_optional_setting_can_be_left_out_by_name():
    """`none: no limit`, as the catalog says: typed on the command line or null in JSON."""
    assert IVScan(**IV, current_limit="none").current_limit is None
    assert IVScan(**IV, current_limit=None).current_limit is None
    assert IVScan(**IV, current_limit="5e-6").current_limit == 5e-6
    assert "expected a number" in refused(IVScan, **{**IV, "stop": "none"}), "a required number is never none"
    assert "expected a number" in refused(IVScan, **IV, jump=None), "nor one with a default of its own"


def test_unknown_and_missing_parameters_are_refused_by_name():
    msg = refused(IVScan, **IV, stpo=-100)
    assert msg.startswith("stpo: unknown parameter of iv_scan (it takes: channel, start, stop, step,"), msg
    msg = refused(IVScan, channel="bias.0", step=20)
    assert msg == "stop: required (last voltage (the scan ends there unless a criterion stops it first))"
    msg = refused(BurnIn, voltage=-50)
    assert "channels: required" in msg and "duration: required" in msg, "every problem at once"


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"settle": -1}, "settle: -1 s is below the minimum 0 s"),
        ({"settle": "2h"}, "settle: 7200 s is above the maximum 3600 s"),
        ({"samples": 0}, "samples: 0 is below the minimum 1"),
        ({"samples": 2.5}, "samples: expected an integer, got 2.5"),
        ({"samples": True}, "samples: expected a number, got 'True'"),
        ({"step": 0}, "step: must be > 0 V, got 0"),
        ({"step": -5}, "step: must be > 0 V, got -5"),
        ({"jump": 1.2}, "jump: 1.2 is below the minimum 1.5"),
        ({"stop": "abc"}, "stop: expected a number, got 'abc'"),
        ({"stop": "-60 V"}, "stop: expected a number, got '-60 V'"),
        ({"stop": [1]}, "stop: expected a number, got '[1]'"),
        ({"stop": "nan"}, "stop: must be a finite number"),
        ({"stop": float("inf")}, "stop: must be a finite number"),
        ({"settle": "2x"}, "settle: expected a duration such as 90, 30s, 10m, 2h or 1d, got '2x'"),
        ({"settle": "-1s"}, "settle: expected a duration such as 90, 30s, 10m, 2h or 1d, got '-1s'"),
    ],
)
def test_values_out_of_bounds_or_of_the_wrong_kind_are_refused_never_clamped(params, expected):
    assert refused(IVScan, **{**IV, **params}) == expected


@pytest.mark.parametrize(
    "text,seconds", [("90", 90), (90, 90), ("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), (" 1.5 h ", 5400)]
)
def test_durations(text, seconds):
    assert BurnIn(channels="bias.0", voltage=-50, duration=text).duration == seconds


def test_channels_and_their_syntax():
    burn = BurnIn(channels="bias.0, hv.1", voltage=-50, duration="10m")
    assert burn.channels == (ChannelRef("bias", 0), ChannelRef("hv", 1))
    assert burn.driven() == [ChannelRef("bias", 0), ChannelRef("hv", 1)], "the channels the run holds"
    assert BurnIn(channels=["hv.0", "hv2.1"], voltage=50, duration=60).channels[1] == ChannelRef("hv2", 1)
    for bad in ("bias", "Bias.0", "bias.0.1", "bias.", ".0", "bias.1234", "0.bias", "bias 0"):
        assert refused(IVScan, **{**IV, "channel": bad}) == (
            f"channel: expected a channel as device.channel (hv.0), got {bad!r}"
        )
    assert "expected a channel" in refused(IVScan, **{**IV, "channel": 5})
    assert refused(BurnIn, channels="bias.0,hv.1,bias.0", voltage=-50, duration=60) == (
        "channels: a channel is named twice"
    )
    assert "expected channels such as hv.0,hv.1" in refused(BurnIn, channels=[], voltage=-50, duration=60)
    assert "expected a channel" in refused(BurnIn, channels="hv.0,,hv.1", voltage=-50, duration=60)


def test_the_other_kinds():
    class Kinds(Procedure):
        name, title = "kinds", "Kinds"
        mode = Choice("fast", "slow", default="slow")
        dry = Flag(False)
        count = Integer(1, lo=1, hi=3)
        wait = Duration(5)
        readings = Readings(("climate.0.humidity",))

    k = Kinds(mode="fast", dry="yes", readings="climate.0.temperature, chiller.0.temperature")
    assert (k.mode, k.dry, k.count, k.wait) == ("fast", True, 1, 5)
    assert k.readings == ("climate.0.temperature", "chiller.0.temperature")
    assert k.driven() == [], "no channel: nothing held"
    assert refused(Kinds, mode="medium") == "mode: expected one of fast, slow, got 'medium'"
    assert refused(Kinds, dry="perhaps") == "dry: expected true or false, got 'perhaps'"
    assert refused(Kinds, count=4) == "count: 4 is above the maximum 3"
    assert "expected readings" in refused(Kinds, readings=[1])


def test_the_iv_scans_own_checks_among_its_parameters():
    assert refused(IVScan, channel="bias.0", start=10, stop=-60, step=20) == (
        "start 10 V and stop -60 V have opposite signs"
    )
    assert refused(IVScan, channel="bias.0", start=-60, stop=-60, step=20) == "start and stop are the same voltage"
    assert refused(IVScan, channel="bias.0", stop=-500, step=0.01) == "50000 steps: at most 10000"
    assert IVScan(channel="bias.0", stop=-100, step=0.01).voltages()[-1] == -100, "10000 steps are allowed"
    # validate() runs only on values that parsed: one problem at a time, the clearest first
    assert refused(IVScan, channel="bias.0", start=10, stop="x", step=20) == "stop: expected a number, got 'x'"


def test_iv_scan_voltages_are_signed_and_the_last_step_may_be_shorter():
    assert IVScan(channel="bias.0", stop=-60, step=20).voltages() == [0, -20, -40, -60]
    assert IVScan(channel="bias.0", stop=-50, step=20).voltages() == [0, -20, -40, -50]
    assert IVScan(channel="bias.0", start=-400, stop=-500, step=50).voltages() == [-400, -450, -500]
    assert IVScan(channel="hv.0", start=10, stop=0, step=3).voltages() == [10, 7, 4, 1, 0], "downwards"
    assert IVScan(channel="hv.0", stop=1, step=0.1).voltages() == [round(0.1 * i, 1) for i in range(11)], (
        "no extra step from binary fractions"
    )


def test_parse_params_from_the_command_line():
    assert parse_params(["channel=bias.0", " stop = -60 ", "step=20"]) == {
        "channel": "bias.0",
        "stop": "-60",
        "step": "20",
    }
    with pytest.raises(ParamError, match="expected NAME=VALUE"):
        parse_params(["stop"])
    with pytest.raises(ParamError, match="stop: given twice"):
        parse_params(["stop=-60", "stop=-70"])


# --- the catalog -------------------------------------------------------------------------------------------------
def test_describe_is_what_a_form_needs():
    d = IVScan.describe()
    assert (d["name"], d["title"]) == ("iv_scan", "IV scan")
    assert d["doc"].startswith("Steps a bias channel") and "\n    " not in d["doc"], "the docstring, dedented"
    assert list(d["params"])[:4] == ["channel", "start", "stop", "step"], "the procedure's own first"
    assert list(d["params"])[-1] == "safe_voltage", "then what every procedure has"
    p = d["params"]
    assert p["channel"] == {"kind": "channel", "doc": "the bias channel, device.channel", "required": True,
                            "drives": True}  # fmt: skip
    assert p["stop"]["required"] and "default" not in p["stop"] and p["stop"]["unit"] == "V"
    assert p["step"]["positive"] is True, "strictly above 0: lo cannot say so"
    assert p["settle"] == {"kind": "duration", "doc": "wait after each step before sampling", "required": False,
                           "default": 2.0, "unit": "s", "lo": 0, "hi": 3600}  # fmt: skip
    assert p["current_limit"]["default"] is None and p["current_limit"]["unit"] == "A"
    assert BurnIn.describe()["params"]["channels"]["kind"] == "channels"
    json.dumps([cls.describe() for cls in BUILTIN])  # the retained catalog is JSON


def test_load_catalog_reports_a_broken_file_and_a_duplicate_and_loads_the_rest(tmp_path):
    (tmp_path / "leakage.py").write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "from slowctl.procedures.base import Procedure, Run\n"
        "from slowctl.procedures.builtin.iv_scan import IVScan  # imported, not defined here: not listed twice\n"
        "from slowctl.procedures.params import Channel, Number\n"
        "\n"
        "@dataclass\n"
        "class Step:\n"
        "    volts: float\n"
        "\n"
        "class Leakage(Procedure):\n"
        '    """Leakage at one voltage."""\n'
        '    name = "leakage"\n'
        '    title = "Leakage"\n'
        '    channel = Channel("the channel")\n'
        '    volts = Number("V", 100.0)\n'
        "    def run(self, run: Run) -> None:\n"
        "        pass\n"
    )
    (tmp_path / "broken.py").write_text("x = 1\ndef f(:\n    pass\n")
    (tmp_path / "raises.py").write_text("import json\n\njson.loads('{')\n")
    (tmp_path / "again.py").write_text(
        "from slowctl.procedures.base import Procedure\n\nclass Again(Procedure):\n    name = 'iv_scan'\n"
        "    title = 'another IV scan'\n"
    )
    (tmp_path / "notes.txt").write_text("not a procedure")
    catalog, problems = load_catalog([tmp_path, tmp_path / "missing"])
    assert sorted(catalog) == ["burn_in", "iv_scan", "leakage", "ramp_hold"]
    assert catalog["iv_scan"] is IVScan, "the built-in keeps its name"
    leakage = catalog["leakage"](channel="hv.0")
    assert leakage.volts == 100.0 and leakage.driven() == [ChannelRef("hv", 0)]
    assert catalog["leakage"].describe()["doc"] == "Leakage at one voltage."
    assert problems == [
        f"{tmp_path / 'again.py'}: procedure 'iv_scan' is defined twice: this one is ignored",
        f"{tmp_path / 'broken.py'} (line 2): SyntaxError: invalid syntax",
        f"{tmp_path / 'raises.py'} (line 3): JSONDecodeError: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        f"{tmp_path / 'missing'}: not a directory",
    ], "each problem with the line of the lab's file, the others still load"
    assert load_catalog()[1] == [] and set(load_catalog()[0]) == {p.name for p in BUILTIN}


# --- a bias voltage against the channel's capabilities ----------------------------------------------------------
class FakeBench:
    """What bias_problems and sign_of read of a Client: `action(device, channel, "vset")`."""

    CAPS = {
        ("bias", 0): {"unit": "V", "min": 0.0, "max": 500.0, "step": 0.005, "polarity": "-"},
        ("hv", 0): {"unit": "V", "min": 0.0, "max": 600.0, "step": 0.1, "polarity": None},
        ("hvp", 0): {"unit": "V", "min": 0.0, "max": 1000.0, "step": 1.0, "polarity": "+"},
        ("floor", 0): {"unit": "V", "min": 5.0, "max": 100.0, "step": None, "polarity": None},
    }

    def action(self, device: str, channel: int, action: str) -> dict[str, Any]:
        assert action == "vset"
        try:
            return dict(self.CAPS[(device, channel)])
        except KeyError:
            raise ClientError(f"{device} has no channel {channel}") from None


def test_bias_problems_range_polarity_and_grid():
    bench: Any = FakeBench()
    bias, hv, hvp, floor = ChannelRef("bias", 0), ChannelRef("hv", 0), ChannelRef("hvp", 0), ChannelRef("floor", 0)
    assert bias_problems(bench, bias, "stop", -400) == []
    assert bias_problems(bench, bias, "stop", 400) == [], "a magnitude is fine on a negative channel"
    assert bias_problems(bench, bias, "stop", -600) == ["stop: -600 V is beyond bias.0's limit of 500 V"]
    assert bias_problems(bench, hv, "stop", -60) == [
        "stop: -60 V is negative, but hv.0 has no polarity configured (values are magnitudes)"
    ]
    assert bias_problems(bench, hvp, "target", -60) == ["target: -60 V is negative, but hvp.0 has positive polarity"]
    assert bias_problems(bench, hv, "stop", 60.05) == ["stop: 60.05 V is finer than hv.0's 0.1 V step"]
    assert bias_problems(bench, hv, "stop", 60.05, grid=False) == []
    assert bias_problems(bench, bias, "stop", -0.005 * 40001) == [], "a fine grid, judged relatively"
    assert bias_problems(bench, floor, "start", 2) == ["start: 2 V is below floor.0's minimum of 5 V"]
    assert bias_problems(bench, ChannelRef("hv", 9), "stop", 10) == ["stop: hv has no channel 9"]
    assert (sign_of(bench, bias), sign_of(bench, hv), sign_of(bench, hvp)) == (-1.0, 1.0, 1.0)


def test_the_built_ins_check_every_voltage_they_will_set():
    bench: Any = FakeBench()
    assert IVScan(channel="bias.0", stop=-500, step=50).check(bench) == []
    assert IVScan(channel="bias.0", stop=-600, step=50).check(bench) == [
        "stop: -600 V is beyond bias.0's limit of 500 V"
    ]
    assert IVScan(channel="hv.0", start=0.05, stop=10, step=5).check(bench) == [
        "start: 0.05 V is finer than hv.0's 0.1 V step"
    ]
    assert IVScan(channel="hv.0", start=0, stop=10, step=0.25).check(bench) == [
        "step: 0.25 V is finer than hv.0's 0.1 V step"
    ], "a step between start and stop off the grid"
    assert BurnIn(channels="bias.0,hv.0", voltage=-50, duration=60).check(bench) == [
        "voltage: -50 V is negative, but hv.0 has no polarity configured (values are magnitudes)"
    ]
    assert RampAndHold(channel="hvp.0", target=-10, hold=1).check(bench) == [
        "target: -10 V is negative, but hvp.0 has positive polarity"
    ]


# --- the record, read back ---------------------------------------------------------------------------------------
def sample_run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    t0 = datetime(2026, 12, 1, 18, 40, 0, tzinfo=UTC)
    doc = {
        "_id": "20261201T184000-iv_scan-2b82",
        "procedure": "iv_scan",
        "title": "IV scan",
        "params": {"channel": "bias.0", "start": 0.0, "stop": -60.0, "step": 20.0},
        "operator": "alice",
        "by": "alice",
        "channels": ["bias.0"],
        "instruments": {"bias": {"model": "keithley-2410", "identity": "KEITHLEY INSTRUMENTS INC.,MODEL 2410"}},
        "started": t0,
        "finished": t0.replace(second=12),
        "outcome": "stopped",
        "reason": "compliance at -60 V (10 µA)",
        "points": 4,
        "notes": ["bias.0 brought to 0 V and switched off"],
    }
    currents = [-1e-12, -7.5e-7, -1.06e-6, -1.0e-5]
    pts = [
        {
            "_id": f"{doc['_id']}:{n:07d}",
            "run": doc["_id"],
            "seq": n,
            "ts": t0.replace(second=3 * n),
            "v": 0.0 - 20 * (n - 1),
            "vmon": 1e-4 - 20 * (n - 1),
            "i": i,
            "i_std": 0.0,
            "n": 1,
            "state": "COMPLIANCE" if n == 4 else "ON",
            "climate_0_temperature": 20.0 + 0.01 * n,
            "climate_0_humidity": None if n == 2 else 40.0,
        }  # fmt: skip
        for n, i in enumerate(currents, 1)
    ]
    return doc, pts


def test_export_csv_has_every_field_of_the_points_in_order():
    doc, pts = sample_run()
    rows = list(csv.reader(io.StringIO(export.as_csv(pts))))
    assert rows[0] == ["seq", "ts", "v", "vmon", "i", "i_std", "n", "state", "climate_0_temperature",
                       "climate_0_humidity"]  # fmt: skip
    assert len(rows) == 5
    assert rows[1][:3] == ["1", "2026-12-01T18:40:03.000+00:00", "0"]
    assert rows[4][4] == "-1e-05" and rows[4][7] == "COMPLIANCE"
    assert rows[2][9] == "", "a reading that was not there is empty, not 'None'"
    assert export.as_csv([]) == "\n"


def test_export_json_is_the_run_and_its_points():
    doc, pts = sample_run()
    body = json.loads(export.as_json(doc, pts))
    assert body["run"]["_id"] == doc["_id"] and body["run"]["operator"] == "alice"
    assert body["run"]["started"] == "2026-12-01T18:40:00.000+00:00"
    assert [p["seq"] for p in body["points"]] == [1, 2, 3, 4]
    assert "_id" not in body["points"][0] and "run" not in body["points"][0]
    assert body["points"][3]["i"] == -1e-5


def test_describe_for_people():
    doc, pts = sample_run()
    text = export.describe(doc, pts)
    lines = text.splitlines()
    assert lines[0] == "run        20261201T184000-iv_scan-2b82"
    assert "procedure  iv_scan (IV scan)" in lines
    assert "operator   alice" in lines and "channels   bias.0" in lines
    assert "outcome    stopped" in lines and "reason     compliance at -60 V (10 µA)" in lines
    assert "started    2026-12-01T18:40:00.000+00:00" in lines
    assert "instrument bias: keithley-2410 KEITHLEY INSTRUMENTS INC.,MODEL 2410" in lines
    assert "note       bias.0 brought to 0 V and switched off" in lines
    assert "points     4" in lines and "COMPLIANCE" in lines[-1]
    line = export.run_line(doc)
    assert line.startswith("20261201T184000-iv_scan-2b82") and "stopped" in line and "(compliance" in line


def test_find_run_by_a_unique_beginning():
    class Coll:
        def __init__(self, docs):
            self.docs = docs

        def find_one(self, q):
            return next((d for d in self.docs if d["_id"] == q["_id"]), None)

        def find(self, q):
            import re

            found = [d for d in self.docs if re.match(q["_id"]["$regex"], d["_id"])]

            class Cursor(list):
                def limit(self, n):
                    return self[:n]

            return Cursor(found)

    db = {"procedures": Coll([{"_id": "20261201T1840-a"}, {"_id": "20261201T1840-b"}, {"_id": "20261201T1900-c"}])}
    assert export.find_run(db, "20261201T1840-a")["_id"] == "20261201T1840-a"
    assert export.find_run(db, "20261201T19")["_id"] == "20261201T1900-c"
    with pytest.raises(export.NotFound, match="names several runs"):
        export.find_run(db, "20261201T1840")
    with pytest.raises(export.NotFound, match="no run 'x.y'"):
        export.find_run(db, "x.y")
    with pytest.raises(export.NotFound, match="no run"):
        export.find_run(db, "20261201T18.0")  # a dot is a dot, not any character


def test_plot_png(tmp_path):
    doc, pts = sample_run()
    out = tmp_path / "iv.png"
    export.plot_png(doc, pts, dict(load_catalog()[0]), out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, len(data)
    burn = {**doc, "_id": "b", "procedure": "burn_in", "title": "Burn-in", "channels": ["bias.0", "hv.1"]}
    burn_pts = [{"seq": n, "t": 10.0 * n, "i_bias_0": -1e-6 * n, "i_hv_1": 2e-6, "climate_0_temperature": 20.0,
                 "climate_0_humidity": 40.0} for n in range(1, 6)]  # fmt: skip
    export.plot_png(burn, burn_pts, dict(load_catalog()[0]), tmp_path / "burn.png")
    assert (tmp_path / "burn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(export.NotFound, match="declares no plot"):
        export.plot_png({**doc, "procedure": "gone"}, pts, {}, tmp_path / "x.png")
