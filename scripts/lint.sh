#!/usr/bin/env bash
# The code checks CI runs (pinned in pyproject.toml's `lint` extra, installed by install.sh --test):
# ruff (lint and format), mypy on the packages, import-linter's layer contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
# the tools install.sh --test put into the virtual environment; without one, those of your own environment
[ -x "$VENV/bin/ruff" ] && PATH="$VENV/bin:$PATH"
ruff check services dummy tests bench grafana scripts
ruff format --check services dummy tests bench grafana scripts
mypy
lint-imports
