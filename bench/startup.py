"""`slowctl up --dummy` until every device is online, and recovery after a broker restart.

python bench/startup.py [--runs 5]
"""

import argparse
import os
import re
import signal
import tempfile
import time
from pathlib import Path

from common import DummyStack, Listener, report, summary, wait_until

from slowctl.stack.supervisor import port_open


def all_online(listener_state: dict, devices: set[str]) -> bool:
    return {d for d, v in listener_state.items() if v == b"online"} >= devices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--downtime",
        type=float,
        default=5.0,
        help="s the broker stays down (the supervisor's restart backoff); long enough for the "
        "services' reconnect backoff to reach its cap",
    )
    args = ap.parse_args()
    startups, connected, recoveries = [], [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            stack = DummyStack(Path(tmp), lambda c: c["supervisor"].update(backoff_initial=args.downtime))
            t0 = time.monotonic()
            stack.start()  # returns once every instrument is connected (status ok)
            connected.append(time.monotonic() - t0)
            # the stack's own figure: from its start to every device and the interlock process online
            startups.append(float(re.search(r"online after ([0-9.]+) s", stack.log()).group(1)))
            try:
                os.kill(stack.pids()["broker"], signal.SIGKILL)
                wait_until(lambda: not port_open("127.0.0.1", stack.port), 5, interval=0.005)
                wait_until(lambda: port_open("127.0.0.1", stack.port), 10, interval=0.005)
                back = time.monotonic()
                state: dict = {}
                listener = Listener(stack, "viewer", ["slowctl/+/availability"])
                listener.on_message = lambda m, now: state.__setitem__(m.topic.split("/")[1], m.payload)
                wait_until(lambda: all_online(state, set(stack.config["devices"])), 15, interval=0.005)
                recoveries.append(time.monotonic() - back)
                listener.close()
            finally:
                stack.stop()
    report(
        "startup",
        {
            "what": "from the start of `slowctl up --dummy` to every device and the interlock process online "
            "(the stack's own figure); wall time until every instrument is connected (status ok); and from the "
            "broker accepting again after a SIGKILL + supervisor restart to all availability messages `online` "
            f"seen by a new viewer, the broker down for {args.downtime:g} s (the native broker has no persistence, "
            "so these are the services' re-announcements)",
            "up_to_all_online_s": summary(startups),
            "up_to_every_instrument_connected_s": summary(connected),
            "broker_back_to_all_online_s": summary(recoveries),
            "target": "all online <= 10 s; after a broker restart all online <= 3 s after the broker is back",
        },
    )


if __name__ == "__main__":
    main()
