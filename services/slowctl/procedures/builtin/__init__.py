"""The procedures every bench has."""

from slowctl.procedures.builtin.burn_in import BurnIn
from slowctl.procedures.builtin.iv_scan import IVScan
from slowctl.procedures.builtin.ramp_hold import RampAndHold

BUILTIN = (IVScan, BurnIn, RampAndHold)
