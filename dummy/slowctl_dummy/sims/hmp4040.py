"""Rohde & Schwarz / HAMEG HMP4040 LV supply (``channels=3`` -> HMP2030, 2 -> HMP2020).

SCPI over a line protocol: requests end LF (CR LF accepted), replies end LF.
Short/long forms, optional ``SOUR:``, ``;``-joined commands: see ``scpi.py``.
Errors give no reply; ``SYST:ERR?`` returns them (``-113,"Undefined header"``,
``-109,"Missing parameter"``, ``-104,"Data type error"``,
``-222,"Data out of range"``, ``-224,"Illegal parameter value"``).

Commands and reply formats::

    *IDN?              HAMEG,HMP4040,<serial>,HW50020001/SW2.51
    *RST, *CLS, *WAI;  *OPC? -> 1
    INST:NSEL <n> | INST:NSEL? -> 1 | INST OUT<n> (also OUTP<n>)
    VOLT <V> (0..32.050) | VOLT? -> 12.000       (%.3f, set value)
    CURR <A> (0..10)     | CURR? -> 0.1000       (%.4f, set value)
    MEAS:VOLT? -> 12.001 (%.3f)   MEAS:CURR? -> 0.1200 (%.4f)
    OUTP:SEL ON|OFF|1|0, OUTP:SEL?   arm the selected channel
    OUTP:GEN ON|OFF, OUTP:GEN?       master switch
    OUTP ON|OFF, OUTP?               ON = arm + master on; OFF = disarm; ? = live
    FUSE ON|OFF, FUSE?; FUSE:DEL <ms> (0..250), FUSE:DEL? -> 50; FUSE:TRIP? -> 0|1
    VOLT:PROT <V> (0..33), VOLT:PROT? -> 32.500; VOLT:PROT:TRIP? -> 0|1; VOLT:PROT:CLE
    SYST:ERR?, SYST:REM, SYST:LOC, SYST:MIX (the last three accepted, no effect)
    MIN / MAX are accepted as numeric values.

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
from ..scpi import ScpiError, ScpiInstrument, boolean, number, scpi

MODELS = {2: "HMP2020", 3: "HMP2030", 4: "HMP4040"}


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
        for ch in self.channels:
            live = ch.armed and self.general
            if live and ch.vset > ch.ovp:
                ch.armed, ch.ovp_tripped = False, True
                continue
            cc = ch.output(self.general)[2]
            ch.cc_time = ch.cc_time + dt if (cc and ch.fuse) else 0.0
            if cc and ch.fuse and ch.cc_time >= ch.fuse_delay / 1000 - 1e-9:
                ch.armed, ch.fuse_tripped, ch.cc_time = False, True, 0.0

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

    @scpi("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]")
    def _volt(self, arg: str | None) -> None:
        self.ch.vset = number(arg, 0.0, 32.050)

    @scpi("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def _volt_q(self, arg: str | None) -> str:
        return f"{self.ch.vset:.3f}"

    @scpi("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]")
    def _curr(self, arg: str | None) -> None:
        self.ch.iset = number(arg, 0.0, 10.0)

    @scpi("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]?")
    def _curr_q(self, arg: str | None) -> str:
        return f"{self.ch.iset:.4f}"

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
        self.ch.fuse_delay = number(arg, 0, 250)

    @scpi("FUSE:DELay?")
    def _fuse_del_q(self, arg: str | None) -> str:
        return f"{self.ch.fuse_delay:.0f}"

    @scpi("FUSE:TRIPped?")
    def _fuse_trip_q(self, arg: str | None) -> str:
        return str(int(self.ch.fuse_tripped))

    @scpi("[SOURce:]VOLTage:PROTection[:LEVel]")
    def _ovp(self, arg: str | None) -> None:
        self.ch.ovp = number(arg, 0.0, 33.0)

    @scpi("[SOURce:]VOLTage:PROTection[:LEVel]?")
    def _ovp_q(self, arg: str | None) -> str:
        return f"{self.ch.ovp:.3f}"

    @scpi("[SOURce:]VOLTage:PROTection:TRIPped?")
    def _ovp_trip_q(self, arg: str | None) -> str:
        return str(int(self.ch.ovp_tripped))

    @scpi("[SOURce:]VOLTage:PROTection:CLEar")
    def _ovp_clear(self, arg: str | None) -> None:
        self.ch.ovp_tripped = False

    @scpi("SYSTem:REMote")
    @scpi("SYSTem:LOCal")
    @scpi("SYSTem:MIXed")
    def _syst_mode(self, arg: str | None) -> None:
        return None
