"""JULABO simulator against the manual's interface command table: every in_ / out_ pair, formats, errors."""

from __future__ import annotations

import pytest

from slowctl_dummy.sims.julabo import Julabo


def q(chiller: Julabo, line: str) -> str | None:
    reply = chiller.handle(line)
    return None if reply is None else reply.decode().removesuffix("\r\n")


@pytest.fixture
def chiller(clock):
    return Julabo(clock=clock, seed=1)


DEFAULTS = [
    ("in_sp_00", "20.00"),
    ("in_sp_01", "20.00"),
    ("in_sp_02", "20.00"),
    ("in_sp_03", "200.00"),
    ("in_sp_04", "-50.00"),
    ("in_sp_06", "0"),
    ("in_sp_07", "2"),
    ("in_mode_01", "0"),
    ("in_mode_02", "0"),
    ("in_mode_03", "0"),
    ("in_mode_04", "0"),
    ("in_mode_05", "0"),
    ("in_mode_08", "1"),
    ("in_hil_00", "-100"),
    ("in_hil_01", "100"),
    ("in_par_06", "5.0"),
    ("in_par_07", "60"),
    ("in_par_08", "10"),
    ("in_pv_01", "0"),
    ("in_pv_04", "220.00"),
]


@pytest.mark.parametrize("query, reply", DEFAULTS)
def test_every_query_answers_in_its_format(serve, connect, query, reply):
    client = connect(serve(Julabo(seed=1)))
    assert client.ask(query, term=b"\r") == f"{reply}\r\n".encode()


@pytest.mark.parametrize("query", ["in_pv_00", "in_pv_02", "in_pv_03"])
def test_temperature_sensors_read_the_bath(chiller, query):
    assert float(q(chiller, query)) == pytest.approx(22.0, abs=0.1)


SETS = [  # (name, a value taken, its read-back, too small, too large)
    ("sp_01", "-12.345", "-12.35", "-50.01", "200.01"),
    ("sp_02", "80", "80.00", "-51", "201"),
    ("sp_03", "40", "40.00", "-60", "250"),
    ("sp_04", "-10", "-10.00", "-60", "250"),
    ("sp_07", "4", "4", "0", "5"),
    ("mode_01", "2", "2", "-1", "3"),
    ("mode_02", "1", "1", "-1", "3"),
    ("mode_03", "1", "1", "-1", "2"),
    ("mode_04", "1", "1", "-1", "2"),
    ("mode_08", "0", "0", "-1", "2"),
    ("hil_00", "-40", "-40", "-101", "1"),
    ("hil_01", "10", "10", "9", "101"),
    ("par_06", "2.5", "2.5", "0", "100"),
    ("par_07", "3", "3", "2", "10000"),
    ("par_08", "999", "999", "-1", "1000"),
]


@pytest.mark.parametrize("name, value, readback, small, large", SETS)
def test_out_commands_are_silent_and_range_checked(chiller, name, value, readback, small, large):
    before = q(chiller, f"in_{name}")
    assert q(chiller, f"out_{name} {small}") is None
    assert q(chiller, "status") == "-10 VALUE TOO SMALL"
    assert q(chiller, f"out_{name} {large}") is None
    assert q(chiller, "status") == "-11 VALUE TOO LARGE"
    assert q(chiller, f"out_{name}") is None
    assert q(chiller, "status") == "-08 INVALID COMMAND"
    assert q(chiller, f"in_{name}") == before  # nothing taken
    assert q(chiller, f"out_{name} {value}") is None
    assert q(chiller, f"in_{name}") == readback
    assert q(chiller, "status") == "02 REMOTE STOP"


@pytest.mark.parametrize(
    "bad",
    [
        "out_mode_01 1.5",
        "out_sp_07 2.5",
        "out_hil_01 50.5",
        "in_sp_01 3",
        "out_pv_00 20",
        "out_sp_06 1",
        "in_par_99",
        "in_hil_02",
        "out_version 1",
    ],
)
def test_invalid_commands(chiller, bad):
    assert q(chiller, bad) is None
    assert q(chiller, "status") == "-08 INVALID COMMAND"


def test_selected_setpoint_drives_the_bath(chiller, clock):
    q(chiller, "out_sp_01 5")
    q(chiller, "out_mode_01 1")
    assert chiller.setpoint == 5.0
    q(chiller, "out_mode_05 1")
    clock.advance(1200)
    assert float(q(chiller, "in_pv_00")) == pytest.approx(5.0, abs=0.1)
    assert q(chiller, "in_sp_00") == "20.00"  # the other setpoints stay


def test_power_in_use_is_proportional_and_capped(chiller, clock):
    q(chiller, "out_sp_00 21")
    q(chiller, "out_mode_05 1")  # bath 22, setpoint 21, Xp 5 K: -20 %
    assert q(chiller, "in_pv_01") == "-20"
    q(chiller, "out_hil_00 -10")
    assert q(chiller, "in_pv_01") == "-10"
    q(chiller, "out_sp_00 80")
    assert q(chiller, "in_pv_01") == "100"
    q(chiller, "out_hil_01 60")
    assert q(chiller, "in_pv_01") == "60"
    q(chiller, "out_mode_05 0")
    assert q(chiller, "in_pv_01") == "0"


def test_warning_limits(chiller, clock):
    q(chiller, "out_sp_03 30")
    q(chiller, "out_sp_00 35")  # outside the warning limits: taken, warned once
    assert q(chiller, "status") == "-13 WARNING : VALUE EXCEEDS TEMPERATURE LIMITS"
    assert q(chiller, "in_sp_00") == "35.00"
    q(chiller, "out_mode_05 1")
    clock.advance(300)  # the bath passes 30 degC: excess temperature warning, still running
    assert q(chiller, "status") == "-03 EXCESS TEMPERATURE WARNING"
    assert q(chiller, "in_mode_05") == "1"
    q(chiller, "out_sp_03 60")
    q(chiller, "out_sp_04 40")
    assert q(chiller, "status") == "-04 LOW TEMPERATURE WARNING"  # below the low limit now
