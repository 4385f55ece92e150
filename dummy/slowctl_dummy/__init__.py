"""Instrument simulators for slowctl: CAEN N1470, HMP4040 and the climate box.

Declare, don't wire: an instrument (``sims/``) is a physics model plus a
command table; ``server.SimulatorServer`` serves any of them on TCP or a pty.
"""

from .server import SimulatorServer
from .sims import SIMULATORS

__all__ = ["SIMULATORS", "SimulatorServer"]
