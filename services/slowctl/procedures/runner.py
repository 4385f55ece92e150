"""The procedure runner: starts procedures on request, one run per channel, and keeps their record.

Commands (JSON, on <root>/procedures/by/<login>/cmd; front-ends add "for"):
  {"action": "start", "procedure": "iv_scan", "params": {...}, "id": ...}
  {"action": "abort", "run": "<run id>", "id": ...}
Every refusal happens before anything moves and says why. Each run has its thread; it commands the
bench through the Python Client as `procedures` for the person who started it, so devices, interlocks
and the recorder treat it as that person's commands. Progress is retained per run; the record goes to
MongoDB through the result journal (results.py).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import logging
import queue
import secrets
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from slowctl.atomic import write_json
from slowctl.client.api import ClientError
from slowctl.client.client import Client
from slowctl.config import StackConfig
from slowctl.device.commands import Request, json_command
from slowctl.device.contract import ProcedureTopics
from slowctl.device.events import Event
from slowctl.device.heartbeat import Heartbeat
from slowctl.mqtt import Endpoint, MqttSession, response_of
from slowctl.procedures.base import Aborted, Failed, Procedure, Run, Stopped, make_safe
from slowctl.procedures.builtin import BUILTIN
from slowctl.procedures.params import ChannelRef, ParamError
from slowctl.procedures.results import ResultStore
from slowctl.records.docstore import MongoSettings

log = logging.getLogger(__name__)

NAME = "procedures"  # the runner's broker login and topics
KEEP_FINISHED = 20  # finished runs whose retained progress stays (older ones are cleared)
END_EVENT = {"completed": "run_finished", "stopped": "run_finished", "aborted": "run_aborted", "failed": "run_failed"}


class CatalogError(Exception):
    pass


def load_catalog(paths: Iterable[Path] = ()) -> tuple[dict[str, type[Procedure]], list[str]]:
    """The built-in procedures and every Procedure subclass in the `*.py` files of `paths`; problems
    (a file that does not import, a name taken twice) are returned, not raised: the rest still runs."""
    catalog: dict[str, type[Procedure]] = {p.name: p for p in BUILTIN}
    problems: list[str] = []
    for directory in paths:
        if not directory.is_dir():
            problems.append(f"{directory}: not a directory")
            continue
        for file in sorted(directory.glob("*.py")):
            module_name = f"slowctl_procedure_{file.stem}"
            try:
                spec = importlib.util.spec_from_file_location(module_name, file)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module  # as an import does: dataclasses, pickle look the module up
                spec.loader.exec_module(module)
            except Exception as exc:  # a lab's file: its error is shown, the runner goes on
                sys.modules.pop(module_name, None)
                problems.append(_import_problem(exc, file))
                continue
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, Procedure) and cls.__module__ == module_name and getattr(cls, "name", None):
                    if cls.name in catalog:
                        problems.append(f"{file}: procedure {cls.name!r} is defined twice: this one is ignored")
                    else:
                        catalog[cls.name] = cls
    return catalog, problems


def _import_problem(exc: Exception, file: Path) -> str:
    """`file (line N): Error: message`, the line being the lab's file's: a syntax error's own, else the file's
    last frame in the traceback (not importlib's, nor a library's where the error was finally raised)."""
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename) == file:
        line, message = exc.lineno, exc.msg
    else:
        ours = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == file]
        line, message = (ours[-1].lineno if ours else None), str(exc)
    where = f" (line {line})" if line else ""
    return f"{file}{where}: {type(exc).__name__}: {message}"


def _has_progress(run: str, client: Client) -> bool:
    return client.run_progress(run) is not None


class ActiveRun:
    def __init__(self, run: Run, by: Request, procedure: Procedure) -> None:
        self.run = run
        self.by = by
        self.procedure = procedure
        self.channels = procedure.driven()
        self.state = "starting"
        self.progress: dict[str, Any] = {}
        self.notes: list[str] = []
        self.points = 0
        self.outcome: str | None = None
        self.reason: str | None = None
        self.finished: float | None = None
        self.thread: threading.Thread | None = None


class Runner:
    def __init__(
        self,
        stack: StackConfig,
        endpoint: Endpoint,
        mongo: MongoSettings | None,
        state_dir: Path,
        procedure_dirs: Iterable[Path] = (),
    ) -> None:
        self.stack = stack
        self.cfg = stack.procedures
        self.root = stack.mqtt.topic_root
        self.topics = ProcedureTopics(self.root)
        self.dir = state_dir / NAME
        self.dir.mkdir(parents=True, exist_ok=True)
        self.catalog, self.problems = load_catalog(procedure_dirs)
        self.store = ResultStore(self.dir, mongo, self.cfg.buffer_mb)
        self.client = Client(
            endpoint.host, endpoint.port, endpoint.username, endpoint.password,
            tls_ca=endpoint.tls_ca, topic_root=self.root, timeout=10.0,
        )  # fmt: skip
        self.lock = threading.RLock()
        self.active: dict[str, ActiveRun] = {}
        self.finished: list[str] = []  # run ids whose progress is retained, oldest first
        self.commands: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.stop_event = threading.Event()
        self.heartbeat = Heartbeat.from_env()
        self.mqtt = MqttSession(
            endpoint,
            f"slowctl-procedures-{secrets.token_hex(4)}",
            keepalive=stack.mqtt.keepalive,
            reconnect=(stack.mqtt.reconnect_min, stack.mqtt.reconnect_max),
            will=(self.topics.availability, "offline"),
            on_connect=self._announce,
        )

    # --- lifecycle ----------------------------------------------------------------------------------------
    def run(self) -> int:
        for problem in self.problems:
            log.error("procedures: %s", problem)
        if self.store.mongo is None:
            log.warning("no MongoDB configured: results stay in the journal (%s)", self.dir / "journal")
        self.store.start()
        self.client.connect()
        for topic in self.topics.commands.filters:
            self.mqtt.subscribe(topic, self.commands.put)
        self.mqtt.start()
        self._recover()
        try:
            while not self.stop_event.is_set():
                self.heartbeat.beat(self.mqtt.connected.is_set())
                try:
                    msg = self.commands.get(timeout=1.0)
                except queue.Empty:
                    continue
                self._on_command(msg)
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self.stop_event.set()

    def _shutdown(self) -> None:
        """A stop of the runner aborts every run and brings its channels to the safe voltage first."""
        with self.lock:
            runs = list(self.active.values())
        for a in runs:
            a.run.aborted_by = "the runner stopping"
            a.run.abort_request.set()
        for a in runs:
            if a.thread is not None:
                a.thread.join(120)
        self.mqtt.stop(last_words=[(self.topics.availability, "offline")])
        self.client.close()
        self.store.close()

    def _announce(self) -> None:
        self.mqtt.publish(self.topics.availability, "online", qos=1, retain=True)
        catalog = {
            "procedures": [p.describe() for p in self.catalog.values()],
            "problems": self.problems,
            "environment": list(self.cfg.environment),
        }
        self.mqtt.publish(self.topics.catalog, json.dumps(catalog), qos=1, retain=True)
        self._publish_state()
        with self.lock:
            for a in self.active.values():
                self._publish_progress(a)

    # --- commands -----------------------------------------------------------------------------------------------
    def _on_command(self, msg: paho.MQTTMessage) -> None:
        body, origin, error = json_command(self.topics.commands, msg.topic, msg.payload, msg.retain)
        req = body or {}
        if error is None and body is None:
            error = 'expected JSON: {"action": "start", "procedure": ..., "params": {...}} or {"action": "abort", ...}'
        action = req.get("action")
        reply: dict[str, Any] = {
            "id": req.get("id") if isinstance(req.get("id"), (str, int)) else None,
            "action": action if action in ("start", "abort") else None,
            "by": origin.by,
            "for": origin.reply(True).get("for"),
        }
        if error is None:
            if action == "start":
                error, run_id = self._start(req, origin)
                reply["run"] = run_id
            elif action == "abort":
                error = self._abort(req, origin)
                reply["run"] = req.get("run") if isinstance(req.get("run"), str) else None
            else:
                error = f"unknown action {str(action)[:32]!r} (expected start or abort)"
        reply.update(ok=error is None, error=error)
        if error:
            log.info("refused %s from %s: %s", action, origin.who, error)
        text = json.dumps(reply)
        response, properties = response_of(msg)
        if response and self.topics.owns_response_topic(response) and response != self.topics.reply:
            self.mqtt.publish(response, text, qos=1, properties=properties)
        self.mqtt.publish(self.topics.reply, text, qos=1)  # always here too, as the devices do: the record reads it

    def _start(self, req: dict[str, Any], origin: Request) -> tuple[str | None, str | None]:
        """(why not, None) or (None, the run id): every check before anything moves."""
        name, raw = req.get("procedure"), req.get("params", {})
        unknown = sorted(set(req) - {"action", "procedure", "params", "id", "ts", "for"})
        if unknown:
            return f"unknown field(s) {', '.join(unknown)}", None
        if name not in self.catalog:
            return f"unknown procedure {str(name)[:40]!r} (known: {', '.join(sorted(self.catalog))})", None
        if not isinstance(raw, dict):
            return "params must be an object of name: value", None
        try:
            procedure = self.catalog[str(name)](**raw)
        except ParamError as exc:
            return f"{name}: {exc}", None
        channels = procedure.driven()
        problems = self._bench_problems(channels)
        if problems:
            return "; ".join(problems), None
        try:
            problems = procedure.check(self.client)
        except ClientError as exc:
            problems = [str(exc)]
        if problems:
            return f"{name}: " + "; ".join(problems), None
        with self.lock:
            busy = self._busy(channels)
            if busy:
                return busy, None
            run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{name}-{secrets.token_hex(2)}"
            person = origin.on_behalf or origin.by
            run = Run(
                run_id,
                procedure,
                self.client.acting_for(person if person != NAME else None),
                record=functools.partial(self._point, run_id),
                progress=functools.partial(self._progress, run_id),
                note=functools.partial(self._note, run_id),
                environment=tuple(self.cfg.environment),
            )
            active = ActiveRun(run, origin, procedure)
            self.active[run_id] = active
            self._save_active()
            active.thread = threading.Thread(target=self._execute, args=(active,), name=run_id, daemon=True)
        self._record(active)
        self._publish_state()
        self._publish_progress(active)
        chan = ", ".join(map(str, channels))
        self._event("run_started", f"{name} {run_id} started by {origin.who} on {chan}", active)
        active.thread.start()
        return None, run_id

    def _bench_problems(self, channels: list[ChannelRef]) -> list[str]:
        problems = []
        for ref in channels:
            dev = self.stack.devices.get(ref.device)
            if dev is None:
                problems.append(f"{ref}: no device {ref.device!r} (devices: {', '.join(self.stack.devices)})")
            elif ref.channel not in dev.channels:
                configured = ", ".join(map(str, dev.channels))
                problems.append(f"{ref}: {ref.device} has no channel {ref.channel} (configured: {configured})")
            elif not self.client.online(ref.device):
                problems.append(f"{ref}: {ref.device} is not online")
            else:
                problems += [f"{ref}: {why}" for why in self.client.interlocked(ref.device, ref.channel)]
                if self.stack.interlocks and not self.client.online("interlock"):
                    problems.append(f"{ref}: the interlock process is not running (devices refuse `on` without it)")
        return problems

    def _busy(self, channels: list[ChannelRef]) -> str | None:
        for a in self.active.values():
            shared = [str(c) for c in channels if c in a.channels]
            if shared:
                return f"{', '.join(shared)} busy: run {a.run.id} ({a.procedure.name} by {a.by.who}) holds it"
        return None

    def _abort(self, req: dict[str, Any], origin: Request) -> str | None:
        run_id = req.get("run")
        with self.lock:
            a = self.active.get(run_id) if isinstance(run_id, str) else None
            if a is None:
                running = ", ".join(self.active) or "none"
                return f"no active run {str(run_id)[:60]!r} (active runs: {running})"
            if a.run.abort_request.is_set():
                return f"run {run_id} is already being aborted (by {a.run.aborted_by})"
            a.run.aborted_by = origin.who
            a.run.abort_request.set()
        log.info("run %s: abort by %s", run_id, origin.who)
        return None

    # --- a run's thread ------------------------------------------------------------------------------------------
    def _execute(self, a: ActiveRun) -> None:
        run, proc = a.run, a.procedure
        a.state = "running"
        self._record(a)  # the record says running (slowctl procedure list), not starting, until it ends
        self._publish_progress(a)
        outcome, reason = "completed", None
        try:
            proc.run(run)
        except Stopped as exc:
            outcome, reason = "stopped", str(exc)
        except Aborted as exc:
            outcome, reason = "aborted", str(exc)
        except Failed as exc:
            outcome, reason = "failed", str(exc)
        except Exception as exc:  # a procedure's bug must still end in a safe bench and a record
            log.exception("run %s", run.id)
            outcome, reason = "failed", f"the procedure raised {type(exc).__name__}: {exc}"
        a.state = "stopping"
        a.reason = reason
        self._publish_progress(a)
        if self.client.session.connected.wait(self.cfg.safe_wait) is False:
            self._note(run.id, f"the broker was away for {self.cfg.safe_wait:g} s: channels not brought to safety")
        proc.safe(run)
        a.outcome, a.finished, a.state = outcome, time.time(), outcome
        a.notes += self.store.outage_during(run.started, a.finished)
        self._record(a)
        with self.lock:
            del self.active[run.id]
            self._save_active()
            self.finished.append(run.id)
            expired = self.finished[:-KEEP_FINISHED]
            self.finished = self.finished[-KEEP_FINISHED:]
        for old in expired:
            self.mqtt.publish(self.topics.progress(old), "", qos=1, retain=True)
        self._publish_progress(a)
        self._publish_state()
        text = f"{proc.name} {run.id} {outcome}" + (f": {reason}" if reason else "")
        self._event(END_EVENT[outcome], text, a)
        log.info("%s", text)

    def _point(self, run_id: str, point: dict[str, Any]) -> None:
        with self.lock:
            a = self.active.get(run_id)
            if a is not None:
                a.points += 1
        self.store.point(run_id, point)

    def _progress(self, run_id: str, progress: dict[str, Any]) -> None:
        with self.lock:
            a = self.active.get(run_id)
        if a is not None:
            a.progress = progress
            self._publish_progress(a)

    def _note(self, run_id: str, text: str) -> None:
        with self.lock:
            a = self.active.get(run_id)
        if a is not None:
            a.notes.append(text)
            log.info("run %s: %s", run_id, text)

    # --- record and topics --------------------------------------------------------------------------------------------
    def _record(self, a: ActiveRun) -> None:
        """The run's document, whole (replaced at each change)."""
        run, proc = a.run, a.procedure
        devices = sorted({c.device for c in a.channels})
        self.store.run(
            {
                "_id": run.id,
                "procedure": proc.name,
                "title": proc.title,
                "params": proc.parameters(),
                "operator": a.by.on_behalf or a.by.by,
                "by": a.by.who,
                "channels": [str(c) for c in a.channels],
                "instruments": {
                    d: self._instrument(d, [c.channel for c in a.channels if c.device == d]) for d in devices
                },
                "environment": list(self.cfg.environment),
                "started": run.started,
                "finished": a.finished,
                "state": a.state,
                "outcome": a.outcome,
                "reason": a.reason,
                "points": a.points,
                "notes": list(a.notes),
            }
        )

    def _instrument(self, device: str, channels: list[int]) -> dict[str, Any]:
        """Identity (as the instrument answered) and the configuration of the channels used."""
        dev = self.stack.devices[device]
        try:
            identity = self.client.status(device, timeout=1.0).get("identity")
        except ClientError:
            identity = None
        return {
            "model": dev.model,
            "address": dev.address,
            "identity": identity,
            "options": dev.options,
            "channels": {str(ch): dev.channels[ch].model_dump(exclude_none=True) for ch in channels},
        }

    def _publish_progress(self, a: ActiveRun) -> None:
        body = {
            "run": a.run.id,
            "procedure": a.procedure.name,
            "title": a.procedure.title,
            "by": a.by.who,
            "channels": [str(c) for c in a.channels],
            "state": a.state,
            "started": int(a.run.started * 1000),
            "finished": int(a.finished * 1000) if a.finished else None,
            "points": a.points,
            "reason": a.reason,
            "notes": a.notes[-5:],
            "step": None,
            "steps": None,
            "percent": None,
            "eta": None,
            "message": "",
            "last": None,
            **a.progress,
        }
        if a.outcome is not None:
            body["eta"] = 0
        self.mqtt.publish(self.topics.progress(a.run.id), json.dumps(body, default=str), qos=1, retain=True)

    def _publish_state(self) -> None:
        with self.lock:
            runs = {
                rid: {
                    "procedure": a.procedure.name,
                    "by": a.by.who,
                    "channels": [str(c) for c in a.channels],
                    "state": a.state,
                }  # fmt: skip
                for rid, a in self.active.items()
            }
        body = {"ts": int(time.time() * 1000), "runs": runs, "recent": list(self.finished)}
        self.mqtt.publish(self.topics.state, json.dumps(body), qos=1, retain=True)

    def _event(self, kind: str, message: str, a: ActiveRun) -> None:
        refs = a.channels
        event = Event(
            refs[0].device if len(refs) == 1 else NAME,
            kind,
            message,
            refs[0].channel if len(refs) == 1 else None,
            cause=a.run.id,
            after={"run": a.run.id, "procedure": a.procedure.name, "outcome": a.outcome, "reason": a.reason},
        )
        self.mqtt.publish(self.topics.event, event.payload(), qos=1)

    def _event_text(self, kind: str, message: str, run_id: str) -> None:
        event = Event(NAME, kind, message, cause=run_id)
        self.mqtt.publish(self.topics.event, event.payload(), qos=1)

    # --- what a stopped runner left behind -------------------------------------------------------------------------
    def _save_active(self) -> None:
        """Under lock: the runs going on, so that a runner that died mid-run brings their channels back."""
        write_json(
            self.dir / "active.json",
            {
                rid: {
                    "procedure": a.procedure.name,
                    "channels": [str(c) for c in a.channels],
                    "safe_voltage": a.procedure.safe_voltage,
                    "started": a.run.started,
                    "by": a.by.who,
                }
                for rid, a in self.active.items()
            },
        )

    def _recover(self) -> None:
        path = self.dir / "active.json"
        try:
            left = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as exc:
            log.error("%s unreadable (%s): runs interrupted by a crash cannot be closed", path, exc)
            return
        if not isinstance(left, dict) or not left:
            return
        threading.Thread(target=self._close_interrupted, args=(left,), name="recover", daemon=True).start()

    def _close_interrupted(self, left: dict[str, Any]) -> None:
        reason = "the procedure runner stopped during the run (crash or restart)"
        closed: list[tuple[str, dict[str, Any]]] = []
        for rid, info in left.items():
            log.error("run %s was interrupted by a stop of the runner: bringing its channels to safety", rid)
            notes: list[str] = []
            for text in info.get("channels", []):
                device, _, channel = text.partition(".")
                ref = ChannelRef(device, int(channel))
                if self.client.session.connected.wait(self.cfg.safe_wait):
                    try:
                        self.client.status(device, timeout=5.0)
                        make_safe(self.client, ref, float(info.get("safe_voltage", 0.0)), notes.append)
                    except ClientError as exc:
                        notes.append(f"{ref}: {exc}")
            finished = time.time()
            self.store.update(
                rid,
                {"finished": finished, "state": "failed", "outcome": "failed", "reason": reason, "notes": notes},
                count_points=True,  # the points the runner journaled before it stopped, not the count at start
            )
            try:  # what the dead runner last said of the run (retained): step, points, the last point
                self.client.wait_until(functools.partial(_has_progress, rid), timeout=2.0)
            except ClientError:
                pass
            progress = {
                "run": rid,
                "procedure": info.get("procedure"),
                "by": info.get("by"),
                "channels": info.get("channels", []),
                "started": int(float(info.get("started") or 0) * 1000) or None,
                **(self.client.run_progress(rid) or {}),
                "state": "failed",
                "finished": int(finished * 1000),
                "reason": reason,
                "notes": notes[-5:],
                "eta": 0,
            }
            closed.append((rid, progress))
        with self.lock:
            self._save_active()  # nothing left to recover before anyone is told the runs are closed
            self.finished += [rid for rid, _ in closed]
        for rid, progress in closed:
            # the retained progress still said running: whoever follows the run (wait_for_run) learns its end
            self.mqtt.publish(self.topics.progress(rid), json.dumps(progress, default=str), qos=1, retain=True)
            self._event_text("run_failed", f"run {rid} failed: {reason}", rid)
        self._publish_state()
