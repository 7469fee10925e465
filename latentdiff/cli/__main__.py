"""`python -m latentdiff.cli`."""

import sys

from latentdiff.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
