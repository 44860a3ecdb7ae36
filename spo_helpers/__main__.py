"""``python -m spo_helpers``: the ``spo`` command."""

import sys

from spo_helpers.cli import main

if __name__ == "__main__":
    sys.exit(main())
