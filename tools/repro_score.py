"""Score a .adt file on MNIST test images WITHOUT torch: from the file's bytes alone.

Preferred evaluator: the project's runtime (``adt.runtime.load(path).run(x)``). Where this checkout
does not have it yet, the fallback decodes the file with ``adt.runtime.format.read_adt``, rebuilds
every weight with NumPy (Tucker: core x_1 M_1 ... x_d M_d, C-order reshape) and runs the file's
ONNX architecture with ``onnx.reference.ReferenceEvaluator``. The record says which evaluator ran.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def tucker_rebuild(core: np.ndarray, factors: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """reshape(core x_1 M_1 ... x_d M_d, shape) with M_i of shape (n_i, k_i)."""
    t = core.astype(np.float64)
    for i, m in enumerate(factors):
        t = np.moveaxis(np.tensordot(m.astype(np.float64), t, axes=([1], [i])), 0, i)
    return t.reshape(shape).astype(np.float32)


def rebuild_weights_np(f) -> dict[str, np.ndarray]:
    """Every tensor of a read AdtFile as float32 (dequantized, Tucker layers rebuilt)."""
    from adt.runtime.format import ENC_TUCKER
    out = {}
    for p in f.params:
        if p.encoding == ENC_TUCKER:
            core = f.core_values(p.core)
            if core.ndim != len(p.factors):  # not expected for files this project writes
                raise ValueError(f"{p.name}: core order {core.ndim} != {len(p.factors)} factors")
            out[p.name] = tucker_rebuild(core, [f.values(m, p.group) for m in p.factors], p.shape)
        else:
            out[p.name] = f.values(p.symbols, p.group).reshape(p.shape)
    return out


class _ReferenceModel:
    """Fallback: the file's ONNX graph with rebuilt weights, run by onnx.reference."""

    def __init__(self, path: str | Path) -> None:
        import onnx
        from onnx import numpy_helper
        from onnx.reference import ReferenceEvaluator

        from adt.runtime.format import read_adt
        f = read_adt(Path(path).read_bytes())
        proto = onnx.load_from_string(f.architecture)
        for name, w in rebuild_weights_np(f).items():
            proto.graph.initializer.append(numpy_helper.from_array(w, name))
        self._sess = ReferenceEvaluator(proto)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {"input": x})[0]


def load_model(path: str | Path):
    """``(model, evaluator name)``: the project runtime when present, else the reference fallback."""
    try:
        import adt.runtime as rt
        load = rt.load
    except (ImportError, AttributeError):
        return _ReferenceModel(path), "fallback: read_adt + numpy rebuild + onnx.reference"
    return load(str(path)), "adt.runtime.load (numpy engine)"


def score_file(path: str | Path, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> dict:
    """Top-1 accuracy of the .adt file at ``path`` on normalized ``images`` [N,1,28,28] float32."""
    model, evaluator = load_model(path)
    correct = 0
    for i in range(0, len(images), batch):
        logits = np.asarray(model.run(np.ascontiguousarray(images[i:i + batch], dtype=np.float32)))
        correct += int((logits.argmax(axis=1) == labels[i:i + batch]).sum())
    return {"acc": correct / len(images), "n": int(len(images)), "evaluator": evaluator}
