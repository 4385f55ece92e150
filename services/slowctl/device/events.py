"""Events: what happened on a device and why, one JSON object each on `<root>/<dev>/event`.

Severities follow the alarm severities operators know from EPICS: `info` (nothing wrong), `minor`
(look at it), `major` (an output or a setting is not what was commanded, or a protection acted),
`invalid` (an alarm on a value that is not known: a device offline, a reading missing).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("info", "minor", "major", "invalid")  # invalid: the value is not known (EPICS INVALID)

# kinds, each with the severity it has unless the core says otherwise
KINDS = {
    "service_start": "info",
    "service_stop": "info",
    "instrument_lost": "major",
    "instrument_connected": "info",  # first connection after the service started
    "instrument_back": "info",
    "command_applied": "info",
    "command_refused": "minor",
    "command_failed": "major",  # sent, but the instrument holds something else or refused
    "state_changed": "info",
    "trip": "major",
    "trip_gone": "minor",  # the instrument no longer shows the trip; the latch stays until clear
    "output_changed": "major",  # on or off without a command
    "setpoint_changed": "major",  # vset, iset or tset changed without a command
    "limit_violation": "major",
    "limit_ok": "info",
    "alarms_cleared": "info",
    "setting_applied": "info",  # start-up settings
    "setting_skipped": "minor",  # start-up settings not applied: the output is on
    "latch_state": "major",  # the latch state file could not be read
    "outbox_damaged": "major",  # at start: part of what waited for the broker could not be read back
    "outbox_full": "major",  # the outbox was full: metrics and events were not kept (how many, when)
    "interlock": "minor",  # an interlock rule now blocks, or releases, channels of this device
    # the interlock process's own (device "interlock")
    "interlock_active": "major",
    "interlock_clear": "info",
    "interlock_action": "major",  # it sent `off` (or `kill`) to a protected output
    "interlock_cleared": "info",  # an operator cleared a latched rule
    "emergency_off": "major",
    # the procedure runner's (device "procedures"; the channel field names no channel: runs may hold several)
    "run_started": "info",
    "run_finished": "info",  # completed, or stopped by a criterion of the procedure
    "run_aborted": "minor",
    "run_failed": "major",  # the bench did not let it go on (refusal, trip, interlock, lost device)
    # the alarm handler's (the device of the alarm; the severity of the alarm when raised)
    "alarm_raised": "major",
    "alarm_cleared": "info",  # its condition is gone (a latching alarm stays listed until acknowledged)
    "alarm_acked": "info",
}


@dataclass
class Event:
    device: str
    kind: str
    message: str
    channel: int | None = None
    severity: str = ""
    before: Any = None
    after: Any = None
    cause: str | None = None
    ts: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")
        self.severity = self.severity or KINDS[self.kind]

    def payload(self) -> str:
        body = asdict(self)
        body["ts"] = int(self.ts * 1000)
        return json.dumps(body, default=str)
