"""Action names and the config key that limits each: the part of the action declaration the layers below
the device side need (config and drivers, which may not import slowctl.device).

`slowctl.device.capabilities.ACTIONS` declares each action in full (value, unit, doc, which kinds of device
accept it, how it is applied) and reads its limit key and the rates from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

SUPPLY_ACTIONS = ("on", "off", "kill", "vset", "iset")  # what every supply driver accepts (plus its extra_actions)
RATES = ("rampup", "rampdown")  # ramp rates (V/s): the instrument's with a hardware ramp, else the framework's
# action -> the channel config key of its highest accepted value
LIMIT_KEY: Mapping[str, str] = MappingProxyType(
    {"vset": "vmax", "iset": "imax", "rampup": "ramp_max", "rampdown": "ramp_max"}
)
