"""Score a .adt file on MNIST the way a device would: ``adt.runtime.load(path).run(x)`` (NumPy engine),
never the training model. (Until the runtime landed, a temporary reference scorer stood here; every
committed record was re-scored with the runtime, see results/NOTES.md.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import adt.runtime as rt

EVALUATOR = "adt.runtime.load (numpy engine)"


def score_file(path: str | Path, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> dict:
    """Top-1 accuracy of the .adt file at ``path`` on normalized ``images`` [N,1,28,28] float32."""
    model = rt.load(str(path), engine="numpy")
    correct = 0
    for i in range(0, len(images), batch):
        logits = np.asarray(model.run(np.ascontiguousarray(images[i:i + batch], dtype=np.float32)))
        correct += int((logits.argmax(axis=1) == labels[i:i + batch]).sum())
    return {"acc": correct / len(images), "n": int(len(images)), "evaluator": EVALUATOR}
