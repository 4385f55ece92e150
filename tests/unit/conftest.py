"""Shared fixtures for the unit tests: the shipped dummy config, raw and parsed."""

import copy
from pathlib import Path

import pytest
import yaml

from slowctl.config import load_config

DUMMY_YAML = Path(__file__).resolve().parents[2] / "config" / "bench.yaml"
_RAW = yaml.safe_load(DUMMY_YAML.read_text())
BENCH_DEVICE = {cfg["model"]: dev for dev, cfg in _RAW["devices"].items()}  # model -> its device in the bench


@pytest.fixture
def raw():
    """A fresh, mutable copy of config/bench.yaml as plain data."""
    return copy.deepcopy(_RAW)


@pytest.fixture(scope="session")
def stack_config():
    """The example bench without its interlocks (tests/unit/test_interlock_rules.py has them): the unit
    tests of commands and of the device service switch HV on as they need."""
    stack = load_config(DUMMY_YAML)
    return stack.model_copy(update={"interlocks": {}})
