"""docs/procedures.md stays true: its parameter tables are the declarations', its example procedure loads."""

from __future__ import annotations

import re
from pathlib import Path

from slowctl.procedures.builtin import BUILTIN, params_table
from slowctl.procedures.runner import load_catalog

DOC = Path(__file__).resolve().parents[2] / "docs" / "procedures.md"


def test_parameter_tables_are_made_from_the_declarations():
    text = DOC.read_text()
    for proc in BUILTIN:
        m = re.search(rf"<!-- params:{proc.name} -->\n(.*?)\n<!-- /params:{proc.name} -->", text, re.S)
        assert m, f"docs/procedures.md has no table for {proc.name}"
        assert m.group(1) == params_table(proc), f"regenerate the table of {proc.name} (params_table)"


def test_the_example_procedure_is_one_file_that_loads(tmp_path):
    code = re.search(r"```python\n(# procedures/leakage_steps\.py.*?)```", DOC.read_text(), re.S)
    assert code, "the example procedure is gone from docs/procedures.md"
    (tmp_path / "leakage_steps.py").write_text(code.group(1))
    catalog, problems = load_catalog([tmp_path])
    assert problems == []
    proc = catalog["leakage_steps"]
    assert [*proc.params] == ["channel", "each", "limit", "safe_voltage"]
    run = proc(channel="bias.0", each="2m")
    assert run.each == 120.0 and str(run.channel) == "bias.0" and run.limit == 5e-6
