"""CAEN N1470 desktop HV supply (4 channels; up to 16 for load tests).

Wire protocol (ASCII, requests and replies end CR LF; a bare LF is accepted)::

    $BD:00,CMD:MON,CH:0,PAR:VMON      ->  #BD:00,CMD:OK,VAL:0100.0
    $BD:00,CMD:SET,CH:0,PAR:VSET,VAL:100  ->  #BD:00,CMD:OK
    $BD:00,CMD:MON,CH:4,PAR:VMON      ->  #BD:00,CMD:OK,VAL:0100.0;0000.0;0000.0;0000.0

``CH:<nchannels>`` addresses all channels (MON joins values with ``;``).
Errors: ``#BD:bb,CMD:ERR`` bad format / unknown CMD, ``CH:ERR`` bad channel,
``PAR:ERR`` unknown parameter or wrong direction (SET on a monitor, MON on a
command), ``VAL:ERR`` value missing / not numeric / out of range, ``LOC:ERR``
any SET while in LOCAL mode.  Another board address gets no reply at all.

Reply formats (fixed width, zero padded, as on the real unit):

    VSET, VMON  %06.1f  V  (VMON unsigned; sign from POL)   0100.0
    ISET, IMON  %07.2f  uA                                   0050.00
    MAXV        %04.0f  V                                    8100
    RUP, RDW    %03.0f  V/s                                  050
    TRIP        %06.1f  s                                    0001.0
    STAT        %05d    bit word                             00001
    PDWN        RAMP | KILL;  POL  + | -
    BDNAME N1470, BDSNUM 01470, BDFREL 1.08, BDALARM %05d,
    BDCTR LOCAL | REMOTE (unconfirmed name)

STAT bits: 0 ON, 1 RUP, 2 RDW, 3 OVC, 4 OVV, 5 UNV, 6 MAXV, 7 TRIP, 8 OVP,
9 OVT, 10 DIS, 11 KILL, 12 ILK, 13 NOCAL (simulated: ON RUP RDW OVC MAXV TRIP).
BDALARM bits 0-3: channel 0-3 tripped (latched until BDCLR); 4-6 never set.

Physics: the output ramps toward VSET (ON) or 0 (OFF) at RUP/RDW.  The sensor
leaks I = V/load * 2**((T-20)/7), times an avalanche factor 1/(1-(V/Vbd)**4)
if a ``breakdown`` voltage is set.  When I would exceed ISET the output is
current-limited (OVC); after TRIP seconds in OVC the channel trips: off, TRIP
bit, ramp down at RDW (PDWN RAMP) or drop to 0 (PDWN KILL).  A trip is cleared
by ``SET PAR:BDCLR`` (all channels, also the alarm word) or a new ``ON`` of
that channel; it never clears itself.
Scenario parameters: per channel ``load`` (ohm), ``temperature`` (degC),
``breakdown`` (V), ``polarity`` (+/-); board ``local`` (true = LOCAL mode).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..base import MAX_STEP, Instrument, Param

ON, RUP, RDW, OVC, MAXV, TRIP = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 6, 1 << 7


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
    on: bool = False
    tripped: bool = False
    vout: float = 0.0  # true output voltage (magnitude)
    ovc: bool = False
    ovc_time: float = 0.0  # how long OVC has lasted
    load: float = 100e6  # ohm, sensor leakage resistance at 20 degC
    temperature: float = 20.0  # degC
    breakdown: float = math.inf  # V

    @property
    def target(self) -> float:
        return min(self.vset, self.maxv) if self.on else 0.0

    def leakage(self, v: float) -> float:
        """Load current in uA at output voltage v."""
        if v >= self.breakdown:
            return math.inf
        avalanche = 1.0 / (1.0 - (v / self.breakdown) ** 4)
        return v / self.load * 1e6 * 2 ** ((self.temperature - 20.0) / 7.0) * avalanche

    def v_limit(self) -> float:
        """Voltage at which the load draws exactly ISET."""
        if math.isinf(self.breakdown):
            return self.iset / self.leakage(1.0)
        lo, hi = 0.0, self.breakdown  # leakage is monotonic: bisect
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.leakage(mid) < self.iset else (lo, mid)
        return lo

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
        self.on, self.tripped, self.ovc_time = True, False, 0.0

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
    set: Callable[[CaenN1470], None] | None = None


def _number(val: str | None, lo: float, hi: float) -> float:
    try:
        v = float(val)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Reject("VAL") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise Reject("VAL")
    return v


def setting(attr: str, fmt: str, lo: float, hi: float | Callable[[HvChannel], float]) -> ChPar:
    return ChPar(
        mon=lambda inst, ch: fmt % getattr(ch, attr),
        check=lambda ch, val: _number(val, lo, hi(ch) if callable(hi) else hi),
        apply=lambda ch, v: setattr(ch, attr, v),
    )


def _pdwn(ch: HvChannel, val: str | None) -> str:
    if val not in ("RAMP", "KILL"):
        raise Reject("VAL")
    return val


def command(action: Callable[[HvChannel], None]) -> ChPar:
    return ChPar(check=lambda ch, val: None, apply=lambda ch, _: action(ch))


CHANNEL_PARS: dict[str, ChPar] = {
    "VSET": setting("vset", "%06.1f", 0, lambda ch: ch.maxv),
    "ISET": setting("iset", "%07.2f", 0, 3000),
    "MAXV": setting("maxv", "%04.0f", 0, 8100),
    "RUP": setting("rup", "%03.0f", 1, 500),
    "RDW": setting("rdw", "%03.0f", 1, 500),
    "TRIP": setting("trip", "%06.1f", 0, 1000),
    "PDWN": ChPar(mon=lambda i, ch: ch.pdwn, check=_pdwn, apply=lambda ch, v: setattr(ch, "pdwn", v)),
    "ON": command(HvChannel.switch_on),
    "OFF": command(HvChannel.switch_off),
    "VMON": ChPar(mon=lambda inst, ch: "%06.1f" % inst.vmon(ch)),
    "IMON": ChPar(mon=lambda inst, ch: "%07.2f" % inst.imon(ch)),
    "POL": ChPar(mon=lambda inst, ch: ch.pol),
    "STAT": ChPar(mon=lambda inst, ch: "%05d" % ch.status()),
}

BOARD_PARS: dict[str, BdPar] = {
    "BDNAME": BdPar(mon=lambda inst: "N1470"),
    "BDSNUM": BdPar(mon=lambda inst: inst.serial),
    "BDFREL": BdPar(mon=lambda inst: inst.firmware),
    "BDALARM": BdPar(mon=lambda inst: "%05d" % inst.alarm),
    "BDCTR": BdPar(mon=lambda inst: "LOCAL" if inst.local else "REMOTE"),
    "BDCLR": BdPar(set=lambda inst: inst.clear_alarms()),
}

_REQUEST = re.compile(r"\$BD:(\d{1,2}),CMD:([A-Z]+)(?:,CH:([^,]*))?,PAR:([^,]*)(?:,VAL:([^,]*))?")


class CaenN1470(Instrument):
    model = "caen-n1470"
    request_terminator = b"\r\n"
    reply_terminator = b"\r\n"
    first_channel = 0
    default_channels, min_channels, max_channels = 4, 1, 16
    params = {
        "load": Param("number", lo=0, nonzero=True),
        "temperature": Param("number", lo=-60, hi=100),
        "breakdown": Param("number", lo=0, nonzero=True),
        "polarity": Param("choice", choices=("+", "-"), attr="pol"),
        "local": Param("bool", per_channel=False),
    }

    def __init__(
        self,
        *,
        board: int = 0,
        polarity: str = "-",
        serial: str = "01470",
        firmware: str = "1.08",
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channels=channels, seed=seed, clock=clock)
        if not 0 <= board <= 31:
            raise ValueError(f"board: {board} out of range (expected 0..31)")
        if polarity not in ("+", "-"):
            raise ValueError(f"polarity: expected + or -, got {polarity!r}")
        self.board, self.serial, self.firmware = board, serial, firmware
        self.local = False
        self.alarm = 0
        self.channels = [HvChannel(pol=polarity) for _ in range(self.n_channels)]

    # --- physics ----------------------------------------------------------------
    def step(self, dt: float) -> None:
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
            values = self._board(cmd, par) if par in BOARD_PARS else self._channel(cmd, chan, par, val)
        except Reject as err:
            return f"{head},{err.field}:ERR"
        return f"{head},CMD:OK" + (f",VAL:{values}" if values is not None else "")

    def _board(self, cmd: str, par: str) -> str | None:
        p = BOARD_PARS[par]
        if cmd == "MON":
            if p.mon is None:
                raise Reject("PAR")
            return p.mon(self)
        if p.set is None:
            raise Reject("PAR")
        if self.local:
            raise Reject("LOC")
        p.set(self)
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
        for ch, v in zip(chans, checked):
            p.apply(ch, v)
        return None
