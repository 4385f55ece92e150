"""Instrument simulators for slowctl: one per model of the drivers (``SIMULATORS``, by model id; the
table in dummy/README.md lists them).

Declare, don't wire: an instrument (``sims/``) is a physics model plus a
command table; ``server.SimulatorServer`` serves any of them on TCP or a pty.
"""

from .server import SimulatorServer
from .sims import SIMULATORS

__all__ = ["SIMULATORS", "SimulatorServer"]
