"""The one error type of the ``adt`` command.

It lives in its own module, below the CLI and every command, so that a command can raise it without
importing :mod:`adt.tools.cli` (which imports the commands): the import graph stays a line.
"""
from __future__ import annotations

from adt.runtime.format import AdtError

__all__ = ["CommandError"]


class CommandError(AdtError):
    """A user-facing failure of a command (a bad option value, a missing file, a file that cannot be
    used for what was asked): the CLI prints it as one line ``adt CMD: error: ...`` and exits 1."""
