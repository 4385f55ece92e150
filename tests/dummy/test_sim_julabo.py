"""JULABO chiller simulator: line protocol over TCP, silent out_ commands, status codes, bath physics."""

from __future__ import annotations

import math

import pytest

from slowctl_dummy.cli import main
from slowctl_dummy.scenario import ScenarioError, parse_scenario
from slowctl_dummy.sims.julabo import Julabo


def q(chiller: Julabo, line: str) -> str | None:
    reply = chiller.handle(line)
    if reply is None:
        return None
    assert reply.endswith(b"\r\n")
    return reply.decode().removesuffix("\r\n")


@pytest.fixture
def chiller(clock):
    return Julabo(clock=clock, seed=1)


def test_cr_terminated_requests_over_tcp(serve, connect):
    client = connect(serve(Julabo(seed=1)))
    assert client.ask("version", term=b"\r") == b"JULABO FP50-HE VERSION 4.0\r\n"
    assert client.ask("STATUS", term=b"\r") == b"00 MANUAL STOP\r\n"  # case-insensitive
    assert client.ask("in_sp_00", term=b"\r\n") == b"20.00\r\n"  # CR LF accepted too
    assert client.ask("in_mode_05", term=b"\r") == b"0\r\n"
    assert client.ask("in_sp_06", term=b"\r") == b"0\r\n"
    client.send(b"out_sp_00 -12.5\r")  # out_ commands never reply
    assert client.ask("in_sp_00", term=b"\r") == b"-12.50\r\n"


def test_lf_terminated_requests_with_eol_lf(serve, connect):
    client = connect(serve(Julabo(seed=1, eol="lf")))
    assert client.ask("version", term=b"\n") == b"JULABO FP50-HE VERSION 4.0\r\n"
    client.send(b"in_sp_00\r")  # a lone CR does not end a line in LF mode ...
    with pytest.raises(TimeoutError):
        client.read(timeout=0.1)
    client.send(b"\n")  # ... the LF does (the CR before it is dropped)
    assert client.read() == b"20.00\r\n"
    with pytest.raises(ValueError, match="eol"):
        Julabo(eol="crlf")


def test_out_commands_give_no_reply_and_change_the_state(serve, connect, chiller):
    client = connect(serve(chiller))
    assert client.no_reply("out_mode_05 1", wait=0.1)
    assert client.ask("in_mode_05") == b"1\r\n"
    assert client.ask("status") == b"03 REMOTE START\r\n"
    assert client.no_reply("out_mode_05 0", wait=0.1)
    assert client.ask("status") == b"02 REMOTE STOP\r\n"
    assert client.no_reply("out_sp_00 35.456", wait=0.1)
    assert client.ask("in_sp_00") == b"35.46\r\n"  # 0.01 degC resolution


@pytest.mark.parametrize(
    "bad, status",
    [
        ("bogus", "-08 INVALID COMMAND"),
        ("in_pv_00 5", "-08 INVALID COMMAND"),  # an argument on a query
        ("out_sp_00", "-08 INVALID COMMAND"),
        ("out_sp_00 warm", "-08 INVALID COMMAND"),
        ("out_sp_00 nan", "-08 INVALID COMMAND"),
        ("out_sp_00 200.01", "-11 VALUE TOO LARGE"),
        ("out_sp_00 -50.5", "-10 VALUE TOO SMALL"),
        ("out_mode_05 2", "-11 VALUE TOO LARGE"),
        ("out_mode_05 -1", "-10 VALUE TOO SMALL"),
        ("out_mode_05 0.5", "-08 INVALID COMMAND"),
    ],
)
def test_refused_request_has_no_reply_and_shows_once_in_the_status(serve, connect, chiller, bad, status):
    client = connect(serve(chiller))
    assert client.no_reply(bad, wait=0.1)
    assert client.ask("status") == f"{status}\r\n".encode()
    assert client.ask("status") == b"00 MANUAL STOP\r\n"  # reported once
    assert (chiller.setpoint, chiller.running) == (20.0, False)  # nothing taken


def test_setpoint_limits_are_inclusive(chiller):
    q(chiller, "out_sp_00 200")
    q(chiller, "out_sp_00 -50")
    assert q(chiller, "in_sp_00;status") is None  # no joined commands: one unknown command
    assert q(chiller, "status") == "-08 INVALID COMMAND"
    assert q(chiller, "in_sp_00") == "-50.00"


def test_bath_relaxes_to_the_setpoint_when_running_and_to_ambient_when_stopped(chiller, clock):
    assert float(q(chiller, "in_pv_00")) == pytest.approx(22.0, abs=0.05)
    q(chiller, "out_sp_00 -8")
    q(chiller, "out_mode_05 1")
    clock.advance(60)  # one time constant: 1 - 1/e of the way
    expected = -8 + 30 * math.exp(-1)
    assert float(q(chiller, "in_pv_00")) == pytest.approx(expected, abs=0.05)
    clock.advance(600)
    assert float(q(chiller, "in_pv_00")) == pytest.approx(-8.0, abs=0.05)
    q(chiller, "out_mode_05 0")
    clock.advance(600)  # tau_ambient
    assert float(q(chiller, "in_pv_00")) == pytest.approx(22 - 30 * math.exp(-1), abs=0.05)


def test_readings_have_noise(chiller):
    values = {q(chiller, "in_pv_00") for _ in range(20)}
    assert len(values) > 3
    assert all(abs(float(v) - 22.0) < 0.06 for v in values)


def test_scenario_time_constant_and_ambient(clock):
    chiller = Julabo(clock=clock, seed=1)
    chiller.schedule(
        parse_scenario({"events": [{"at": 0, "set": {"tau": 10, "ambient": 30, "tau_ambient": 5}}]}, chiller)
    )
    q(chiller, "out_sp_00 10")
    q(chiller, "out_mode_05 1")
    clock.advance(10)
    assert float(q(chiller, "in_pv_00")) == pytest.approx(10 + 12 * math.exp(-1), abs=0.05)
    q(chiller, "out_mode_05 0")
    clock.advance(100)
    assert float(q(chiller, "in_pv_00")) == pytest.approx(30.0, abs=0.05)


def test_scenario_alarm_stops_the_chiller_until_it_is_cleared(clock):
    chiller = Julabo(clock=clock, seed=1)
    chiller.schedule(
        parse_scenario({"events": [{"at": 10, "set": {"alarm": -14}}, {"at": 20, "set": {"alarm": 0}}]}, chiller)
    )
    q(chiller, "out_mode_05 1")
    clock.advance(10)
    assert q(chiller, "status") == "-14 EXCESS TEMPERATURE PROTECTOR ALARM"
    assert q(chiller, "in_mode_05") == "0"
    q(chiller, "out_mode_05 1")  # ignored while the alarm lasts
    assert q(chiller, "in_mode_05") == "0"
    assert q(chiller, "status") == "-14 EXCESS TEMPERATURE PROTECTOR ALARM"  # an alarm is not reported once
    clock.advance(10)
    assert q(chiller, "status") == "02 REMOTE STOP"
    q(chiller, "out_mode_05 1")
    assert q(chiller, "in_mode_05") == "1"


def test_scenario_warning_keeps_the_chiller_running(clock):
    chiller = Julabo(clock=clock, seed=1)
    q(chiller, "out_mode_05 1")
    chiller.set_param("alarm", -13.0)
    assert q(chiller, "status") == "-13 WARNING : VALUE EXCEEDS TEMPERATURE LIMITS"
    assert q(chiller, "in_mode_05") == "1"
    chiller.set_param("alarm", -1.0)
    assert q(chiller, "status;") is None  # unknown command
    assert q(chiller, "status") == "-01 LOW LEVEL ALARM"
    assert q(chiller, "in_mode_05") == "0"
    chiller.set_param("alarm", -77.0)
    assert q(chiller, "status") == "-77 ALARM"


def test_scenario_setpoint_range_and_bad_parameters(clock):
    chiller = Julabo(clock=clock, seed=1)
    chiller.schedule(parse_scenario({"events": [{"at": 0, "set": {"sp_min": 5, "sp_max": 40}}]}, chiller))
    q(chiller, "out_sp_00 41")
    assert q(chiller, "status") == "-11 VALUE TOO LARGE"
    q(chiller, "out_sp_00 4")
    assert q(chiller, "status") == "-10 VALUE TOO SMALL"
    with pytest.raises(ScenarioError, match=r"set\.alarm: expected a number >= -99 and <= 0"):
        parse_scenario({"events": [{"at": 0, "set": {"alarm": 3}}]}, chiller)
    with pytest.raises(ScenarioError, match=r"set\.tau: board parameter"):
        parse_scenario({"events": [{"at": 0, "channel": 1, "set": {"tau": 3}}]}, chiller)


def test_cli_refuses_two_channels(capsys):
    assert main(["julabo", "--tcp", "127.0.0.1:0", "--channels", "2"]) == 2
    assert "--channels: 2 out of range for julabo" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("resolution", "sent", "reply", "held"),
    [
        (0.01, "20.004", "20.00", 20.0),
        (0.01, "20.006", "20.01", 20.01),
        (0.01, "-12.345", "-12.35", -12.35),
        (0.1, "20.04", "20.0", 20.0),
        (0.1, "20.06", "20.1", 20.1),
        (0.1, "-12.36", "-12.4", -12.4),
    ],
)
def test_setpoints_are_held_at_the_setpoint_resolution(clock, resolution, sent, reply, held):
    chiller = Julabo(clock=clock, seed=1, setpoint_resolution=resolution)
    for n in (0, 2):  # every setpoint, and the warning limits alike
        assert q(chiller, f"out_sp_0{n} {sent}") is None
        assert q(chiller, f"in_sp_0{n}") == reply
        assert chiller.values[f"sp_0{n}"] == held
    assert q(chiller, "out_sp_03 150.55") is None
    assert q(chiller, "in_sp_03") == ("150.55" if resolution == 0.01 else "150.6")
    assert q(chiller, "in_par_06") == "5.0"  # other settings keep their formats


def test_setpoint_resolution_option(clock):
    with pytest.raises(ValueError, match="setpoint_resolution"):
        Julabo(clock=clock, setpoint_resolution=0.05)
