"""The recorder: throughput into MongoDB, what a MongoDB outage loses, and what it adds to a command.

python bench/records.py [--messages 4000] [--outage 30] [--commands 200]

Runs the native dummy stack with the recorder and its FerretDB (a MongoDB-wire server on SQLite, built
by scripts/build-test-tools.sh) on this machine.
(a) throughput: half events (published as a device), half commands (as the shared operator login, to a
    target no device serves: the recorder alone does the work), as fast as the broker takes them; the
    time until MongoDB holds all of them.
(b) MongoDB outage: FerretDB frozen (SIGSTOP, so its clients time out as with a dead server) for
    --outage s while a command is sent every 0.5 s; then the commands MongoDB holds are counted.
(c) command latency (command -> reply, p50/p99) with the recorder running and with `records.enabled:
    false`: the recorder is not in the command path, so the two should not differ beyond noise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from common import DummyStack, Listener, report, summary, wait_until
from pymongo import MongoClient

from slowctl.stack.records import find_ferretdb


def mongo(stack: DummyStack) -> MongoClient:
    password = (stack.state / "records" / "mongo-password").read_text().strip()
    port = stack.config["records"]["mongo_port"]
    return MongoClient(f"mongodb://slowctl:{password}@127.0.0.1:{port}/slowctl?authSource=slowctl", tz_aware=True)


def throughput(stack: DummyStack, n: int) -> dict:
    db = mongo(stack)["slowctl"]
    hv = stack.probe("hv")
    op = stack.probe("operator")
    hv.wait_connected()
    op.wait_connected()
    run = f"bench-{time.time_ns()}"
    t0 = time.monotonic()
    for i in range(n // 2):
        event = {"device": "hv", "kind": "state_changed", "message": f"{run} {i}", "ts": int(time.time() * 1000)}
        hv.client.publish("slowctl/hv/event", json.dumps(event), qos=1)
        op.client.publish("slowctl/bench/cmd", json.dumps({"action": "noop", "channel": 0, "id": f"{run}-{i}"}), qos=1)
    published = time.monotonic() - t0

    def stored() -> bool:
        events = db["events"].count_documents({"message": {"$regex": f"^{run} "}})
        commands = db["commands"].count_documents({"id": {"$regex": f"^{run}-"}})
        return events + commands >= 2 * (n // 2)

    wait_until(stored, 600, interval=0.2, what="every message in MongoDB")
    elapsed = time.monotonic() - t0
    print(f"throughput: {2 * (n // 2)} messages in {elapsed:.1f} s", flush=True)
    return {
        "messages": 2 * (n // 2),
        "published_in_s": round(published, 2),
        "in_mongodb_after_s": round(elapsed, 2),
        "per_second": round(2 * (n // 2) / elapsed, 1),
    }


def mongodb_outage(stack: DummyStack, outage: float) -> dict:
    db = mongo(stack)["slowctl"]
    op = stack.probe("operator")
    op.subscribe("slowctl/lv/reply")
    run = f"outage-{time.time_ns()}"
    ferretdb = stack.pids()["ferretdb"]
    os.kill(ferretdb, signal.SIGSTOP)
    sent = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < outage:
            op.client.publish(
                "slowctl/lv/cmd",
                json.dumps({"action": "iset", "channel": 1, "value": 0.5, "id": f"{run}-{sent}"}),
                qos=1,
            )
            sent += 1
            time.sleep(0.5)
    finally:
        os.kill(ferretdb, signal.SIGCONT)
    back = time.monotonic()

    def count() -> int:
        return db["commands"].count_documents({"id": {"$regex": f"^{run}-"}, "outcome": {"$ne": "pending"}})

    try:
        wait_until(lambda: count() >= sent, 120, interval=0.5, what="the buffered commands in MongoDB")
    except AssertionError:
        pass
    recorded = count()
    ids = [d["id"] for d in db["commands"].find({"id": {"$regex": f"^{run}-"}}).sort("ts", 1)]
    in_order = ids == sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1]))
    print(f"mongodb outage {outage:.0f} s: {sent} commands sent, {recorded} recorded with their reply", flush=True)
    return {
        "outage_s": outage,
        "commands_sent": sent,
        "recorded_with_reply": recorded,
        "lost": sent - recorded,
        "in_order": in_order,
        "written_after_outage_s": round(time.monotonic() - back, 1),
    }


def latency(stack: DummyStack, n: int) -> dict:
    """Command -> reply on the device's reply topic, as a client sees it."""
    listener = Listener(stack, "operator", ["slowctl/lv/reply"])
    times = []
    try:
        for i in range(n):
            cid = f"lat-{i}"
            slot = listener.expect(lambda m, cid=cid: json.loads(m.payload).get("id") == cid)
            body = {"action": "iset", "channel": 1, "value": round(0.5 + 0.01 * (i % 2), 2), "id": cid}
            t0 = time.perf_counter()
            listener.client.publish("slowctl/lv/cmd", json.dumps(body), qos=1)
            times.append(listener.wait(slot, 5) - t0)
    finally:
        listener.close()
    return summary(times, 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--outage", type=float, default=30.0)
    ap.add_argument("--commands", type=int, default=200)
    args = ap.parse_args()
    if not find_ferretdb():
        raise SystemExit("FerretDB not found: scripts/build-test-tools.sh ferretdb")
    work = Path(tempfile.mkdtemp(prefix="slowctl-bench-records-"))
    result: dict = {}
    with_records = DummyStack(work / "with", records=True).start()
    try:
        result["latency_with_recorder_ms"] = latency(with_records, args.commands)
        result["throughput"] = throughput(with_records, args.messages)
        result["mongodb_outage"] = mongodb_outage(with_records, args.outage)
    finally:
        with_records.stop()
    without = DummyStack(work / "without").start()
    try:
        result["latency_without_recorder_ms"] = latency(without, args.commands)
    finally:
        without.stop()
    report("records", result)


if __name__ == "__main__":
    main()
