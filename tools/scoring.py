"""Running a .adt file on data the way a device would: the torch-free runtime, never the training model.

:func:`score_file` is THE accuracy of a .adt file in ADT: ``adt demo`` and ``adt run --mnist`` report
it, and the paper reproduction scores every file it records with it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from adt.runtime import Model

__all__ = ["EVALUATOR", "FileScore", "concrete_input_shape", "count_correct", "model_input", "predict", "score_file"]

#: How :func:`score_file` evaluates a file (recorded next to every score, so records say what scored them).
EVALUATOR = "adt.runtime.load (numpy engine)"


@dataclass(frozen=True)
class FileScore:
    """Top-1 accuracy of a .adt file: ``correct`` of ``n`` samples, measured by ``evaluator``."""

    acc: float
    correct: int
    n: int
    evaluator: str

    def to_dict(self) -> dict:
        """``{"acc", "n", "evaluator"}``: the fields the reproduction's run records store."""
        return {"acc": self.acc, "n": self.n, "evaluator": self.evaluator}


def predict(model: Model, x: np.ndarray, batch_size: int = 1000, progress: bool = False) -> np.ndarray:
    """The outputs of ``model.run`` on ``x`` [N, ...], run ``batch_size`` samples at a time and
    concatenated; ``progress`` shows a progress bar on stderr."""
    from tqdm import tqdm

    outs = []
    with tqdm(total=len(x), unit="img", file=sys.stderr, disable=not progress, leave=False) as bar:
        for i in range(0, len(x), batch_size):
            y = np.asarray(model.run(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)))
            bar.update(len(y))
            outs.append(y)
    return np.concatenate(outs)


def count_correct(outputs: np.ndarray, labels: np.ndarray) -> int:
    """How many rows of ``outputs`` [N, classes] have their largest value at the label's index."""
    return int((np.asarray(outputs).argmax(axis=1) == np.asarray(labels)).sum())


def model_input(model: Model, images: np.ndarray) -> np.ndarray:
    """``images`` [N, C, H, W] as ``model`` takes them: flattened to [N, C*H*W] when its graph input
    is a flat vector (an MLP exported without a Flatten node), else unchanged."""
    if len(model.input_shape or []) == 2:
        return images.reshape(len(images), -1)
    return images


def score_file(path: str | Path, images: np.ndarray, labels: np.ndarray, batch: int = 1000,
               engine: str = "numpy") -> FileScore:
    """Top-1 accuracy of the .adt file at ``path`` on normalized ``images`` [N, 1, 28, 28] (float) and
    integer ``labels`` [N], computed from the file alone: ``adt.runtime.load(path, engine)``, run in
    batches of ``batch``."""
    import adt.runtime as rt

    model = rt.load(str(path), engine=engine)
    correct = count_correct(predict(model, model_input(model, images), batch), labels)
    evaluator = EVALUATOR if engine == "numpy" else f"adt.runtime.load ({engine} engine)"
    return FileScore(acc=correct / len(images), correct=correct, n=int(len(images)), evaluator=evaluator)


def concrete_input_shape(model: Model, batch: int = 1) -> tuple[int, ...]:
    """The input shape of ``model`` with every dimension fixed: ``batch`` first, then the sizes its
    architecture declares. Raises ValueError when the graph declares no shape or a symbolic size
    after the batch dimension (there is then no input to build)."""
    dims = model.input_shape
    if not dims:
        raise ValueError("the architecture's input declares no shape: cannot build a zero input")
    shape = [batch]
    for i, d in enumerate(dims[1:], start=1):
        if not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"input dim {i} is {d!r}, not a fixed size: cannot build a zero input")
        shape.append(int(d))
    return tuple(shape)
