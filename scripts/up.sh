#!/usr/bin/env bash
# One command on a fresh machine: install, then run the native stack with the dummy instruments.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${PYTHON:-python3}" -m slowctl up --dummy "$@"
