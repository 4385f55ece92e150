"""Setting resolution per model: the documented step, refusal of finer values naming the step, and values on
the grid reaching the wire unrounded. Unit level: a scripted link answers the drivers' error checks, so
the test fixes the wire text and does not depend on a simulator's own rounding."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

from slowctl.drivers.base import Driver, off_grid
from slowctl.drivers.caen_n1470 import CaenN1470
from slowctl.drivers.hmp4040 import Hmp4040
from slowctl.drivers.iseg_shr import IsegShr
from slowctl.drivers.julabo import Julabo
from slowctl.drivers.keithley_2410 import Keithley2410
from slowctl.drivers.link import InstrumentError
from slowctl.drivers.tti_mx100tp import TtiMx100tp


class ScriptedLink:
    """Records writes; answers queries from `reply(request, last_write)`."""

    def __init__(self, reply: Callable[[str, str], str]) -> None:
        self.reply, self.lock = reply, threading.RLock()
        self.writes: list[str] = []
        self.queries: list[str] = []

    def write(self, request: str) -> None:
        self.writes.append(request)

    def query(self, request: str) -> str:
        self.queries.append(request)
        return self.reply(request, self.writes[-1] if self.writes else "")

    @property
    def wire(self) -> list[str]:
        """Everything sent: CAEN settings are queries (they have a reply), SCPI settings writes."""
        return self.writes + self.queries


def _caen(request: str, _: str) -> str:
    return "#BD:00,CMD:OK"


def _scpi(request: str, _: str) -> str:
    if "ERR?" in request:
        return '0,"No error"'
    if "STATUS?" in request:  # iseg: positive polarity, no event
        return "1;0"
    return "0"  # TTi *ESR? / EER?


def _julabo(request: str, last: str) -> str:
    if request == "in_sp_00":  # the read-back of the last out_sp_00
        return last.split()[-1]
    if request == "in_mode_01":  # setpoint 1 (sp_00) is the active one
        return "0"
    return "03 REMOTE START"


def driver(cls: type[Driver], reply: Callable[[str, str], str], **options: Any) -> Any:
    return cls(ScriptedLink(reply), cls.parse_options(options), [0])  # type: ignore[arg-type]


# model, options, action, value (None: the finest step), documented step
STEPS = [
    (CaenN1470, {}, "vset", None, 0.1),
    (CaenN1470, {}, "iset", None, 0.01e-6),
    (CaenN1470, {}, "rampup", None, 1.0),
    (CaenN1470, {}, "rampdown", None, 1.0),
    (IsegShr, {}, "vset", None, 1e-2),
    (IsegShr, {}, "iset", None, 1e-9),
    (IsegShr, {}, "rampup", None, 1e-3),
    (IsegShr, {}, "rampup", 0.5, 1e-3),
    (IsegShr, {}, "rampup", 1.0, 1e-3),
    (IsegShr, {}, "rampup", 50.0, 1e-2),
    (IsegShr, {}, "rampdown", 0.02, 1e-3),
    (IsegShr, {}, "rampdown", 20.0, 1e-2),
    (IsegShr, {"vset_resolution": 0.001, "iset_resolution": 1e-8}, "vset", None, 0.001),
    (IsegShr, {"vset_resolution": 0.01, "iset_resolution": 1e-8}, "iset", None, 1e-8),
    (Keithley2410, {"polarity": "-"}, "vset", 0.1, 5e-6),
    (Keithley2410, {"polarity": "-"}, "vset", 2.0, 50e-6),
    (Keithley2410, {"polarity": "-"}, "vset", 21.0, 500e-6),
    (Keithley2410, {"polarity": "-"}, "vset", 600.0, 50e-3),
    (Keithley2410, {"polarity": "-", "variant": "2400"}, "vset", 150.0, 5e-3),
    (Keithley2410, {"polarity": "-"}, "vset", None, 5e-6),
    (Keithley2410, {"polarity": "-"}, "iset", 1e-6, 50e-12),
    (Keithley2410, {"polarity": "-"}, "iset", 1e-5, 500e-12),
    (Keithley2410, {"polarity": "-"}, "iset", 1e-4, 5e-9),
    (Keithley2410, {"polarity": "-"}, "iset", 1e-3, 50e-9),
    (Keithley2410, {"polarity": "-"}, "iset", 20e-3, 500e-9),
    (Keithley2410, {"polarity": "-", "variant": "2400"}, "iset", 10e-3, 500e-9),
    (Keithley2410, {"polarity": "-", "variant": "2400"}, "iset", 20e-3, 5e-6),
    (Keithley2410, {"polarity": "-"}, "iset", 0.5, 50e-6),
    (Hmp4040, {}, "vset", None, 1e-3),
    (Hmp4040, {}, "iset", 0.5, 1e-4),
    (Hmp4040, {}, "iset", 1.0, 1e-4),
    (Hmp4040, {}, "iset", 2.5, 1e-3),
    (TtiMx100tp, {}, "vset", None, 1e-3),
    (TtiMx100tp, {}, "iset", None, 1e-4),
    (TtiMx100tp, {}, "ovp", None, 0.01),
    (TtiMx100tp, {}, "ocp", None, 1e-3),
    (TtiMx100tp, {"variant": "CPX400DP"}, "vset", None, 0.01),
    (TtiMx100tp, {"variant": "CPX400DP"}, "iset", None, 1e-3),
    (TtiMx100tp, {"variant": "QL355TP"}, "vset", None, 1e-3),
    (Julabo, {}, "tset", None, 0.01),
    (Julabo, {"setpoint_resolution": 0.1}, "tset", None, 0.1),
]


@pytest.mark.parametrize("cls, options, action, value, step", STEPS)
def test_instrument_step_is_the_documented_resolution(cls, options, action, value, step):
    assert cls.instrument_step(action, cls.parse_options(options), value) == pytest.approx(step, rel=1e-9)


@pytest.mark.parametrize("cls", [CaenN1470, IsegShr, Keithley2410, Hmp4040, TtiMx100tp, Julabo])
def test_every_settable_parameter_declares_its_resolution(cls):
    for action in cls.actions() & {"vset", "iset", "rampup", "rampdown", "tset"}:
        assert cls.instrument_step(action) is not None, action


# model, reply, options, setter, value on the grid, its wire text, a finer value, the step named
SETS = [
    (CaenN1470, _caen, {}, "set_voltage", 1234.5, "PAR:VSET,VAL:1234.5", 12.34, "0.1 V step"),
    (CaenN1470, _caen, {}, "set_current", 1.23e-6, "PAR:ISET,VAL:1.23", 1.234e-6, "1e-08 A step"),
    (CaenN1470, _caen, {}, "rampup", 20.0, "PAR:RUP,VAL:20", 20.5, "1 V/s step"),
    (CaenN1470, _caen, {}, "rampdown", 499.0, "PAR:RDW,VAL:499", 1.5, "1 V/s step"),
    (IsegShr, _scpi, {}, "set_voltage", 500.01, ":VOLT 500.01,(@0)", 500.005, "0.01 V step"),
    (IsegShr, _scpi, {}, "set_current", 1.5e-8, ":CURR 0.000000015,(@0)", 1.5e-9 + 1e-8, "1e-09 A step"),
    (IsegShr, _scpi, {}, "rampup", 12.34, ":CONF:RAMP:VOLT:UP 12.34,(@0)", 12.345, "0.01 V/s step"),
    (IsegShr, _scpi, {}, "rampdown", 0.125, ":CONF:RAMP:VOLT:DOWN 0.125,(@0)", 0.1255, "0.001 V/s step"),
    (IsegShr, _scpi, {"vset_resolution": 0.1}, "set_voltage", 100.1, ":VOLT 100.1,(@0)", 100.05, "0.1 V step"),
    (Keithley2410, _scpi, {"polarity": "-"}, "set_voltage", 150.05, ":SOUR:VOLT -150.05", 150.01, "0.05 V step"),
    (Keithley2410, _scpi, {"polarity": "-"}, "set_voltage", 5.0005, ":SOUR:VOLT -5.0005", 5.0001, "0.0005 V step"),
    (
        Keithley2410,
        _scpi,
        {"polarity": "+", "variant": "2400"},
        "set_voltage",
        150.005,
        ":SOUR:VOLT 150.005",
        150.001,
        "0.005 V step",
    ),
    (
        Keithley2410,
        _scpi,
        {"polarity": "-"},
        "set_current",
        1.2345e-5,
        ":SENS:CURR:PROT 0.000012345",
        1.23451e-5,
        "5e-09 A step",
    ),
    (
        Keithley2410,
        _scpi,
        {"polarity": "-"},
        "set_current",
        3.5e-10,
        ":SENS:CURR:PROT 0.00000000035",
        3.51e-10,
        "5e-11 A step",
    ),
    (Hmp4040, _scpi, {}, "set_voltage", 3.305, "INST:NSEL 1;SOUR:VOLT 3.305", 3.3055, "0.001 V step"),
    (Hmp4040, _scpi, {}, "set_current", 0.1234, "INST:NSEL 1;SOUR:CURR 0.1234", 0.12345, "0.0001 A step"),
    (Hmp4040, _scpi, {}, "set_current", 2.345, "INST:NSEL 1;SOUR:CURR 2.345", 2.3455, "0.001 A step"),
    (TtiMx100tp, _scpi, {}, "set_voltage", 5.005, "V1 5.005", 5.0005, "0.001 V step"),
    (TtiMx100tp, _scpi, {}, "set_current", 0.1234, "I1 0.1234", 0.12345, "0.0001 A step"),
    (TtiMx100tp, _scpi, {}, "ovp", 6.05, "OVP1 6.05", 6.055, "0.01 V step"),
    (TtiMx100tp, _scpi, {}, "ocp", 2.205, "OCP1 2.205", 2.2055, "0.001 A step"),
    (TtiMx100tp, _scpi, {"variant": "CPX400DP"}, "set_voltage", 12.01, "V1 12.01", 12.005, "0.01 V step"),
    (Julabo, _julabo, {"out_interval": 0}, "set_temperature", 12.34, "out_sp_00 12.34", 12.345, "0.01 °C step"),
    (
        Julabo,
        _julabo,
        {"out_interval": 0, "setpoint_resolution": 0.1},
        "set_temperature",
        12.3,
        "out_sp_00 12.3",
        12.34,
        "0.1 °C step",
    ),
]


def _apply(drv: Any, setter: str, value: float) -> None:
    if setter in ("rampup", "rampdown", "ovp", "ocp"):
        getattr(drv, setter)[0] = value  # a declared parameter, validated like every setting
    else:
        getattr(drv, setter)(0, value)


@pytest.mark.parametrize("cls, reply, options, setter, good, wire, fine, message", SETS)
def test_grid_values_reach_the_wire_and_finer_ones_are_refused(cls, reply, options, setter, good, wire, fine, message):
    drv = driver(cls, reply, **options)
    _apply(drv, setter, good)
    assert any(line.endswith(wire) for line in drv.link.wire), drv.link.wire  # nothing rounded, nothing added
    sent = list(drv.link.wire)
    with pytest.raises(InstrumentError, match=rf"is finer than the instrument's {re.escape(message)}: refused"):
        _apply(drv, setter, fine)
    assert drv.link.wire == sent  # refused before anything was sent


def test_off_grid_judges_tiny_steps_as_finely_as_large_ones():
    assert off_grid(1.23451e-5, 5e-9) and not off_grid(1.2345e-5, 5e-9)
    assert off_grid(3.51e-10, 5e-11) and not off_grid(3.5e-10, 5e-11)
    assert not off_grid(0.3, 0.1) and not off_grid(1100.05, 0.05) and off_grid(12.34, 0.1)


def test_the_refusal_names_value_unit_and_step():
    drv = driver(CaenN1470, _caen)
    with pytest.raises(
        InstrumentError,
        match=r"^vset 12.34 V is finer than the instrument's 0.1 V step: "
        r"refused rather than rounded$",
    ):
        drv.set_voltage(0, 12.34)
