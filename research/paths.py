"""Where the research scripts read and write by default: the repository's ``results/`` folder.

The scripts run from a checkout (``python -m research.… `` from the repository root), never from an
installed wheel, so the folder is found from this file's place in the tree."""
from __future__ import annotations

from pathlib import Path

__all__ = ["REPO", "RESULTS"]

#: The repository root (the folder holding ``research/`` and ``results/``).
REPO = Path(__file__).resolve().parent.parent
#: The default output folder of every research script (see ``results/README.md``).
RESULTS = REPO / "results"
