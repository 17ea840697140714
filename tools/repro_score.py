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


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict) -> np.ndarray:
    """Conv2d, group 1, no padding, given strides (im2col by sliding windows + one tensordot)."""
    if any(attrs.get("pads", [0])) or attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1])):
        raise NotImplementedError("conv attributes beyond the fast path")
    sh, sw = attrs.get("strides", [1, 1])
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::sh, ::sw]
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # N, H', W', O
    if b is not None:
        y = y + b
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def _maxpool(x: np.ndarray, attrs: dict) -> np.ndarray:
    kh, kw = attrs["kernel_shape"]
    sh, sw = attrs.get("strides", [kh, kw])
    if any(attrs.get("pads", [0])):
        raise NotImplementedError("padded max pool")
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return win.max(axis=(4, 5))


def _gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None, attrs: dict) -> np.ndarray:
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = attrs.get("alpha", 1.0) * (a @ b)
    return y + attrs.get("beta", 1.0) * c if c is not None else y


class _NumpyGraph:
    """A tiny NumPy interpreter for the few ops the MNIST models use (Conv, MaxPool, Flatten, Gemm,
    Relu, MatMul, Add); anything else raises NotImplementedError and the caller uses onnx.reference."""

    OPS = {"Conv", "MaxPool", "Flatten", "Gemm", "Relu", "MatMul", "Add"}

    def __init__(self, proto, weights: dict[str, np.ndarray]) -> None:
        import onnx
        from onnx import numpy_helper
        self.nodes = [(n.op_type, list(n.input), list(n.output),
                       {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}) for n in proto.graph.node]
        bad = sorted({op for op, *_ in self.nodes} - self.OPS)
        if bad:
            raise NotImplementedError(f"ops {bad}")
        self.env0 = dict(weights)
        self.env0.update({i.name: numpy_helper.to_array(i) for i in proto.graph.initializer})

    def run(self, x: np.ndarray) -> np.ndarray:
        env = dict(self.env0)
        env["input"] = x
        for op, ins, outs, at in self.nodes:
            v = [env[i] if i else None for i in ins] + [None] * 3
            if op == "Conv":
                y = _conv(v[0], v[1], v[2], at)
            elif op == "MaxPool":
                y = _maxpool(v[0], at)
            elif op == "Flatten":
                ax = at.get("axis", 1)
                y = v[0].reshape(int(np.prod(v[0].shape[:ax])), -1)
            elif op == "Gemm":
                y = _gemm(v[0], v[1], v[2], at)
            elif op == "Relu":
                y = np.maximum(v[0], 0)
            elif op == "MatMul":
                y = v[0] @ v[1]
            else:  # Add
                y = v[0] + v[1]
            env[outs[0]] = y.astype(np.float32, copy=False)
        return env["output"]


class _ReferenceModel:
    """Fallback: the file's ONNX graph with rebuilt weights, run by onnx.reference."""

    def __init__(self, path: str | Path) -> None:
        import onnx
        from onnx import numpy_helper
        from onnx.reference import ReferenceEvaluator

        from adt.runtime.format import read_adt
        f = read_adt(Path(path).read_bytes())
        proto = onnx.load_from_string(f.architecture)
        weights = rebuild_weights_np(f)
        try:
            self._fast = _NumpyGraph(proto, weights)
            self.kind = "numpy ops"
            return
        except NotImplementedError:
            self._fast = None
        for name, w in weights.items():
            proto.graph.initializer.append(numpy_helper.from_array(w, name))
        self._sess = ReferenceEvaluator(proto)
        self.kind = "onnx.reference"

    def run(self, x: np.ndarray) -> np.ndarray:
        if self._fast is not None:
            return self._fast.run(x)
        return self._sess.run(None, {"input": x})[0]


def load_model(path: str | Path):
    """``(model, evaluator name)``: the project runtime when present, else the reference fallback."""
    try:
        import adt.runtime as rt
        load = rt.load
    except (ImportError, AttributeError):
        m = _ReferenceModel(path)
        return m, f"fallback: read_adt + numpy rebuild + {m.kind}"
    return load(str(path)), "adt.runtime.load (numpy engine)"


def score_file(path: str | Path, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> dict:
    """Top-1 accuracy of the .adt file at ``path`` on normalized ``images`` [N,1,28,28] float32."""
    model, evaluator = load_model(path)
    correct = 0
    for i in range(0, len(images), batch):
        logits = np.asarray(model.run(np.ascontiguousarray(images[i:i + batch], dtype=np.float32)))
        correct += int((logits.argmax(axis=1) == labels[i:i + batch]).sum())
    return {"acc": correct / len(images), "n": int(len(images)), "evaluator": evaluator}
