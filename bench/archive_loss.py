"""Nothing lost? The archive path (dummy stack at 1 Hz -> real Telegraf -> real InfluxDB 2) through three outages.

python bench/archive_loss.py [--outage 30] [--broker-kill]

(a) Telegraf restarted (stopped 5 s), (b) the broker stopped and back after --outage s (the supervisor's
restart delay), (c) InfluxDB stopped for --outage s. After each, the points of every channel in InfluxDB are
read back and the gaps counted: a gap is time between two consecutive points of a channel beyond 1.5 poll
periods; missing = the gap less one period. Telegraf's persistent MQTT session and its output buffer close
(a) and (c); the device services' outbox closes (b): they keep every metrics line (with its own timestamp)
on disk while the broker is away and publish the backlog in order once it is back.

(b) stops the broker with SIGTERM, as an operator, systemd (`systemctl stop`) or docker (`docker stop`)
does: Mosquitto then writes its persistence file, so Telegraf's persistent session (its subscription, and
the messages queued for it) is there again when the broker comes back, and the backlog the services publish
at once after their reconnect is queued for Telegraf even before Telegraf itself has reconnected.
--broker-kill sends SIGKILL instead (a crash): Mosquitto keeps only what its last autosave (every 60 s,
mosquitto.conf `autosave_interval`) wrote. In this benchmark the broker has run for less than 60 s when it
is killed, so Telegraf's session is lost with it, and whether the services' backlog reaches Telegraf is a
race: what they publish after their reconnect but before Telegraf has subscribed again goes to nobody (in
the runs so far Telegraf was back first: nothing lost, but nothing guarantees it). A broker that has run
for a minute has autosaved Telegraf's subscription, so its restart queues the backlog for Telegraf again;
it loses only the messages it had queued since its last save, and the services' backlog is not among them
(they publish it after the restart). SIGTERM is what the figure uses: it is how the broker is stopped on
purpose (maintenance, an upgrade), and it makes the result independent of that race.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, report, wait_until

sys.path.insert(0, str(REPO))
from tests.archive.influx2 import series
from tests.archive.pipeline import DB, Pipeline, archive_pipeline

READINGS = {"supply": "vmon", "environment": "temperature", "chiller": "temperature"}
SETTLE = 12.0  # s after an outage before its window closes: Telegraf flushes every 5 s


def gaps(pipe: Pipeline, start_ms: int, end_ms: int) -> dict[str, float]:
    """Missing seconds per channel between start and end, from the points InfluxDB holds."""
    periods = {dev: float(d.get("poll_period", 1.0)) for dev, d in pipe.stack.config["devices"].items()}
    window = (end_ms - start_ms) / 1000
    # a channel without a single point in the window lost all of it
    missing: dict[str, float] = {
        f"{dev}.{ch}": round(window - periods[dev], 1)
        for dev, d in pipe.stack.config["devices"].items()
        for ch in d["channels"]
    }
    for measurement, field in READINGS.items():
        q = (
            f'SELECT "{field}" FROM "{measurement}" WHERE time >= {start_ms}ms AND time < {end_ms}ms '
            'GROUP BY "device", "channel"'
        )
        for s in series(pipe.influx.query(q, DB)):
            dev, ch = s["tags"]["device"], s["tags"]["channel"]
            times = [row[0] / 1000 for row in s["values"]]
            period = periods[dev]
            edges = [start_ms / 1000, *times, end_ms / 1000]
            lost = sum(b - a - period for a, b in zip(edges, edges[1:], strict=False) if b - a > 1.5 * period)
            missing[f"{dev}.{ch}"] = round(lost, 1)
    return missing


def outage(pipe: Pipeline, name: str, action, args) -> dict:
    time.sleep(5)  # steady state before
    start_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    action()
    down = time.monotonic() - t0
    time.sleep(SETTLE)
    end_ms = int(time.time() * 1000) - 3000  # the newest seconds may still be in Telegraf's buffer
    time.sleep(6)
    missing = gaps(pipe, start_ms, end_ms)
    periods = {dev: float(d.get("poll_period", 1.0)) for dev, d in pipe.stack.config["devices"].items()}
    points_lost = sum(round(v / periods[ch.split(".")[0]]) for ch, v in missing.items())
    worst = max(missing.values(), default=0.0)
    lossy = {k: v for k, v in missing.items() if v > 0}
    print(
        f"{name}: outage {down:.1f} s; {len(missing)} channels, worst {worst:.1f} s missing, {points_lost} points lost",
        flush=True,
    )
    return {
        "outage_s": round(down, 1),
        "channels": len(missing),
        "channels_with_gaps": len(lossy),
        "worst_missing_s": worst,
        "total_missing_s": round(sum(missing.values()), 1),
        "points_lost": points_lost,  # the missing seconds in poll periods, over all channels
        "missing_by_channel_s": lossy,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage", type=float, default=30.0, help="broker and InfluxDB outage (s, default 30)")
    ap.add_argument(
        "--broker-kill", action="store_true", help="stop the broker with SIGKILL (a crash) instead of SIGTERM"
    )
    args = ap.parse_args()
    results = {}

    def tweak(c: dict) -> None:
        c["supervisor"].update(backoff_initial=args.outage, backoff_max=args.outage)

    with tempfile.TemporaryDirectory() as tmp, archive_pipeline(Path(tmp), tweak) as pipe:
        time.sleep(15)  # every channel archived for a while

        def restart_telegraf() -> None:
            pipe.telegraf.stop()
            time.sleep(5)
            pipe.telegraf.start()

        def restart_broker() -> None:
            from slowctl.stack.supervisor import port_open

            os.kill(pipe.stack.pids()["broker"], signal.SIGKILL if args.broker_kill else signal.SIGTERM)
            wait_until(lambda: not port_open("127.0.0.1", pipe.stack.port), 5, what="the broker to stop")
            wait_until(lambda: port_open("127.0.0.1", pipe.stack.port), args.outage + 15, 0.05, "the broker back")

        def stop_influxdb() -> None:
            pipe.influx.stop()
            time.sleep(args.outage)
            pipe.influx.start()

        results["telegraf_restart"] = outage(pipe, "telegraf restart", restart_telegraf, args)
        results["broker_restart"] = outage(pipe, "broker restart", restart_broker, args)
        results["broker_restart"]["signal"] = "SIGKILL" if args.broker_kill else "SIGTERM"
        results["influxdb_stopped"] = outage(pipe, "influxdb stopped", stop_influxdb, args)
        errors = pipe.telegraf.errors()
    report(
        "archive_loss_broker_kill" if args.broker_kill else "archive_loss",
        {
            "what": "dummy stack (7 devices, 1 Hz, chiller 2 s) -> real Telegraf (telegraf.conf) -> real InfluxDB 2; "
            "per outage, the seconds of readings missing in InfluxDB per channel (gaps beyond 1.5 poll periods)",
            "outage_s": args.outage,
            **results,
            "telegraf_errors_logged": len(errors),
            "target": "nothing missing after any of the three (broker stopped by SIGTERM)",
        },
    )


if __name__ == "__main__":
    main()
