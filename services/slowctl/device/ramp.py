"""Software ramp for instruments that cannot ramp in hardware.

The framework moves the programmed voltage toward the target at the channel's
rate, one step per tick; the instrument only ever sees small steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from slowctl.drivers.readings import ChannelState


@dataclass
class SoftRamp:
    programmed: float  # what the instrument is set to now
    target: float  # where we are going
    up: float  # V/s
    down: float  # V/s
    switch_off_at_end: bool = False  # an "off" that ramps down first
    max_step: float | None = None  # V per step; each step is held for max_step / rate
    last: float = 0.0  # time of the last step

    @property
    def active(self) -> bool:
        return self.programmed != self.target

    @property
    def state(self) -> ChannelState:
        return ChannelState.RAMP_UP if self.target > self.programmed else ChannelState.RAMP_DOWN

    @property
    def rate(self) -> float:
        return self.up if self.target > self.programmed else self.down

    def due(self, tick: float) -> float:
        """Time of the next step: every `tick`, or after the dwell of a configured step size."""
        return self.last + (self.max_step / self.rate if self.max_step else tick)

    def start(self, target: float, now: float) -> None:
        self.target = target
        self.last = now

    def step(self, now: float) -> float:
        """Advance to `now`; returns the new programmed value."""
        dt = max(0.0, now - self.last)
        self.last = now
        delta = self.rate * dt
        if self.max_step:
            delta = min(delta, self.max_step)
        if self.target > self.programmed:
            self.programmed = min(self.target, self.programmed + delta)
        else:
            self.programmed = max(self.target, self.programmed - delta)
        return self.programmed
