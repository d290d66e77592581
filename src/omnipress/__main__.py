"""`python -m omnipress ...` runs the `omnipress` command line."""

import sys

from omnipress.cli import main

if __name__ == "__main__":
    sys.exit(main())
