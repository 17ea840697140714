"""Sweeps of Conv and pooling geometry against onnxruntime (deterministic, a few seconds): 1-D/2-D/3-D,
groups, strides, dilations, explicit and automatic pads, ceil_mode, count_include_pad. onnxruntime is
the referee here because onnx's reference evaluator disagrees with it (and with PyTorch) on some
ceil_mode pooling geometries; test_ops.py covers the same ops against the reference evaluator."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from adt.runtime.numpy_engine import NumpyEngine  # noqa: E402
from adt.runtime.onnx_proto import parse_model  # noqa: E402


def _both(node, x, inits=(), opset=17):
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        ref = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    except Exception:  # a geometry onnxruntime refuses (e.g. SAME padding with dilations): nothing to compare
        return None
    return NumpyEngine(parse_model(m.SerializeToString()), {}).run({"x": x})[0], ref


def test_conv_sweep():
    rng = np.random.default_rng(2)
    compared = 0
    for _ in range(200):
        s = int(rng.integers(1, 4))
        group = int(rng.choice([1, 2, 3]))
        c, m = group * int(rng.integers(1, 3)), group * int(rng.integers(1, 3))
        k = [int(rng.integers(1, 4)) for _ in range(s)]
        d = [int(rng.integers(1, 3)) for _ in range(s)]
        attrs = dict(group=group, dilations=d, strides=[int(rng.integers(1, 4)) for _ in range(s)], kernel_shape=k)
        auto = str(rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
        if auto == "NOTSET":
            attrs["pads"] = [int(rng.integers(0, 3)) for _ in range(2 * s)]
        else:
            attrs["auto_pad"] = auto
        size = [(kk - 1) * dd + 1 + int(rng.integers(0, 6)) for kk, dd in zip(k, d)]
        x = rng.standard_normal([2, c] + size).astype(np.float32)
        w = rng.standard_normal([m, c // group] + k).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        out = _both(helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs), x,
                    [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
        if out is None:
            continue
        got, ref = out
        assert got.shape == ref.shape, (attrs, x.shape)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4, err_msg=str((attrs, x.shape)))
        compared += 1
    assert compared > 120


def test_pool_sweep():
    rng = np.random.default_rng(1)
    compared = 0
    for op, k, s, pad, ceil, inc, h, dil in itertools.product(
            ["MaxPool", "AveragePool"], [1, 2, 3], [1, 2, 3], [0, 1, 2], [0, 1], [0, 1], [4, 5, 7], [1, 2]):
        if pad >= k or (op == "MaxPool" and inc) or (k - 1) * dil + 1 > h + 2 * pad:
            continue
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4, ceil_mode=ceil)
        if dil > 1:
            attrs["dilations"] = [dil, dil]
        if op == "AveragePool":
            attrs["count_include_pad"] = inc
        x = rng.standard_normal((1, 2, h, 6)).astype(np.float32)
        out = _both(helper.make_node(op, ["x"], ["y"], **attrs), x, opset=19 if dil > 1 else 17)
        if out is None:
            continue
        got, ref = out
        assert got.shape == ref.shape, (op, attrs, x.shape)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=str((op, attrs, x.shape)))
        compared += 1
    assert compared > 500
