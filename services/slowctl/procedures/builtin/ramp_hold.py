"""Ramp and hold: up to a target at a rate, hold, and back down."""

from __future__ import annotations

import time

from slowctl.client.api import ClientError
from slowctl.client.client import Client
from slowctl.procedures.base import Plot, Procedure, Run
from slowctl.procedures.bias import bias_problems, sign_of
from slowctl.procedures.params import Channel, Duration, Number


class RampAndHold(Procedure):
    """Sets the channel's ramp rate to `rate` (when given), ramps to `target`, holds it for `hold` sampling
    voltage and current every `interval`, then ramps back to the safe voltage at the channel's ramp-down
    rate."""

    name = "ramp_hold"
    title = "Ramp and hold"
    plot = Plot(x="t", y=("i",), xlabel="time since start (s)", ylabel="current (µA)", right=("vmon",),
                rlabel="voltage (V)", scale={"i": 1e6})  # fmt: skip

    channel = Channel("the channel, device.channel")
    target = Number("V", doc="the voltage to hold (signed like the bias, or a magnitude)")
    rate = Number("V/s", 0.0, lo=0, doc="ramp-up rate; 0: the channel's configured rate")
    hold = Duration(doc="how long to hold: 90, 30m, 12h", lo=0)
    interval = Duration(5.0, lo=0.5, hi=3600, doc="time between samples")

    def check(self, client: Client) -> list[str]:
        problems = bias_problems(client, self.channel, "target", self.target)
        if self.rate:
            try:
                cap = client.action(self.channel.device, self.channel.channel, "rampup")
            except ClientError as exc:
                return [*problems, f"rate: {exc}"]
            hi = cap.get("max")
            if hi is not None and self.rate > hi:
                problems.append(f"rate: {self.rate:g} V/s is above {self.channel}'s ramp_max of {hi:g} V/s")
        return problems

    def run(self, run: Run) -> None:
        ref, sign = self.channel, sign_of(run.client, self.channel)
        if self.rate:
            run.set(ref, "rampup", self.rate)
        if not run.client.channel(ref.device, ref.channel).get("on"):
            run.set(ref, "vset", 0.0)
        run.switch_on(ref)
        run.ramp(ref, abs(self.target))
        held = time.monotonic()
        steps = max(1, int(self.hold // self.interval) + 1)
        for n in range(1, steps + 1):
            ch = run.client.channel(ref.device, ref.channel)
            vmon, imon = ch.get("vmon"), ch.get("imon")
            run.point(
                t=round(time.time() - run.started, 3),
                vmon=sign * vmon if isinstance(vmon, (int, float)) else None,
                i=sign * imon if isinstance(imon, (int, float)) else None,
            )
            left = self.hold - (time.monotonic() - held)
            run.progress(n, steps, f"holding {self.target:g} V", eta=max(left, 0.0))
            if n < steps:
                run.sleep(min(self.interval, max(left, 0.0)))
