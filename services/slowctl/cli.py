"""The `slowctl` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

import yaml

from slowctl.config import ConfigError, StackConfig, load_config

DEFAULT_CONFIG = "config/bench.yaml"


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir)


def cmd_up(args: argparse.Namespace) -> int:
    from slowctl.stack.native import NativeStack, StackError

    stack = load_config(args.config)
    raw = yaml.safe_load(Path(args.config).read_text())
    state_dir = Path(args.state_dir) if args.state_dir else stack.resolved_dir(Path.cwd())
    native = NativeStack(stack, raw, Path(args.config).resolve(), state_dir, dummy=args.dummy, ui=not args.no_ui)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: native.stop_event.set())
    try:
        return native.up()
    except StackError as exc:
        print(f"slowctl up: {exc}", file=sys.stderr)
        return 1


def _service_state_dir(args: argparse.Namespace, stack: StackConfig) -> Path:
    """Where a service keeps what must survive its restart (latched alarms, the alarm list)."""
    return Path(args.state_dir or os.environ.get("SLOWCTL_STATE_DIR") or stack.resolved_dir(Path.cwd()) / "devices")


def cmd_interlock(args: argparse.Namespace) -> int:
    from slowctl.interlock.service import InterlockService
    from slowctl.mqtt import Endpoint

    stack = load_config(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s interlock %(levelname)s %(message)s")
    service = InterlockService(stack, Endpoint.from_config(stack.mqtt), _service_state_dir(args, stack))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop_event.set())
    return service.run()


def cmd_influx_init(args: argparse.Namespace) -> int:
    import time

    from slowctl.stack.influx import InfluxError, InfluxSetup, init, request

    try:
        setup = InfluxSetup.from_env(args.url)
        deadline = time.monotonic() + args.wait
        while True:  # InfluxDB may still be starting (compose: right after its container)
            try:
                request(f"{setup.url}/health", None)
                break
            except InfluxError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        done = init(setup, Path(args.token_dir))
    except InfluxError as exc:
        print(f"slowctl influx-init: {exc}", file=sys.stderr)
        return 1
    for line in done or ["nothing to do: set up, mapped, tokens valid"]:
        print(f"influx-init: {line}")
    return 0


def cmd_grafana_alerts(args: argparse.Namespace) -> int:
    from slowctl.stack.grafana import render

    text = render(load_config(args.config), args.config)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_actions(args: argparse.Namespace) -> int:
    from slowctl.device.capabilities import actions_table

    print(actions_table())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from slowctl.device.adapter import DeviceService
    from slowctl.mqtt import Endpoint

    stack = load_config(args.config)
    if args.device not in stack.devices:
        print(
            f"slowctl run: device {args.device!r} is not in {args.config} (configured: {', '.join(stack.devices)})",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.device} %(levelname)s %(message)s")
    if args.simulator:
        sim = stack.devices[args.device].simulator
        if sim is None:
            print(
                f"slowctl run: --simulator needs devices.{args.device}.simulator.port in {args.config}", file=sys.stderr
            )
            return 2
        dev = stack.devices[args.device].model_copy(update={"address": f"socket://{args.simulator}:{sim.port}"})
        stack = stack.model_copy(update={"devices": {**stack.devices, args.device: dev}})
    restarts = int(os.environ.get("SLOWCTL_RESTARTS", "0") or 0)
    state_dir = _service_state_dir(args, stack)
    service = DeviceService(
        args.device, stack, Endpoint.from_config(stack.mqtt), restarts=restarts, state_dir=state_dir
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop_event.set())
    return service.run()


def cmd_init(args: argparse.Namespace) -> int:
    from slowctl.stack.init import InitError, init

    config = Path(args.config)
    stack = load_config(config)
    if config.resolve().parent != (Path.cwd() / "config").resolve():
        print(f"slowctl init: {config} must be in ./config, which the compose stack mounts", file=sys.stderr)
        return 2
    try:
        added, tls = init(stack, config.name, Path(args.env_file), Path(args.tls_dir), args.hostname)
    except InitError as exc:
        print(f"slowctl init: {exc}", file=sys.stderr)
        return 2
    print(f"{args.env_file}: " + (f"added {', '.join(added)}" if added else "complete, nothing changed"))
    print(f"TLS: CA {tls.ca_cert} (give it to browsers and MQTT clients), server {tls.cert}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from slowctl.stack.native import StackError, simulator_args
    from slowctl_dummy.cli import main as sim_main

    stack = load_config(args.config)
    if args.device not in stack.devices:
        print(f"slowctl simulate: device {args.device!r} is not in {args.config}", file=sys.stderr)
        return 2
    try:
        argv = simulator_args(args.device, stack.devices[args.device], Path(args.config).parent, args.bind)
    except StackError as exc:
        print(f"slowctl simulate: {exc}", file=sys.stderr)
        return 2
    return sim_main(argv)


def cmd_db_check(args: argparse.Namespace) -> int:
    from slowctl.stack.docstore import DocstoreError, MongoSettings, check

    try:
        print(check(MongoSettings.from_env(), timeout=args.timeout))
    except DocstoreError as exc:
        print(f"slowctl db-check: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    from slowctl.device.heartbeat import ENV, check

    path = args.file or os.environ.get(ENV)
    if not path:
        print(f"slowctl healthcheck: no --file and {ENV} is not set", file=sys.stderr)
        return 2
    problem = check(Path(path), args.max_age)
    print(problem or "healthy")
    return 1 if problem else 0


def cmd_nodered_flows(args: argparse.Namespace) -> int:
    from slowctl.stack.nodered import FlowError, write_flows

    stack = load_config(args.config)
    secret = os.environ.get("NODERED_CREDENTIAL_SECRET", "")
    try:
        dropped = write_flows(stack, Path(args.out), secret)
    except FlowError as exc:
        print(f"slowctl nodered-flows: {exc}", file=sys.stderr)
        return 1
    note = f"; removed {len(dropped)} node(s) placed on generated tabs (see {args.out}.bak)" if dropped else ""
    print(f"{args.out}: flows for {len(stack.devices)} devices{note}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    stack = load_config(args.file)
    print(f"{args.file}: ok ({len(stack.devices)} devices: {', '.join(stack.devices)})")
    return 0


def _endpoint(args: argparse.Namespace, role: str):
    from slowctl.client.api import resolve_endpoint

    return resolve_endpoint(_state_dir(args), role)


def cmd_env(args: argparse.Namespace) -> int:
    from slowctl.client.api import env_exports, stack_endpoint

    endpoint, root = stack_endpoint(_state_dir(args), args.role)
    print(env_exports(endpoint, root))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from slowctl.client.api import format_table, status_rows

    endpoint, root = _endpoint(args, "viewer")
    rows, safety = status_rows(endpoint, root)
    if not rows:
        print("no devices have announced themselves on the broker")
        return 1
    print(format_table(rows))
    if safety:
        print(safety)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from slowctl.client.api import get_status

    endpoint, root = _endpoint(args, "viewer")
    print(json.dumps(get_status(endpoint, root, args.device), indent=2))
    return 0


def cmd_off(args: argparse.Namespace) -> int:
    from slowctl.client.api import off_all_hv
    from slowctl.safety.rules import hv_outputs

    stack = load_config(args.config or _state_dir(args) / "stack.yaml")
    outputs = hv_outputs(stack.devices)
    if not outputs:
        print(f"slowctl off: {args.config} has no HV outputs", file=sys.stderr)
        return 2
    endpoint, root = _endpoint(args, "operator")
    rows = off_all_hv(endpoint, root, outputs, kill=args.kill, timeout=args.timeout)
    for r in rows:
        print(f"{r['device']:<10} {r['channel']:>3}  {'ok' if r['ok'] else 'FAILED':<6}  {r['result']}")
    return 0 if all(r["ok"] for r in rows) else 1


def cmd_alarms(args: argparse.Namespace) -> int:
    from slowctl.client.api import alarm_summary, format_alarms

    endpoint, root = _endpoint(args, "viewer")
    summary = alarm_summary(endpoint, root)
    print(json.dumps(summary, indent=2) if args.json else format_alarms(summary))
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    from slowctl.client.api import ack_alarms

    rest = list(args.which)
    channel = int(rest.pop(0)) if rest and rest[0].isdigit() else None
    if len(rest) > 1:
        print("slowctl ack: expected DEVICE [CHANNEL] [KIND]", file=sys.stderr)
        return 2
    endpoint, root = _endpoint(args, "operator")
    by = f"{args.by or os.environ.get('USER') or 'unknown'} ({endpoint.username})"
    reply = ack_alarms(endpoint, root, args.device, channel, rest[0] if rest else None, by)
    if not reply.get("ok"):
        print(f"slowctl ack: refused: {reply.get('error')}", file=sys.stderr)
        return 1
    for a in reply["acked"]:
        where = a["device"] if a["channel"] is None else f"{a['device']}.{a['channel']}"
        print(f"acknowledged {where} {a['kind']}")
    return 0


def cmd_interlocks(args: argparse.Namespace) -> int:
    from slowctl.client.api import clear_interlock, interlock_state

    if args.clear:
        endpoint, root = _endpoint(args, "operator")
        reply = clear_interlock(endpoint, root, args.clear)
        if not reply.get("ok"):
            print(f"slowctl interlocks: refused: {reply.get('error')}", file=sys.stderr)
            return 1
        print(f"interlock {args.clear} cleared")
        return 0
    endpoint, root = _endpoint(args, "viewer")
    state = interlock_state(endpoint, root)
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    for name, rule in state.get("rules", {}).items():
        word = "LATCHED" if rule["latched"] else "ACTIVE" if rule["active"] else "ok"
        print(f"{name:<16} {word:<8} {rule['action']:<11} {','.join(rule['protects'])}: {rule['reason']}")
    if not state.get("rules"):
        print("no interlock rules in this stack's config")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    from slowctl.client.api import send_command

    value = None
    if args.value is not None:
        try:
            value = float(args.value)
        except ValueError:
            value = args.value  # the device explains why it refuses it
    endpoint, root = _endpoint(args, "operator")
    reply = send_command(endpoint, root, args.device, args.channel, args.action, value)
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slowctl", description="Slow control for detector test benches.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def state_dir_opt(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument(
            "--state-dir",
            metavar="DIR",
            help=f"where the service keeps {what} across restarts (default: $SLOWCTL_STATE_DIR, "
            "else <state_dir>/devices of the config, relative to the working directory)",
        )

    def client_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--state-dir",
            default=".slowctl",
            help="native stack state directory (default .slowctl); SLOWCTL_MQTT_* env vars win",
        )

    sp = sub.add_parser("up", help="run the whole stack natively in the foreground")
    sp.add_argument("--dummy", action="store_true", help="start a simulator for each device and use it")
    sp.add_argument("--config", default=DEFAULT_CONFIG, help=f"stack config (default {DEFAULT_CONFIG})")
    sp.add_argument("--state-dir", default=None, help="state directory (default: state_dir of the config)")
    sp.add_argument("--no-ui", action="store_true", help="without the control UI (Node-RED and the gateway)")
    sp.set_defaults(func=cmd_up)

    sp = sub.add_parser("init", help="compose stack: write .env with random secrets and the TLS material")
    sp.add_argument("--config", default=DEFAULT_CONFIG, help=f"stack config in ./config (default {DEFAULT_CONFIG})")
    sp.add_argument("--env-file", default=".env", help="default .env")
    sp.add_argument(
        "--tls-dir",
        default="secrets/tls",
        help="CA and server certificate (default secrets/tls); put your own server.crt/.key there first to use them",
    )
    sp.add_argument("--hostname", help="host name for URLs and the certificate (default: this machine's)")
    sp.set_defaults(func=cmd_init)

    sp = sub.add_parser(
        "interlock", help="the interlock process: evaluates the config's interlock rules; the alarm handler"
    )
    sp.add_argument("--config", required=True)
    state_dir_opt(sp, "the alarm list")
    sp.set_defaults(func=cmd_interlock)

    sp = sub.add_parser(
        "influx-init",
        help="InfluxDB 2: setup, InfluxQL mapping, scoped tokens for Telegraf and Grafana (INFLUXDB_* env)",
    )
    sp.add_argument("--url", required=True, help="InfluxDB, e.g. http://influxdb:8086")
    sp.add_argument("--token-dir", required=True, help="where the `telegraf` and `grafana` token files go")
    sp.add_argument("--wait", type=float, default=60.0, help="seconds to wait for InfluxDB to answer (default 60)")
    sp.set_defaults(func=cmd_influx_init)

    sp = sub.add_parser("grafana-alerts", help="Grafana alert rules from the config's alarm limits (provisioning YAML)")
    sp.add_argument("--config", required=True)
    sp.add_argument("--out", help="write here (grafana/provisioning/alerting/slowctl-alarms.yaml) instead of stdout")
    sp.set_defaults(func=cmd_grafana_alerts)

    sp = sub.add_parser("actions", help="the command actions as declared (the table in docs/mqtt.md)")
    sp.set_defaults(func=cmd_actions)

    sp = sub.add_parser("run", help="run one device service (what a container runs)")
    sp.add_argument("device")
    sp.add_argument("--config", required=True)
    sp.add_argument(
        "--simulator",
        metavar="HOST",
        help="talk to the device's simulator at HOST:<simulator.port> instead of its address",
    )
    state_dir_opt(sp, "latched alarms")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("simulate", help="run the simulator of a device of the config (what a dummy container runs)")
    sp.add_argument("device")
    sp.add_argument("--config", required=True)
    sp.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.set_defaults(func=cmd_simulate)

    # listed for --help only: main() hands `slowctl sim ...` to the simulator CLI untouched
    sub.add_parser("sim", help="run one instrument simulator (slowctl sim --help)", add_help=False)

    sp = sub.add_parser("status", help="table of every device: availability, state, age, polls, errors")
    client_opts(sp)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("get", help="print a device's status")
    sp.add_argument("device")
    client_opts(sp)
    sp.set_defaults(func=cmd_get)

    sp = sub.add_parser(
        "off", help="emergency off: switch off every HV output of the stack (exit 1 unless every one confirmed)"
    )
    sp.add_argument("--all-hv", action="store_true", required=True, help="every HV output (required: say it)")
    sp.add_argument("--kill", action="store_true", help="at once, without a ramp (default: each channel's off)")
    sp.add_argument("--config", help="the stack config (default: the running native stack's, <state-dir>/stack.yaml)")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the replies (default 5)")
    client_opts(sp)
    sp.set_defaults(func=cmd_off)

    sp = sub.add_parser("alarms", help="the active and unacknowledged alarms (the alarm handler's list)")
    sp.add_argument("--json", action="store_true", help="the retained summary as JSON")
    client_opts(sp)
    sp.set_defaults(func=cmd_alarms)

    sp = sub.add_parser("ack", help="acknowledge alarms of a device (a channel, a kind); exit 1 when none matches")
    sp.add_argument("device", help="a device, or `interlock` for interlock alarms")
    sp.add_argument(
        "which",
        nargs="*",
        metavar="[CHANNEL] [KIND]",
        help="only this channel's alarms; only this kind: TRIP, humidity.HIGH, HIGH, OFFLINE, a rule's name",
    )
    sp.add_argument("--by", help="who acknowledges (default: $USER); recorded with the broker user")
    client_opts(sp)
    sp.set_defaults(func=cmd_ack)

    sp = sub.add_parser("interlocks", help="the interlock rules' state; --clear RULE releases a latched rule")
    sp.add_argument("--json", action="store_true", help="the retained state as JSON")
    sp.add_argument("--clear", metavar="RULE", help="clear a latched rule whose condition is gone (operator)")
    client_opts(sp)
    sp.set_defaults(func=cmd_interlocks)

    sp = sub.add_parser("set", help="send a command and print the reply (exit 1 when refused)")
    sp.add_argument("device")
    sp.add_argument("channel", type=int)
    sp.add_argument("action", help="on, off, kill, vset, iset, rampup, rampdown, clear, tset (`slowctl actions`)")
    sp.add_argument("value", nargs="?")
    client_opts(sp)
    sp.set_defaults(func=cmd_set)

    sp = sub.add_parser(
        "db-check", help="check MongoDB as the slowctl user (SLOWCTL_MONGO_HOST, _PORT, _DATABASE, _USER, _PASSWORD)"
    )
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    sp.set_defaults(func=cmd_db_check)

    sp = sub.add_parser("healthcheck", help="container healthcheck of a device service (its heartbeat file)")
    sp.add_argument("--file", help="heartbeat file (default: $SLOWCTL_HEALTH_FILE)")
    sp.add_argument("--max-age", type=float, default=15.0, help="seconds (default 15)")
    sp.set_defaults(func=cmd_healthcheck)

    sp = sub.add_parser(
        "nodered-flows",
        help="write the control UI's Node-RED flows for a config "
        "(keeps the lab's own tabs; NODERED_CREDENTIAL_SECRET from the environment)",
    )
    sp.add_argument("--config", default=DEFAULT_CONFIG, help=f"stack config (default {DEFAULT_CONFIG})")
    sp.add_argument("--out", required=True, help="flows file, e.g. /data/flows.json; flows_cred.json goes beside it")
    sp.set_defaults(func=cmd_nodered_flows)

    sp = sub.add_parser("check", help="validate a stack config; prints every error with its key path")
    sp.add_argument("file")
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("env", help="print export lines for the running native stack's broker")
    sp.add_argument("--role", default="operator", help="viewer, operator, nodered, telegraf or a device id")
    client_opts(sp)
    sp.set_defaults(func=cmd_env)
    return p


def main(argv: list[str] | None = None) -> int:
    from slowctl.client.api import ClientError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:
        from slowctl_dummy.cli import main as sim_main

        return sim_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command not in ("run", "up", "interlock"):
        logging.basicConfig(level=logging.ERROR, format="%(message)s")  # clients report errors themselves
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"{exc.source}: invalid config", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"slowctl {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
