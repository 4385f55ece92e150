#!/usr/bin/env bash
# One command on a fresh machine: install, then run the native stack with the dummy instruments.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. scripts/venv.sh
exec "$VENV/bin/slowctl" up --dummy "$@"
