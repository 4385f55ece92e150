"""CAEN N1470 / DT1470ET desktop HV supply (4 channels, 8 kV / 3 mA; up to 16 channels for load tests).

Wire protocol (ASCII, requests and replies end CR LF; a bare LF is accepted; commands are case-insensitive)::

    $BD:00,CMD:MON,PAR:BDNCH              ->  #BD:00,CMD:OK,VAL:4
    $BD:00,CMD:MON,CH:0,PAR:VMON          ->  #BD:00,CMD:OK,VAL:0100.0
    $BD:00,CMD:SET,CH:0,PAR:VSET,VAL:100  ->  #BD:00,CMD:OK
    $BD:00,CMD:MON,CH:4,PAR:VMON          ->  #BD:00,CMD:OK,VAL:0100.0;0000.0;0000.0;0000.0

``CH:<nchannels>`` (``CH:4`` on the 4-channel unit) addresses every channel: MON joins the values with
``;`` (channel 0 first), SET applies to all channels or, if one value is refused, to none.
Board parameters take no ``CH`` field (one is tolerated and ignored).  A ``VAL`` field on ON / OFF / BDCLR
or on a MON request is ignored.  Errors, the whole reply after ``#BD:bb,``:

    CMD:ERR  not a ``$BD:..,CMD:..`` request, or CMD other than MON / SET
    CH:ERR   channel field missing (channel parameter), not a number, or above nchannels
    PAR:ERR  parameter field missing or unknown, or used in the wrong direction (SET VMON, MON ON)
    VAL:ERR  SET value missing, not a number / not one of the allowed words, or outside MIN..MAX
    LOC:ERR  any SET while the board is in LOCAL mode (scenario ``local: true``)

A board address that is not ours gets no reply at all (a real daisy chain stays silent).

Board parameters (MON; SET where noted)::

    BDNAME   N1470                  BDNCH    4 (number of channels)      BDFREL  1.08
    BDSNUM   01470                  BDILK    YES | NO (interlock active)  BDCTR   LOCAL | REMOTE
    BDILKM   OPEN | CLOSED (interlock mode; SET VAL:OPEN|CLOSED)        BDTERM  ON | OFF (bus termination)
    BDALARM  %05d alarm word        BDCLR    SET only: clears TRIP bits and the alarm word

Channel parameters, value / MIN / MAX / decimals (MON; the first column is also SET)::

    VSET  %06.1f V    VMIN 0000.0   VMAX 8000.0   VDEC 1    (SET also refused above MAXV)
    ISET  %07.2f uA   IMIN 0000.00  IMAX 3000.00  ISDEC 2
    MAXV  %04.0f V    MVMIN 0000    MVMAX 8100    MVDEC 0
    RUP   %03.0f V/s  RUPMIN 001    RUPMAX 500    RUPDEC 0   (RDW, RDWMIN, RDWMAX, RDWDEC alike)
    TRIP  %06.1f s    TRIPMIN 0000.0  TRIPMAX 1000.0  TRIPDEC 1
    (a SET value is held at its parameter's decimals: VSET 100.04 holds 100.0 V, RUP 20.4 holds 20 V/s)
    PDWN  RAMP | KILL           IMRANGE  HIGH | LOW (IMON range)       ON, OFF  SET only, no value
    VMON  %06.1f V (unsigned; sign from POL)     POL  + | -  (MON only)
    IMON  %07.2f uA (IMRANGE HIGH) | %08.3f uA (LOW)   IMDEC 2 | 3      STAT  %05d bit word

STAT bits: 0 ON, 1 RUP, 2 RDW, 3 OVC, 4 OVV, 5 UNV, 6 MAXV, 7 TRIP, 8 OVP, 9 OVT, 10 DIS, 11 KILL,
12 ILK, 13 NOCAL (simulated: ON RUP RDW OVC MAXV TRIP ILK).  BDALARM bits 0-3: channel 0-3 tripped
(latched until BDCLR); 4 power fail, 5 over power, 6 HV clock fail: never set.

Sources: the parameter tables, error replies and the all-channels rule (CH 0..4, 4 = all, values
``*;*;*;*``) follow the CAEN N1471/N1419 user manuals' "USB - RS485 Communication Protocol" section,
which the N1470 shares (as read in public clients: lobis/hvps, the DESY Constellation NDT1470 satellite
citing UM2027 rev. 17, SengerM/CAENpy).  Unconfirmed choices: the zero padding of MIN/MAX values (taken
as the format of their parameter), BDNCH without padding, the IMON low-range format ``%08.3f`` (the manual
gives 3 decimals, not the width), BDILKM default OPEN, the interlock sense (mode OPEN: active while the
contact is open), a missing PAR field answering PAR:ERR (manual wording "Field parameter not present").

Physics: the output ramps toward VSET (ON) or 0 (OFF) at RUP/RDW.  Each channel
biases a silicon sensor (``slowctl_dummy.sensor``): a bulk generation current
that rises as sqrt(V/``depletion``) up to ``bulk`` at full depletion, plus the
ohmic path V/``load``, scaled with ``temperature``, times an avalanche factor
1/(1-(V/Vbd)**4) if a ``breakdown`` voltage is set (the model is in A; IMON
and ISET are in uA here).  When I would exceed ISET the output is
current-limited (OVC); after TRIP seconds in OVC the channel trips: off, TRIP
bit, ramp down at RDW (PDWN RAMP) or drop to 0 (PDWN KILL).  A trip is cleared
by ``SET PAR:BDCLR`` (all channels, also the alarm word) or a new ``ON`` of
that channel; it never clears itself.  An active interlock switches every channel off at once (no ramp),
shows ILK in STAT and YES in BDILK, and keeps ``ON`` from taking effect until it is released.
Scenario parameters: per channel ``load`` (ohm), ``temperature`` (degC),
``breakdown`` (V), ``depletion`` (V), ``bulk`` (A), ``polarity`` (+/-); board
``local`` (true = LOCAL mode),
``interlock_open`` (true = the interlock contact is open).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..base import MAX_STEP, Instrument, Param
from ..sensor import SiliconSensor, sensor_params

ON, RUP, RDW, OVC, MAXV, TRIP, ILK = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 6, 1 << 7, 1 << 12
VMAX, IMAX, MAXV_MAX, RAMP_MIN, RAMP_MAX, TRIP_MAX = 8000.0, 3000.0, 8100.0, 1.0, 500.0, 1000.0  # N1470 ranges


@dataclass
class HvChannel:
    pol: str = "-"
    vset: float = 0.0  # V
    iset: float = 100.0  # uA
    maxv: float = 8100.0  # V
    rup: float = 50.0  # V/s
    rdw: float = 50.0  # V/s
    trip: float = 1.0  # s
    pdwn: str = "RAMP"
    imrange: str = "HIGH"  # IMON range: LOW reads with one more decimal
    on: bool = False
    ilk: bool = False  # held off by the board interlock
    tripped: bool = False
    vout: float = 0.0  # true output voltage (magnitude)
    ovc: bool = False
    ovc_time: float = 0.0  # how long OVC has lasted
    sensor: SiliconSensor = field(default_factory=SiliconSensor)  # the load, in SI units

    @property
    def target(self) -> float:
        return min(self.vset, self.maxv) if self.on else 0.0

    def leakage(self, v: float) -> float:
        """Sensor current in uA at output voltage v (the channel works in uA, the model in A)."""
        return self.sensor.current(v) * 1e6

    def v_limit(self) -> float:
        """Voltage at which the sensor draws exactly ISET."""
        return self.sensor.voltage_at(self.iset * 1e-6)

    def steady(self) -> bool:
        return self.vout == self.target and self.leakage(self.vout) <= self.iset

    def step(self, dt: float) -> bool:
        """Advance dt seconds; True if the channel tripped during this step."""
        target = self.target
        if self.vout < target:
            self.vout = min(target, self.vout + self.rup * dt)
        elif self.vout > target:
            self.vout = max(target, self.vout - self.rdw * dt)
        if abs(self.vout - target) < 1e-6:  # absorb float round-off of many small steps
            self.vout = target
        vlim = self.v_limit()
        self.ovc = self.on and self.vout > vlim
        self.vout = min(self.vout, vlim)  # the current limit acts even while ramping down
        self.ovc_time = self.ovc_time + dt if self.ovc else 0.0
        if self.ovc and self.ovc_time >= self.trip - 1e-9:
            self.on, self.ovc, self.ovc_time, self.tripped = False, False, 0.0, True
            if self.pdwn == "KILL":
                self.vout = 0.0
            return True
        return False

    def switch_on(self) -> None:
        self.tripped, self.ovc_time = False, 0.0
        self.on = not self.ilk  # the interlock keeps the channel off

    def switch_off(self) -> None:
        self.on = False
        if self.pdwn == "KILL":
            self.vout = 0.0

    def status(self) -> int:
        return (
            (ON if self.on else 0)
            | (RUP if self.on and self.vout < self.target else 0)
            | (RDW if self.vout > self.target else 0)
            | (OVC if self.ovc else 0)
            | (MAXV if self.on and self.vset > self.maxv else 0)
            | (TRIP if self.tripped else 0)
            | (ILK if self.ilk else 0)
        )


# --- command table ---------------------------------------------------------------
class Reject(Exception):
    """Refuse a request; ``field`` names the error reply (CMD, CH, PAR, VAL, LOC)."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


@dataclass(frozen=True)
class ChPar:
    """A channel parameter: MON formatter and/or SET value check + apply."""

    mon: Callable[[CaenN1470, HvChannel], str] | None = None
    check: Callable[[HvChannel, str | None], Any] | None = None
    apply: Callable[[HvChannel, Any], None] | None = None


@dataclass(frozen=True)
class BdPar:
    mon: Callable[[CaenN1470], str] | None = None
    set: Callable[[CaenN1470, str | None], None] | None = None


def _number(val: str | None, lo: float, hi: float) -> float:
    try:
        v = float(val)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Reject("VAL") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise Reject("VAL")
    return v


def setting(attr: str, fmt: str, lo: float, hi: float | Callable[[HvChannel], float], dec: int | None = None) -> ChPar:
    """A numeric setting; with `dec` held at that many decimals (the parameter's DEC: its resolution)."""
    return ChPar(
        mon=lambda inst, ch: fmt % getattr(ch, attr),
        check=lambda ch, val: _number(val, lo, hi(ch) if callable(hi) else hi),
        apply=lambda ch, v: setattr(ch, attr, v if dec is None else round(v, dec)),
    )


def const(text: str) -> ChPar:
    return ChPar(mon=lambda inst, ch: text)


def ranged(
    par: str,
    names: tuple[str, str, str],
    attr: str,
    width: int,
    dec: int,
    lo: float,
    hi: float,
    limit: Callable[[HvChannel], float] | None = None,
) -> dict[str, ChPar]:
    """A numeric setting and its MIN, MAX and DEC companions, all in the setting's format."""
    fmt = f"%0{width}.{dec}f"
    mn, mx, dc = names
    value = setting(attr, fmt, lo, limit or hi, dec)
    return {par: value, mn: const(fmt % lo), mx: const(fmt % hi), dc: const(str(dec))}


def choice(attr: str, words: tuple[str, ...]) -> ChPar:
    def check(ch: HvChannel, val: str | None) -> str:
        if val not in words:
            raise Reject("VAL")
        return val

    return ChPar(mon=lambda inst, ch: getattr(ch, attr), check=check, apply=lambda ch, v: setattr(ch, attr, v))


def command(action: Callable[[HvChannel], None]) -> ChPar:
    return ChPar(check=lambda ch, val: None, apply=lambda ch, _: action(ch))


CHANNEL_PARS: dict[str, ChPar] = {
    **ranged("VSET", ("VMIN", "VMAX", "VDEC"), "vset", 6, 1, 0, VMAX, limit=lambda ch: min(VMAX, ch.maxv)),
    **ranged("ISET", ("IMIN", "IMAX", "ISDEC"), "iset", 7, 2, 0, IMAX),
    **ranged("MAXV", ("MVMIN", "MVMAX", "MVDEC"), "maxv", 4, 0, 0, MAXV_MAX),
    **ranged("RUP", ("RUPMIN", "RUPMAX", "RUPDEC"), "rup", 3, 0, RAMP_MIN, RAMP_MAX),
    **ranged("RDW", ("RDWMIN", "RDWMAX", "RDWDEC"), "rdw", 3, 0, RAMP_MIN, RAMP_MAX),
    **ranged("TRIP", ("TRIPMIN", "TRIPMAX", "TRIPDEC"), "trip", 6, 1, 0, TRIP_MAX),
    "PDWN": choice("pdwn", ("RAMP", "KILL")),
    "IMRANGE": choice("imrange", ("HIGH", "LOW")),
    "ON": command(HvChannel.switch_on),
    "OFF": command(HvChannel.switch_off),
    "VMON": ChPar(mon=lambda inst, ch: f"{inst.vmon(ch):06.1f}"),
    "IMON": ChPar(mon=lambda inst, ch: f"{inst.imon(ch):{'07.2f' if ch.imrange == 'HIGH' else '08.3f'}}"),
    "IMDEC": ChPar(mon=lambda inst, ch: "2" if ch.imrange == "HIGH" else "3"),
    "POL": ChPar(mon=lambda inst, ch: ch.pol),
    "STAT": ChPar(mon=lambda inst, ch: f"{ch.status():05d}"),
}


def _ilk_mode(inst: CaenN1470, val: str | None) -> None:
    if val not in ("OPEN", "CLOSED"):
        raise Reject("VAL")
    inst.ilk_mode = val


BOARD_PARS: dict[str, BdPar] = {
    "BDNAME": BdPar(mon=lambda inst: "N1470"),
    "BDNCH": BdPar(mon=lambda inst: str(inst.n_channels)),
    "BDSNUM": BdPar(mon=lambda inst: inst.serial),
    "BDFREL": BdPar(mon=lambda inst: inst.firmware),
    "BDILK": BdPar(mon=lambda inst: "YES" if inst.interlocked else "NO"),
    "BDILKM": BdPar(mon=lambda inst: inst.ilk_mode, set=_ilk_mode),
    "BDCTR": BdPar(mon=lambda inst: "LOCAL" if inst.local else "REMOTE"),
    "BDTERM": BdPar(mon=lambda inst: "ON" if inst.termination else "OFF"),
    "BDALARM": BdPar(mon=lambda inst: f"{inst.alarm:05d}"),
    "BDCLR": BdPar(set=lambda inst, val: inst.clear_alarms()),
}

_REQUEST = re.compile(r"\$BD:(\d{1,2}),CMD:([A-Z]+)(?:,CH:([^,]*))?(?:,PAR:([^,]*))?(?:,VAL:([^,]*))?")


class CaenN1470(Instrument):
    model = "caen-n1470"
    # board state, set in __init__; declared here for the parameter tables above, which use it
    serial: str
    firmware: str
    termination: bool
    local: bool
    ilk_mode: str
    alarm: int
    request_terminator = b"\r\n"
    reply_terminator = b"\r\n"
    first_channel = 0
    default_channels, min_channels, max_channels = 4, 1, 16
    params = {
        **sensor_params("sensor."),
        "polarity": Param("choice", choices=("+", "-"), attr="pol"),
        "local": Param("bool", per_channel=False),
        "interlock_open": Param("bool", per_channel=False),
    }

    def __init__(
        self,
        *,
        board: int = 0,
        polarity: str = "-",
        serial: str = "01470",
        firmware: str = "1.08",
        termination: bool = True,
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channels=channels, seed=seed, clock=clock)
        if not 0 <= board <= 31:
            raise ValueError(f"board: {board} out of range (expected 0..31)")
        if polarity not in ("+", "-"):
            raise ValueError(f"polarity: expected + or -, got {polarity!r}")
        self.board, self.serial, self.firmware, self.termination = board, serial, firmware, termination
        self.local = False
        self.ilk_mode = "OPEN"  # interlock active while the contact is open (unconfirmed default)
        self.interlock_open = False  # scenario: state of the interlock contact
        self.alarm = 0
        self.channels = [HvChannel(pol=polarity) for _ in range(self.n_channels)]

    # --- physics ----------------------------------------------------------------
    @property
    def interlocked(self) -> bool:
        return self.interlock_open == (self.ilk_mode == "OPEN")

    def _apply_interlock(self) -> None:
        for ch in self.channels:
            ch.ilk = self.interlocked
            if ch.ilk and ch.on:
                ch.on, ch.vout = False, 0.0  # hardware interlock: off at once, no ramp

    def step(self, dt: float) -> None:
        self._apply_interlock()
        for n, ch in enumerate(self.channels):
            if ch.step(dt) and n < 4:  # the alarm word has bits for channels 0-3 only
                self.alarm |= 1 << n

    def max_step(self) -> float:
        if all(ch.steady() for ch in self.channels):
            return math.inf
        # land exactly on the trip time of a channel in over-current
        trips = [ch.trip - ch.ovc_time for ch in self.channels if ch.ovc]
        return min([MAX_STEP, *trips])

    def vmon(self, ch: HvChannel) -> float:
        return abs(ch.vout + self.noise(0.03)) if ch.vout > 0 else 0.0

    def imon(self, ch: HvChannel) -> float:
        i = ch.leakage(ch.vout)
        return max(0.0, i * (1 + self.noise(0.001)) + self.noise(0.005)) if ch.vout > 0 else 0.0

    def clear_alarms(self) -> None:
        self.alarm = 0
        for ch in self.channels:
            ch.tripped = False

    # --- protocol -----------------------------------------------------------------
    def respond(self, line: str) -> str | None:
        self._apply_interlock()  # a scenario change at this very instant
        line = line.strip().upper()
        bd = re.match(r"\$BD:(\d{1,2})(?:,|$)", line)
        if bd and int(bd.group(1)) != self.board:
            return None  # not our address: a real chain stays silent
        head = f"#BD:{self.board:02d}"
        m = _REQUEST.fullmatch(line)
        if not m or m.group(2) not in ("MON", "SET"):
            return f"{head},CMD:ERR"
        _, cmd, chan, par, val = m.groups()
        try:
            values = self._board(cmd, par, val) if par in BOARD_PARS else self._channel(cmd, chan, par, val)
        except Reject as err:
            return f"{head},{err.field}:ERR"
        return f"{head},CMD:OK" + (f",VAL:{values}" if values is not None else "")

    def _board(self, cmd: str, par: str, val: str | None) -> str | None:
        p = BOARD_PARS[par]
        if cmd == "MON":
            if p.mon is None:
                raise Reject("PAR")
            return p.mon(self)
        if p.set is None:
            raise Reject("PAR")
        if self.local:
            raise Reject("LOC")
        p.set(self, val)
        self._apply_interlock()
        return None

    def _channel(self, cmd: str, chan: str | None, par: str, val: str | None) -> str | None:
        p = CHANNEL_PARS.get(par)
        if p is None or (p.mon if cmd == "MON" else p.check) is None:
            raise Reject("PAR")
        if chan is None or not re.fullmatch(r"[0-9]{1,2}", chan) or int(chan) > self.n_channels:
            raise Reject("CH")
        chans = self.channels if int(chan) == self.n_channels else [self.channels[int(chan)]]
        if cmd == "MON":
            assert p.mon is not None
            return ";".join(p.mon(self, ch) for ch in chans)
        if self.local:
            raise Reject("LOC")
        assert p.check is not None and p.apply is not None
        checked = [p.check(ch, val) for ch in chans]  # all valid before any change
        for ch, v in zip(chans, checked, strict=True):
            p.apply(ch, v)
        return None
