"""The procedure runner's collections in MongoDB and their indexes: declared here, below both the
runner (slowctl.procedures.results writes them) and `slowctl db-check` (which makes sure of them).

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
