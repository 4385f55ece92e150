"""Scale: many simulated 16-channel HV devices at 1 Hz on one machine; status age and load.

    python bench/scale.py [--devices 50] [--channels 16] [--seconds 60]

Status age = now - ts of the newest status of a device, sampled every 100 ms for every device.
"""

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import DummyStack, Listener, free_port, report, summary


def config(devices: int, channels: int):
    def tweak(c: dict) -> None:
        ports = [dev["simulator"]["port"] for dev in c["devices"].values()]  # free ones, from the harness
        c["devices"] = {
            f"hv{i:02d}": {
                "model": "caen-n1470",
                "address": "socket://unused:1",
                "poll_period": 1.0,
                "options": {"channels": channels, "all_channels_query": True},
                "simulator": {
                    "port": ports[i] if i < len(ports) else free_port(),
                    "args": ["--channels", str(channels)],
                },
                "channels": {ch: {"name": f"ch{ch}", "vmax": 500, "imax": 1e-4} for ch in range(channels)},
            }
            for i in range(devices)
        }

    return tweak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = DummyStack(Path(tmp), config(args.devices, args.channels))
        t0 = time.monotonic()
        stack.start(timeout=120)
        startup = time.monotonic() - t0
        try:
            latest: dict[str, float] = {}
            lock = threading.Lock()

            def on_status(msg, now) -> None:
                ts = json.loads(msg.payload)["ts"] / 1000
                with lock:
                    latest[msg.topic.split("/")[1]] = ts

            listener = Listener(stack, "viewer", ["slowctl/+/status"])
            listener.on_message = on_status
            time.sleep(args.warmup)
            psutil.cpu_percent()
            ages, end = [], time.monotonic() + args.seconds
            while time.monotonic() < end:
                now = time.time()
                with lock:
                    ages += [now - ts for ts in latest.values()]
                    seen = len(latest)
                time.sleep(0.1)
            cpu = psutil.cpu_percent()
            rss = sum(psutil.Process(pid).memory_info().rss for pid in stack.pids().values())
            listener.close()
        finally:
            stack.stop()
    report(
        "scale",
        {
            "what": f"{args.devices} caen-n1470 simulators with {args.channels} channels each and {args.devices} "
            f"device services (1 Hz polls, all-channels queries) + broker on one machine, "
            f"{args.seconds:g} s after {args.warmup:g} s warm-up",
            "devices_reporting": seen,
            "status_age_s": summary(ages),
            "machine_cpu_percent": cpu,
            "stack_rss_mb": round(rss / 2**20),
            "startup_s": round(startup, 1),
            "target": "50 devices x 16 channels at 1 Hz: status age p99 <= 1.5 s",
        },
    )


if __name__ == "__main__":
    main()
