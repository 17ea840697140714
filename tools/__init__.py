"""The ``adt`` command (``adt = adt.tools.cli:main``) and the torch-free report functions behind it.

* :mod:`adt.tools.cli` parses ``adt COMMAND ...`` and dispatches to :mod:`adt.tools.commands`;
* :mod:`adt.tools.errors`: :class:`CommandError`, the commands' one-line user error;
* :mod:`adt.tools.scoring`: :func:`score_file` (the accuracy of a .adt file, from the file alone, with
  the runtime), :class:`FileScore`, :func:`predict` (batched outputs), :func:`count_correct`,
  :func:`model_input`, :func:`concrete_input_shape`;
* :mod:`adt.tools.inspect_report`: :func:`build_report` (where every byte of a .adt file goes, as a
  JSON-able dict), :func:`render_text`, :func:`plot_report`;
* :mod:`adt.tools.benchmark`: :func:`bench` (open/decode/rebuild/run timings against the dense ONNX
  baseline), :func:`render_bench`, :func:`median_time`, :func:`blocked`, :func:`measure_peak`,
  :func:`peak_memory`, :func:`limit_ort_threads`.

These functions are public and stable: research scripts and benchmarks import them (from their module,
or from this package, which loads each module on first use so that ``adt --help`` stays fast).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adt.tools.benchmark import (
        THREAD_ENV, bench, bench_threads, blocked, limit_ort_threads, measure_peak, median_time, peak_memory,
        render_bench,
    )
    from adt.tools.errors import CommandError
    from adt.tools.inspect_report import build_report, entropy_bits, plot_report, render_text, safe_text
    from adt.tools.scoring import (
        EVALUATOR, FileScore, concrete_input_shape, count_correct, model_input, predict, score_file,
    )

# public name -> the module that defines it
_PUBLIC = {
    "CommandError": "errors",
    "EVALUATOR": "scoring", "FileScore": "scoring", "concrete_input_shape": "scoring", "count_correct": "scoring",
    "model_input": "scoring", "predict": "scoring", "score_file": "scoring",
    "build_report": "inspect_report", "render_text": "inspect_report", "plot_report": "inspect_report",
    "entropy_bits": "inspect_report", "safe_text": "inspect_report",
    "THREAD_ENV": "benchmark", "bench": "benchmark", "bench_threads": "benchmark", "blocked": "benchmark",
    "limit_ort_threads": "benchmark", "measure_peak": "benchmark", "median_time": "benchmark",
    "peak_memory": "benchmark", "render_bench": "benchmark",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"adt.tools.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'adt.tools' has no attribute {name!r}")
