"""Aim-TTi MX100TP / CPX400DP / QL355P low-voltage supply (``channels=3`` -> MX100TP, 2 -> CPX400DP, 1 -> QL355P;
``variant="QL355TP"``, on the command line ``--option variant=QL355TP``).

TTi ASCII command set over a line protocol.  Requests end LF (CR LF accepted);
several commands may be joined with ``;``.  Every reply line ends CR LF; a
message with several queries gets one reply line per query (unconfirmed).
Headers are case-insensitive; ``<n>`` is the output number 1..N; numbers are
TTi ``<NRF>`` (``5``, ``5.0``, ``5e0``).  Settings have no reply.

Commands and reply formats::

    *IDN?        THURLBY THANDAR, MX100TP, 436129, 1.03-1.00-1.02
    *RST         outputs off, set values to defaults (loads kept), trips reset
    *CLS         clears *ESR, EER, QER and every LSR
    *ESR? -> 0   standard event status register, cleared by reading; bit 7 PON is set at power-on,
                 bit 5 command error, bit 4 execution error, bit 2 query error
    EER?  -> 0   execution error register (last error number), cleared by reading
    QER?  -> 0   query error register, cleared by reading (never set by this simulator)
    *OPC? -> 1;  *WAI, *TST? -> 0, LOCAL (accepted, no effect)
    V<n> <V>, V<n>V <V>   set voltage               V<n>?  -> V1 5.000    (decimals of the setting step)
    I<n> <A>              set current limit          I<n>?  -> I1 0.5000   (MX100TP, QL: 1 mV / 0.1 mA;
                                                                        CPX400DP 10 mV / 1 mA: V1 5.00, I1 0.500)
    V<n>O? -> 5.002V      output voltage (%.3f V)    I<n>O? -> 0.100A      (%.3f A)
    OP<n> 0|1             output off / on            OP<n>? -> 1 | 0
    OPALL 0|1             every output off / on (tripped outputs stay off)
    OVP<n> <V>            over-voltage trip level    OVP<n>? -> VP1 77.00
    OCP<n> <A>            over-current trip level    OCP<n>? -> CP1 6.600
    TRIPRST               resets the trips of every output (outputs stay off)
    LSR<n>? -> 0          limit event status register of output n, cleared by reading:
                          bit 0 entered CV, bit 1 entered CC, bit 2 OVP trip, bit 3 OCP trip
    LSE<n> <0..255>       limit status enable register     LSE<n>? -> 0
    *ESE, *SRE, *PRE <0..255>   enable registers           *ESE?, *SRE?, *PRE? -> 0
    *STB? -> 0            status byte: bit n-1 = LSR<n> & LSE<n> (limit summary of output n),
                          bit 5 ESB = *ESR & *ESE, bit 6 MSS = status byte & *SRE
    *IST? -> 0 | 1        1 when status byte & *PRE;  *OPC sets *ESR bit 0
    DELTAV<n> <V>         INCV / DECV step (default 0.1)   DELTAV<n>? -> DV1 0.10   (%.2f)
    DELTAI<n> <A>         INCI / DECI step (default 0.01)  DELTAI<n>? -> DI1 0.010  (%.3f)
    INCV<n>, DECV<n>, INCV<n>V, DECV<n>V, INCI<n>, DECI<n>   step the set value; a result outside the
                          range is execution error 100 and leaves the value as it was
    SAV<n> <0..9>, RCL<n> <0..9>   store / recall output n's V, I, OVP, OCP; recalling an empty store
                          is execution error 101
    CONFIG 2|0            2 independent outputs, 0 voltage tracking (V1 also sets V2)   CONFIG? -> 2
    VRANGE<n> <1..3>      MX100TP only: range number of output n (stored; the limits stay the
                          model's whole envelope)                                    VRANGE<n>? -> 1
    IFLOCK -> 1           take the interface lock (always granted: one simulated interface)
    IFLOCK? -> 1 | 0      lock held;  IFUNLOCK -> 0 (released) | -1 (no lock was held)

Errors give no reply: an unknown header, a missing or unreadable argument, or
an argument on a query is a command error (*ESR bit 5; the rest of the line is
dropped); a value outside the range (V 0..Vmax, I 0..Imax, OVP 1..1.1*Vmax,
OCP 0.01..1.1*Imax, OP 0/1) is execution error 100, an output that does not
exist execution error 103 (*ESR bit 4, number in EER?).

Sources: the command set and the header formats (``V1 5.00``, ``VP1``, ``CP1``, ``DV1``, ``DI1``, ``<NR2>V``)
follow the Aim-TTi CPX400DP / MX100TP / QL instruction manuals' remote command lists as used by public
clients (PyMeasure ``aimtti`` CPX driver: ``V{ch}?``, ``OVP{ch}?``, ``DELTAV{ch}?`` parsed from the 4th
character on; ``OPALL``, ``QER?``, ``TRIPRST``, ``LOCAL``).  Unconfirmed: the DELTAV / DELTAI defaults, the
CONFIG values (CPX400DP meaning), the VRANGE range count and reply, the IFLOCK / IFUNLOCK replies,
execution error 101 for an empty store, the status byte bit positions of the limit summaries.

Ranges (per model, every output alike): MX100TP 70 V / 6 A, CPX400DP 60 V / 20 A,
QL355TP and QL355P 35 V / 5 A.  Defaults: 0 V, 1 A, OVP 1.1*Vmax, OCP 1.1*Imax.
Setting resolution: MX100TP, QL355TP, QL355P 1 mV / 0.1 mA, CPX400DP 10 mV / 1 mA (Aim-TTi data sheets);
a finer set value is held rounded to it (``V1 5.0004`` holds 5.000 V).  The manuals give the ``V<n>?`` /
``I<n>?`` number as ``<NR2>`` without a digit count: the simulator answers with the decimals of the
setting step, so that the reply confirms what is held (unconfirmed: docs/instruments/tti-mx100tp.md).

Physics: an output that is on drives its resistive ``load`` (ohm, scenario
parameter, default 100): V = Vset and I = V/R, or constant current (I = Iset,
V = Iset*R) when Vset/R > Iset.  An output voltage above OVP or a current
above OCP trips the output at once: it goes off, the LSR trip bit is set, and
``OP<n> 1`` leaves it off until ``TRIPRST``.  Measurements carry small noise.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..base import Instrument, Param

MODELS = {1: "QL355P", 2: "CPX400DP", 3: "MX100TP"}
RANGES = {"MX100TP": (70.0, 6.0), "CPX400DP": (60.0, 20.0), "QL355TP": (35.0, 5.0), "QL355P": (35.0, 5.0)}
# setting resolution (V, A) per model: the data sheets' 1 mV / 0.1 mA (CPX400DP 10 mV / 1 mA). A set value is
# held on this grid (rounded to it) and V<n>? / I<n>? answer with its decimals: V1 5.000 / I1 0.5000
STEPS = {"MX100TP": (1e-3, 1e-4), "CPX400DP": (1e-2, 1e-3), "QL355TP": (1e-3, 1e-4), "QL355P": (1e-3, 1e-4)}
CV, CC, OVP, OCP = 0x01, 0x02, 0x04, 0x08  # LSR bits
VRANGES = {"MX100TP": 3}  # VRANGE<n> range numbers per model; others have no VRANGE command
STORES = range(10)  # SAV<n> / RCL<n> set-up stores


class CommandError(Exception):
    """Not understood: *ESR bit 5, the rest of the message is dropped."""


class ExecutionError(Exception):
    """Understood but not allowed: *ESR bit 4, the number goes to EER."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(eq=False)  # outputs are told apart by identity
class Output:
    vmax: float
    imax: float
    vset: float = 0.0
    iset: float = 1.0
    on: bool = False
    ovp: float = 0.0
    ocp: float = 0.0
    tripped: bool = False
    lsr: int = 0
    lse: int = 0  # limit status enable: which LSR bits reach *STB?
    deltav: float = 0.1  # INCV / DECV step, V
    deltai: float = 0.01  # INCI / DECI step, A
    vrange: int = 1
    mode: str = "OFF"  # OFF, CV or CC: LSR bits are set on entering CV / CC
    load: float = 100.0  # ohm

    def __post_init__(self) -> None:
        self.ovp = self.ovp or round(self.vmax * 1.1, 2)
        self.ocp = self.ocp or round(self.imax * 1.1, 3)

    def output(self) -> tuple[float, float, bool]:
        """Terminal (voltage, current, constant current?)."""
        if not self.on:
            return 0.0, 0.0, False
        if self.vset / self.load > self.iset:
            return self.iset * self.load, self.iset, True
        return self.vset, self.vset / self.load, False


def nrf(arg: str) -> float:
    try:
        value = float(arg.replace(" ", ""))
    except ValueError:
        raise CommandError() from None
    if not math.isfinite(value):
        raise CommandError()
    return value


def _on_grid(value: float, step: float) -> float:
    """The value the instrument holds: the nearest whole number of setting steps (also tidies INCV sums)."""
    return float(f"{round(value / step) * step:.12g}")


class TtiMx100tp(Instrument):
    model = "tti-mx100tp"
    request_terminator = b"\n"
    reply_terminator = b"\r\n"
    first_channel = 1
    default_channels, min_channels, max_channels = 3, 1, 3
    params = {"load": Param("number", lo=0, nonzero=True)}

    def __init__(
        self,
        *,
        variant: str | None = None,
        serial: str = "436129",
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channels=channels, seed=seed, clock=clock)
        self.variant = variant or MODELS[self.n_channels]
        if self.variant not in RANGES:
            raise ValueError(f"variant: unknown {variant!r} (expected one of {', '.join(RANGES)})")
        self.serial = serial
        self.vmax, self.imax = RANGES[self.variant]
        self.vstep, self.istep = STEPS[self.variant]
        self.vdigits, self.idigits = (round(-math.log10(step)) for step in STEPS[self.variant])
        self.channels = [Output(self.vmax, self.imax) for _ in range(self.n_channels)]
        self.esr = 0x80  # PON
        self.eer = 0
        self.qer = 0
        self.ese = self.sre = self.pre = 0  # *ESE, *SRE, *PRE enable registers
        self.config = 2  # CONFIG: 2 independent outputs, 0 output 2 tracks output 1's voltage
        self.locked = False  # IFLOCK held
        self.stores: dict[tuple[int, int], tuple[float, float, float, float]] = {}  # (output, store) -> set-up
        # (header pattern, handler, takes a value); a group in the pattern is the output number
        table: list[tuple[str, Callable[..., str | None], bool]] = [
            (r"\*IDN\?", self._idn, False),
            (r"\*RST", self._rst, False),
            (r"\*CLS", self._cls, False),
            (r"\*ESR\?", self._esr, False),
            (r"\*OPC\?", lambda: "1", False),
            (r"\*TST\?", lambda: "0", False),
            (r"\*WAI|LOCAL", lambda: None, False),
            (r"EER\?", self._eer, False),
            (r"QER\?", self._qer, False),
            (r"V(\d)V?", self._set_v, True),
            (r"V(\d)\?", lambda o: f"V{self._n(o)} {o.vset:.{self.vdigits}f}", False),
            (r"V(\d)O\?", self._vout, False),
            (r"I(\d)", self._set_i, True),
            (r"I(\d)\?", lambda o: f"I{self._n(o)} {o.iset:.{self.idigits}f}", False),
            (r"I(\d)O\?", self._iout, False),
            (r"OP(\d)", self._op, True),
            (r"OP(\d)\?", lambda o: str(int(o.on)), False),
            (r"OPALL", self._opall, True),
            (r"OVP(\d)", self._set_ovp, True),
            (r"OVP(\d)\?", lambda o: f"VP{self._n(o)} {o.ovp:.2f}", False),
            (r"OCP(\d)", self._set_ocp, True),
            (r"OCP(\d)\?", lambda o: f"CP{self._n(o)} {o.ocp:.3f}", False),
            (r"TRIPRST", self._triprst, False),
            (r"LSR(\d)\?", self._lsr, False),
            (r"LSE(\d)", lambda o, v: setattr(o, "lse", self._byte(v)), True),
            (r"LSE(\d)\?", lambda o: str(o.lse), False),
            (r"\*ESE", lambda v: setattr(self, "ese", self._byte(v)), True),
            (r"\*ESE\?", lambda: str(self.ese), False),
            (r"\*SRE", lambda v: setattr(self, "sre", self._byte(v)), True),
            (r"\*SRE\?", lambda: str(self.sre), False),
            (r"\*PRE", lambda v: setattr(self, "pre", self._byte(v)), True),
            (r"\*PRE\?", lambda: str(self.pre), False),
            (r"\*STB\?", lambda: str(self._stb()), False),
            (r"\*IST\?", lambda: str(int(bool(self._stb() & self.pre))), False),
            (r"\*OPC", self._opc, False),
            (r"DELTAV(\d)", lambda o, v: setattr(o, "deltav", self._within(v, 0.0, self.vmax)), True),
            (r"DELTAV(\d)\?", lambda o: f"DV{self._n(o)} {o.deltav:.2f}", False),
            (r"DELTAI(\d)", lambda o, v: setattr(o, "deltai", self._within(v, 0.0, self.imax)), True),
            (r"DELTAI(\d)\?", lambda o: f"DI{self._n(o)} {o.deltai:.3f}", False),
            (r"INCV(\d)V?", lambda o: self._set_v(o, o.vset + o.deltav), False),
            (r"DECV(\d)V?", lambda o: self._set_v(o, o.vset - o.deltav), False),
            (r"INCI(\d)", lambda o: self._set_i(o, o.iset + o.deltai), False),
            (r"DECI(\d)", lambda o: self._set_i(o, o.iset - o.deltai), False),
            (r"SAV(\d)", self._sav, True),
            (r"RCL(\d)", self._rcl, True),
            (r"CONFIG", self._set_config, True),
            (r"CONFIG\?", lambda: str(self.config), False),
            (r"IFLOCK", self._iflock, False),
            (r"IFLOCK\?", lambda: str(int(self.locked)), False),
            (r"IFUNLOCK", self._ifunlock, False),
        ]
        if self.variant in VRANGES:
            table += [(r"VRANGE(\d)", self._set_vrange, True), (r"VRANGE(\d)\?", lambda o: str(o.vrange), False)]
        self.commands = [(re.compile(pattern), handler, value) for pattern, handler, value in table]

    # --- physics ------------------------------------------------------------------
    def step(self, dt: float) -> None:
        self._update()

    def max_step(self) -> float:
        return math.inf  # nothing moves by itself: trips happen at once, on a command or a load change

    def _update(self) -> None:
        for o in self.channels:
            v, i, cc = o.output()
            if o.on and v > o.ovp + 1e-9:
                o.on, o.tripped, o.lsr = False, True, o.lsr | OVP
            elif o.on and i > o.ocp + 1e-9:
                o.on, o.tripped, o.lsr = False, True, o.lsr | OCP
            mode = ("CC" if cc else "CV") if o.on else "OFF"
            if mode != o.mode:
                o.lsr |= {"CV": CV, "CC": CC, "OFF": 0}[mode]
                o.mode = mode

    # --- requests -----------------------------------------------------------------
    def respond(self, line: str) -> str | None:
        self._update()  # a scenario load change applies before the request
        replies = []
        for part in line.split(";"):
            part = part.strip()
            if not part:
                continue
            header, _, arg = part.partition(" ")
            try:
                reply = self._execute(header.upper(), arg.strip())
            except CommandError:
                self.esr |= 0x20
                break  # the rest of the message is not parsed
            except ExecutionError as err:
                self.esr |= 0x10
                self.eer = err.code
                continue
            finally:
                self._update()
            if reply is not None:
                replies.append(reply)
        return "\r\n".join(replies) if replies else None

    def _execute(self, header: str, arg: str) -> str | None:
        for pattern, handler, takes_value in self.commands:
            m = pattern.fullmatch(header)
            if m is None:
                continue
            if bool(arg) != takes_value:  # a missing value, or a value where none belongs
                raise CommandError()
            args: list = [nrf(arg)] if takes_value else []
            if m.groups():
                n = int(m.group(1))
                if not 1 <= n <= self.n_channels:
                    raise ExecutionError(103)
                args.insert(0, self.channels[n - 1])
            return handler(*args)
        raise CommandError()

    def _n(self, o: Output) -> int:
        return self.channels.index(o) + 1

    def _idn(self) -> str:
        return f"THURLBY THANDAR, {self.variant}, {self.serial}, 1.03-1.00-1.02"

    def _rst(self) -> None:
        # factory settings; the loads are the bench's and the enable registers survive (IEEE 488.2)
        self.channels = [Output(self.vmax, self.imax, load=o.load, lse=o.lse) for o in self.channels]
        self.config = 2

    def _cls(self) -> None:
        self.esr = self.eer = self.qer = 0
        for o in self.channels:
            o.lsr = 0

    def _esr(self) -> str:
        value, self.esr = self.esr, 0
        return str(value)

    def _eer(self) -> str:
        value, self.eer = self.eer, 0
        return str(value)

    def _qer(self) -> str:
        value, self.qer = self.qer, 0
        return str(value)

    @staticmethod
    def _within(value: float, lo: float, hi: float) -> float:
        if not lo <= value <= hi + 1e-9:
            raise ExecutionError(100)
        return value

    def _set_v(self, o: Output, value: float) -> None:
        o.vset = self._within(_on_grid(value, self.vstep), 0.0, self.vmax)  # held at the setting resolution
        if self.config == 0 and self._n(o) == 1 and self.n_channels > 1:
            self.channels[1].vset = o.vset  # voltage tracking

    def _set_i(self, o: Output, value: float) -> None:
        o.iset = self._within(_on_grid(value, self.istep), 0.0, self.imax)

    def _set_ovp(self, o: Output, value: float) -> None:
        o.ovp = self._within(value, 1.0, round(self.vmax * 1.1, 2))

    def _set_ocp(self, o: Output, value: float) -> None:
        o.ocp = self._within(value, 0.01, round(self.imax * 1.1, 3))

    def _vout(self, o: Output) -> str:
        v = o.output()[0]
        return f"{max(0.0, v + self.noise(0.0005)) if v else 0.0:.3f}V"

    def _iout(self, o: Output) -> str:
        i = o.output()[1]
        return f"{max(0.0, i + self.noise(0.00005)) if i else 0.0:.3f}A"

    def _switch(self, o: Output, on: bool) -> None:
        o.on = on and not o.tripped  # a tripped output stays off until TRIPRST

    def _op(self, o: Output, value: float) -> None:
        if value not in (0.0, 1.0):
            raise ExecutionError(100)
        self._switch(o, value == 1.0)

    def _opall(self, value: float) -> None:
        if value not in (0.0, 1.0):
            raise ExecutionError(100)
        for o in self.channels:
            self._switch(o, value == 1.0)

    def _triprst(self) -> None:
        for o in self.channels:
            o.tripped = False

    def _lsr(self, o: Output) -> str:
        value, o.lsr = o.lsr, 0
        return str(value)

    @staticmethod
    def _byte(value: float) -> int:
        if value != int(value) or not 0 <= value <= 255:
            raise ExecutionError(100)
        return int(value)

    def _stb(self) -> int:
        """Status byte: bit n-1 limit summary of output n, bit 5 ESB, bit 6 MSS."""
        stb = sum(1 << i for i, o in enumerate(self.channels) if o.lsr & o.lse)
        stb |= 0x20 if self.esr & self.ese else 0
        return stb | (0x40 if stb & self.sre else 0)

    def _opc(self) -> None:
        self.esr |= 0x01  # operation complete: every command completes at once here

    def _store(self, value: float) -> int:
        if value not in STORES:
            raise ExecutionError(100)
        return int(value)

    def _sav(self, o: Output, value: float) -> None:
        self.stores[self._n(o), self._store(value)] = (o.vset, o.iset, o.ovp, o.ocp)

    def _rcl(self, o: Output, value: float) -> None:
        setup = self.stores.get((self._n(o), self._store(value)))
        if setup is None:
            raise ExecutionError(101)  # recall of a store never saved
        o.vset, o.iset, o.ovp, o.ocp = setup

    def _set_config(self, value: float) -> None:
        if value not in (0.0, 2.0):
            raise ExecutionError(100)
        self.config = int(value)
        if self.config == 0 and self.n_channels > 1:
            self.channels[1].vset = self.channels[0].vset

    def _set_vrange(self, o: Output, value: float) -> None:
        if value != int(value) or not 1 <= value <= VRANGES[self.variant]:
            raise ExecutionError(100)
        o.vrange = int(value)

    def _iflock(self) -> str:
        self.locked = True  # one simulated interface: the lock is always granted
        return "1"

    def _ifunlock(self) -> str:
        held, self.locked = self.locked, False
        return "0" if held else "-1"
