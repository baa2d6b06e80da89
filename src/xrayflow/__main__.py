"""``python -m xrayflow`` = the ``xrayflow`` command."""

import sys

from xrayflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
