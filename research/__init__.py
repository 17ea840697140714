"""Research and QA harness of ADT: the paper reproduction, benchmarks, board checks and fuzzing.

Not part of the wheel (pyproject.toml packages only ``adt.runtime``, ``adt.exporter`` and ``adt.tools``):
run it from the repository root, e.g. ``python -m research.reproduce mnist --data DIR``. Its scripts
use the packages' public API and import each other as ``research.…`` modules. What each one writes
under ``results/`` is listed in ``results/README.md``.

Sub-packages: :mod:`research.reproduce` (the paper's MNIST Table 1 with real ``.adt`` files),
:mod:`research.benchmarks` (format and runtime benchmarks), :mod:`research.boards` (runtime checks on
other CPU architectures), :mod:`research.fuzz` (fuzzing of the reader).

This file imports nothing on purpose: ``python -m research.benchmarks.bench_lenet --threads 1`` must
set the BLAS thread variables before NumPy is first imported.
"""
