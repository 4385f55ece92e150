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

from slowctl.config import ConfigError, load_config

DEFAULT_CONFIG = "config/bench.yaml"


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir)


def cmd_up(args: argparse.Namespace) -> int:
    from slowctl.stack import NativeStack, StackError

    stack = load_config(args.config)
    raw = yaml.safe_load(Path(args.config).read_text())
    state_dir = Path(args.state_dir) if args.state_dir else stack.resolved_dir(Path.cwd())
    native = NativeStack(stack, raw, Path(args.config).resolve(), state_dir, dummy=args.dummy)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: native.stop_event.set())
    try:
        return native.up()
    except StackError as exc:
        print(f"slowctl up: {exc}", file=sys.stderr)
        return 1


def cmd_run(args: argparse.Namespace) -> int:
    from slowctl.mqtt import Endpoint
    from slowctl.service import DeviceService

    stack = load_config(args.config)
    if args.device not in stack.devices:
        print(f"slowctl run: device {args.device!r} is not in {args.config} "
              f"(configured: {', '.join(stack.devices)})", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.device} %(levelname)s %(message)s")
    restarts = int(os.environ.get("SLOWCTL_RESTARTS", "0") or 0)
    service = DeviceService(args.device, stack, Endpoint.from_config(stack.mqtt), restarts=restarts)
    return service.run()


def cmd_check(args: argparse.Namespace) -> int:
    stack = load_config(args.file)
    print(f"{args.file}: ok ({len(stack.devices)} devices: {', '.join(stack.devices)})")
    return 0


def _endpoint(args: argparse.Namespace, role: str):
    from slowctl.client import resolve_endpoint

    return resolve_endpoint(_state_dir(args), role)


def cmd_env(args: argparse.Namespace) -> int:
    from slowctl.client import env_exports, stack_endpoint

    endpoint, root = stack_endpoint(_state_dir(args), args.role)
    print(env_exports(endpoint, root))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from slowctl.client import format_table, status_rows

    endpoint, root = _endpoint(args, "viewer")
    rows = status_rows(endpoint, root)
    if not rows:
        print("no devices have announced themselves on the broker")
        return 1
    print(format_table(rows))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from slowctl.client import get_status

    endpoint, root = _endpoint(args, "viewer")
    print(json.dumps(get_status(endpoint, root, args.device), indent=2))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    from slowctl.client import send_command

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

    def client_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--state-dir", default=".slowctl",
                        help="native stack state directory (default .slowctl); SLOWCTL_MQTT_* env vars win")

    sp = sub.add_parser("up", help="run the whole stack natively in the foreground")
    sp.add_argument("--dummy", action="store_true", help="start a simulator for each device and use it")
    sp.add_argument("--config", default=DEFAULT_CONFIG, help=f"stack config (default {DEFAULT_CONFIG})")
    sp.add_argument("--state-dir", default=None, help="state directory (default: state_dir of the config)")
    sp.set_defaults(func=cmd_up)

    sp = sub.add_parser("run", help="run one device service (what a container runs)")
    sp.add_argument("device")
    sp.add_argument("--config", required=True)
    sp.set_defaults(func=cmd_run)

    # listed for --help only: main() hands `slowctl sim ...` to the simulator CLI untouched
    sub.add_parser("sim", help="run one instrument simulator (slowctl sim --help)", add_help=False)

    sp = sub.add_parser("status", help="table of every device: availability, state, age, polls, errors")
    client_opts(sp)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("get", help="print a device's status")
    sp.add_argument("device")
    client_opts(sp)
    sp.set_defaults(func=cmd_get)

    sp = sub.add_parser("set", help="send a command and print the reply (exit 1 when refused)")
    sp.add_argument("device")
    sp.add_argument("channel", type=int)
    sp.add_argument("action", help="on, off, vset, iset, rampup, rampdown, clear")
    sp.add_argument("value", nargs="?")
    client_opts(sp)
    sp.set_defaults(func=cmd_set)

    sp = sub.add_parser("check", help="validate a stack config; prints every error with its key path")
    sp.add_argument("file")
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("env", help="print export lines for the running native stack's broker")
    sp.add_argument("--role", default="operator", help="viewer, operator, nodered, telegraf or a device id")
    client_opts(sp)
    sp.set_defaults(func=cmd_env)
    return p


def main(argv: list[str] | None = None) -> int:
    from slowctl.client import ClientError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:
        from slowctl_dummy.cli import main as sim_main

        return sim_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command not in ("run", "up"):
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
