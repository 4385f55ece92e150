#!/usr/bin/env bash
# Installs what slowctl needs on a Debian/Ubuntu machine.
#   scripts/install.sh          runtime: Mosquitto and nginx (apt), slowctl (pip, into the virtual environment
#                               .venv or $SLOWCTL_VENV, made with ${PYTHON:-python3} and reused), Node-RED (npm,
#                               in nodered/), FerretDB for the record when Go is installed
#                               (scripts/build-test-tools.sh ferretdb)
#   scripts/install.sh --test   also what the tests need: the test and lint extras (pip), Chromium (apt), and the programs
#                               built from source by scripts/build-test-tools.sh (docker compose, Telegraf,
#                               InfluxDB 2, FerretDB: needs Go >= 1.26 and rustup's stable Rust)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    "" | --test) ;;
    *) echo "usage: scripts/install.sh [--test]" >&2; exit 2 ;;
esac

APT_RUNTIME=(mosquitto mosquitto-clients nginx-light python3-venv)   # venv: a stock Debian's Python has no ensurepip
APT_TEST=(chromium build-essential pkg-config)   # the last two: cgo in build-test-tools.sh

packages=("${APT_RUNTIME[@]}")
# Node.js for Node-RED (>= 18: Debian 12 has 18.19); a Node.js installed otherwise is kept
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)
[ "${1:-}" = "--test" ] && packages+=("${APT_TEST[@]}")

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing with apt: ${missing[*]}"
    $SUDO apt-get update -qq
    # policy-rc.d: the packages' own system services (broker on 1883, nginx on 80, influxd on 8086)
    # must not start; slowctl and the tests run their own on loopback
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    $SUDO rm -f /usr/sbin/policy-rc.d
fi
if command -v systemctl >/dev/null 2>&1; then
    for unit in mosquitto nginx; do
        systemctl is-active --quiet "$unit" 2>/dev/null && $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
fi
. scripts/venv.sh
if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    echo "creating the virtual environment $VENV with ${PYTHON:-python3}"
    "${PYTHON:-python3}" -m venv --clear "$VENV"
fi
extras=""
[ "${1:-}" = "--test" ] && extras="[test,lint]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".$extras"
# the control UI: Node-RED and its dashboard, exactly as nodered/package-lock.json pins them;
# skipped while node_modules matches the lock file
if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: the control UI (Node-RED) needs Node.js >= 18 with npm; slowctl up runs without it" >&2
elif [ ! nodered/node_modules/.package-lock.json -nt nodered/package-lock.json ]; then
    (cd nodered && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
fi
# the programs the tests run for real, built from their source modules into ~/.cache/slowctl/tools
# (cached: seconds when nothing changed; about 7 minutes cold on 2 cores)
if [ "${1:-}" = "--test" ]; then
    bash scripts/build-test-tools.sh
elif command -v go >/dev/null 2>&1; then
    # the native stack's record (slowctl up runs the recorder into it): FerretDB, the build the tests use
    bash scripts/build-test-tools.sh ferretdb \
        || echo "FerretDB could not be built: slowctl up runs without a recorder (docs/records.md)" >&2
else
    echo "no Go toolchain: slowctl up runs without a recorder (FerretDB is built from source; docs/records.md)"
fi
echo "slowctl is installed in $VENV; to use it from another terminal (any directory): . $VENV/bin/activate"
