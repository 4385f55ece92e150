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


def _given_state_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.state_dir) if args.state_dir else None


def _state_dir(args: argparse.Namespace) -> Path:
    """The running native stack's state directory: --state-dir, ./.slowctl, else the one registered."""
    from slowctl import running
    from slowctl.client.api import ClientError

    try:
        return running.find(_given_state_dir(args))
    except running.NotRunning as exc:
        raise ClientError(str(exc)) from None


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


def cmd_recorder(args: argparse.Namespace) -> int:
    from slowctl.mqtt import Endpoint
    from slowctl.records.docstore import DocstoreError, MongoSettings
    from slowctl.records.recorder import Recorder

    stack = load_config(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s recorder %(levelname)s %(message)s")
    try:
        mongo = MongoSettings.from_env()
    except DocstoreError as exc:
        print(f"slowctl recorder: {exc}", file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir or os.environ.get("SLOWCTL_STATE_DIR") or stack.resolved_dir(Path.cwd()))
    recorder = Recorder(stack, Endpoint.from_config(stack.mqtt), mongo, state_dir)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: recorder.stop_event.set())
    return recorder.run()


def _record_settings(args: argparse.Namespace):
    from slowctl.client.api import ClientError
    from slowctl.records.docstore import DocstoreError
    from slowctl.stack.records import record_settings

    try:
        return record_settings(_given_state_dir(args))
    except DocstoreError as exc:
        raise ClientError(str(exc)) from None


def cmd_log(args: argparse.Namespace) -> int:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from slowctl.records import query

    try:
        f = query.Filter(
            args.device,
            args.channel,
            args.user,
            query.parse_time(args.since) if args.since else None,
            query.parse_time(args.until) if args.until else None,
            args.kind,
        )
    except query.QueryError as exc:
        print(f"slowctl log: {exc}", file=sys.stderr)
        return 2
    settings = _record_settings(args)
    fmt = query.as_json if args.json else query.as_csv if args.csv else query.as_text
    client: MongoClient = MongoClient(settings.uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    try:
        db = client[settings.database]
        rows = query.entries(db, f, args.limit)
        if args.csv:
            print(query.csv_header())
        for r in rows:
            print(fmt(r))
        if not rows and not args.json and not args.csv:
            print("nothing recorded matches", file=sys.stderr)
        if args.follow:
            for r in query.follow(db, f, rows, 1.0, lambda: False):
                print(fmt(r), flush=True)
    except PyMongoError as exc:
        where = f"{settings.host}:{settings.port}"
        print(f"slowctl log: the record at {where} cannot be read: {str(exc).split(', Timeout')[0]}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def cmd_db_check(args: argparse.Namespace) -> int:
    from slowctl.records.docstore import DocstoreError, MongoSettings, check

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

    return resolve_endpoint(_given_state_dir(args), role)


def cmd_env(args: argparse.Namespace) -> int:
    from slowctl.client.api import env_exports, stack_endpoint

    endpoint, root = stack_endpoint(_given_state_dir(args), args.role)
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


def _client(args: argparse.Namespace, role: str):
    from slowctl.client.client import Client

    return Client(state_dir=args.state_dir, role=role)


def cmd_get(args: argparse.Namespace) -> int:
    from slowctl.client.api import format_status

    with _client(args, "viewer") as client:
        status = client.status(args.device)
        print(json.dumps(status, indent=2) if args.json else format_status(status, client.capabilities(args.device)))
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
    reply = ack_alarms(endpoint, root, args.device, channel, rest[0] if rest else None)
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
    from slowctl.client.api import format_reply
    from slowctl.client.client import Refused

    value = None
    if args.value is not None:
        try:
            value = float(args.value)
        except ValueError:
            value = args.value  # the device explains why it refuses it
    with _client(args, "operator") as client:
        try:
            reply = client.set(args.device, args.channel, args.action, value)
        except Refused as exc:
            reply = exc.reply
        print(json.dumps(reply) if args.json else format_reply(args.device, reply, client.capabilities(args.device)))
    return 0 if reply.get("ok") else 1


COMPOSE_ACCOUNTS = Path("secrets/accounts")
COMPOSE_RELOAD = [
    "docker",
    "compose",
    "exec",
    "-T",
    "mosquitto",
    "sh",
    "/mosquitto/config/docker-entrypoint.sh",
    "reload",
]


def _password(args: argparse.Namespace) -> str:
    """From stdin (--password-stdin, one line) or typed twice at the terminal; never from the command line."""
    import getpass

    from slowctl.stack.accounts import AccountError

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ; nothing changed")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    from slowctl.stack.accounts import AccountError, Accounts
    from slowctl.stack.broker import accounts_dir, reload_broker
    from slowctl.stack.init import read_env

    if args.compose:
        stack = load_config(args.config or Path("config") / read_env(Path(".env")).get("SLOWCTL_CONFIG", "bench.yaml"))
        directory = COMPOSE_ACCOUNTS
    else:
        running = Path(args.state_dir or ".slowctl") / "stack.yaml"
        stack = load_config(args.config or (running if running.exists() else DEFAULT_CONFIG))
        state_dir = Path(args.state_dir) if args.state_dir else stack.resolved_dir(Path.cwd())
        directory = accounts_dir(state_dir)
    try:
        accounts = Accounts(directory, list(stack.devices), stack.mqtt.topic_root, containers=args.compose)
        if args.action == "list":
            for a in sorted(accounts.users.values(), key=lambda a: a.name):
                print(f"{a.name:<20} {a.role:<9} password changed {a.changed}")
            if not accounts.users:
                print(f"no accounts in {directory} (add one: slowctl user add NAME --role operator)")
            return 0
        if not args.name:
            raise AccountError(f"slowctl user {args.action} needs a user name")
        if args.action == "add":
            if not args.role:
                raise AccountError("--role is needed: viewer or operator")
            accounts.add(args.name, args.role, _password(args))
            done = f"added {args.name} ({args.role})"
        elif args.action == "passwd":
            accounts.passwd(args.name, _password(args))
            done = f"password of {args.name} changed"
        elif args.action == "role":
            accounts.set_role(args.name, args.role or "")
            done = f"{args.name} is now {args.role}"
        else:
            accounts.remove(args.name)
            done = f"removed {args.name}"
    except AccountError as exc:
        print(f"slowctl user: {exc}", file=sys.stderr)
        return 2
    if args.compose:
        import shutil
        import subprocess

        if shutil.which("docker") and subprocess.run(COMPOSE_RELOAD).returncode == 0:
            print(f"{done}; the broker has reloaded its accounts")
        else:
            print(f"{done} in {directory}; make the broker reload them: {' '.join(COMPOSE_RELOAD)}")
        return 0
    try:
        live = reload_broker(stack, state_dir)
    except ValueError as exc:
        print(f"slowctl user: {exc}", file=sys.stderr)
        return 2
    print(f"{done}; " + ("the broker has reloaded its accounts" if live else "used from the next `slowctl up`"))
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


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
            metavar="DIR",
            help="the native stack's state directory (default: ./.slowctl when its stack runs, else the running "
            "stack registered by slowctl up); SLOWCTL_MQTT_* env vars win",
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

    sp = sub.add_parser("get", help="print a device's status (HV currents in µA, as in the control UI)")
    sp.add_argument("device")
    sp.add_argument("--json", action="store_true", help="the status as published (SI units: A, V)")
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
    client_opts(sp)
    sp.set_defaults(func=cmd_ack)

    sp = sub.add_parser("interlocks", help="the interlock rules' state; --clear RULE releases a latched rule")
    sp.add_argument("--json", action="store_true", help="the retained state as JSON")
    sp.add_argument("--clear", metavar="RULE", help="clear a latched rule whose condition is gone (operator)")
    client_opts(sp)
    sp.set_defaults(func=cmd_interlocks)

    from slowctl.device.capabilities import ACTIONS

    sp = sub.add_parser("set", help="send a command and print the reply, HV currents in µA (exit 1 when refused)")
    sp.add_argument("device")
    sp.add_argument("channel", type=int)
    sp.add_argument("action", choices=list(ACTIONS), metavar="ACTION", help=f"{', '.join(ACTIONS)} (`slowctl actions`)")
    sp.add_argument("value", nargs="?", help="in SI units, as `slowctl actions` says (iset: A)")
    sp.add_argument("--json", action="store_true", help="the reply as sent (SI units)")
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

    sp = sub.add_parser("recorder", help="the recorder: commands, replies and events into MongoDB (SLOWCTL_MONGO_*)")
    sp.add_argument("--config", required=True)
    sp.add_argument(
        "--state-dir", help="its journal goes to <dir>/recorder (default: $SLOWCTL_STATE_DIR, else the config's)"
    )
    sp.set_defaults(func=cmd_recorder)

    sp = sub.add_parser("log", help="who did what and what happened: commands and events, newest last")
    sp.add_argument("--device")
    sp.add_argument("--channel", type=int)
    sp.add_argument("--user", help="a login: their commands, and those a front-end made for them")
    sp.add_argument("--since", help="ISO 8601 time or an age: 30s, 10m, 2h, 7d")
    sp.add_argument("--until", help="ISO 8601 time or an age")
    sp.add_argument("--kind", help="'command', or an event kind (trip, interlock_action, alarm_raised ...)")
    sp.add_argument("--limit", type=_positive, default=200, help="at most this many, the newest (default 200)")
    out = sp.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    out.add_argument("--csv", action="store_true")
    sp.add_argument("--follow", "-f", action="store_true", help="then print new entries as they come")
    client_opts(sp)
    sp.set_defaults(func=cmd_log)

    from slowctl.procedures.cli import add_parsers

    add_parsers(sub, client_opts)

    sp = sub.add_parser("user", help="people's accounts: add, list, passwd, role, remove (docs/records.md)")
    sp.add_argument("action", choices=["add", "list", "passwd", "role", "remove"])
    sp.add_argument("name", nargs="?")
    sp.add_argument("--role", help="viewer (sees) or operator (sees and commands)")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")
    sp.add_argument("--compose", action="store_true", help="the compose stack's accounts (./secrets/accounts)")
    sp.add_argument("--config", help="stack config (default: the running native stack's, else config/bench.yaml)")
    sp.add_argument("--state-dir", help="native stack state directory (default: state_dir of the config)")
    sp.set_defaults(func=cmd_user)

    sp = sub.add_parser("check", help="validate a stack config; prints every error with its key path")
    sp.add_argument("file")
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("env", help="print export lines for the running native stack's broker")
    sp.add_argument(
        "--role",
        default="operator",
        help="an MQTT login of the stack: viewer, operator, nodered, telegraf, interlock, recorder, procedures "
        "or a device id (default operator)",
    )
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
    if args.command not in ("run", "up", "interlock", "recorder", "procedure-runner"):
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
    except BrokenPipeError:  # `slowctl log | head`: the reader has gone, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
