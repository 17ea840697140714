"""Running the ``adt`` command as a user does (a subprocess) and checking its one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys

#: ``adt`` as a subprocess, through the installed entry point's function.
CLI = [sys.executable, "-c", "import sys; from adt.tools.cli import main; sys.exit(main())"]


def adt(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``adt ARGS`` (each argument str()-ed); ``env`` adds to (not replaces) the environment."""
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(out: subprocess.CompletedProcess, cmd: str, match: str = "") -> str:
    """``out`` failed with status 1 and exactly one stderr line ``adt CMD: error: ...`` containing
    ``match``, no traceback; returns that line."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"adt {cmd}: error:") and match in lines[0], lines[0]
    return lines[0]
