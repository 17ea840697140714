"""Errors of the runtime proper (the container's errors live in :mod:`adt.runtime.format.errors`)."""
from __future__ import annotations

from .format.errors import AdtArchitectureError, AdtError

__all__ = [
    "AdtBudgetError", "AdtEngineError", "AdtExecutionError", "AdtGraphError", "AdtInputError", "AdtNoArchitectureError",
    "AdtUnsupportedOpError",
]


class AdtInputError(AdtError):
    """The input given to ``Model.run`` has the wrong name, dtype or shape for the architecture."""


class AdtUnsupportedOpError(AdtArchitectureError):
    """The architecture uses an op (or an op attribute) that the NumPy engine does not implement."""


class AdtGraphError(AdtArchitectureError):
    """The architecture's graph is not well formed: a value assigned twice, an input read before (or
    without) being defined, an empty name in a required input slot, a graph output no node produces,
    an output its op never produces that something reads, or a cycle. Raised once, at load."""


class AdtBudgetError(AdtError):
    """Doing what the file asks would cost more than the limit the caller set (``max_memory``): raised
    before the work is done, from the validated tables (rebuild) or from the shapes inferred from the
    graph and the input shapes (constant folding at load, ``Model.run``), naming the parameter or the
    node, the shape, the figure and the limit."""


class AdtExecutionError(AdtError):
    """An op failed while running (shapes that do not fit, an index out of range, ...)."""


class AdtNoArchitectureError(AdtError):
    """The file holds weights only: it has no architecture section, so it cannot be run."""


class AdtEngineError(AdtError, ImportError):
    """The requested engine is unknown or its optional dependency (onnxruntime) is not installed.
    Also an ImportError, so ``except ImportError`` around an optional engine keeps working."""
