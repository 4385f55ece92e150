"""Interlock reaction time: from the status that shows a violation to the protective command taking effect.

python bench/interlock.py [--n 30]

A `requires` rule protects hv channel 0 with lv channel 2. Each cycle switches LV on, waits for the rule to
clear, switches HV on (30 V), then switches LV off and measures:
  status -> command   the lv status showing the output off, to the hv reply for the interlock's `off`
                      (the instrument took the command and the service read it back)
  status -> ramping   to the hv status showing the channel ramping down
The LV is switched off by a command, so its status is published at once; a condition that arises at the
instrument itself (a fuse trip) is seen at the next poll, at most one poll period later.
"""

import argparse
import json
import tempfile
from pathlib import Path

from common import DummyStack, Listener, report, summary

RULES = {"lv-first": {"kind": "requires", "protects": ["hv.0"], "requires": ["lv.2"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()
    to_command, to_ramp = [], []
    with tempfile.TemporaryDirectory() as tmp:
        stack = DummyStack(Path(tmp), lambda c: c.update(interlocks=RULES)).start()
        try:
            topics = [
                "slowctl/lv/status",
                "slowctl/hv/status",
                "slowctl/hv/reply",
                "slowctl/lv/reply",
                "slowctl/interlock/state",
            ]
            lis = Listener(stack, "operator", topics)

            def command(dev: str, action: str, value: str = "") -> None:
                done = lis.expect(
                    lambda m: m.topic == f"slowctl/{dev}/reply" and json.loads(m.payload)["action"] == action
                )
                lis.client.publish(f"slowctl/{dev}/cmd/{action}/{'0' if dev == 'hv' else '2'}", value, qos=1)
                lis.wait(done, 5)

            def rule(active: bool):
                return lis.expect(
                    lambda m: (
                        m.topic.endswith("interlock/state")
                        and json.loads(m.payload)["rules"]["lv-first"]["active"] is active
                    )
                )

            command("lv", "vset", "5")
            command("hv", "vset", "30")
            for _ in range(args.n):
                clear = rule(False)
                command("lv", "on")
                lis.wait(clear, 5)
                on = lis.expect(
                    lambda m: m.topic == "slowctl/hv/status" and json.loads(m.payload)["channels"][0]["state"] == "ON"
                )
                command("hv", "on")
                lis.wait(on, 10)
                lv_off = lis.expect(
                    lambda m: m.topic == "slowctl/lv/status" and not json.loads(m.payload)["channels"][2]["on"]
                )
                protective = lis.expect(
                    lambda m: m.topic == "slowctl/hv/reply" and json.loads(m.payload).get("id") == "interlock:lv-first"
                )
                ramping = lis.expect(
                    lambda m: (
                        m.topic == "slowctl/hv/status"
                        and json.loads(m.payload)["channels"][0]["state"] in ("RAMP_DOWN", "OFF")
                    )
                )
                command("lv", "off")
                t0 = lis.wait(lv_off, 5)
                to_command.append(lis.wait(protective, 5) - t0)
                to_ramp.append(lis.wait(ramping, 5) - t0)
                off = lis.expect(
                    lambda m: m.topic == "slowctl/hv/status" and json.loads(m.payload)["channels"][0]["state"] == "OFF"
                )
                lis.wait(off, 10)
            lis.close()
        finally:
            stack.stop()
    report(
        "interlock",
        {
            "what": "requires rule hv.0 <- lv.2: lv status showing the output off -> hv reply to the interlock's off "
            "(status_to_command) and -> hv status RAMP_DOWN (status_to_ramping); dummy stack, loopback",
            "status_to_command_ms": summary(to_command, 1000),
            "status_to_ramping_ms": summary(to_ramp, 1000),
            "target": "status -> protective command p99 <= 100 ms; end to end <= one poll period + 100 ms",
        },
    )


if __name__ == "__main__":
    main()
