"""The silicon sensor model (slowctl_dummy/sensor.py) and the three simulators that bias it, over TCP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from slowctl_dummy.scenario import ScenarioError, load_scenario, parse_scenario
from slowctl_dummy.sensor import SiliconSensor, generation_scale
from slowctl_dummy.sims import SIMULATORS
from slowctl_dummy.sims.caen_n1470 import CaenN1470
from slowctl_dummy.sims.iseg_shr import IsegShr
from slowctl_dummy.sims.keithley_2410 import Keithley2410

REPO = Path(__file__).parents[2]
BULK_ONLY = {"load": 1e30, "depletion": 100.0, "bulk": 2e-6}  # the ohmic path out of the way
REAL = {"load": 10e9, "depletion": 100.0, "bulk": 3e-6, "breakdown": 520.0}  # a bench-like sensor


def chilingarov(t_celsius: float, ref_celsius: float = 20.0) -> float:
    """I(T)/I(Tref) = (T/Tref)^2 exp(-E_eff/(2k) (1/T - 1/Tref)), E_eff = 1.21 eV, written out here."""
    t, t0, k = t_celsius + 273.15, ref_celsius + 273.15, 8.617333262e-5
    return (t / t0) ** 2 * math.exp(-1.21 / (2 * k) * (1 / t - 1 / t0))


# --- the model -------------------------------------------------------------------------------


def test_defaults_are_the_old_ohmic_load():
    s = SiliconSensor()
    assert s.current(100) == pytest.approx(1e-6, rel=1e-12)  # 100 V / 100 MOhm
    s.temperature = 27.0
    assert s.current(100) == pytest.approx(2e-6, rel=1e-12)  # the ohmic path: x2 per 7 K, as before


def test_current_rises_monotonically_up_to_breakdown():
    s = SiliconSensor(**REAL)
    volts = [0.5 * n for n in range(1, 1040)]  # 0.5 .. 519.5 V
    currents = [s.current(v) for v in volts]
    assert s.current(0) == 0.0
    assert all(b > a for a, b in zip(currents, currents[1:]))
    assert math.isinf(s.current(520)) and math.isinf(s.current(600))


def test_generation_current_grows_as_sqrt_below_depletion():
    s = SiliconSensor(**BULK_ONLY)
    assert s.current(100) == pytest.approx(2e-6, rel=1e-9)
    for v in (1.0, 25.0, 50.0, 81.0):
        assert s.current(v) == pytest.approx(2e-6 * math.sqrt(v / 100), rel=1e-9)
    assert s.current(64) == pytest.approx(2 * s.current(16), rel=1e-9)  # 4x the voltage, 2x the current


def test_generation_current_is_flat_above_depletion():
    s = SiliconSensor(**BULK_ONLY)
    assert [s.current(v) for v in (100, 150, 400, 1000)] == pytest.approx([2e-6] * 4, rel=1e-9)
    with_ohmic = SiliconSensor(load=10e9, depletion=100, bulk=2e-6)  # 10 GOhm: a slight slope
    assert with_ohmic.current(400) - with_ohmic.current(200) == pytest.approx(200 / 10e9, rel=1e-6)


def test_temperature_scales_generation_current_by_the_band_gap_law():
    ratio = chilingarov(27.0)
    assert 1.7 < ratio < 2.1  # "about x2 per 7 K" around 20 degC
    cold, warm = SiliconSensor(**BULK_ONLY), SiliconSensor(**BULK_ONLY, temperature=27.0)
    assert warm.current(200) / cold.current(200) == pytest.approx(ratio, rel=1e-9)
    assert generation_scale(13.0) == pytest.approx(chilingarov(13.0), rel=1e-12)
    assert generation_scale(-20.0) == pytest.approx(chilingarov(-20.0), rel=1e-12)  # a cold box: ~1/50
    assert 1 / 60 < generation_scale(-20.0) < 1 / 40


def test_avalanche_near_breakdown():
    plain, bd = SiliconSensor(**BULK_ONLY), SiliconSensor(**BULK_ONLY, breakdown=200.0)
    assert bd.current(20) == pytest.approx(plain.current(20), rel=2e-4)  # far below: no multiplication
    assert bd.current(190) / plain.current(190) == pytest.approx(1 / (1 - 0.95**4), rel=1e-9)
    assert bd.current(199) > 10 * plain.current(199)
    assert math.isinf(bd.current(200))


def test_inverse_is_consistent_with_forward():
    for params in (REAL, BULK_ONLY, {}, {"load": 1e4}, {**REAL, "temperature": -20.0}):
        s = SiliconSensor(**params)
        for i in (1e-9, 1e-7, 1e-6, 5e-6, 2e-5, 1e-3):
            v = s.voltage_at(i)
            assert s.current(v) <= i <= s.current(v * (1 + 2e-12)), (params, i)  # v to a relative 1e-12
            assert s.current(v) == pytest.approx(i, rel=1e-6), (params, i)  # steep near breakdown
            assert v < s.breakdown
        for v in (1.0, 50.0, 99.0, 300.0, 510.0):
            if params is BULK_ONLY and v > 100:
                continue  # a flat plateau (no ohmic slope): every voltage above depletion draws the same
            assert s.voltage_at(s.current(v)) == pytest.approx(v, rel=1e-9), (params, v)
    assert SiliconSensor(**REAL).voltage_at(0.0) == 0.0


def test_works_on_the_magnitude_of_the_bias():
    s = SiliconSensor(**REAL)
    assert s.current(-250) == s.current(250) > 0


@pytest.mark.parametrize("model", ["caen-n1470", "iseg-shr", "keithley-2410"])
def test_each_simulator_takes_the_sensor_parameters(model):
    inst = SIMULATORS[model]()
    events = parse_scenario({"events": [{"at": 0, "set": {"depletion": 80, "bulk": "1.5e-6", "load": 1e10}}]}, inst)
    inst.apply_event(events[0])
    first = inst.chan(inst.first_channel)
    sensor = getattr(first, "sensor", first)
    assert (sensor.depletion, sensor.bulk, sensor.load) == (80.0, 1.5e-6, 1e10)
    for bad, why in (({"depletion": 0}, "depletion: expected a number > 0"), ({"bulk": -1e-6}, "bulk: expected")):
        with pytest.raises(ScenarioError, match=why):
            parse_scenario({"events": [{"at": 0, "set": bad}]}, inst)
    with pytest.raises(ScenarioError, match="bulk: expected a number >= 0 and <= 0.01"):
        parse_scenario({"events": [{"at": 0, "set": {"bulk": 1}}]}, inst)


# --- the simulators, driven over their wire protocols --------------------------------------------


def sensor_scenario(inst, channel):
    """REAL on `channel` from t=0, as a scenario gives it."""
    inst.schedule(parse_scenario({"events": [{"at": 0, "channel": channel, "set": REAL}]}, inst))


def test_caen_reads_the_model_current(serve, connect, clock):
    hv = CaenN1470(clock=clock, seed=1)
    sensor_scenario(hv, 1)
    client = connect(serve(hv))

    def ask(line: str) -> str:
        reply = client.ask(line).decode().removesuffix("\r\n")
        assert reply.startswith("#BD:00,CMD:OK"), reply
        return reply.split("VAL:")[1] if "VAL:" in reply else ""

    for par, val in (("IMRANGE", "LOW"), ("RUP", "500"), ("VSET", "50"), ("ON", None)):
        ask(f"$BD:00,CMD:SET,CH:1,PAR:{par}" + (f",VAL:{val}" if val else ""))
    model = SiliconSensor(**REAL)
    for volts in (50, 400):  # below depletion; on the plateau, the avalanche already lifting it
        ask(f"$BD:00,CMD:SET,CH:1,PAR:VSET,VAL:{volts}")
        clock.advance(2)
        assert float(ask("$BD:00,CMD:MON,CH:1,PAR:VMON")) == pytest.approx(volts, abs=0.2)
        imon = float(ask("$BD:00,CMD:MON,CH:1,PAR:IMON"))  # uA
        assert imon == pytest.approx(model.current(volts) * 1e6, rel=0.005, abs=0.02)


def test_iseg_reads_the_model_current(serve, connect, clock):
    hv = IsegShr(clock=clock, seed=1)  # echo on, as on the serial port
    sensor_scenario(hv, 2)
    client = connect(serve(hv))

    def send(line: str, replies: bool) -> str | None:
        assert client.ask(line) == line.encode() + b"\r\n"  # the echo first
        return client.read().decode().removesuffix("\r\n") if replies else None

    send(":CONF:RAMP:VOLT 500,(@2);:VOLT -50,(@2);:VOLT ON,(@2)", replies=False)
    model = SiliconSensor(**REAL)
    for volts in (50, 400):
        send(f":VOLT -{volts},(@2)", replies=False)
        clock.advance(2)
        amps = send(":MEAS:CURR? (@2)", replies=True)
        assert amps is not None and amps.endswith("E-6A") and amps.startswith("-")  # negative polarity
        assert float(amps[:-1]) == pytest.approx(-model.current(volts), rel=0.005)
    assert send(":SYST:ERR?", replies=True) == '0,"No error"'


def test_keithley_reads_the_model_current(serve, connect, clock):
    smu = Keithley2410(clock=clock, seed=1)
    sensor_scenario(smu, 0)
    client = connect(serve(smu))
    assert client.no_reply(':SOUR:CLE:AUTO OFF;:SENS:FUNC "VOLT","CURR";:FORM:ELEM VOLT,CURR;:SENS:CURR:PROT 1e-4')
    model = SiliconSensor(**REAL)
    for volts in (-50, -400):  # negative bias, as on the example bench
        assert client.no_reply(f":SOUR:VOLT {volts};:OUTP ON")
        clock.advance(0.1)
        v, i = (float(x) for x in client.ask(":READ?").decode().split(","))
        assert v == pytest.approx(volts, abs=0.01)
        assert i == pytest.approx(-model.current(volts), rel=0.005)
    assert client.ask(":SYST:ERR?") == b'0,"No error"\n'


def bench_sensors(inst):
    """The example bench's sensors (bundled scenario bench-sensors, which config/bench.yaml names)."""
    for event in load_scenario("bench-sensors", inst):
        inst.apply_event(event)
    return [getattr(ch, "sensor", ch) for ch in inst.channels]


def test_bench_bias_sensor_gives_a_real_iv_curve():
    (sensor,) = bench_sensors(Keithley2410())
    iv = {v: sensor.current(-v) for v in range(10, 510, 10)}  # an IV scan to -500 V in 10 V steps
    assert iv[40] / iv[10] == pytest.approx(2, rel=0.01)  # sqrt rise below full depletion (80 V)
    assert max(iv[v] for v in range(80, 260, 10)) < 1.15 * iv[80]  # the plateau
    over = min(v for v in iv if iv[v] > 10e-6)  # the 10 uA compliance (imax of bias.0)
    assert 400 < over < 500 and iv[over - 10] > 2 * iv[250]  # a sharp breakdown rise before 500 V


def test_bench_hv_sensors_stay_below_the_alarm_limit_but_one():
    config = yaml.safe_load((REPO / "config" / "bench.yaml").read_text())["devices"]
    assert {dev for dev, c in config.items() if c["simulator"].get("scenario") == "bench-sensors"} == {
        "hv",
        "hv2",
        "bias",
    }
    hv = bench_sensors(CaenN1470())
    high = 8e-6  # the bench's hv.*.imon high limit
    assert [s.current(600) < high for s in hv[:3]] == [True, False, True]  # channel 1 breaks down
    assert hv[1].current(450) < high < hv[1].current(480)
    hv2 = bench_sensors(IsegShr())
    assert hv2[0].current(800) < high and hv2[1].current(500) < high < hv2[1].current(650)
