"""What a procedure costs beyond what it asks for: a 30-step IV scan against the simulators.

python bench/procedures.py [--steps 30] [--settle 1.0] [--samples 1] [--poll 1.0]

Runs the built-in `iv_scan` through the procedure runner of the native dummy stack (started as
`slowctl procedure run` would: an MQTT start command, progress followed on the retained topic) on the
Keithley bias (software ramp, 10 V/s) and on a CAEN HV channel (hardware ramp, 20 V/s), 10 V steps.
A step's time is the time between its data point and the one before. What the scan itself cannot avoid
is the ramp (step / rate) and the settle time asked; the rest is the overhead: the commands' round trips,
seeing the ramp end on a status, and waiting for `samples` fresh readings (one per poll of the
instrument, so up to one poll period each: --poll sets the devices' poll period).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import DummyStack, report, summary

from slowctl import Client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--poll", type=float, default=1.0, help="the devices' poll period (s)")
    args = ap.parse_args()

    def tweak(cfg: dict) -> None:
        for dev in ("bias", "hv"):
            cfg["devices"][dev]["poll_period"] = args.poll

    stack = DummyStack(Path(tempfile.mkdtemp(prefix="slowctl-bench-procedures-")), tweak).start()
    results = {}
    try:
        with Client(state_dir=stack.state) as client:
            for channel, sign, rate in (("bias.0", -1, 10.0), ("hv.0", 1, 20.0)):
                stop = sign * 10 * (args.steps - 1)
                params = {"channel": channel, "start": 0, "stop": stop, "step": 10, "settle": args.settle,
                          "samples": args.samples}  # fmt: skip
                t0 = time.monotonic()
                run = client.start_procedure("iv_scan", params)
                seen: list[float] = []

                def progress(p: dict, seen: list[float] = seen) -> None:
                    last = p.get("last") or {}
                    if last.get("ts") and (not seen or last["ts"] != seen[-1]):
                        seen.append(last["ts"])

                final = client.wait_for_run(run, timeout=900, on_progress=progress)
                total = time.monotonic() - t0
                if final["state"] != "completed":
                    raise SystemExit(f"{channel}: the scan ended {final['state']}: {final.get('reason')}")
                steps = [b - a for a, b in zip(seen, seen[1:])]
                asked = args.settle + 10 / rate  # each step after the first: ramp 10 V, then settle
                overhead = [s - asked for s in steps]
                results[channel] = {
                    "steps": len(seen),
                    "total_s": round(total, 2),
                    "step_s": summary(steps),
                    "asked_per_step_s": round(asked, 3),
                    "overhead_per_step_s": summary(overhead),
                    "poll_period_s": args.poll,
                    "samples": args.samples,
                }
    finally:
        stack.stop()
    report("procedures", results)


if __name__ == "__main__":
    main()
