"""``python -m slowctl_dummy MODEL --tcp HOST:PORT ...``"""

from .cli import main

raise SystemExit(main(prog="python -m slowctl_dummy"))
