"""CAEN N1470 simulator: wire protocol over TCP, physics with a fake clock."""

from __future__ import annotations

import pytest

from slowctl_dummy.base import Event
from slowctl_dummy.sims.caen_n1470 import CaenN1470

ON, RUP, RDW, OVC, MAXV, TRIP = 1, 2, 4, 8, 64, 128


def mon(hv: CaenN1470, par: str, ch: int | None = 0) -> str:
    chan = "" if ch is None else f",CH:{ch}"
    reply = hv.handle(f"$BD:00,CMD:MON{chan},PAR:{par}")
    assert reply is not None and reply.startswith(b"#BD:00,CMD:OK,VAL:"), reply
    return reply.decode().removesuffix("\r\n").split("VAL:")[1]


def put(hv: CaenN1470, par: str, val: object = None, ch: int = 0) -> None:
    value = "" if val is None else f",VAL:{val}"
    assert hv.handle(f"$BD:00,CMD:SET,CH:{ch},PAR:{par}{value}") == b"#BD:00,CMD:OK\r\n"


def stat(hv: CaenN1470, ch: int = 0) -> int:
    return int(mon(hv, "STAT", ch))


@pytest.fixture
def hv(clock):
    return CaenN1470(clock=clock, seed=1)


ERRORS = [
    ("$BD:00,CMD:MON,CH:0,PAR:VSET", b"#BD:00,CMD:OK,VAL:0000.0\r\n"),
    ("$BD:00,CMD:FOO,CH:0,PAR:VSET", b"#BD:00,CMD:ERR\r\n"),
    ("$BD:00,CMD:MON,CH:0", b"#BD:00,PAR:ERR\r\n"),  # manual: "Field parameter not present"
    ("hello", b"#BD:00,CMD:ERR\r\n"),
    ("$BD:00,CMD:MON,CH:5,PAR:VSET", b"#BD:00,CH:ERR\r\n"),
    ("$BD:00,CMD:MON,CH:X,PAR:VSET", b"#BD:00,CH:ERR\r\n"),
    ("$BD:00,CMD:MON,PAR:VMON", b"#BD:00,CH:ERR\r\n"),
    ("$BD:00,CMD:MON,CH:0,PAR:VOLT", b"#BD:00,PAR:ERR\r\n"),
    ("$BD:00,CMD:SET,CH:0,PAR:VMON,VAL:1", b"#BD:00,PAR:ERR\r\n"),
    ("$BD:00,CMD:MON,CH:0,PAR:ON", b"#BD:00,PAR:ERR\r\n"),
    ("$BD:00,CMD:SET,CH:0,PAR:BDNAME,VAL:1", b"#BD:00,PAR:ERR\r\n"),
    ("$BD:00,CMD:SET,CH:0,PAR:VSET", b"#BD:00,VAL:ERR\r\n"),
    ("$BD:00,CMD:SET,CH:0,PAR:VSET,VAL:abc", b"#BD:00,VAL:ERR\r\n"),
    ("$BD:00,CMD:SET,CH:0,PAR:VSET,VAL:8200", b"#BD:00,VAL:ERR\r\n"),
    ("$BD:00,CMD:SET,CH:0,PAR:ISET,VAL:-1", b"#BD:00,VAL:ERR\r\n"),
    ("$BD:00,CMD:SET,CH:0,PAR:RUP,VAL:501", b"#BD:00,VAL:ERR\r\n"),
    ("$BD:00,CMD:SET,CH:0,PAR:TRIP,VAL:1000.1", b"#BD:00,VAL:ERR\r\n"),
    ("$BD:00,CMD:SET,CH:0,PAR:PDWN,VAL:SLOW", b"#BD:00,VAL:ERR\r\n"),
]


@pytest.mark.parametrize("request_, reply", ERRORS)
def test_error_replies_over_tcp(serve, connect, request_, reply):
    client = connect(serve(CaenN1470(seed=1)))
    assert client.ask(request_) == reply


def test_other_board_gets_no_reply_and_connection_survives(serve, connect):
    client = connect(serve(CaenN1470(board=3, seed=1)))
    assert client.no_reply("$BD:00,CMD:MON,PAR:BDNAME")
    assert client.ask("$BD:03,CMD:MON,PAR:BDNAME") == b"#BD:03,CMD:OK,VAL:N1470\r\n"
    # bare LF is accepted too
    assert client.ask("$BD:3,CMD:MON,PAR:BDFREL", term=b"\n") == b"#BD:03,CMD:OK,VAL:1.08\r\n"


def test_local_mode_refuses_set(hv, clock):
    hv.schedule([Event(at=5, action="set", values={"local": True})])
    put(hv, "VSET", 10)
    clock.advance(5)
    assert hv.handle("$BD:00,CMD:SET,CH:0,PAR:VSET,VAL:20") == b"#BD:00,LOC:ERR\r\n"
    assert hv.handle("$BD:00,CMD:SET,PAR:BDCLR") == b"#BD:00,LOC:ERR\r\n"
    assert mon(hv, "VSET") == "0010.0"  # MON still works
    assert mon(hv, "BDCTR", None) == "LOCAL"


def test_board_parameters_and_formats(hv):
    assert mon(hv, "BDNAME", None) == "N1470"
    assert mon(hv, "BDSNUM", None) == "01470"
    assert mon(hv, "BDALARM", None) == "00000"
    assert mon(hv, "ISET") == "0100.00"
    assert mon(hv, "MAXV") == "8100"
    assert mon(hv, "RUP") == "050"
    assert mon(hv, "TRIP") == "0001.0"
    assert mon(hv, "PDWN") == "RAMP"
    assert mon(hv, "POL") == "-"
    assert mon(hv, "IMON") == "0000.00"
    assert mon(hv, "STAT") == "00000"


def test_all_channels_at_once(hv):
    put(hv, "VSET", 100, ch=1)
    assert mon(hv, "VSET", 4) == "0000.0;0100.0;0000.0;0000.0"
    put(hv, "ISET", 12.5, ch=4)
    assert mon(hv, "ISET", 4) == "0012.50;0012.50;0012.50;0012.50"
    assert hv.handle("$BD:00,CMD:SET,CH:4,PAR:VSET,VAL:9000") == b"#BD:00,VAL:ERR\r\n"


def test_ramp_up_and_down_timing(hv, clock):
    put(hv, "RUP", 10)
    put(hv, "RDW", 20)
    put(hv, "VSET", 100)
    put(hv, "ON")
    clock.advance(5.0)
    assert float(mon(hv, "VMON")) == pytest.approx(50.0, abs=0.2)
    assert stat(hv) == ON | RUP
    clock.advance(5.0)
    assert float(mon(hv, "VMON")) == pytest.approx(100.0, abs=0.2)
    assert stat(hv) == ON
    assert float(mon(hv, "IMON")) == pytest.approx(1.0, abs=0.05)  # 100 V / 100 Mohm
    put(hv, "OFF")
    clock.advance(2.0)
    assert float(mon(hv, "VMON")) == pytest.approx(60.0, abs=0.2)
    assert stat(hv) == RDW
    clock.advance(3.0)
    assert mon(hv, "VMON") == "0000.0"
    assert stat(hv) == 0


def test_kill_power_down_is_immediate(hv, clock):
    put(hv, "PDWN", "KILL")
    put(hv, "VSET", 50)
    put(hv, "ON")
    clock.advance(2)
    put(hv, "OFF")
    assert mon(hv, "VMON") == "0000.0"


def test_overcurrent_limits_then_trips_then_bdclr(hv, clock):
    hv.set_param("load", 1e6, channel=2)  # 1 Mohm: 100 V would draw 100 uA
    put(hv, "ISET", 50, ch=2)
    put(hv, "TRIP", 2, ch=2)
    put(hv, "RUP", 500, ch=2)
    put(hv, "VSET", 100, ch=2)
    put(hv, "ON", ch=2)
    clock.advance(1.0)  # limit reached after 0.1 s
    assert stat(hv, 2) & (ON | OVC) == ON | OVC
    assert float(mon(hv, "VMON", 2)) == pytest.approx(50.0, abs=0.3)
    assert float(mon(hv, "IMON", 2)) == pytest.approx(50.0, abs=0.3)
    clock.advance(0.9)  # 1.8 s in over-current: not yet
    assert not stat(hv, 2) & TRIP
    clock.advance(0.4)  # 2.2 s: tripped, ramping down at RDW (50 V/s)
    s = stat(hv, 2)
    assert s & TRIP and not s & ON and s & RDW
    assert int(mon(hv, "BDALARM", None)) == 1 << 2
    clock.advance(2.0)
    assert mon(hv, "VMON", 2) == "0000.0"
    assert stat(hv, 2) == TRIP  # stays off and tripped
    put(hv, "BDCLR", ch=0)
    assert stat(hv, 2) == 0
    assert mon(hv, "BDALARM", None) == "00000"


def test_trip_timing_survives_one_big_time_jump(hv, clock):
    """Nobody polls for 10 s: the trip still happens at its simulated time."""
    hv.set_param("load", 1e6, channel=0)
    put(hv, "ISET", 50)
    put(hv, "RUP", 500)
    put(hv, "PDWN", "KILL")
    put(hv, "VSET", 100)
    put(hv, "ON")
    clock.advance(10.0)
    assert stat(hv) == TRIP
    assert mon(hv, "VMON") == "0000.0"
    put(hv, "ON")  # a new ON clears the channel's TRIP bit (alarm stays latched)
    assert stat(hv) & (ON | TRIP) == ON
    assert int(mon(hv, "BDALARM", None)) == 1


def test_warmer_box_leaks_more(hv, clock):
    put(hv, "RUP", 500)
    put(hv, "VSET", 100)
    put(hv, "ON")
    clock.advance(1)
    cold = float(mon(hv, "IMON"))
    hv.set_param("temperature", 27.0)
    clock.advance(0.1)
    assert float(mon(hv, "IMON")) == pytest.approx(2 * cold, rel=0.02)


def test_breakdown_makes_current_steep(clock):
    hv = CaenN1470(clock=clock, seed=1)
    hv.set_param("breakdown", 200.0, channel=0)
    put(hv, "RUP", 500)
    put(hv, "VSET", 190)
    put(hv, "ON")
    clock.advance(1)
    # linear would be 1.9 uA; avalanche factor 1/(1-0.95**4) ~ 5.4
    assert float(mon(hv, "IMON")) == pytest.approx(1.9 / (1 - 0.95**4), rel=0.02)


def test_maxv_clamps_target_and_rejects_vset_above(hv, clock):
    put(hv, "RUP", 500)
    put(hv, "VSET", 300)
    put(hv, "ON")
    put(hv, "MAXV", 200)
    clock.advance(2)
    assert float(mon(hv, "VMON")) == pytest.approx(200, abs=0.3)
    assert stat(hv) & MAXV
    assert hv.handle("$BD:00,CMD:SET,CH:0,PAR:VSET,VAL:250") == b"#BD:00,VAL:ERR\r\n"


def test_polarity_configurable(clock):
    hv = CaenN1470(clock=clock, polarity="+", channels=16)
    assert mon(hv, "POL", 15) == "+"
    assert len(mon(hv, "VMON", 16).split(";")) == 16
