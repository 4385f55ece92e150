# Sourced by the scripts: the virtual environment slowctl is installed into and runs from.
# A distribution's own Python refuses `pip install` (PEP 668, Debian 12, Ubuntu 24.04), so slowctl and
# its pinned dependencies live here: .venv in the checkout, or $SLOWCTL_VENV.
VENV="${SLOWCTL_VENV:-$PWD/.venv}"
