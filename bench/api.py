"""What the Python API adds to a command's round trip: `Client.set` against the bare MQTT path.

python bench/api.py [--commands 300]

Both send the same JSON command (an `iset` on the CAEN channel hv.1 of the native dummy stack, alternating
between two values) and wait for the device's reply: the bare path with a paho client that publishes and
is woken by the reply (bench/common.py's Listener), the API with `Client.set` (response topic, correlation,
the reply checked). Interleaved, so that both see the same device and machine load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import DummyStack, Listener, report, summary

from slowctl import Client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commands", type=int, default=300)
    args = ap.parse_args()
    stack = DummyStack(Path(tempfile.mkdtemp(prefix="slowctl-bench-api-"))).start()
    bare_ms: list[float] = []
    api_ms: list[float] = []
    try:
        listener = Listener(stack, "operator", ["slowctl/hv/reply"])
        with Client(state_dir=stack.state) as client:
            client.set("hv", 1, "iset", 1e-5)  # warm up both paths
            for i in range(args.commands):
                value = 1e-5 if i % 2 else 2e-5
                cid = f"bare-{i}"
                slot = listener.expect(lambda m, cid=cid: json.loads(m.payload).get("id") == cid)
                body = {"action": "iset", "channel": 1, "value": value, "id": cid}
                t0 = time.perf_counter()
                listener.client.publish("slowctl/hv/cmd", json.dumps(body), qos=1)
                bare_ms.append(listener.wait(slot, 5) - t0)
                t0 = time.perf_counter()
                client.set("hv", 1, "iset", 2e-5 if i % 2 else 1e-5)
                api_ms.append(time.perf_counter() - t0)
        listener.close()
    finally:
        stack.stop()
    bare, api = summary(bare_ms, 1000), summary(api_ms, 1000)
    report(
        "api",
        {
            "bare_mqtt_ms": bare,
            "client_set_ms": api,
            "added_p50_ms": round(api["p50"] - bare["p50"], 3),
            "added_p99_ms": round(api["p99"] - bare["p99"], 3),
        },
    )


if __name__ == "__main__":
    main()
