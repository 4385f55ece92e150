"""IV scan: the bias from start to stop in steps, the leakage current measured at each."""

from __future__ import annotations

import math
import statistics
from typing import Any

from slowctl.client.client import Client
from slowctl.procedures.base import Plot, Procedure, Run, Stopped
from slowctl.procedures.bias import bias_problems, sign_of
from slowctl.procedures.params import Channel, Duration, Integer, Number


class IVScan(Procedure):
    """Steps a bias channel from `start` to `stop` (signed like the bias, or magnitudes), waits `settle` at
    each step, averages `samples` fresh current readings (mean and standard deviation), and records the
    environment with each point. Stops at compliance, above `current_limit`, or when the current jumps by
    more than `jump` times from one step to the next (breakdown). Then back to the safe voltage."""

    name = "iv_scan"
    title = "IV scan"
    plot = Plot(x="v", y=("i",), xlabel="bias voltage (V)", ylabel="leakage current (µA)", scale={"i": 1e6})

    channel = Channel("the bias channel, device.channel")
    start = Number("V", 0.0, doc="first voltage")
    stop = Number("V", doc="last voltage (the scan ends there unless a criterion stops it first)")
    step = Number("V", positive=True, doc="voltage step (a magnitude)")
    settle = Duration(2.0, lo=0, hi=3600, doc="wait after each step before sampling")
    samples = Integer(3, lo=1, hi=1000, doc="fresh current readings averaged per step")
    current_limit = Number("A", None, positive=True, doc="stop above this current (magnitude); none: no limit")
    jump = Number("", 10.0, lo=1.5, doc="stop when the current grows more than this factor in one step")
    jump_floor = Number("A", 1e-8, lo=0, doc="a jump counts only from a current above this")

    def validate(self) -> list[str]:
        problems = []
        if self.start * self.stop < 0:
            problems.append(f"start {self.start:g} V and stop {self.stop:g} V have opposite signs")
        if self.start == self.stop:
            problems.append("start and stop are the same voltage")
        elif abs(self.stop - self.start) / self.step > 10000:
            problems.append(f"{abs(self.stop - self.start) / self.step:.0f} steps: at most 10000")
        return problems

    def voltages(self) -> list[float]:
        """start, start ± step, ..., stop (the last step may be shorter)."""
        direction = 1.0 if self.stop > self.start else -1.0
        n = math.floor(abs(self.stop - self.start) / self.step + 1e-9)
        out = [round(self.start + direction * i * self.step, 9) for i in range(n + 1)]
        if abs(out[-1] - self.stop) > 1e-9:
            out.append(self.stop)
        return out

    def check(self, client: Client) -> list[str]:
        problems = []
        for name, v in (("start", self.start), ("stop", self.stop)):
            problems += bias_problems(client, self.channel, name, v)
        if not problems:
            for v in self.voltages():
                problems += bias_problems(client, self.channel, "step", v)
                if problems:
                    break
        return problems

    def run(self, run: Run) -> None:
        ref = self.channel
        sign = sign_of(run.client, ref)
        voltages = self.voltages()
        if not run.client.channel(ref.device, ref.channel).get("on"):
            run.set(ref, "vset", abs(voltages[0]))  # while off: the output comes on at the first voltage
        run.switch_on(ref)
        previous: float | None = None
        for n, v in enumerate(voltages, 1):
            run.ramp(ref, abs(v))
            run.sleep(self.settle)
            currents, ch = self.sample(run)
            i = statistics.fmean(currents)
            vmon = ch.get("vmon")
            run.point(
                v=v,
                vmon=sign * vmon if isinstance(vmon, (int, float)) else None,
                i=sign * i,
                i_std=statistics.stdev(currents) if len(currents) > 1 else 0.0,
                n=len(currents),
                state=ch.get("state"),
            )
            run.progress(n, len(voltages), f"{v:g} V: {i * 1e6:.4g} µA")
            at = f"{v:g} V"  # as asked; and what the output held when it sagged (compliance, a current limit)
            if isinstance(vmon, (int, float)) and abs(abs(vmon) - abs(v)) > max(1.0, 0.01 * abs(v)):
                at += f" (the output held {sign * vmon:.4g} V)"
            if ch.get("state") == "COMPLIANCE":
                raise Stopped(f"compliance at {at}, {i * 1e6:.4g} µA")
            if self.current_limit is not None and i > self.current_limit:
                raise Stopped(f"current {i * 1e6:.4g} µA above the limit {self.current_limit * 1e6:g} µA at {at}")
            if previous is not None and previous > self.jump_floor and i > previous * self.jump:
                raise Stopped(
                    f"breakdown: the current rose {i / max(previous, 1e-15):.1f} times in one step, to "
                    f"{i * 1e6:.4g} µA at {at}"
                )
            previous = i

    def sample(self, run: Run) -> tuple[list[float], dict[str, Any]]:
        """`samples` currents from as many fresh statuses (each poll of the instrument is one reading)."""
        ref, currents = self.channel, []
        ch: dict[str, Any] = {}
        seq = run.client.status(ref.device).get("seq", 0)
        for _ in range(self.samples):

            def fresh(c: Client, after: int = seq) -> bool:
                return bool(c.status(ref.device).get("seq", 0) > after)

            run.wait(fresh, 30.0, f"a fresh status of {ref.device}")
            seq = run.client.status(ref.device).get("seq", 0)
            ch = run.client.channel(ref.device, ref.channel)
            imon = ch.get("imon")
            if isinstance(imon, (int, float)):
                currents.append(abs(imon))
        if not currents:
            currents = [math.nan]
        return currents, ch
