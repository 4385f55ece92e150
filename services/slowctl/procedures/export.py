"""A run read back from MongoDB, and what `slowctl procedure show|export` make of it: text, CSV, JSON, PNG."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from slowctl.procedures.base import Plot, Procedure

# the run queries live below both the CLI and the recorder (which answers the UI with them)
from slowctl.records.procedures import NotFound, find_run, points, runs  # noqa: F401


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def run_line(doc: dict[str, Any]) -> str:
    started = _text(doc.get("started"))[:19]
    outcome = doc.get("outcome") or doc.get("state") or "?"
    reason = f"  ({doc['reason']})" if doc.get("reason") else ""
    chans = ",".join(doc.get("channels") or [])
    return f"{doc['_id']:<36} {started:<19} {doc.get('by') or '':<20} {chans:<14} {outcome:<9} {doc.get('points', '')}{reason}"


def describe(doc: dict[str, Any], pts: list[dict[str, Any]]) -> str:
    """`slowctl procedure show`: the run and its points, for people."""
    lines = [f"run        {doc['_id']}", f"procedure  {doc.get('procedure')} ({doc.get('title', '')})"]
    for key in ("by", "operator", "channels", "started", "finished", "outcome", "reason"):
        value = doc.get(key)
        lines.append(f"{key:<10} {', '.join(value) if isinstance(value, list) else _text(value)}")
    lines.append("params     " + json.dumps(doc.get("params", {})))
    for dev, info in (doc.get("instruments") or {}).items():
        lines.append(f"instrument {dev}: {info.get('model')} {info.get('identity') or '(identity unknown)'}")
    for note in doc.get("notes") or []:
        lines.append(f"note       {note}")
    lines.append(f"points     {len(pts)}")
    if pts:
        cols = columns(pts)
        lines.append("  " + "  ".join(f"{c:>12}" for c in cols))
        for p in pts:
            lines.append("  " + "  ".join(f"{_text(p.get(c)):>12}" for c in cols))
    return "\n".join(lines)


def columns(pts: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for p in pts:
        out += [k for k in p if k not in ("_id", "run") and k not in out]
    return out


def as_csv(pts: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = columns(pts)
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for p in pts:
        w.writerow([_text(p.get(c)) for c in cols])
    return buf.getvalue()


def as_json(doc: dict[str, Any], pts: list[dict[str, Any]]) -> str:
    body = {"run": doc, "points": [{k: v for k, v in p.items() if k not in ("_id", "run")} for p in pts]}
    return json.dumps(body, default=_text, indent=2)


def _matching(patterns: tuple[str, ...], cols: list[str]) -> list[str]:
    return [c for c in cols if any(fnmatch.fnmatchcase(c, p) for p in patterns)]


def _factor(plot: Plot, col: str) -> float:
    return next((f for p, f in (plot.scale or {}).items() if fnmatch.fnmatchcase(col, p)), 1.0)


def _number(value: Any) -> float:
    """A value to draw: NaN (a gap in the line) where it is not a number."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def plot_png(doc: dict[str, Any], pts: list[dict[str, Any]], catalog: dict[str, type[Procedure]], out: Path) -> None:
    """The curve as the procedure declares it (IV: current against voltage; burn-in: currents and the
    environment against time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cls = catalog.get(str(doc.get("procedure")))
    plot = cls.plot if cls is not None else None
    if plot is None:
        raise NotFound(f"procedure {doc.get('procedure')!r} declares no plot: export --csv or --json instead")
    cols = columns(pts)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    xs = [_number(p.get(plot.x)) for p in pts]
    for col in _matching(plot.y, cols):
        f = _factor(plot, col)
        ys = [_number(p.get(col)) * f for p in pts]
        ax.plot(xs, ys, marker="o", markersize=3, label=col)
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    ax.grid(True, alpha=0.3)
    right = _matching(plot.right, cols)
    if right:
        ax2 = ax.twinx()
        for col in right:
            ys = [_number(p.get(col)) for p in pts]
            ax2.plot(xs, ys, linestyle="--", label=col)
        ax2.set_ylabel(plot.rlabel)
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    outcome = doc.get("outcome") or doc.get("state")
    reason = f": {doc['reason']}" if doc.get("reason") else ""
    ax.set_title(f"{doc.get('title')} {', '.join(doc.get('channels') or [])} — {outcome}{reason}"[:110], fontsize=9)
    fig.text(0.01, 0.01, f"{doc['_id']} by {doc.get('by')}", fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
