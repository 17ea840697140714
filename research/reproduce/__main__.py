"""``python -m research.reproduce mnist --data DIR``: see :mod:`research.reproduce.cli`."""
import sys

from research.reproduce.cli import main

sys.exit(main())
