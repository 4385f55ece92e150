"""CPU and memory of each process of the dummy stack at a 1 Hz poll.

python bench/resources.py [--seconds 60]
"""

import argparse
import tempfile
import time
from pathlib import Path

import psutil
from common import DummyStack, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = DummyStack(Path(tmp)).start()
        try:
            time.sleep(args.warmup)
            procs = {name: psutil.Process(pid) for name, pid in stack.pids().items()}
            start = {name: p.cpu_times() for name, p in procs.items()}
            t0 = time.monotonic()
            time.sleep(args.seconds)
            wall = time.monotonic() - t0
            result = {}
            for name, p in sorted(procs.items()):
                end = p.cpu_times()
                cpu = (end.user + end.system - start[name].user - start[name].system) / wall * 100
                result[name] = {
                    "cpu_percent_of_core": round(cpu, 2),
                    "rss_mb": round(p.memory_info().rss / 2**20, 1),
                    "uss_mb": round(p.memory_full_info().uss / 2**20, 1),
                }
        finally:
            stack.stop()
    report(
        "resources",
        {
            "what": f"dummy stack, 1 Hz polls, measured over {args.seconds:g} s after {args.warmup:g} s warm-up; "
            "service-hv is the 4-channel CAEN supply",
            "processes": result,
            "target": "a 4-channel supply at 1 Hz: <= 2 % of a core and <= 60 MB RSS per service",
        },
    )


if __name__ == "__main__":
    main()
