"""Burn-in: channels held at a bias for a long time, currents and the environment logged."""

from __future__ import annotations

import math
import time
from typing import Any

from slowctl.client.client import Client
from slowctl.procedures.base import Plot, Procedure, Run, Stopped
from slowctl.procedures.bias import bias_problems, sign_of
from slowctl.procedures.params import Channels, Duration, Number


class BurnIn(Procedure):
    """Ramps every channel to `voltage`, holds them for `duration` sampling the currents (`i_<dev>_<ch>`)
    and the environment every `interval`, and stops early when a current exceeds `current_limit`.
    Then back to the safe voltage."""

    name = "burn_in"
    title = "Burn-in (long-term bias)"
    plot = Plot(
        x="t",
        y=("i_*",),
        xlabel="time since start (s)",
        ylabel="current (µA)",
        right=("*_temperature", "*_humidity"),
        rlabel="°C, %RH",
        scale={"i_*": 1e6},
    )

    channels = Channels("the bias channels, device.channel,device.channel")
    voltage = Number("V", doc="the bias held (signed like the bias, or a magnitude)")
    duration = Duration(doc="how long to hold: 90, 30m, 12h, 7d", lo=1)
    interval = Duration(10.0, lo=0.5, hi=86400, doc="time between samples")
    current_limit = Number("A", None, positive=True, doc="stop when a current exceeds this (magnitude); none: no limit")

    def check(self, client: Client) -> list[str]:
        return [p for ref in self.channels for p in bias_problems(client, ref, "voltage", self.voltage)]

    def run(self, run: Run) -> None:
        refs = self.channels
        for ref in refs:  # all on at their first setpoint, then all ramped together
            if not run.client.channel(ref.device, ref.channel).get("on"):
                run.set(ref, "vset", 0.0)
            run.switch_on(ref)
        for ref in refs:
            run.set(ref, "vset", abs(self.voltage))
        for ref in refs:
            run.ramp(ref, abs(self.voltage))
        start = time.monotonic()
        steps = max(1, math.ceil(self.duration / self.interval))
        for n in range(1, steps + 1):
            values: dict[str, Any] = {"t": round(time.time() - run.started, 3)}
            worst: tuple[float, str] = (0.0, "")
            for ref in refs:
                ch = run.client.channel(ref.device, ref.channel)
                imon = ch.get("imon")
                key = f"i_{ref.device}_{ref.channel}"
                values[key] = sign_of(run.client, ref) * imon if isinstance(imon, (int, float)) else None
                if isinstance(imon, (int, float)) and abs(imon) > worst[0]:
                    worst = (abs(imon), str(ref))
            run.point(**values)
            left = self.duration - (time.monotonic() - start)
            run.progress(n, steps, f"max {worst[0] * 1e6:.4g} µA ({worst[1]})", eta=max(left, 0.0))
            if self.current_limit is not None and worst[0] > self.current_limit:
                raise Stopped(f"{worst[1]}: {worst[0] * 1e6:.4g} µA above the limit {self.current_limit * 1e6:g} µA")
            if n < steps:
                run.sleep(min(self.interval, max(left, 0.0)))
