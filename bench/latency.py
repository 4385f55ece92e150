"""Command -> status visible: time from publishing a setpoint to seeing it in the device's status.

python bench/latency.py [--n 300]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import DummyStack, Listener, report, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = DummyStack(Path(tmp)).start()
        try:
            listener = Listener(stack, "operator", ["slowctl/hv/status", "slowctl/hv/reply"])
            latencies, replies = [], []
            for i in range(args.n):
                value = float(10 + i % 2 * 5 + (i % 7))  # changes every time
                seen = listener.expect(
                    lambda m, v=value: (
                        m.topic.endswith("status") and json.loads(m.payload)["channels"][1].get("vset") == v
                    )
                )
                replied = listener.expect(lambda m: m.topic.endswith("reply"))
                t0 = time.perf_counter()
                listener.client.publish("slowctl/hv/cmd/vset/1", str(value), qos=1)
                latencies.append(listener.wait(seen, 5) - t0)
                replies.append(listener.wait(replied, 5) - t0)
                time.sleep(0.01)
            listener.close()
        finally:
            stack.stop()
    report(
        "latency",
        {
            "what": "mosquitto_pub-style plain command slowctl/hv/cmd/vset/1 -> retained status with the new vset, "
            "caen-n1470 simulator over TCP, 1 s poll period, QoS 1, loopback",
            "command_to_status_ms": summary(latencies, 1000),
            "command_to_reply_ms": summary(replies, 1000),
            "target": "p50 <= 10 ms, p99 <= 50 ms over >= 200 commands",
        },
    )


if __name__ == "__main__":
    main()
