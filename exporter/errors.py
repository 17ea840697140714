"""Errors the PyTorch exporter raises about plans, models and training inputs.

They subclass :class:`adt.runtime.format.AdtError`, so the CLI prints them as one line.
"""
from __future__ import annotations

from adt.runtime.format import AdtError

__all__ = ["AdtError", "PlanError", "ModelError", "CheckpointError", "TrainConfigError", "ExportCheckError"]


class PlanError(AdtError):
    """A layer plan does not fit its layer (element count, order, core dims) or a target is invalid."""


class ModelError(AdtError):
    """A model name, module path or layer type the exporter cannot handle."""


class CheckpointError(AdtError):
    """A training checkpoint is missing, unreadable or belongs to a different model/config."""


class TrainConfigError(AdtError):
    """A training hyper-parameter is out of range (epochs, lr, batch size, schedule, threads)."""


class ExportCheckError(AdtError):
    """The file, run by the runtime, disagrees with the torch model beyond the stated tolerance."""
