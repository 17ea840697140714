"""Every op of the NumPy engine against ONNX's own reference evaluator on random inputs, with a
spread of attributes (strides, pads, dilations, groups, auto_pad, ceil_mode, count_include_pad, ...)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from adt.runtime.numpy_engine import NumpyEngine  # noqa: E402
from adt.runtime.onnx_proto import parse_model  # noqa: E402

RNG = np.random.default_rng(1234)
ELEM = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("int64"): TensorProto.INT64}


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def i64(values):
    return np.array(values, dtype=np.int64)


def build(node, feeds: dict, opset: int = 17, inits: dict | None = None, out_type=TensorProto.UNDEFINED):
    inputs = [helper.make_tensor_value_info(k, ELEM[v.dtype], list(v.shape)) for k, v in feeds.items()]
    outputs = [helper.make_tensor_value_info(o, out_type, None) for o in node.output if o]
    graph = helper.make_graph([node], "g", inputs, outputs,
                              initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def assert_matches_reference(node, feeds: dict, opset: int = 17, inits: dict | None = None, weights: dict | None = None,
          rtol: float = 1e-5, against: str = "reference"):
    """Run ``node`` in the reference evaluator (or onnxruntime, where the reference lacks an op
    version) and in the NumPy engine; ``weights`` are passed to the engine the way the runtime passes
    rebuilt weights (and as initializers to the reference)."""
    if against == "reference":
        m = build(node, feeds, opset, {**(inits or {}), **(weights or {})})
        ref = ReferenceEvaluator(m).run(None, feeds)
    else:
        ort = pytest.importorskip("onnxruntime")
        m = build(node, feeds, opset, {**(inits or {}), **(weights or {})}, out_type=TensorProto.FLOAT)
        ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    m_arch = build(node, feeds, opset, inits)
    eng = NumpyEngine(parse_model(m_arch.SerializeToString()), weights or {})
    got = eng.run(feeds)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        r = np.asarray(r)
        assert g.shape == r.shape, (g.shape, r.shape)
        assert g.dtype == r.dtype, (g.dtype, r.dtype)
        scale = float(np.abs(r).max()) if r.size and r.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * max(scale, 1e-6))
    return got


# -- Conv ------------------------------------------------------------------------------------------
CONV_CASES = [
    # (x shape, w shape, attrs, bias)
    ((2, 3, 9, 9), (4, 3, 3, 3), {}, True),
    ((2, 3, 9, 9), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ((2, 3, 10, 11), (5, 3, 3, 2), {"strides": [2, 3], "pads": [0, 1, 2, 0]}, False),
    ((1, 2, 12, 12), (3, 2, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 0, 2]}, True),
    ((2, 4, 8, 8), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}, True),
    ((2, 4, 8, 8), (4, 1, 3, 3), {"group": 4, "strides": [2, 2]}, True),            # depthwise
    ((2, 3, 7, 9), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True),
    ((2, 3, 7, 9), (4, 3, 4, 2), {"auto_pad": "SAME_LOWER"}, False),
    ((2, 3, 7, 9), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [1, 2]}, True),
    ((2, 3, 8, 8), (5, 3, 1, 1), {}, True),                                         # 1x1
    ((2, 3, 15), (4, 3, 4), {"strides": [2], "pads": [1, 2], "dilations": [2]}, True),  # 1-D
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1]}, True),           # 3-D
]


@pytest.mark.parametrize("xs,ws,attrs,bias", CONV_CASES)
def test_conv(xs, ws, attrs, bias):
    ins = ["x", "w"] + (["b"] if bias else [])
    weights = {"w": f32(*ws)} | ({"b": f32(ws[0])} if bias else {})
    assert_matches_reference(helper.make_node("Conv", ins, ["y"], **attrs), {"x": f32(*xs)}, weights=weights)


def test_conv_weight_as_graph_input():
    """A weight fed at run time (not a constant) goes through the same path."""
    assert_matches_reference(helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), {"x": f32(2, 3, 6, 6), "w": f32(2, 3, 3, 3)})


# -- pooling ---------------------------------------------------------------------------------------
POOL_CASES = [
    ({"kernel_shape": [2, 2], "strides": [2, 2]}, (2, 3, 8, 8)),                      # fast path
    ({"kernel_shape": [2, 2], "strides": [2, 2]}, (2, 3, 9, 7)),                      # odd sizes
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (2, 3, 9, 9)),
    ({"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1]}, (1, 2, 7, 6)),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (2, 3, 8, 8)),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 1, 1]}, (2, 3, 10, 10)),
    ({"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 2, 7, 7)),
    ({"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER"}, (1, 2, 6, 5)),
    ({"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, (2, 3, 11)),              # 1-D
]


@pytest.mark.parametrize("attrs,xs", POOL_CASES)
def test_maxpool(attrs, xs):
    assert_matches_reference(helper.make_node("MaxPool", ["x"], ["y"], **attrs), {"x": f32(*xs)})


def test_maxpool_dilations():
    assert_matches_reference(helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]),
          {"x": f32(2, 2, 9, 9)})


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("attrs,xs", POOL_CASES)
def test_averagepool(attrs, xs, include_pad):
    assert_matches_reference(helper.make_node("AveragePool", ["x"], ["y"], count_include_pad=include_pad, **attrs), {"x": f32(*xs)})


@pytest.mark.parametrize("op,xs", [("GlobalAveragePool", (2, 3, 5, 4)), ("GlobalAveragePool", (3, 4, 7)),
                                   ("GlobalAveragePool", (1, 2, 3, 4, 5)), ("GlobalMaxPool", (2, 3, 5, 4))])
def test_global_pool(op, xs):
    assert_matches_reference(helper.make_node(op, ["x"], ["y"]), {"x": f32(*xs)})


@pytest.mark.parametrize("xs", [(3, 4, 7), (1, 2, 3, 4, 5)])
def test_global_maxpool_other_ranks_against_onnxruntime(xs):
    """onnx 1.2x's reference GlobalMaxPool reduces the wrong axes unless there are exactly two spatial
    dims, so these ranks are checked against onnxruntime instead."""
    got = assert_matches_reference(helper.make_node("GlobalMaxPool", ["x"], ["y"]), {"x": f32(*xs)}, against="onnxruntime")[0]
    assert got.shape == xs[:2] + (1,) * (len(xs) - 2)


# -- dense -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("attrs,a,b,c", [
    ({}, (4, 5), (5, 3), (3,)),
    ({"transB": 1}, (4, 5), (3, 5), (3,)),
    ({"transA": 1}, (5, 4), (5, 3), (4, 3)),
    ({"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, (5, 4), (3, 5), (1, 3)),
    ({"alpha": -1.5}, (4, 5), (5, 3), None),
    ({"beta": 0.25}, (2, 5), (5, 3), (2, 1)),
])
def test_gemm(attrs, a, b, c):
    ins = ["a", "b"] + (["c"] if c else [])
    weights = {"b": f32(*b)} | ({"c": f32(*c)} if c else {})
    assert_matches_reference(helper.make_node("Gemm", ins, ["y"], **attrs), {"a": f32(*a)}, weights=weights)


@pytest.mark.parametrize("a,b", [((4, 5), (5, 3)), ((2, 4, 5), (5, 3)), ((2, 1, 4, 5), (3, 5, 2)), ((5,), (5, 3))])
def test_matmul(a, b):
    assert_matches_reference(helper.make_node("MatMul", ["a", "b"], ["y"]), {"a": f32(*a), "b": f32(*b)})


# -- elementwise -----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("a,b", [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((4,), (2, 3, 4)), ((2, 3), ())])
def test_binary(op, a, b):
    assert_matches_reference(helper.make_node(op, ["a", "b"], ["y"]), {"a": f32(*a), "b": f32(*b) + np.float32(3.0)})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_int64(op):
    """Shape arithmetic: ONNX integer Div truncates toward zero."""
    assert_matches_reference(helper.make_node(op, ["a", "b"], ["y"]), {"a": i64([7, -7, 6, -6, 0, 9]), "b": i64([2, 2, -4, -4, 3, -2])})


@pytest.mark.parametrize("op,attrs", [("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", {}),
                                      ("LeakyRelu", {"alpha": 0.2}), ("Identity", {})])
def test_unary(op, attrs):
    x = f32(3, 4, 5) * np.float32(20)  # large values: Sigmoid must not overflow
    assert_matches_reference(helper.make_node(op, ["x"], ["y"], **attrs), {"x": x})


@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (0.0, None), (None, 6.0)])
def test_clip(lo, hi):
    inits = {}
    ins = ["x", "", ""]
    if lo is not None:
        inits["lo"] = np.array(lo, np.float32)
        ins[1] = "lo"
    if hi is not None:
        inits["hi"] = np.array(hi, np.float32)
        ins[2] = "hi"
    while ins[-1] == "":
        ins.pop()
    assert_matches_reference(helper.make_node("Clip", ins, ["y"]), {"x": f32(4, 5) * np.float32(8)}, inits=inits)


def test_clip_opset6_attributes():
    assert_matches_reference(helper.make_node("Clip", ["x"], ["y"], min=-1.0, max=0.5), {"x": f32(4, 5)}, opset=6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis,xs", [(17, None, (3, 10)), (17, 1, (2, 3, 4)), (17, -2, (2, 3, 4)),
                                           (11, None, (2, 3, 4)), (11, 2, (2, 3, 4, 5)), (13, 0, (3, 4))])
def test_softmax(op, opset, axis, xs):
    """Opsets < 13 normalise over the flattened tail from ``axis`` (default 1); onnx's reference only
    implements the opset-13 form, so those cases are checked against onnxruntime."""
    attrs = {} if axis is None else {"axis": axis}
    assert_matches_reference(helper.make_node(op, ["x"], ["y"], **attrs), {"x": f32(*xs) * np.float32(10)}, opset=opset,
          against="reference" if opset >= 13 else "onnxruntime")


@pytest.mark.parametrize("xs,eps", [((2, 4, 5, 5), 1e-5), ((3, 4), 1e-3), ((2, 4, 6), 0.1)])
def test_batchnorm(xs, eps):
    c = xs[1]
    weights = {"s": f32(c), "bias": f32(c), "mean": f32(c), "var": RNG.uniform(0.1, 2.0, c).astype(np.float32)}
    assert_matches_reference(helper.make_node("BatchNormalization", ["x", "s", "bias", "mean", "var"], ["y"], epsilon=eps),
          {"x": f32(*xs)}, weights=weights)


def test_dropout_is_identity_at_inference():
    assert_matches_reference(helper.make_node("Dropout", ["x"], ["y"]), {"x": f32(3, 4)})


# -- shape ops -------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis):
    assert_matches_reference(helper.make_node("Flatten", ["x"], ["y"], axis=axis), {"x": f32(2, 3, 4, 5)})


@pytest.mark.parametrize("shape,allowzero", [([-1, 20], 0), ([0, -1], 0), ([2, 0, 5, 4], 0), ([0, 3, -1], 0),
                                             ([4, 30], 0), ([-1], 0), ([2, 3, 20], 1)])
def test_reshape(shape, allowzero):
    attrs = {"allowzero": allowzero} if allowzero else {}
    assert_matches_reference(helper.make_node("Reshape", ["x", "s"], ["y"], **attrs), {"x": f32(2, 3, 4, 5)}, inits={"s": i64(shape)})


@pytest.mark.parametrize("perm", [None, [0, 2, 1, 3], [3, 0, 2, 1]])
def test_transpose(perm):
    attrs = {} if perm is None else {"perm": perm}
    assert_matches_reference(helper.make_node("Transpose", ["x"], ["y"], **attrs), {"x": f32(2, 3, 4, 5)})


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    shapes = [[2, 3, 4]] * 3
    shapes = [list(s) for s in shapes]
    for i, s in enumerate(shapes):
        s[axis] = i + 1
    feeds = {f"x{i}": f32(*s) for i, s in enumerate(shapes)}
    assert_matches_reference(helper.make_node("Concat", list(feeds), ["y"], axis=axis), feeds)


@pytest.mark.parametrize("attrs", [{}, {"start": 1}, {"end": -1}, {"start": -2, "end": 3}])
def test_shape(attrs):
    assert_matches_reference(helper.make_node("Shape", ["x"], ["y"], **attrs), {"x": f32(2, 3, 4, 5)}, opset=17)


@pytest.mark.parametrize("axis,idx", [(0, [1, 0]), (1, [[2, -1], [0, 1]]), (-1, 3), (2, [-4, 0])])
def test_gather(axis, idx):
    assert_matches_reference(helper.make_node("Gather", ["x", "i"], ["y"], axis=axis), {"x": f32(2, 3, 4)}, inits={"i": i64(idx)})


@pytest.mark.parametrize("axes", [[0], [1, -1], [0, 3]])
def test_unsqueeze(axes):
    assert_matches_reference(helper.make_node("Unsqueeze", ["x", "a"], ["y"]), {"x": f32(2, 3)}, inits={"a": i64(axes)})


def test_unsqueeze_opset11_attribute():
    assert_matches_reference(helper.make_node("Unsqueeze", ["x"], ["y"], axes=[0, 2]), {"x": f32(2, 3)}, opset=11)


@pytest.mark.parametrize("axes", [None, [1], [-1, 1]])
def test_squeeze(axes):
    ins, inits = (["x"], {}) if axes is None else (["x", "a"], {"a": i64(axes)})
    assert_matches_reference(helper.make_node("Squeeze", ins, ["y"]), {"x": f32(2, 1, 3, 1)}, inits=inits)


def test_squeeze_opset11_attribute():
    assert_matches_reference(helper.make_node("Squeeze", ["x"], ["y"], axes=[1]), {"x": f32(2, 1, 3)}, opset=11)


@pytest.mark.parametrize("attr,value", [
    ("value", numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))),
    ("value", numpy_helper.from_array(np.array([3, -1], dtype=np.int64))),
    ("value_float", 2.5), ("value_floats", [1.0, -2.0]), ("value_int", 7), ("value_ints", [1, -1, 4]),
])
def test_constant(attr, value):
    assert_matches_reference(helper.make_node("Constant", [], ["y"], **{attr: value}), {})


def test_shape_gather_unsqueeze_concat_reshape_chain():
    """The chain old exporters emit for x.view(x.size(0), -1): dynamic batch through shape arithmetic."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "ax": i64([0]), "minus1": i64([-1])}
    for n in (1, 5):
        feeds = {"x": f32(n, 3, 4)}
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        ref = ReferenceEvaluator(m).run(None, feeds)[0]
        got = NumpyEngine(parse_model(m.SerializeToString()), {}).run(feeds)[0]
        assert got.shape == (n, 12)
        np.testing.assert_array_equal(got, ref)


# The engine's error tests (unsupported op / domain / attribute, shape mismatch) need no reference:
# they live in test_engine_errors.py and run without onnx.


# -- random geometry -------------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def conv_geometry(draw):
    s = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2]))
    c, m = group * draw(st.integers(1, 3)), group * draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(s)]
    dil = [draw(st.integers(1, 2)) for _ in range(s)]
    strides = [draw(st.integers(1, 3)) for _ in range(s)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * s)]
    size = [(k - 1) * d + 1 + draw(st.integers(0, 5)) for k, d in zip(kernel, dil)]
    return (draw(st.integers(1, 3)), c, size), (m, c // group) + tuple(kernel), \
        {"group": group, "dilations": dil, "strides": strides, "pads": pads}, draw(st.booleans())


@given(conv_geometry(), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_conv_random_geometry(geom, seed):
    (n, c, size), ws, attrs, bias = geom
    rng = np.random.default_rng(seed)
    weights = {"w": rng.standard_normal(ws).astype(np.float32)}
    if bias:
        weights["b"] = rng.standard_normal(ws[0]).astype(np.float32)
    x = rng.standard_normal((n, c, *size)).astype(np.float32)
    assert_matches_reference(helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"], **attrs), {"x": x}, weights=weights)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.sampled_from(["MaxPool", "AveragePool"]),
       st.integers(0, 1), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_pool_random_geometry(k, stride, extra, pad, op, ceil, seed):
    rng = np.random.default_rng(seed)
    size = k + extra + 2
    pads = [min(pad, k - 1)] * 4  # ONNX: a pad must be smaller than the kernel
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": pads, "ceil_mode": ceil}
    if op == "AveragePool":
        attrs["count_include_pad"] = int(rng.integers(0, 2))
    # onnx 1.2x's reference pools are wrong in some ceil_mode geometries: MaxPool k=2, s=1, pads=1 on
    # 5x6 gives 8x9 (onnxruntime and PyTorch: 6x7); AveragePool k=3, s=3, count_include_pad=1 on 6x7
    # gives other values everywhere (onnxruntime and PyTorch agree with each other and with this
    # engine). ceil_mode cases are therefore checked against onnxruntime.
    against = "onnxruntime" if ceil else "reference"
    assert_matches_reference(helper.make_node(op, ["x"], ["y"], **attrs), {"x": rng.standard_normal((2, 2, size, size + 1)).astype(np.float32)},
          against=against)
