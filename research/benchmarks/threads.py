"""``--threads N`` for the benchmark scripts, applied before NumPy is imported.

BLAS reads its thread count when NumPy is first imported, so a script that wants ``--threads 1``
(stable numbers on a small shared machine) must set the variables below first, from its raw argv.
Imports nothing but the standard library, on purpose."""
from __future__ import annotations

import os

__all__ = ["THREAD_ENV", "threads_from_argv", "limit_blas_threads_from_argv"]

#: The variables NumPy's BLAS builds (OpenBLAS, MKL, OpenMP) read at import.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def threads_from_argv(argv: list[str]) -> int:
    """The value of ``--threads N`` / ``--threads=N`` in ``argv`` (default 1)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


def limit_blas_threads_from_argv(argv: list[str]) -> int:
    """Set :data:`THREAD_ENV` to ``--threads N`` from ``argv`` when N > 0 (0 keeps the libraries'
    defaults); return N. Call it before anything imports NumPy."""
    n = threads_from_argv(argv)
    if n > 0:
        os.environ.update({k: str(n) for k in THREAD_ENV})
    return n
