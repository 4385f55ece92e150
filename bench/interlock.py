"""Interlock reaction time: from the status that shows a violation to the protective command taking effect.

python bench/interlock.py [--n 30]

A `requires` rule protects hv channel 0 with lv channel 2. Each cycle switches LV on, waits for the rule to
clear, switches HV on (30 V), then switches LV off and measures:
  status -> command   the lv status showing the output off, to the hv reply for the interlock's `off`
                      (the instrument took the command and the service read it back)
  status -> ramping   to the hv status showing the channel ramping down
The LV is switched off by a command, so its status is published at once. Then, end to end, --e2e cycles
(default 20) switch the LV output off, at a random phase of the LV poll, at the instrument itself (a second client on the simulator's port
sends `OUTP:SEL OFF`, as a front panel or a fuse would) and measure:
  instrument -> ramping  from that moment to the hv status showing the channel ramping down: the LV
                         service sees it at its next poll (at most one poll period later)
"""

import argparse
import json
import random
import socket
import tempfile
import time
from pathlib import Path

from common import DummyStack, Listener, report, summary

RULES = {"lv-first": {"kind": "requires", "protects": ["hv.0"], "requires": ["lv.2"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--e2e", type=int, default=20, help="cycles with the LV switched off at the instrument")
    args = ap.parse_args()
    to_command, to_ramp, end_to_end = [], [], []
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

            def hv_state(*states: str):
                return lis.expect(
                    lambda m: m.topic == "slowctl/hv/status" and json.loads(m.payload)["channels"][0]["state"] in states
                )

            def bias_on(clear_first: bool) -> None:
                clear = rule(False)
                if clear_first:
                    command("lv", "clear")  # the output lost without a command latched OUTPUT_LOST
                command("lv", "on")
                lis.wait(clear, 5)
                on = hv_state("ON")
                command("hv", "on")
                lis.wait(on, 10)

            command("lv", "vset", "5")
            command("hv", "vset", "30")
            for _ in range(args.n):
                bias_on(clear_first=False)
                lv_off = lis.expect(
                    lambda m: m.topic == "slowctl/lv/status" and not json.loads(m.payload)["channels"][2]["on"]
                )
                protective = lis.expect(
                    lambda m: m.topic == "slowctl/hv/reply" and json.loads(m.payload).get("id") == "interlock:lv-first"
                )
                ramping, off = hv_state("RAMP_DOWN", "OFF"), hv_state("OFF")
                command("lv", "off")
                t0 = lis.wait(lv_off, 5)
                to_command.append(lis.wait(protective, 5) - t0)
                to_ramp.append(lis.wait(ramping, 5) - t0)
                lis.wait(off, 10)
            sim = ("127.0.0.1", stack.config["devices"]["lv"]["simulator"]["port"])
            poll = stack.config["devices"]["lv"].get("poll_period", 1.0)
            for _ in range(args.e2e):
                bias_on(clear_first=True)
                time.sleep(random.uniform(0, poll))  # any phase of the LV service's poll
                ramping, off = hv_state("RAMP_DOWN", "OFF"), hv_state("OFF")
                with socket.create_connection(sim, timeout=2) as front_panel:
                    t0 = time.perf_counter()  # the clock of Listener.wait
                    front_panel.sendall(b"INST:NSEL 3\nOUTP:SEL OFF\n")  # HMP output 3 is lv channel 2
                    end_to_end.append(lis.wait(ramping, 5) - t0)
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
            "instrument_to_ramping_ms": summary(end_to_end, 1000),
            "lv_poll_period_s": poll,
            "target": "status -> protective command p99 <= 100 ms; end to end <= one poll period + 100 ms",
        },
    )


if __name__ == "__main__":
    main()
