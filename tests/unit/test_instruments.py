"""What a new instrument model is (README.md, "Supported instruments"): exactly the pieces checked here.

Driver and simulator are found by their `model` id (slowctl.registry); their modules are named after it,
as is the doc page, so each model's pieces can be found from its id alone.
"""

from pathlib import Path

import pytest

from slowctl.drivers import DRIVERS
from slowctl_dummy.sims import SIMULATORS

from .conftest import BENCH_DEVICE

REPO = Path(__file__).resolve().parents[2]


def test_every_driver_has_a_simulator_and_every_simulator_a_driver():
    assert set(SIMULATORS) == set(DRIVERS)


@pytest.mark.parametrize("model", sorted(DRIVERS))
def test_every_model_has_its_files(model):
    module = model.replace("-", "_")
    assert DRIVERS[model].__module__ == f"slowctl.drivers.{module}"
    assert SIMULATORS[model].__module__ == f"slowctl_dummy.sims.{module}"
    assert (REPO / "docs" / "instruments" / f"{model}.md").is_file(), f"docs/instruments/{model}.md"
    assert f"| [`{model}`](docs/instruments/{model}.md) |" in (REPO / "README.md").read_text(), "README table row"
    assert f"| `{model}`" in (REPO / "dummy" / "README.md").read_text(), "dummy/README.md table row"
    assert model in BENCH_DEVICE, f"config/bench.yaml: no device of model {model}"


def test_every_doc_page_is_a_model():
    pages = {p.stem for p in (REPO / "docs" / "instruments").glob("*.md")}
    assert pages == set(DRIVERS)
