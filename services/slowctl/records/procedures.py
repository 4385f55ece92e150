"""The procedure runner's collections in MongoDB, their indexes and how runs are read back: declared here,
below the runner (slowctl.procedures.results writes them), `slowctl procedure list|show|export`, `slowctl
db-check` and the recorder (which answers the control UI's questions with them).

`procedures`: one document per run; `procedure_points`: one per data point (`_id` run:seq).
"""

from __future__ import annotations

from typing import Any

RUNS, POINTS = "procedures", "procedure_points"
INDEXES = {RUNS: [[("started", 1)], [("procedure", 1), ("started", 1)]], POINTS: [[("run", 1), ("seq", 1)]]}


def ensure_indexes(db: Any) -> None:
    for name, indexes in INDEXES.items():
        for keys in indexes:
            db[name].create_index(keys)


class NotFound(LookupError):
    pass


def find_run(db: Any, run: str) -> dict[str, Any]:
    """The run's document; a unique prefix of its id is enough (`20261201T1840`)."""
    doc = db[RUNS].find_one({"_id": run})
    if doc is not None:
        return dict(doc)
    found = list(db[RUNS].find({"_id": {"$regex": "^" + _escape(run)}}).limit(3))
    if len(found) == 1:
        return dict(found[0])
    if found:
        raise NotFound(f"{run!r} names several runs: {', '.join(d['_id'] for d in found)} ...")
    raise NotFound(f"no run {run!r} in the record (slowctl procedure list shows the runs)")


def _escape(text: str) -> str:
    return "".join("\\" + c if c in ".^$*+?()[]{}|\\" else c for c in text)


def points(db: Any, run: str, limit: int = 0) -> list[dict[str, Any]]:
    """The run's points in order; with `limit`, the first `limit` of them (0: all)."""
    return [dict(p) for p in db[POINTS].find({"run": run}).sort("seq", 1).limit(limit)]


def runs(db: Any, limit: int, procedure: str | None = None) -> list[dict[str, Any]]:
    query = {"procedure": procedure} if procedure else {}
    newest = list(db[RUNS].find(query).sort("started", -1).limit(limit))
    return [dict(d) for d in reversed(newest)]
