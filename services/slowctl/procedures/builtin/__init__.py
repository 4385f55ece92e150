"""The procedures every bench has."""

from slowctl.procedures.base import Procedure
from slowctl.procedures.builtin.burn_in import BurnIn
from slowctl.procedures.builtin.iv_scan import IVScan
from slowctl.procedures.builtin.ramp_hold import RampAndHold

BUILTIN = (IVScan, BurnIn, RampAndHold)


def params_table(procedure: type[Procedure]) -> str:
    """The parameter table of docs/procedures.md, made from the declaration (a test keeps the docs equal)."""
    rows = ["| parameter | kind | default | what it is |", "|---|---|---|---|"]
    for name, p in procedure.params.items():
        d = p.describe()
        unit = f" {d['unit']}" if d.get("unit") else ""
        value = d.get("default")
        shown = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        default = "required" if d["required"] else "none" if value is None else f"{shown}{unit}"
        kind = f"{d['kind']} ({d['unit']})" if d.get("unit") else d["kind"]
        rows.append(f"| `{name}` | {kind} | {default} | {d['doc']} |")
    return "\n".join(rows)
