"""Rohde & Schwarz / HAMEG HMP4040 LV supply (``channels=3`` -> HMP2030, 2 -> HMP2020).

SCPI over a line protocol: requests end LF (CR LF accepted), replies end LF.
Short/long forms, optional ``SOUR:``, ``;``-joined commands: see ``scpi.py``.
Errors give no reply; ``SYST:ERR?`` returns them (``-113,"Undefined header"``,
``-109,"Missing parameter"``, ``-104,"Data type error"``,
``-222,"Data out of range"``, ``-224,"Illegal parameter value"``).

IEEE 488.2 status (``*ESE``, ``*ESR?``, ``*SRE``, ``*STB?``, ``*OPC``): see ``scpi.py``.

Commands and reply formats (SCPI short/long forms in any case, ``[..]`` optional)::

    *IDN?              HAMEG,HMP4040,<serial>,HW50020001/SW2.51
    *RST, *CLS, *WAI, *OPC;  *OPC? -> 1;  *TST? -> 0
    INSTrument:NSELect <n> | ? -> 1;  INSTrument[:SELect] OUT<n>|OUTP<n>|OUTPut<n> | ? -> OUTP1
    [SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude] <V>|MIN|MAX|UP|DOWN (0..32.050)
                       | ? [MIN|MAX] -> 12.000   (%.3f, set value);  VOLTage:STEP <V>|MIN|MAX | ?
    [SOURce:]CURRent[...] <A>|MIN|MAX|UP|DOWN (0..10) | ? [MIN|MAX] -> 0.1000 (%.4f);  CURRent:STEP
    APPLy <V>,<I>      both set values of the selected channel;  APPLy? -> 12.000,0.1000
    MEASure[:SCALar]:VOLTage[:DC]? -> 12.001 (%.3f)   MEASure[:SCALar]:CURRent[:DC]? -> 0.1200 (%.4f)
    OUTPut:SELect ON|OFF|1|0 | ?     arm the selected channel
    OUTPut:GENeral ON|OFF | ?        master switch
    OUTPut[:STATe] ON|OFF | ?        ON = arm + master on; OFF = disarm; ? = live
    FUSE[:STATe] ON|OFF | ?;  FUSE:DELay <ms>|MIN|MAX (0..250) | ? [MIN|MAX] -> 50;  FUSE:TRIPped? -> 0|1
    FUSE:LINK <n> | FUSE:LINK? <n> -> 1|0 | FUSE:UNLink <n>   when the selected channel's fuse
                       trips, the fuses linked to it trip too (n = 1..N, not the selected one)
    [SOURce:]VOLTage:PROTection[:LEVel] <V>|MIN|MAX (0..33) | ? [MIN|MAX] -> 32.500
    [SOURce:]VOLTage:PROTection:TRIPped? -> 0|1;  [SOURce:]VOLTage:PROTection:CLEar
    SYSTem:ERRor[:NEXT]?;  SYSTem:VERSion? -> 1999.0
    SYSTem:REMote, SYSTem:LOCal, SYSTem:MIXed, SYSTem:RWLock, SYSTem:BEEPer[:IMMediate]
                       (accepted, no effect: the front panel is not simulated)

Setting resolution (HMP4040 data sheet): a set voltage is held at 1 mV, a current limit at 0.1 mA up to
1 A and at 1 mA above (``CURR 2.34567`` holds 2.346 A, read back ``2.3460``); finer values are rounded.

Defaults (``*RST``): 0 V, 1 A, voltage step 1 V, current step 0.1 A, fuse off,
delay 0 ms, no fuse links, OVP 32.5 V, channel 1 selected, all outputs off.
Unconfirmed, from public drivers rather than the manual: the ``APPLy?`` and
``INSTrument?`` reply formats, the step defaults, ``FUSE:LINK?`` taking a
channel and answering 0/1, and the ``SYSTem:VERSion?`` value.

Physics: a live channel (armed and master on) drives a resistive ``load``
(ohm, scenario parameter, default 100): I = VSET/R, or constant current
(V = ISET*R) when VSET/R > ISET.  With the fuse on, CC lasting longer than
FUSE:DEL trips it: the channel is disarmed and FUSE:TRIP? reads 1 until the
operator acknowledges it by setting the channel's arm state (``OUTP:SEL OFF``
keeps it off, ``OUTP:SEL ON`` / ``OUTP ON`` re-arms) or ``*RST``.  What clears
the flag on a real HMP is unconfirmed.  OVP (VSET above VOLT:PROT while live)
disarms the same way, also cleared by VOLT:PROT:CLE.  Measurements carry small noise.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..base import Param
from ..scpi import ScpiError, ScpiInstrument, boolean, integer, number, scpi

MODELS = {2: "HMP2020", 3: "HMP2030", 4: "HMP4040"}
VMAX, IMAX, OVPMAX, DELMAX = 32.050, 10.0, 33.0, 250.0  # V, A, V, ms
# setting resolution (HMP4040 data sheet): 1 mV; current 0.1 mA up to 1 A, 1 mA above
VSTEP = 1e-3
ISTEPS = ((1.0, 1e-4), (math.inf, 1e-3))  # (highest current, step) A


def held_voltage(volts: float) -> float:
    """The voltage the channel holds: the nearest whole number of 1 mV steps."""
    return float(f"{round(volts / VSTEP) * VSTEP:.3f}")


def held_current(amps: float) -> float:
    """The current limit the channel holds: 0.1 mA steps up to 1 A, 1 mA steps above."""
    step = next(step for top, step in ISTEPS if amps <= top)
    return float(f"{round(amps / step) * step:.4f}")


def _limit_q(arg: str | None, value: float, lo: float, hi: float) -> float:
    """A query's optional MIN|MAX argument: the limit instead of the value."""
    word = (arg or "").strip().upper()
    if not word:
        return value
    if word in ("MIN", "MINIMUM", "MAX", "MAXIMUM"):
        return lo if word.startswith("MIN") else hi
    raise ScpiError(-224, "Illegal parameter value")


@dataclass
class LvChannel:
    vset: float = 0.0  # V
    iset: float = 1.0  # A
    armed: bool = False  # OUTP:SEL
    fuse: bool = False
    fuse_delay: float = 0.0  # ms
    fuse_tripped: bool = False
    ovp: float = 32.5  # V
    ovp_tripped: bool = False
    vstep: float = 1.0  # V
    istep: float = 0.1  # A
    links: frozenset[int] = frozenset()  # channels whose fuses trip with this one
    cc_time: float = 0.0  # s in constant current
    load: float = 100.0  # ohm

    def output(self, general: bool) -> tuple[float, float, bool]:
        """Terminal (voltage, current, constant-current?)."""
        if not (self.armed and general):
            return 0.0, 0.0, False
        if self.vset / self.load > self.iset:
            return self.iset * self.load, self.iset, True
        return self.vset, self.vset / self.load, False

    def arm(self, on: bool) -> None:
        self.armed = on
        # setting the arm state is the operator's acknowledgement of a trip
        self.fuse_tripped = self.ovp_tripped = False
        self.cc_time = 0.0


class Hmp4040(ScpiInstrument):
    model = "hmp4040"
    first_channel = 1
    default_channels, min_channels, max_channels = 4, 2, 4
    params = {"load": Param("number", lo=0, nonzero=True)}

    def __init__(
        self,
        *,
        serial: str = "101234",
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channels=channels, seed=seed, clock=clock)
        self.serial = serial
        self.channels = [LvChannel() for _ in range(self.n_channels)]
        self.general = False  # OUTP:GEN master switch
        self.sel = 1  # INST:NSEL

    # --- physics ------------------------------------------------------------------
    def step(self, dt: float) -> None:
        for own, ch in enumerate(self.channels, start=1):
            live = ch.armed and self.general
            if live and ch.vset > ch.ovp:
                ch.armed, ch.ovp_tripped = False, True
                continue
            cc = ch.output(self.general)[2]
            ch.cc_time = ch.cc_time + dt if (cc and ch.fuse) else 0.0
            if cc and ch.fuse and ch.cc_time >= ch.fuse_delay / 1000 - 1e-9:
                for n in {own, *ch.links}:  # linked fuses trip together
                    other = self.chan(n)
                    if other.armed or n == own:
                        other.armed, other.fuse_tripped, other.cc_time = False, True, 0.0

    def max_step(self) -> float:
        # Nothing moves unless a fuse is counting or an OVP is about to fire.
        steps = [math.inf]
        for ch in self.channels:
            if ch.armed and self.general and ch.vset > ch.ovp:
                steps.append(0.0)
            elif ch.fuse and ch.output(self.general)[2]:
                steps.append(ch.fuse_delay / 1000 - ch.cc_time)
        return min(steps)

    @property
    def ch(self) -> LvChannel:
        return self.chan(self.sel)

    # --- commands -------------------------------------------------------------------
    @scpi("*IDN?")
    def _idn(self, arg: str | None) -> str:
        return f"HAMEG,{MODELS[self.n_channels]},{self.serial},HW50020001/SW2.51"

    @scpi("*RST")
    def _rst(self, arg: str | None) -> None:
        self.channels = [LvChannel(load=ch.load) for ch in self.channels]  # keeps the loads
        self.general = False
        self.sel = 1

    @scpi("INSTrument:NSELect")
    def _nsel(self, arg: str | None) -> None:
        n = number(arg, 1, self.n_channels)
        if n != int(n):
            raise ScpiError(-222, "Data out of range")
        self.sel = int(n)

    @scpi("INSTrument:NSELect?")
    def _nsel_q(self, arg: str | None) -> str:
        return str(self.sel)

    @scpi("INSTrument[:SELect]?")
    def _inst_q(self, arg: str | None) -> str:
        return f"OUTP{self.sel}"

    @scpi("INSTrument[:SELect]")
    def _inst(self, arg: str | None) -> None:
        if arg is None:
            raise ScpiError(-109, "Missing parameter")
        m = re.fullmatch(r"OUT(?:P|PUT)?(\d+)", arg.upper())
        if not m:
            raise ScpiError(-224, "Illegal parameter value")
        if not 1 <= int(m.group(1)) <= self.n_channels:
            raise ScpiError(-222, "Data out of range")
        self.sel = int(m.group(1))

    @staticmethod
    def _stepped(arg: str | None, value: float, step: float, hi: float) -> float:
        """A level parameter: a number, MIN, MAX, or UP / DOWN by the step size."""
        word = (arg or "").strip().upper()
        if word in ("UP", "DOWN"):
            arg = str(value + (step if word == "UP" else -step))
        return number(arg, 0.0, hi)

    @scpi("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]")
    def _volt(self, arg: str | None) -> None:
        self.ch.vset = held_voltage(self._stepped(arg, self.ch.vset, self.ch.vstep, VMAX))

    @scpi("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def _volt_q(self, arg: str | None) -> str:
        return f"{_limit_q(arg, self.ch.vset, 0.0, VMAX):.3f}"

    @scpi("[SOURce:]VOLTage[:LEVel][:IMMediate]:STEP[:INCRement]")
    def _vstep(self, arg: str | None) -> None:
        self.ch.vstep = number(arg, 0.0, VMAX)

    @scpi("[SOURce:]VOLTage[:LEVel][:IMMediate]:STEP[:INCRement]?")
    def _vstep_q(self, arg: str | None) -> str:
        return f"{self.ch.vstep:.3f}"

    @scpi("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]")
    def _curr(self, arg: str | None) -> None:
        self.ch.iset = held_current(self._stepped(arg, self.ch.iset, self.ch.istep, IMAX))

    @scpi("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]?")
    def _curr_q(self, arg: str | None) -> str:
        return f"{_limit_q(arg, self.ch.iset, 0.0, IMAX):.4f}"

    @scpi("[SOURce:]CURRent[:LEVel][:IMMediate]:STEP[:INCRement]")
    def _istep(self, arg: str | None) -> None:
        self.ch.istep = number(arg, 0.0, IMAX)

    @scpi("[SOURce:]CURRent[:LEVel][:IMMediate]:STEP[:INCRement]?")
    def _istep_q(self, arg: str | None) -> str:
        return f"{self.ch.istep:.4f}"

    @scpi("APPLy")
    def _apply(self, arg: str | None) -> None:
        parts = [a.strip() for a in (arg or "").split(",")]
        if len(parts) != 2 or not all(parts):
            raise ScpiError(-109, "Missing parameter")
        v, i = number(parts[0], 0.0, VMAX), number(parts[1], 0.0, IMAX)  # both valid before either changes
        self.ch.vset, self.ch.iset = held_voltage(v), held_current(i)

    @scpi("APPLy?")
    def _apply_q(self, arg: str | None) -> str:
        return f"{self.ch.vset:.3f},{self.ch.iset:.4f}"

    @scpi("MEASure[:SCALar]:VOLTage[:DC]?")
    def _meas_volt(self, arg: str | None) -> str:
        v = self.ch.output(self.general)[0]
        return f"{max(0.0, v + self.noise(0.0005)) if v else 0.0:.3f}"

    @scpi("MEASure[:SCALar]:CURRent[:DC]?")
    def _meas_curr(self, arg: str | None) -> str:
        i = self.ch.output(self.general)[1]
        return f"{max(0.0, i + self.noise(0.00005)) if i else 0.0:.4f}"

    @scpi("OUTPut:SELect")
    def _outp_sel(self, arg: str | None) -> None:
        self.ch.arm(boolean(arg))

    @scpi("OUTPut:SELect?")
    def _outp_sel_q(self, arg: str | None) -> str:
        return str(int(self.ch.armed))

    @scpi("OUTPut:GENeral")
    def _outp_gen(self, arg: str | None) -> None:
        self.general = boolean(arg)

    @scpi("OUTPut:GENeral?")
    def _outp_gen_q(self, arg: str | None) -> str:
        return str(int(self.general))

    @scpi("OUTPut[:STATe]")
    def _outp(self, arg: str | None) -> None:
        on = boolean(arg)
        self.ch.arm(on)
        self.general = self.general or on

    @scpi("OUTPut[:STATe]?")
    def _outp_q(self, arg: str | None) -> str:
        return str(int(self.ch.armed and self.general))

    @scpi("FUSE[:STATe]")
    def _fuse(self, arg: str | None) -> None:
        self.ch.fuse = boolean(arg)

    @scpi("FUSE[:STATe]?")
    def _fuse_q(self, arg: str | None) -> str:
        return str(int(self.ch.fuse))

    @scpi("FUSE:DELay")
    def _fuse_del(self, arg: str | None) -> None:
        self.ch.fuse_delay = number(arg, 0, DELMAX)

    @scpi("FUSE:DELay?")
    def _fuse_del_q(self, arg: str | None) -> str:
        return f"{_limit_q(arg, self.ch.fuse_delay, 0.0, DELMAX):.0f}"

    def _other(self, arg: str | None) -> int:
        """Another channel than the selected one."""
        n = integer(arg, 1, self.n_channels)
        if n == self.sel:
            raise ScpiError(-221, "Settings conflict")  # a fuse cannot be linked to itself
        return n

    @scpi("FUSE:LINK")
    def _fuse_link(self, arg: str | None) -> None:
        self.ch.links |= {self._other(arg)}

    @scpi("FUSE:LINK?")
    def _fuse_link_q(self, arg: str | None) -> str:
        return str(int(self._other(arg) in self.ch.links))

    @scpi("FUSE:UNLink")
    def _fuse_unlink(self, arg: str | None) -> None:
        self.ch.links -= {self._other(arg)}

    @scpi("FUSE:TRIPped?")
    def _fuse_trip_q(self, arg: str | None) -> str:
        return str(int(self.ch.fuse_tripped))

    @scpi("[SOURce:]VOLTage:PROTection[:LEVel]")
    def _ovp(self, arg: str | None) -> None:
        self.ch.ovp = number(arg, 0.0, OVPMAX)

    @scpi("[SOURce:]VOLTage:PROTection[:LEVel]?")
    def _ovp_q(self, arg: str | None) -> str:
        return f"{_limit_q(arg, self.ch.ovp, 0.0, OVPMAX):.3f}"

    @scpi("[SOURce:]VOLTage:PROTection:TRIPped?")
    def _ovp_trip_q(self, arg: str | None) -> str:
        return str(int(self.ch.ovp_tripped))

    @scpi("[SOURce:]VOLTage:PROTection:CLEar")
    def _ovp_clear(self, arg: str | None) -> None:
        self.ch.ovp_tripped = False

    @scpi("SYSTem:REMote")
    @scpi("SYSTem:LOCal")
    @scpi("SYSTem:MIXed")
    @scpi("SYSTem:RWLock")
    @scpi("SYSTem:BEEPer[:IMMediate]")
    def _syst_mode(self, arg: str | None) -> None:
        return None  # front-panel lock and beeper: nothing to simulate

    @scpi("SYSTem:VERSion?")
    def _version(self, arg: str | None) -> str:
        return "1999.0"

    @scpi("*TST?")
    def _tst(self, arg: str | None) -> str:
        return "0"
