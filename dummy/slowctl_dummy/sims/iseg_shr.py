"""iseg SHR / NHS / NHR high-voltage module (4 channels by default, 1..8), SCPI.

Wire protocol: requests end CR LF (a bare LF is accepted), replies end CR LF.
On the serial port the module first echoes every request line as received
(plus CR LF), then sends the reply line if the request has one: a setting
gets the echo only.  ``echo=False`` (the LAN socket, or ``:CONF:SERIAL:ECHO 0``)
drops the echo.  Silence drops the echo too; garbage garbles echo and reply
into one random line.

Channels are numbered 0..N-1 and addressed with a channel list: ``(@0)``,
``(@0-3)``, ``(@0,2)``, ``(@0-1,3)``; a query on a list answers the values
joined by ``,`` in list order.  ``;`` joins several commands in one line; the
query answers of one line come back joined by ``;`` (standard SCPI).
``:READ:VOLT?(@0)`` without the space is accepted too.  Errors give no reply
and go to the SCPI error queue read by ``:SYST:ERR?`` (``0,"No error"`` when
empty): ``-113,"Undefined header"`` (discards the rest of the line),
``-109,"Missing parameter"``, ``-104,"Data type error"`` (also a malformed
channel list), ``-222,"Data out of range"`` (also a channel the module lacks,
or a voltage whose sign contradicts the channel polarity),
``-224,"Illegal parameter value"``, ``-221,"Settings conflict"`` (polarity
change while the output is on or not discharged).

Number formats (the real format is unconfirmed; drivers must accept an
optional exponent, an empty exponent and an optional unit suffix)::

    voltages  %.5fE3V    in kV with the sign of the polarity   -0.50000E3V
    currents  %.4fE-6A   in uA with the sign of the polarity   -1.2345E-6A
    ramps     %.5fE3V/s                                         0.05000E3V/s
    trip time %dms                                              100ms

The set voltage is held at 10 mV, a ramp speed at 10 mV/s (1 mV/s below 1 V/s): the steps these
replies can confirm; a finer value is rounded to them (unconfirmed, as the formats).
    status    decimal bit word                                  9

Commands (SCPI short/long forms in any case, ``[..]`` optional; ``(@l)`` a channel list)::

    *IDN?          iseg Spezialelektronik GmbH,SHR 4060,5200123,1.23
    *RST           all channels off (ramped), Vset 0, Iset nominal
    *CLS           clears the error queue, ESR AND every channel's event register
    *OPC? -> 1; *OPC; *WAI; *ESE <0..255> | ?; *ESR?; *SRE <0..255> | ?; *STB?   (see scpi.py)
    :SYSTem:ERRor[:NEXT]?
    :VOLTage <V>,(@l)           set voltage; sign must match the polarity (0 always ok)
    :VOLTage ON|OFF,(@l)        on / off with ramp
    :VOLTage EMCY OFF,(@l)      emergency off: output to 0 at once, stays off until
    :VOLTage EMCY CLR,(@l)      which leaves the channel off
    :VOLTage:BOUnds <V>,(@l)    voltage bounds 0..Vnom (0: no check)
    :CURRent <A>,(@l)           current limit Iset, 0..nominal
    :CURRent:BOUnds <A>,(@l)    current bounds 0..Inom (read back; bit 10 never set)
    :EVent CLEAR,(@l) | :EVent <word>,(@l)    clear all / the given event bits
    :EVent:MASK <word>,(@l)     channel event mask (feeds the module's event summary)
    :MEASure[:VOLTage]? (@l)  :MEASure:CURRent? (@l)               measured values
    :READ[:VOLTage]? :READ:CURRent?                                 set values
    :READ:VOLTage:LIMit? :READ:CURRent:LIMit?     hardware limits (options vlimit, ilimit)
    :READ:VOLTage:NOMinal? :READ:CURRent:NOMinal?  :READ:VOLTage:BOUnds? :READ:CURRent:BOUnds?
    :READ:VOLTage:ON? -> 1|0    :READ:VOLTage:EMCY? -> 1|0
    :READ:RAMP[:VOLTage]?       the ramp-up speed (which speed the real one reports: unconfirmed)
    :READ:RAMP[:VOLTage]:MINimum? | :MAXimum?      0.001 V/s and 20 % of Vnom per second
    :READ:CHANnel:STATus? (@l)  :READ:CHANnel:EVent:STatus? (@l)  :READ:CHANnel:EVent:MASK? (@l)
    :READ:CHANnel:CONTrol? (@l)  control word: 3 set on, 5 emergency off
    :READ:MODule:CHANnelnumber? -> 4
    :READ:MODule:STATus?  :READ:MODule:EVent:STatus?  :READ:MODule:EVent:MASK?
    :READ:MODule:EVent:CHANSTATus?  :READ:MODule:EVent:CHANMASK?
    :READ:MODule:TEMPerature? -> 31.0C
    :READ:MODule:SUPply:P24V? N24V? P5V? P3V? P12V? N12V?  -> 24.000V  (-24.000V for N24V)
    :CONFigure:RAMP[:VOLTage] <V/s>,(@l) | ?     both speeds (? reads the up speed)
    :CONFigure:RAMP[:VOLTage]:UP <V/s>,(@l) | ?  :CONFigure:RAMP[:VOLTage]:DOWN <V/s>,(@l) | ?
    :CONFigure:TRIP:ACTion 0..4,(@l) | ?    0 flag only, 1 ramp down, 2 off without ramp,
                                            3 whole module off without ramp, 4 no delayed trip
    :CONFigure:TRIP:TIMe 1..4095,(@l) | ?   ms in constant current before the trip action
    :CONFigure:OUTPut:POLarity p|n,(@l) | ? only while off and discharged
    :CONFigure:EVent CLEAR | <word>         clear the module event register (all / bits)
    :CONFigure:EVent:MASK <word> | :CONFigure:EVent:CHANMASK <word>   module masks
    :CONFigure:SERial:ECHO 0|1 | ?

``STatus`` is accepted as ``ST``, ``STAT`` and ``STATUS``: the manual spells the
event nodes ``STatus`` and the channel node ``STATus``, and drivers write ``STAT``.

Channel status bits: 0 positive polarity, 3 on, 4 ramping, 5 emergency off,
6 constant current, 7 constant voltage, 11 voltage out of bounds (|Vmon - Vset| >
bounds while on and not ramping, bounds > 0), 12 external inhibit, 13 current trip
(latched until ``:EVent CLEAR``), 14 current limit (held at the hardware Ilimit
below Iset), 15 voltage limit (Vset above the hardware Vlimit: the output stops
there), 19 ramping up, 20 ramping down (1, 2, 8, 10 are never set).  Event bits
(latched until cleared) mirror the status positions: 3 on-to-off, 4 end of
voltage ramp, 5 emergency off, 6 constant current, 11, 12, 13, 14, 15.  The
event layout is unconfirmed: it follows the public iseg NHR drivers
(ograsdijk/iseg-nhr ``register.py``), not the SHR manual.

Module status bits (``:READ:MOD:STAT?``, layout from the same public drivers,
unconfirmed): 3 high voltage on (any channel), 9 no ramp active, 10 safety loop
good, 11 event active (a masked channel or module event), 12 module good, 13
supply good, 14 temperature good.  The module event register has nothing to
latch in the simulation (its supply, temperature and safety-loop events never
happen) and reads 0.

Physics: the output ramps toward Vset (on) or 0 (off) at the up/down speed.
Each channel biases a silicon sensor (``slowctl_dummy.sensor``): a bulk
generation current rising as sqrt(V/``depletion``) up to ``bulk`` at full
depletion, plus the ohmic path V/``load``, scaled with ``temperature``, times
1/(1-(V/Vbd)**4) with a ``breakdown`` voltage.  When I would exceed Iset the channel is current
limited (constant current, the voltage sags); after the trip time in constant
current the trip action runs and the trip bit latches.  While a trip is
latched (``:EVENT CLEAR`` clears it) or the channel is in emergency off,
``:VOLT ON`` is ignored: after a trip the event must be cleared before the
channel ramps again.  An external inhibit switches the channel off without ramp.
Scenario parameters, per channel: ``load`` (ohm, default 100e6),
``temperature`` (degC, 20), ``breakdown`` (V, none), ``depletion`` (V, 100),
``bulk`` (A, 0), ``polarity`` (p/n), ``inhibit`` (true/false).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..base import MAX_STEP, Param
from ..scpi import Handler, ScpiError, ScpiInstrument, boolean, integer, number, scpi
from ..sensor import SiliconSensor, sensor_params

POS, ON, RAMP, EMCY, CC, CV, VBOUNDS, INHIBIT, TRIP, ILIM, VLIM = (
    1 << b for b in (0, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
)
RAMP_UP, RAMP_DOWN = 1 << 19, 1 << 20
ON_TO_OFF, END_OF_RAMP = 1 << 3, 1 << 4  # event register only
MOD_HV_ON, MOD_NO_RAMP, MOD_SAFETY_GOOD, MOD_EVENT, MOD_GOOD, MOD_SUPPLY_GOOD, MOD_TEMP_GOOD = (
    1 << b for b in (3, 9, 10, 11, 12, 13, 14)
)
SUPPLIES = {"P24V": 24.0, "N24V": -24.0, "P5V": 5.0, "P3V": 3.3, "P12V": 12.0, "N12V": -12.0}
RAMP_MIN = 1e-3  # V/s; the highest speed is 20 % of Vnom per second
# setting steps: what the %.5fE3 replies can show (10 mV, 10 mV/s), 1 mV/s for a ramp below 1 V/s (its
# E-3 reply shows more); unconfirmed, the driver declares the same (docs/instruments/iseg-shr.md)
VSET_STEP = 0.01  # V
RAMP_STEPS = ((1.0, 1e-3), (math.inf, 1e-2))  # (highest rate, step) V/s


def held(value: float, step: float) -> float:
    """The value the module holds: the nearest whole number of setting steps."""
    return float(f"{round(value / step) * step:.12g}")


def held_rate(rate: float) -> float:
    return held(rate, next(step for top, step in RAMP_STEPS if rate <= top))


WORD = 2**31 - 1  # largest register word accepted


@dataclass
class IsegChannel:
    polarity: str = "n"
    vset: float = 0.0  # V, magnitude
    iset: float = 4e-3  # A
    vlimit: float = math.inf  # V, hardware limit (front-panel potentiometer)
    ilimit: float = math.inf  # A, hardware limit
    vbounds: float = 0.0  # V, 0: no check
    ibounds: float = 0.0  # A, read back only
    rup: float = 50.0  # V/s
    rdown: float = 50.0  # V/s
    trip_action: int = 0
    trip_time: float = 100.0  # ms
    on: bool = False
    emcy: bool = False
    tripped: bool = False  # latched until :EVENT CLEAR
    events: int = 0
    event_mask: int = 0
    vout: float = 0.0  # V, magnitude
    cc: bool = False
    cc_time: float = 0.0  # s in constant current
    sensor: SiliconSensor = field(default_factory=SiliconSensor)
    inhibit: bool = False

    @property
    def sign(self) -> float:
        return 1.0 if self.polarity == "p" else -1.0

    @property
    def target(self) -> float:
        return min(self.vset, self.vlimit) if self.on else 0.0

    @property
    def ilim(self) -> float:
        """The current the output is held at: Iset, or the hardware limit below it."""
        return min(self.iset, self.ilimit)

    def leakage(self, v: float) -> float:
        """Sensor current (A) at output voltage v."""
        return self.sensor.current(v)

    def v_limit(self) -> float:
        """Voltage at which the sensor draws exactly the current limit."""
        return self.sensor.voltage_at(self.ilim)

    @property
    def counting(self) -> bool:
        """The delayed-trip timer runs."""
        return self.cc and self.trip_action != 4 and not self.tripped

    def off(self) -> None:
        if self.on:
            self.events |= ON_TO_OFF
        self.on = False

    def steady(self) -> bool:
        limit = self.v_limit() if self.on else math.inf
        return self.vout == min(self.target, limit) and not self.counting and not (self.inhibit and self.on)

    def step(self, dt: float) -> bool:
        """Advance dt seconds; True when the delayed trip fires in this step."""
        if self.inhibit and (self.on or self.vout > 0):
            self.off()
            self.vout = 0.0
            self.events |= INHIBIT
        target = self.target
        moving = self.vout != target
        if self.vout < target:
            self.vout = min(target, self.vout + self.rup * dt)
        elif self.vout > target:
            self.vout = max(target, self.vout - self.rdown * dt)
        if abs(self.vout - target) < 1e-6:
            self.vout = target
        vlim = self.v_limit()
        self.cc = self.on and self.vout > vlim
        self.vout = min(self.vout, vlim)
        if moving and self.vout == target:
            self.events |= END_OF_RAMP
        self.events |= self.status() & (CC | VBOUNDS | ILIM | VLIM)
        self.cc_time = self.cc_time + dt if self.counting else 0.0
        return self.counting and self.cc_time >= self.trip_time / 1000 - 1e-9

    def status(self) -> int:
        moving = not self.cc and self.vout != self.target
        out_of_bounds = self.on and not moving and self.vbounds > 0 and abs(self.vout - self.vset) > self.vbounds
        return (
            (POS if self.polarity == "p" else 0)
            | (ON if self.on else 0)
            | (RAMP if moving else 0)
            | (EMCY if self.emcy else 0)
            | (CC if self.cc else 0)
            | (CV if self.on and not self.cc and self.vout == self.target else 0)
            | (VBOUNDS if out_of_bounds else 0)
            | (INHIBIT if self.inhibit else 0)
            | (TRIP if self.tripped else 0)
            | (ILIM if self.cc and self.ilimit < self.iset else 0)
            | (VLIM if self.on and self.vset > self.vlimit else 0)
            | (RAMP_UP if moving and self.vout < self.target else 0)
            | (RAMP_DOWN if moving and self.vout > self.target else 0)
        )


def _volts(v: float) -> str:
    return f"{v / 1e3 if v else 0.0:.5f}E3V"


def _amps(i: float) -> str:
    return f"{i * 1e6 if i else 0.0:.4f}E-6A"


def _rate(r: float) -> str:
    return f"{r / 1e3:.5f}E3V/s" if r >= 1 else f"{r * 1e3:.5f}E-3V/s"  # keeps the 1 mV/s minimum readable


_SETTING = re.compile(r"(.*?)\s*,\s*(\(@.*)")
_UNIT = re.compile(r"(?i)\s*(V/S|V|A|MS)$")


def _supply(rail: str) -> Handler:
    """The query of one module supply rail: nominal value with a little noise."""

    @scpi(f"READ:MODule:SUPply:{rail}?")
    def query(self: IsegShr, arg: str | None) -> str:
        self._no_arg(arg)
        return f"{SUPPLIES[rail] * (1 + self.noise(1e-4)):.3f}V"

    return query


class IsegShr(ScpiInstrument):
    model = "iseg-shr"
    request_terminator = b"\r\n"
    reply_terminator = b"\r\n"
    first_channel = 0
    default_channels, min_channels, max_channels = 4, 1, 8
    params = {
        **sensor_params("sensor."),
        "polarity": Param("choice", choices=("p", "n")),
        "inhibit": Param("bool"),
    }

    def __init__(
        self,
        *,
        echo: bool = True,
        polarity: str = "n",
        vnom: float = 6000.0,
        inom: float = 4e-3,
        vlimit: float | None = None,
        ilimit: float | None = None,
        module_temperature: float = 31.0,
        serial: str = "5200123",
        firmware: str = "1.23",
        channels: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(channels=channels, seed=seed, clock=clock)
        if polarity not in ("p", "n"):
            raise ValueError(f"polarity: expected p or n, got {polarity!r}")
        vnom, inom = float(vnom), float(inom)
        if not (vnom > 0 and inom > 0):
            raise ValueError("vnom, inom: must be > 0")
        vlimit = vnom if vlimit is None else float(vlimit)
        ilimit = inom if ilimit is None else float(ilimit)
        if not (0 < vlimit <= vnom and 0 < ilimit <= inom):
            raise ValueError("vlimit, ilimit: must be > 0 and at most vnom, inom")
        self.echo = bool(echo)
        self.vnom, self.inom, self.serial, self.firmware = vnom, inom, serial, firmware
        self.module_temperature = float(module_temperature)
        self.module_events = self.module_event_mask = self.channel_event_mask = 0
        self.channels = [
            IsegChannel(polarity=polarity, iset=inom, vlimit=vlimit, ilimit=ilimit) for _ in range(self.n_channels)
        ]

    # --- transport: echo ---------------------------------------------------------
    def handle(self, line: str) -> bytes | None:
        self.advance()
        if self.t < self.silent_until:
            return None  # the line is dead: no echo, nothing executed
        echo = self.echo  # the echo leaves while the line arrives, before it runs
        reply = self.respond(line)
        if self.t < self.garbage_until:
            n = self.rng.randint(4, max(8, len(line) + len(reply or "")))
            return "".join(self.rng.choice(_GARBAGE) for _ in range(n)).encode() + self.reply_terminator
        out = (line.encode("ascii", "replace") + self.reply_terminator) if echo else b""
        if reply is not None:
            out += reply.encode("ascii", "replace") + self.reply_terminator
        return out or None

    def respond(self, line: str) -> str | None:
        return super().respond(line.replace("?(@", "? (@"))

    # --- physics -------------------------------------------------------------------
    def step(self, dt: float) -> None:
        for ch in self.channels:
            if ch.step(dt):
                self._trip(ch)

    def _trip(self, ch: IsegChannel) -> None:
        ch.tripped, ch.cc_time = True, 0.0
        ch.events |= TRIP
        if ch.trip_action in (1, 2):
            ch.off()
            if ch.trip_action == 2:
                ch.vout, ch.cc = 0.0, False
        elif ch.trip_action == 3:
            for other in self.channels:
                other.off()
                other.vout, other.cc = 0.0, False

    def max_step(self) -> float:
        if all(ch.steady() for ch in self.channels):
            return math.inf
        trips = [ch.trip_time / 1000 - ch.cc_time for ch in self.channels if ch.counting]
        return max(1e-6, min([MAX_STEP, *trips]))

    def vmon(self, ch: IsegChannel) -> float:
        return ch.sign * abs(ch.vout + self.noise(0.02)) if ch.vout > 0 else 0.0

    def imon(self, ch: IsegChannel) -> float:
        if ch.vout <= 0:
            return 0.0
        return ch.sign * max(0.0, ch.leakage(ch.vout) * (1 + self.noise(0.001)) + self.noise(2e-10))

    def module_status(self) -> int:
        good = MOD_SAFETY_GOOD | MOD_GOOD | MOD_SUPPLY_GOOD | MOD_TEMP_GOOD  # nothing simulated fails these
        words = [ch.status() for ch in self.channels]
        event = self.module_events & self.module_event_mask or self.channel_event_status() & self.channel_event_mask
        return (
            good
            | (MOD_HV_ON if any(w & ON for w in words) else 0)
            | (0 if any(w & RAMP for w in words) else MOD_NO_RAMP)
            | (MOD_EVENT if event else 0)
        )

    def channel_event_status(self) -> int:
        """Bit n: channel n has an event its mask lets through."""
        return sum(1 << n for n, ch in enumerate(self.channels) if ch.events & ch.event_mask)

    # --- parameter parsing -----------------------------------------------------------
    def _list(self, text: str | None) -> list[IsegChannel]:
        if text is None or not text.strip():
            raise ScpiError(-109, "Missing parameter")
        m = re.fullmatch(r"\(@\s*([0-9,\-\s]+)\)", text.strip())
        if not m:
            raise ScpiError(-104, "Data type error")
        numbers: list[int] = []
        for part in m.group(1).split(","):
            bounds = [b.strip() for b in part.split("-")]
            if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
                raise ScpiError(-104, "Data type error")
            lo, hi = int(bounds[0]), int(bounds[-1])
            if lo > hi or hi >= self.n_channels:
                raise ScpiError(-222, "Data out of range")
            numbers.extend(range(lo, hi + 1))
        return [self.channels[n] for n in numbers]

    def _setting(self, arg: str | None) -> tuple[str, list[IsegChannel]]:
        """'<value>,(@list)' -> (value text, channels)."""
        m = _SETTING.fullmatch((arg or "").strip())
        if not m or not m.group(1):
            raise ScpiError(-109, "Missing parameter")
        return m.group(1), self._list(m.group(2))

    @staticmethod
    def _number(text: str, lo: float, hi: float) -> float:
        return number(_UNIT.sub("", text), lo, hi)

    def _query(self, arg: str | None, fmt: Callable[[IsegChannel], str]) -> str:
        return ",".join(fmt(ch) for ch in self._list(arg))

    def _set_all(
        self, arg: str | None, attr: str, lo: float, hi: float, grid: Callable[[float], float] = float
    ) -> None:
        value, chans = self._setting(arg)
        x = grid(self._number(value, lo, hi))
        for ch in chans:
            setattr(ch, attr, x)

    @staticmethod
    def _no_arg(arg: str | None) -> None:
        if arg is not None:  # a module query takes no channel list
            raise ScpiError(-108, "Parameter not allowed")

    # --- common commands ----------------------------------------------------------------
    @scpi("*IDN?")
    def _idn(self, arg: str | None) -> str:
        model = f"SHR {self.n_channels}0{self.vnom / 1000:.0f}0"
        return f"iseg Spezialelektronik GmbH,{model},{self.serial},{self.firmware}"

    @scpi("*RST")
    def _rst(self, arg: str | None) -> None:
        for ch in self.channels:
            ch.off()
            ch.vset, ch.iset = 0.0, self.inom

    @scpi("*CLS")
    def _cls(self, arg: str | None) -> None:
        super()._cls(arg)
        for ch in self.channels:
            ch.events, ch.tripped = 0, False

    @scpi("CONFigure:SERial:ECHO")
    def _echo(self, arg: str | None) -> None:
        self.echo = boolean(arg)

    @scpi("CONFigure:SERial:ECHO?")
    def _echo_q(self, arg: str | None) -> str:
        return str(int(self.echo))

    # --- settings ---------------------------------------------------------------------
    @scpi("[SOURce:]VOLTage")
    def _volt(self, arg: str | None) -> None:
        value, chans = self._setting(arg)
        word = " ".join(value.upper().split())
        if word in ("ON", "OFF", "EMCY OFF", "EMCY CLR"):
            for ch in chans:
                self._switch(ch, word)
            return
        values = []
        for ch in chans:  # all valid before any change
            v = self._number(value, -self.vnom, self.vnom)
            if v * ch.sign < 0:
                raise ScpiError(-222, "Data out of range")  # sign against the polarity
            values.append(abs(v))
        for ch, v in zip(chans, values):
            ch.vset = held(v, VSET_STEP)

    def _switch(self, ch: IsegChannel, word: str) -> None:
        if word == "ON":
            if not (ch.emcy or ch.tripped or ch.inhibit):  # ignored until cleared
                ch.on, ch.cc_time = True, 0.0
        elif word == "OFF":
            ch.off()
        elif word == "EMCY OFF":
            ch.off()
            ch.emcy, ch.vout, ch.cc = True, 0.0, False
            ch.events |= EMCY
        else:
            ch.emcy = False

    @scpi("[SOURce:]VOLTage:BOUnds")
    def _vbounds(self, arg: str | None) -> None:
        self._set_all(arg, "vbounds", 0.0, self.vnom)

    @scpi("[SOURce:]CURRent")
    def _curr(self, arg: str | None) -> None:
        self._set_all(arg, "iset", 0.0, self.inom)

    @scpi("[SOURce:]CURRent:BOUnds")
    def _ibounds(self, arg: str | None) -> None:
        self._set_all(arg, "ibounds", 0.0, self.inom)

    @scpi("CONFigure:RAMP[:VOLTage]")
    def _ramp(self, arg: str | None) -> None:
        value, chans = self._setting(arg)
        r = held_rate(self._number(value, RAMP_MIN, 0.2 * self.vnom))
        for ch in chans:
            ch.rup = ch.rdown = r

    @scpi("CONFigure:RAMP[:VOLTage]:UP")
    def _rup(self, arg: str | None) -> None:
        self._set_all(arg, "rup", RAMP_MIN, 0.2 * self.vnom, held_rate)

    @scpi("CONFigure:RAMP[:VOLTage]:DOwn")
    def _rdown(self, arg: str | None) -> None:
        self._set_all(arg, "rdown", RAMP_MIN, 0.2 * self.vnom, held_rate)

    @scpi("CONFigure:TRIP:ACTion")
    def _trip_action(self, arg: str | None) -> None:
        value, chans = self._setting(arg)
        a = integer(_UNIT.sub("", value), 0, 4)
        for ch in chans:
            ch.trip_action = a

    @scpi("CONFigure:TRIP:TIMe")
    def _trip_time(self, arg: str | None) -> None:
        value, chans = self._setting(arg)
        ms = round(self._number(value, 1, 4095))
        for ch in chans:
            ch.trip_time = float(ms)

    @scpi("CONFigure:OUTPut:POLarity")
    def _pol(self, arg: str | None) -> None:
        value, chans = self._setting(arg)
        pol = value.strip().lower()
        if pol not in ("p", "n"):
            raise ScpiError(-224, "Illegal parameter value")
        if any(ch.on or ch.vout > 0.002 * self.vnom for ch in chans):
            raise ScpiError(-221, "Settings conflict")
        for ch in chans:
            ch.polarity = pol
            ch.vset = 0.0

    @scpi("EVent")
    def _event(self, arg: str | None) -> None:
        value, chans = self._setting(arg)
        mask = -1 if value.strip().upper() == "CLEAR" else integer(value, 0, WORD)
        for ch in chans:
            ch.events &= ~mask
            if mask & TRIP:
                ch.tripped = False

    @scpi("EVent:MASK")
    def _event_mask(self, arg: str | None) -> None:
        value, chans = self._setting(arg)
        mask = integer(value, 0, WORD)
        for ch in chans:
            ch.event_mask = mask

    @scpi("CONFigure:EVent")
    def _module_event(self, arg: str | None) -> None:
        word = (arg or "").strip().upper()
        self.module_events &= 0 if word == "CLEAR" else ~integer(arg, 0, WORD)

    @scpi("CONFigure:EVent:MASK")
    def _module_event_mask(self, arg: str | None) -> None:
        self.module_event_mask = integer(arg, 0, WORD)

    @scpi("CONFigure:EVent:CHANMASK")
    def _channel_event_mask(self, arg: str | None) -> None:
        self.channel_event_mask = integer(arg, 0, 2**self.n_channels - 1)

    # --- channel queries --------------------------------------------------------------------
    @scpi("MEASure[:VOLTage]?")
    def _meas_volt(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _volts(self.vmon(ch)))

    @scpi("MEASure:CURRent?")
    def _meas_curr(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _amps(self.imon(ch)))

    @scpi("READ[:VOLTage]?")
    def _read_volt(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _volts(ch.sign * ch.vset))

    @scpi("READ:CURRent?")
    def _read_curr(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _amps(ch.iset))

    @scpi("READ:VOLTage:LIMit?")
    def _read_vlimit(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _volts(ch.vlimit))

    @scpi("READ:CURRent:LIMit?")
    def _read_ilimit(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _amps(ch.ilimit))

    @scpi("READ:VOLTage:BOUnds?")
    def _read_vbounds(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _volts(ch.vbounds))

    @scpi("READ:CURRent:BOUnds?")
    def _read_ibounds(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _amps(ch.ibounds))

    @scpi("READ:VOLTage:ON?")
    def _read_on(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: str(int(ch.on)))

    @scpi("READ:VOLTage:EMCY?")
    def _read_emcy(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: str(int(ch.emcy)))

    @scpi("READ:VOLTage:NOMinal?")
    def _vnom(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _volts(self.vnom))

    @scpi("READ:CURRent:NOMinal?")
    def _inom(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _amps(self.inom))

    @scpi("READ:RAMP[:VOLTage]?")
    def _read_ramp(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _rate(ch.rup))

    @scpi("READ:RAMP[:VOLTage]:MINimum?")
    def _read_ramp_min(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _rate(RAMP_MIN))

    @scpi("READ:RAMP[:VOLTage]:MAXimum?")
    def _read_ramp_max(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _rate(0.2 * self.vnom))

    @scpi("CONFigure:RAMP[:VOLTage]?")
    @scpi("CONFigure:RAMP[:VOLTage]:UP?")
    def _rup_q(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _rate(ch.rup))

    @scpi("CONFigure:RAMP[:VOLTage]:DOwn?")
    def _rdown_q(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: _rate(ch.rdown))

    @scpi("CONFigure:TRIP:ACTion?")
    def _trip_action_q(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: str(ch.trip_action))

    @scpi("CONFigure:TRIP:TIMe?")
    def _trip_time_q(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: f"{ch.trip_time:.0f}ms")

    @scpi("CONFigure:OUTPut:POLarity?")
    def _pol_q(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: ch.polarity)

    @scpi("READ:CHANnel:STATus?")
    @scpi("READ:CHANnel:STatus?")
    def _status(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: str(ch.status()))

    @scpi("READ:CHANnel:EVent:STatus?")
    @scpi("READ:CHANnel:EVent:STATus?")
    def _event_status(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: str(ch.events))

    @scpi("READ:CHANnel:EVent:MASK?")
    def _event_mask_q(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: str(ch.event_mask))

    @scpi("READ:CHANnel:CONTrol?")
    def _control(self, arg: str | None) -> str:
        return self._query(arg, lambda ch: str((ON if ch.on else 0) | (EMCY if ch.emcy else 0)))

    # --- module queries ---------------------------------------------------------------------
    @scpi("READ:MODule:CHANnelnumber?")
    def _module_channels(self, arg: str | None) -> str:
        self._no_arg(arg)
        return str(self.n_channels)

    @scpi("READ:MODule:STATus?")
    @scpi("READ:MODule:STatus?")
    def _module_status_q(self, arg: str | None) -> str:
        self._no_arg(arg)
        return str(self.module_status())

    @scpi("READ:MODule:EVent:STatus?")
    @scpi("READ:MODule:EVent:STATus?")
    def _module_events_q(self, arg: str | None) -> str:
        self._no_arg(arg)
        return str(self.module_events)

    @scpi("READ:MODule:EVent:MASK?")
    def _module_event_mask_q(self, arg: str | None) -> str:
        self._no_arg(arg)
        return str(self.module_event_mask)

    @scpi("READ:MODule:EVent:CHANSTATus?")
    def _channel_event_status_q(self, arg: str | None) -> str:
        self._no_arg(arg)
        return str(self.channel_event_status())

    @scpi("READ:MODule:EVent:CHANMASK?")
    def _channel_event_mask_q(self, arg: str | None) -> str:
        self._no_arg(arg)
        return str(self.channel_event_mask)

    @scpi("READ:MODule:TEMPerature?")
    def _module_temperature_q(self, arg: str | None) -> str:
        self._no_arg(arg)
        return f"{self.module_temperature + self.noise(0.05):.1f}C"

    _supply_p24v, _supply_n24v, _supply_p5v = _supply("P24V"), _supply("N24V"), _supply("P5V")
    _supply_p3v, _supply_p12v, _supply_n12v = _supply("P3V"), _supply("P12V"), _supply("N12V")


_GARBAGE = "".join(chr(c) for c in range(33, 127))
