#!/usr/bin/env bash
# The code checks CI runs (pinned in pyproject.toml's `lint` extra, installed by install.sh --test):
# ruff (lint and format), mypy on the packages, import-linter's layer contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check services dummy tests bench grafana scripts
ruff format --check services dummy tests bench grafana scripts
mypy
lint-imports
