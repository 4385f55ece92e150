"""`slowctl procedure ...` and `slowctl procedure-runner`: the command line of procedures."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slowctl.client.api import ClientError
from slowctl.client.client import Client, Refused
from slowctl.config import load_config
from slowctl.procedures.params import ParamError


def add_parsers(sub: Any, client_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    sp = sub.add_parser("procedure-runner", help="the procedure runner service (docs/procedures.md)")
    sp.add_argument("--config", required=True)
    sp.add_argument("--state-dir", help="its journal goes to <dir>/procedures (default: $SLOWCTL_STATE_DIR)")
    sp.add_argument("--base", help="directory the config's procedures.paths are relative to (default: the config's)")
    sp.set_defaults(func=cmd_runner)

    sp = sub.add_parser("procedure", help="run, abort, list, show and export procedures (docs/procedures.md)")
    verbs = sp.add_subparsers(dest="verb", required=True)
    v = verbs.add_parser("run", help="start a procedure and follow it (Ctrl-C aborts it)")
    v.add_argument("name")
    v.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE", help="repeat for each")
    v.add_argument("--detach", action="store_true", help="print the run id and return; the run goes on")
    v.add_argument("--timeout", type=float, default=None, help="give up following after this many seconds")
    client_opts(v)
    v = verbs.add_parser("abort", help="abort a run: ramp down to the safe voltage, then stop")
    v.add_argument("run")
    client_opts(v)
    v = verbs.add_parser("available", help="the procedures the runner offers, with their parameters")
    v.add_argument("name", nargs="?")
    client_opts(v)
    v = verbs.add_parser("list", help="runs in the record, newest last")
    v.add_argument("--procedure")
    v.add_argument("--limit", type=int, default=50)
    v.add_argument("--json", action="store_true")
    client_opts(v)
    v = verbs.add_parser("show", help="one run: parameters, operator, instruments, outcome, points")
    v.add_argument("run", help="its id, or a unique beginning of it")
    v.add_argument("--json", action="store_true")
    client_opts(v)
    v = verbs.add_parser("export", help="one run's data as CSV, JSON or a plot")
    v.add_argument("run")
    fmt = v.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--csv", action="store_true")
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--png", action="store_true")
    v.add_argument("--out", "-o", help="file (default: stdout for CSV and JSON, <run>.png for --png)")
    client_opts(v)
    sp.set_defaults(func=cmd_procedure)


def cmd_runner(args: argparse.Namespace) -> int:
    from slowctl.mqtt import Endpoint
    from slowctl.procedures.runner import Runner
    from slowctl.records.docstore import DocstoreError, MongoSettings

    stack = load_config(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s procedures %(levelname)s %(message)s")
    mongo = None
    if os.environ.get("SLOWCTL_MONGO_USER"):
        try:
            mongo = MongoSettings.from_env()
        except DocstoreError as exc:
            print(f"slowctl procedure-runner: {exc}", file=sys.stderr)
            return 2
    state_dir = Path(args.state_dir or os.environ.get("SLOWCTL_STATE_DIR") or stack.resolved_dir(Path.cwd()))
    base = Path(args.base) if args.base else Path(args.config).resolve().parent
    dirs = [p if p.is_absolute() else base / p for p in map(Path, stack.procedures.paths)]
    runner = Runner(stack, Endpoint.from_config(stack.mqtt), mongo, state_dir, dirs)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: runner.stop())
    return runner.run()


def _client(args: argparse.Namespace) -> Client:
    return Client(state_dir=args.state_dir, role="operator")


def parse_params(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ParamError(f"--param {item!r}: expected NAME=VALUE")
        if name.strip() in out:
            raise ParamError(f"--param {name.strip()}: given twice")
        out[name.strip()] = value.strip()
    return out


def cmd_procedure(args: argparse.Namespace) -> int:
    if args.verb in ("list", "show", "export"):
        return _from_record(args)
    with _client(args) as client:
        if args.verb == "available":
            return _available(client, args.name)
        if args.verb == "abort":
            try:
                client.abort_procedure(args.run)
            except Refused as exc:
                print(f"slowctl procedure abort: refused: {exc.reason}", file=sys.stderr)
                return 2
            print(f"abort of {args.run} requested: ramping down to the safe voltage")
            return 0
        return _run(client, args)


def _available(client: Client, name: str | None) -> int:
    catalog = client.procedures()
    for problem in catalog.get("problems", []):
        print(f"problem: {problem}", file=sys.stderr)
    procs = [p for p in catalog["procedures"] if name in (None, p["name"])]
    if not procs:
        known = ", ".join(p["name"] for p in catalog["procedures"])
        print(f"slowctl procedure available: no procedure {name!r} (known: {known})", file=sys.stderr)
        return 2
    for p in procs:
        print(f"{p['name']}: {p['title']}")
        if name:
            print(f"  {p['doc']}")
        for pname, d in p["params"].items():
            unit = f" {d['unit']}" if d.get("unit") else ""
            if d["required"]:
                default = "required"
            else:
                default = "default none" if d["default"] is None else f"default {d['default']}{unit}"
            print(f"    {pname:<15} {d['kind']:<9} {default:<24} {d.get('doc', '')}")
    return 0


def _run(client: Client, args: argparse.Namespace) -> int:
    try:
        params = parse_params(args.param)
        run = client.start_procedure(args.name, params)
    except ParamError as exc:
        print(f"slowctl procedure run: {exc}", file=sys.stderr)
        return 2
    except Refused as exc:
        print(f"slowctl procedure run: refused: {exc.reason}", file=sys.stderr)
        return 2
    print(f"run {run} started")
    if args.detach:
        return 0
    aborting = threading.Event()

    def on_interrupt(*_: object) -> None:
        if aborting.is_set():
            raise KeyboardInterrupt
        aborting.set()
        print("\naborting (Ctrl-C again leaves it running) ...", file=sys.stderr)
        try:
            client.abort_procedure(run)
        except ClientError as exc:
            print(f"abort: {exc}", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    last = [""]

    def show(p: dict[str, Any]) -> None:
        line = f"[{p.get('state')}]"
        if p.get("percent") is not None:
            line += f" {p['percent']:5.1f} %"
        if p.get("eta") is not None and p.get("state") == "running":
            line += f" eta {p['eta']:.0f} s"
        if p.get("message"):
            line += f"  {p['message']}"
        if line != last[0]:
            print(line, flush=True)
            last[0] = line

    try:
        final = client.wait_for_run(run, args.timeout, on_progress=show)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(f"run {run} {final['state']}" + (f": {final['reason']}" if final.get("reason") else ""))
    for note in final.get("notes") or []:
        print(f"  {note}")
    return 0 if final["state"] in ("completed", "stopped") else 1


def _from_record(args: argparse.Namespace) -> int:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from slowctl.procedures import export
    from slowctl.procedures.runner import load_catalog
    from slowctl.records.docstore import DocstoreError
    from slowctl.stack.records import record_settings

    try:
        settings = record_settings(Path(args.state_dir) if args.state_dir else None)
    except DocstoreError as exc:
        raise ClientError(str(exc)) from None
    mongo: MongoClient = MongoClient(settings.uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    try:
        db = mongo[settings.database]
        if args.verb == "list":
            rows = export.runs(db, args.limit, args.procedure)
            for doc in rows:
                print(json.dumps(doc, default=str) if args.json else export.run_line(doc))
            if not rows:
                print("no runs recorded", file=sys.stderr)
            return 0
        doc = export.find_run(db, args.run)
        pts = export.points(db, doc["_id"])
        if args.verb == "show":
            print(export.as_json(doc, pts) if args.json else export.describe(doc, pts))
            return 0
        if args.png:
            out = Path(args.out or f"{doc['_id']}.png")
            export.plot_png(doc, pts, load_catalog()[0], out)
            print(f"{out}: {len(pts)} points")
            return 0
        text = export.as_csv(pts) if args.csv else export.as_json(doc, pts)
        if args.out:
            Path(args.out).write_text(text)
            print(f"{args.out}: {len(pts)} points")
        else:
            sys.stdout.write(text)
        return 0
    except export.NotFound as exc:
        print(f"slowctl procedure {args.verb}: {exc}", file=sys.stderr)
        return 2
    except PyMongoError as exc:
        where = f"{settings.host}:{settings.port}"
        print(
            f"slowctl procedure: the record at {where} cannot be read: {str(exc).split(', Timeout')[0]}",
            file=sys.stderr,
        )
        return 1
    finally:
        mongo.close()
