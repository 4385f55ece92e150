import sys

from slowctl.cli import main

sys.exit(main())
