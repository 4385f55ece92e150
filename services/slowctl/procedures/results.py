"""A run's record in MongoDB: `procedures` (one document per run: parameters, operator, instruments,
times, outcome, notes) and `procedure_points` (one document per data point, `_id` run:seq).

The runner never waits for MongoDB: every write goes into a journal on disk first (a `DiskQueue`) and a
writer thread moves it into MongoDB in order. While MongoDB is away the run goes on, the journal grows
(bounded) and the record later says when it was written late. Writes are idempotent (a run document is
replaced whole, a point has its own `_id`), so a replay after a crash doubles nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slowctl.diskqueue import DiskQueue, QueueFull
from slowctl.records.docstore import Batch, MongoSettings, drain_journal
from slowctl.records.procedures import POINTS, RUNS, ensure_indexes

log = logging.getLogger(__name__)

BATCH = 500


def utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def point_id(run: str, seq: int) -> str:
    return f"{run}:{seq:07d}"


class ResultStore:
    """The journal and its writer. `mongo` None: MongoDB is not configured; the journal keeps everything
    (bounded) and the runner says so at start."""

    def __init__(self, directory: Path, mongo: MongoSettings | None, max_mb: float) -> None:
        self.mongo = mongo
        self.journal = DiskQueue(directory / "journal", int(max_mb * 1024 * 1024))
        self.lock = threading.Lock()
        self.news = threading.Event()
        self.stop_event = threading.Event()
        self.error: str | None = None  # MongoDB's, while it is away
        self.outages: list[list[float | None]] = []  # [since, until] of each time MongoDB was away
        self.lost = 0  # writes the full journal could not take
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.mongo is not None:
            self.thread = threading.Thread(target=self._write_loop, name="results", daemon=True)
            self.thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.news.set()
        if self.thread is not None:
            self.thread.join(timeout)
        self.journal.close()

    # --- what the runner writes ------------------------------------------------------------------------------
    def run(self, doc: dict[str, Any]) -> None:
        self._put({"op": "run", "doc": doc})

    def update(self, run: str, fields: dict[str, Any], count_points: bool = False) -> None:
        """Changes some fields of a run's document (a run closed after a crash of the runner); `count_points`:
        and sets `points` to the run's points in MongoDB (written in journal order, so all of them by then)."""
        self._put({"op": "set", "run": run, "fields": fields, "count": count_points})

    def point(self, run: str, point: dict[str, Any]) -> None:
        self._put({"op": "point", "run": run, "point": point})

    def _put(self, record: dict[str, Any]) -> None:
        with self.lock:
            try:
                self.journal.put(record)
            except (QueueFull, OSError) as exc:
                self.lost += 1
                if self.lost == 1:
                    log.error("results journal: %s; results are being lost", exc)
                return
        self.news.set()

    def outage_during(self, since: float, until: float) -> list[str]:
        """What the record should say about MongoDB being away while the run was on."""
        out = []
        for start, end in self.outages:
            if start is not None and start <= until and (end is None or end >= since):
                when = f"from {utc(start):%H:%M:%S}" + (f" to {utc(end):%H:%M:%S} UTC" if end else " UTC on")
                out.append(f"MongoDB was unreachable {when}: results kept on disk and written when it was back")
        if self.lost:
            out.append(f"{self.lost} results lost: the journal on disk was full")
        return out

    # --- journal -> MongoDB ----------------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        assert self.mongo is not None
        drain_journal(
            self.journal,
            self.mongo,
            self.stop_event,
            self.news,
            ensure_indexes,
            _write,
            self._failed,
            self._written,
            BATCH,
        )

    def _failed(self, exc: Exception) -> None:
        if self.error is None:
            self.outages.append([time.time(), None])
            log.error("MongoDB: %s; results kept on disk", str(exc)[:200])
        self.error = str(exc)[:300]

    def _written(self, batch: Batch, recovered: bool) -> None:
        if recovered:
            self.outages[-1][1] = time.time()
            self.error = None
            log.info("MongoDB: writing results again")


def _write(db: Any, batch: Batch) -> None:
    from pymongo.errors import DuplicateKeyError

    for _, r in batch:
        if r["op"] == "run":
            doc = r["doc"]
            db[RUNS].replace_one({"_id": doc["_id"]}, _dates(doc), upsert=True)
        elif r["op"] == "set":
            fields = _dates(r["fields"])
            if r.get("count"):
                fields["points"] = db[POINTS].count_documents({"run": r["run"]})
            db[RUNS].update_one({"_id": r["run"]}, {"$set": fields}, upsert=True)
        else:
            p = r["point"]
            try:
                db[POINTS].insert_one({"_id": point_id(r["run"], p["seq"]), "run": r["run"], **_dates(p)})
            except DuplicateKeyError:
                pass  # written before a crash


def _dates(doc: dict[str, Any]) -> dict[str, Any]:
    """Times as BSON dates (MongoDB sorts and filters them as times)."""
    out = dict(doc)
    for key in ("ts", "started", "finished"):
        if isinstance(out.get(key), (int, float)):
            out[key] = utc(out[key])
    return out
