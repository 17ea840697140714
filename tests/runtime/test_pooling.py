"""MaxPool/AveragePool are one reduction over a ``sliding_window_view`` of the (padded) input (issue 17,
item 3): the same results as the loop over kernel offsets they replace (kept here as the reference),
for pads, strides, dilations, ceil_mode, auto_pad and count_include_pad, without a Python loop over
the kernel and without materialising the windows. No onnx needed (the conformance tests against
onnx's reference are in test_ops.py).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from adt.runtime import numpy_engine
from adt.runtime.numpy_engine import NumpyEngine, _geometry, _pad, _pads
from adt.runtime.onnx_proto import FLOAT, Graph, OnnxModel, ValueInfo, make_node

RNG = np.random.default_rng(17)


def _engine(node, shape, opset=19) -> NumpyEngine:
    g = Graph([node], name="g", inputs=[ValueInfo("x", FLOAT, list(shape))], outputs=[ValueInfo("y", 0, None)])
    return NumpyEngine(OnnxModel(ir_version=9, opsets={"ai.onnx": opset}, graph=g), {})


def _loop_pool(node, x, kind):
    """The implementation before issue 17: one strided slice per kernel offset."""
    kernel = list(node.attrs["kernel_shape"].value)
    a = node.attrs.get("ceil_mode")
    ceil_mode = bool(a.value) if a else False
    a = node.attrs.get("count_include_pad")
    include_pad = bool(a.value) if a else False
    strides, dil = _geometry(node, x.ndim, kernel)
    begin, end, out, extra = _pads(node, x.shape[2:], kernel, strides, dil, ceil_mode)
    end_all = [e + x_ for e, x_ in zip(end, extra)]
    xp = _pad(x, begin, end_all, -np.inf if kind == "max" else 0.0, node)

    def slices(offs):
        return (slice(None), slice(None)) + tuple(
            slice(o * d, o * d + (n - 1) * st + 1, st) for o, d, st, n in zip(offs, dil, strides, out))
    acc = None
    for offs in np.ndindex(*kernel):
        v = xp[slices(offs)]
        if acc is None:
            acc = v.copy()
        elif kind == "max":
            np.maximum(acc, v, out=acc)
        else:
            acc += v
    if kind == "max":
        return acc
    mask = np.zeros((1, 1) + tuple(n + b + e for n, b, e in zip(x.shape[2:], begin, end_all)), np.float32)
    inner = tuple(slice(0, b + n + e) if include_pad else slice(b, b + n) for n, b, e in zip(x.shape[2:], begin, end))
    mask[(slice(None), slice(None)) + inner] = 1.0
    counts = np.zeros((1, 1) + tuple(out), np.float32)
    for offs in np.ndindex(*kernel):
        counts += mask[slices(offs)]
    return acc / np.maximum(counts, 1.0)


CASES = [
    ([2, 2], {}), ([3, 3], {"strides": [2, 2]}), ([3, 3], {"pads": [1, 1, 1, 1]}),
    ([3, 2], {"pads": [2, 0, 1, 1], "strides": [2, 1]}), ([2, 2], {"dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    ([3, 3], {"strides": [2, 2], "ceil_mode": 1}), ([2, 3], {"strides": [3, 2], "pads": [1, 1, 0, 1], "ceil_mode": 1}),
    ([3, 3], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}), ([2, 2], {"auto_pad": "SAME_LOWER"}),
    ([3, 3], {"auto_pad": "VALID", "strides": [2, 1]}), ([28, 28], {"pads": [27, 27, 27, 27]}),
    # kernels over _POOL_LOOP_MAX: the linear-time scan, with dilations, strides, pads and ceil_mode
    ([9, 12], {"dilations": [2, 1], "pads": [4, 4, 4, 4], "strides": [3, 2]}),
    ([10, 3], {"dilations": [3, 2], "pads": [7, 1, 9, 0], "strides": [4, 1], "ceil_mode": 1}),
    ([30, 31], {"strides": [5, 7], "ceil_mode": 1, "pads": [2, 3, 2, 3]}),
]


@pytest.mark.parametrize("kind,include_pad", [("max", 0), ("avg", 0), ("avg", 1)])
@pytest.mark.parametrize("kernel,attrs", CASES)
def test_vectorised_pool_matches_the_loop(kind, include_pad, kernel, attrs):
    op = "MaxPool" if kind == "max" else "AveragePool"
    extra = {"count_include_pad": include_pad} if kind == "avg" else {}
    shape = (2, 3, 9, 8) if max(kernel) <= 3 else (2, 3, 28, 28) if kernel == [28, 28] else (2, 3, 30, 31)
    node = make_node(op, ["x"], ["y"], kernel_shape=kernel, **attrs, **extra)
    x = RNG.standard_normal(shape).astype(np.float32)
    got = _engine(node, shape).run({"x": x})[0]
    want = _loop_pool(node, x, kind)
    assert got.shape == want.shape and got.dtype == want.dtype
    if kind == "max":
        np.testing.assert_array_equal(got, want)
    else:  # a sum in another order: float32 rounding only
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("spatial", [(7,), (5, 6, 4)])
def test_1d_and_3d_pools_match_the_loop(spatial):
    for kind, op in (("max", "MaxPool"), ("avg", "AveragePool")):
        kernel = [2] * len(spatial)
        node = make_node(op, ["x"], ["y"], kernel_shape=kernel, strides=[2] * len(spatial), pads=[1] * 2 * len(spatial),
                         ceil_mode=1)
        x = RNG.standard_normal((1, 2) + spatial).astype(np.float32)
        np.testing.assert_allclose(_engine(node, x.shape).run({"x": x})[0], _loop_pool(node, x, kind), rtol=2e-6, atol=2e-6)


def test_nan_propagates_through_max_pool_as_before():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    node = make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])
    got = _engine(node, x.shape).run({"x": x})[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(_loop_pool(node, x, "max")))


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_a_large_kernel_costs_no_loop_over_its_positions_and_stays_within_the_budget_figure(op, monkeypatch):
    # the 91-byte file: a 28x28 kernel over a 28x28 input with pads 27 (784 kernel positions)
    node = make_node(op, ["x"], ["y"], kernel_shape=[28, 28], pads=[27, 27, 27, 27])
    eng = _engine(node, (1, 1, 28, 28))
    calls = []
    real = np.ndindex
    monkeypatch.setattr(numpy_engine.np, "ndindex", lambda *a: calls.append(a) or real(*a))
    x = RNG.standard_normal((8, 4, 28, 28)).astype(np.float32)
    plan = eng.plan({"x": x})
    tracemalloc.start()
    try:
        y = eng.run({"x": x})[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert calls == []
    assert y.shape == (8, 4, 55, 55)
    # the windows (8*4*55*55*784 floats = 303 MiB) are never materialised, and what the run allocates
    # stays under the engine's own figure for this step (what max_memory is checked against)
    assert peak <= plan.peak < 16 << 20


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_a_huge_1d_kernel_is_linear_in_the_axis(op):
    # 200,000 kernel positions over a 300,000-long padded axis: out x kernel would be 2e10 steps
    node = make_node(op, ["x"], ["y"], kernel_shape=[200000], pads=[100000, 100000], count_include_pad=1)
    x = RNG.standard_normal((1, 1, 100000)).astype(np.float32)
    eng = _engine(node, x.shape)
    tracemalloc.start()
    try:
        y = eng.run({"x": x})[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.shape == (1, 1, 100001) and peak <= eng.plan({"x": x}).peak
    c = np.concatenate([[0.0], np.cumsum(np.pad(x[0, 0].astype(np.float64), 100000))])
    sums = c[200000:] - c[:100001]
    if op == "AveragePool":
        np.testing.assert_allclose(y[0, 0], sums / 200000, rtol=1e-5, atol=1e-7)
    else:  # every window holds the whole input from its middle start on
        assert y[0, 0, 50000] == x.max() and np.all(y[0, 0] <= x.max())
