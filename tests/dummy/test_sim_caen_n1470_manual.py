"""CAEN N1470 simulator against the manual's parameter tables: every MON / SET parameter, formats, errors."""

from __future__ import annotations

import pytest

from slowctl_dummy.sims.caen_n1470 import CaenN1470

ON, ILK = 1, 1 << 12


def ask(hv: CaenN1470, line: str) -> str:
    reply = hv.handle(line)
    assert reply is not None and reply.endswith(b"\r\n"), reply
    return reply.decode().removesuffix("\r\n")


def mon(hv: CaenN1470, par: str, ch: int | None = 0) -> str:
    reply = ask(hv, f"$BD:00,CMD:MON{'' if ch is None else f',CH:{ch}'},PAR:{par}")
    assert reply.startswith("#BD:00,CMD:OK,VAL:"), reply
    return reply.split("VAL:")[1]


def put(hv: CaenN1470, par: str, val: object = None, ch: int | None = 0) -> str:
    chan = "" if ch is None else f",CH:{ch}"
    return ask(hv, f"$BD:00,CMD:SET{chan},PAR:{par}" + ("" if val is None else f",VAL:{val}"))


@pytest.fixture
def hv(clock):
    return CaenN1470(clock=clock, seed=1)


BOARD_MON = [
    ("BDNAME", "N1470"),
    ("BDNCH", "4"),
    ("BDFREL", "1.08"),
    ("BDSNUM", "01470"),
    ("BDILK", "NO"),
    ("BDILKM", "OPEN"),
    ("BDCTR", "REMOTE"),
    ("BDTERM", "ON"),
    ("BDALARM", "00000"),
]


@pytest.mark.parametrize("par, value", BOARD_MON)
def test_board_monitor_parameters(serve, connect, par, value):
    client = connect(serve(CaenN1470(seed=1)))
    assert client.ask(f"$BD:00,CMD:MON,PAR:{par}") == f"#BD:00,CMD:OK,VAL:{value}\r\n".encode()


def test_board_channel_count_follows_the_unit(clock):
    assert mon(CaenN1470(clock=clock, channels=2), "BDNCH", None) == "2"  # an N1570
    assert mon(CaenN1470(clock=clock, termination=False), "BDTERM", None) == "OFF"


CHANNEL_MON = [
    ("VSET", "0000.0"),
    ("VMIN", "0000.0"),
    ("VMAX", "8000.0"),
    ("VDEC", "1"),
    ("VMON", "0000.0"),
    ("ISET", "0100.00"),
    ("IMIN", "0000.00"),
    ("IMAX", "3000.00"),
    ("ISDEC", "2"),
    ("IMON", "0000.00"),
    ("IMRANGE", "HIGH"),
    ("IMDEC", "2"),
    ("MAXV", "8100"),
    ("MVMIN", "0000"),
    ("MVMAX", "8100"),
    ("MVDEC", "0"),
    ("RUP", "050"),
    ("RUPMIN", "001"),
    ("RUPMAX", "500"),
    ("RUPDEC", "0"),
    ("RDW", "050"),
    ("RDWMIN", "001"),
    ("RDWMAX", "500"),
    ("RDWDEC", "0"),
    ("TRIP", "0001.0"),
    ("TRIPMIN", "0000.0"),
    ("TRIPMAX", "1000.0"),
    ("TRIPDEC", "1"),
    ("PDWN", "RAMP"),
    ("POL", "-"),
    ("STAT", "00000"),
]


@pytest.mark.parametrize("par, value", CHANNEL_MON)
def test_channel_monitor_parameters_one_and_all(hv, par, value):
    assert mon(hv, par, 3) == value
    assert mon(hv, par, 4) == ";".join([value] * 4)  # CH:4 = all four channels, channel 0 first


CHANNEL_SET = [  # (par, value taken, read back, a value refused)
    ("VSET", "7999.9", "7999.9", "8000.1"),
    ("ISET", "2999.99", "2999.99", "3000.01"),
    ("MAXV", "100", "0100", "8101"),
    ("RUP", "1", "001", "0.5"),
    ("RDW", "500", "500", "500.5"),
    ("TRIP", "1000", "1000.0", "-0.1"),
    ("PDWN", "KILL", "KILL", "OFF"),
    ("IMRANGE", "LOW", "LOW", "MEDIUM"),
]


@pytest.mark.parametrize("par, value, readback, bad", CHANNEL_SET)
def test_channel_set_parameters_in_range_and_out(hv, par, value, readback, bad):
    assert put(hv, par, value, ch=1) == "#BD:00,CMD:OK"
    assert mon(hv, par, 1) == readback
    assert put(hv, par, bad, ch=1) == "#BD:00,VAL:ERR"
    assert mon(hv, par, 1) == readback  # a refused value changes nothing
    assert put(hv, par, None, ch=1) == "#BD:00,VAL:ERR"


@pytest.mark.parametrize(
    "par",
    [
        "VMIN",
        "VMAX",
        "VDEC",
        "IMIN",
        "IMAX",
        "ISDEC",
        "IMDEC",
        "MVMIN",
        "MVMAX",
        "MVDEC",
        "RUPMIN",
        "RUPMAX",
        "RUPDEC",
        "RDWMIN",
        "RDWMAX",
        "RDWDEC",
        "TRIPMIN",
        "TRIPMAX",
        "TRIPDEC",
        "POL",
        "STAT",
        "VMON",
        "IMON",
    ],
)
def test_monitor_only_parameters_refuse_set(hv, par):
    assert put(hv, par, 1) == "#BD:00,PAR:ERR"


def test_low_current_range_reads_one_more_decimal(hv, clock):
    put(hv, "RUP", 500)
    put(hv, "VSET", 100)
    put(hv, "ON")
    clock.advance(1)
    assert len(mon(hv, "IMON").split(".")[1]) == 2
    put(hv, "IMRANGE", "LOW")
    assert mon(hv, "IMDEC") == "3"
    imon = mon(hv, "IMON")
    assert len(imon) == 8 and len(imon.split(".")[1]) == 3
    assert float(imon) == pytest.approx(1.0, abs=0.05)  # 100 V / 100 Mohm


def test_vset_is_limited_by_maxv_and_by_vmax(hv):
    put(hv, "MAXV", 8100)
    assert put(hv, "VSET", 8050) == "#BD:00,VAL:ERR"  # above VMAX 8000 although MAXV allows it
    put(hv, "MAXV", 500)
    assert put(hv, "VSET", 500.1) == "#BD:00,VAL:ERR"
    assert put(hv, "VSET", 500) == "#BD:00,CMD:OK"


def test_set_on_all_channels_and_value_on_on_off_ignored(hv):
    assert put(hv, "ON", 0, ch=4) == "#BD:00,CMD:OK"  # some clients send VAL with ON / OFF
    assert [int(s) & ON for s in mon(hv, "STAT", 4).split(";")] == [ON] * 4
    assert put(hv, "OFF", ch=4) == "#BD:00,CMD:OK"
    assert mon(hv, "STAT", 4) == "00000;00000;00000;00000"


def test_interlock_mode_and_status(hv, clock):
    put(hv, "RUP", 500, ch=4)
    put(hv, "VSET", 100, ch=4)
    put(hv, "ON", ch=4)
    clock.advance(1)
    assert put(hv, "BDILKM", "SHUT", ch=None) == "#BD:00,VAL:ERR"
    assert put(hv, "BDILKM", None, ch=None) == "#BD:00,VAL:ERR"
    assert put(hv, "BDILKM", "CLOSED", ch=None) == "#BD:00,CMD:OK"  # contact closed: interlock active
    assert mon(hv, "BDILKM", None) == "CLOSED"
    assert mon(hv, "BDILK", None) == "YES"
    assert mon(hv, "VMON", 4) == "0000.0;0000.0;0000.0;0000.0"  # off at once, no ramp
    assert int(mon(hv, "STAT", 2)) == ILK
    put(hv, "ON", ch=2)
    assert int(mon(hv, "STAT", 2)) == ILK  # held off
    hv.set_param("interlock_open", True)  # mode CLOSED, contact open: released
    assert mon(hv, "BDILK", None) == "NO"
    assert mon(hv, "STAT", 2) == "00000"
    put(hv, "ON", ch=2)
    assert int(mon(hv, "STAT", 2)) & ON


@pytest.mark.parametrize(
    "request_, reply",
    [
        ("$BD:00,CMD:MON,PAR:BDNCH,VAL:3", "#BD:00,CMD:OK,VAL:4"),  # a VAL on MON is ignored
        ("$BD:00,CMD:MON,CH:0,PAR:BDNCH", "#BD:00,CMD:OK,VAL:4"),  # a CH on a board parameter is ignored
        ("$bd:00,cmd:mon,ch:0,par:vdec", "#BD:00,CMD:OK,VAL:1"),  # case-insensitive
        ("$BD:00,CMD:SET,PAR:BDNCH,VAL:2", "#BD:00,PAR:ERR"),
        ("$BD:00,CMD:SET,PAR:BDCTR,VAL:REMOTE", "#BD:00,PAR:ERR"),
        ("$BD:00,CMD:MON,PAR:BDCLR", "#BD:00,PAR:ERR"),
        ("$BD:00,CMD:MON,PAR:BDFOO", "#BD:00,PAR:ERR"),
        ("$BD:00,CMD:MON,CH:0,PAR:", "#BD:00,PAR:ERR"),
        ("$BD:00,CMD:MON,CH:0,PAR:IMRANGE,VAL:LOW", "#BD:00,CMD:OK,VAL:HIGH"),
        ("$BD:00,CMD:MON,CH:-1,PAR:VSET", "#BD:00,CH:ERR"),
        ("$BD:00,CMD:MON,CH:,PAR:VSET", "#BD:00,CH:ERR"),
        ("$BD:00,CMD:SET,CH:4,PAR:RUP,VAL:fast", "#BD:00,VAL:ERR"),
        ("$BD:00,CMD:INFO,CH:0,PAR:VSET", "#BD:00,CMD:ERR"),
        ("$BD:00", "#BD:00,CMD:ERR"),
        ("BD:00,CMD:MON,CH:0,PAR:VSET", "#BD:00,CMD:ERR"),
    ],
)
def test_malformed_requests(hv, request_, reply):
    assert ask(hv, request_) == reply


def test_local_mode_refuses_every_set_including_board_ones(hv):
    hv.set_param("local", True)
    for line in (
        "$BD:00,CMD:SET,PAR:BDILKM,VAL:CLOSED",
        "$BD:00,CMD:SET,CH:4,PAR:IMRANGE,VAL:LOW",
        "$BD:00,CMD:SET,CH:0,PAR:ON",
    ):
        assert ask(hv, line) == "#BD:00,LOC:ERR"
    assert mon(hv, "BDILKM", None) == "OPEN" and mon(hv, "IMRANGE", 4) == "HIGH;HIGH;HIGH;HIGH"


def test_foreign_board_address_is_silent_for_every_parameter(serve, connect):
    client = connect(serve(CaenN1470(board=7, seed=1)))
    for par in ("BDNCH", "BDILK", "BDTERM"):
        assert client.no_reply(f"$BD:31,CMD:MON,PAR:{par}", wait=0.05)
    assert client.ask("$BD:07,CMD:MON,PAR:BDNCH") == b"#BD:07,CMD:OK,VAL:4\r\n"
