"""Command line: run one simulator until SIGTERM/SIGINT.

``slowctl sim`` delegates here; ``python -m slowctl_dummy`` does the same.
"""

from __future__ import annotations

import argparse
import inspect
import signal
import sys
import threading
from types import FrameType
from typing import Any

import yaml

from .scenario import ScenarioError, bundled_scenarios, load_scenario
from .server import SimulatorServer
from .sims import SIMULATORS

EPILOG = """\
examples:
  slowctl sim caen-n1470 --tcp 127.0.0.1:1470 --scenario hv-trip
  slowctl sim hmp4040 --tcp 0.0.0.0:5025 --pty --baud 9600
  slowctl sim climate --tcp 127.0.0.1:5000 --channels 4 --seed 1
  slowctl sim iseg-shr --tcp 127.0.0.1:10001 --option echo=false

--scenario takes a YAML file or the name of a bundled scenario: {bundled}
"""


class UsageError(Exception):
    pass


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (port 0..65535), got {text!r}")
    return host, int(port)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _parser(prog: str) -> argparse.ArgumentParser:
    names = ", ".join(n.removesuffix(".yaml") for n in bundled_scenarios())
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve a simulated instrument over TCP (and optionally a pty).",
        epilog=EPILOG.format(bundled=names),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", metavar="MODEL", choices=sorted(SIMULATORS), help="one of: " + ", ".join(sorted(SIMULATORS))
    )
    p.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        type=_address,
        required=True,
        help="TCP address to listen on (port 0 = any free port)",
    )
    p.add_argument("--pty", action="store_true", help="also serve a pseudo-terminal (serial port)")
    p.add_argument("--scenario", metavar="FILE", help="YAML file or bundled scenario name")
    p.add_argument("--baud", metavar="N", type=_positive, help="emulate the serial line rate (8N1)")
    p.add_argument("--channels", metavar="N", type=_positive, help="number of channels / sensors")
    p.add_argument("--board", metavar="N", type=int, help="CAEN board address 0..31 (default 0)")
    p.add_argument("--seed", metavar="N", type=int, help="random seed for noise (default: random)")
    p.add_argument(
        "--option",
        metavar="KEY=VALUE",
        action="append",
        type=_option,
        default=[],
        help="a keyword option of the simulator (repeatable), e.g. echo=false, variant=2400",
    )
    return p


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed if isinstance(parsed, (bool, int, float)) else value


def _instrument(args: argparse.Namespace) -> Any:
    cls = SIMULATORS[args.model]
    kwargs: dict[str, Any] = {"channels": args.channels, "seed": args.seed}
    if args.board is not None:
        if args.model != "caen-n1470":
            raise UsageError(f"--board: only valid for caen-n1470, not {args.model}")
        kwargs["board"] = args.board
    accepted = inspect.signature(cls.__init__).parameters
    for key, value in args.option:
        if key not in accepted or key in ("self", "channels", "seed", "clock", "board"):
            raise UsageError(f"--option {key}: not an option of {args.model}")
        kwargs[key] = value
    try:
        inst = cls(**kwargs)
    except ValueError as exc:  # e.g. "channels: 9 out of range for hmp4040 (...)"
        raise UsageError(f"--{exc}") from None
    if args.scenario:
        events = load_scenario(args.scenario, inst)
        if not events:
            print(f"warning: scenario {args.scenario} has no events for {args.model}", file=sys.stderr)
        inst.schedule(events)
    return inst


def main(argv: list[str] | None = None, *, prog: str = "slowctl sim") -> int:
    """Run a simulator; returns the exit code (0 on signal, 2 on bad usage)."""
    parser = _parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    try:
        inst = _instrument(args)
        server = SimulatorServer(inst, host=args.tcp[0], port=args.tcp[1], pty=args.pty, baud=args.baud)
        server.start()
    except (UsageError, ScenarioError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: error: cannot listen on {args.tcp[0]}:{args.tcp[1]}: {exc.strerror}", file=sys.stderr)
        return 2

    print(f"listening on {args.tcp[0]}:{server.port}")
    if server.pty_path:
        print(f"pty: {server.pty_path}")
    sys.stdout.flush()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            server.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
