"""The NumPy engine's load-time rewrites (adt.runtime.graph_rewrites): each one against the same graph
run without rewrites and against ONNX Runtime, on small random graphs; when a rewrite must not apply
(a second reader of the conv output), it does not; a replaced weight leaves no second copy."""
from __future__ import annotations

import numpy as np
import pytest

from adt.runtime.graph_rewrites import CONV_OP, GEMM_OP, INTERNAL_DOMAIN, Packing
from adt.runtime.numpy_engine import NumpyEngine
from adt.runtime.onnx_proto import FLOAT, Graph, OnnxModel, Tensor, ValueInfo, make_node

RNG = np.random.default_rng(7)


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def bn_params(prefix: str, ch: int) -> dict:
    return {f"{prefix}.s": RNG.uniform(0.5, 1.5, ch).astype(np.float32), f"{prefix}.b": f32(ch, scale=0.1),
            f"{prefix}.m": f32(ch, scale=0.1), f"{prefix}.v": RNG.uniform(0.5, 1.5, ch).astype(np.float32)}


def model(nodes, outputs=("y",), inits=None, opset=17) -> OnnxModel:
    g = Graph(nodes=nodes, initializers=[Tensor.from_array(v, k) for k, v in (inits or {}).items()],
              inputs=[ValueInfo("x", FLOAT, None)], outputs=[ValueInfo(o, FLOAT, None) for o in outputs])
    return OnnxModel(ir_version=8, opsets={"ai.onnx": opset}, graph=g)


def ort_run(m: OnnxModel, weights: dict, x: np.ndarray) -> list:
    ort = pytest.importorskip("onnxruntime")
    from adt.runtime.onnx_proto import add_initializers
    data = add_initializers(m.to_bytes(), weights)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def check(m: OnnxModel, weights: dict, x: np.ndarray, rtol: float = 1e-4) -> NumpyEngine:
    """Rewritten == unrewritten == ONNX Runtime (to float32 rounding); returns the rewritten engine."""
    plain = NumpyEngine(m, weights, rewrites=False).run({"x": x})
    eng = NumpyEngine(m, weights)
    got = eng.run({"x": x})
    ref = ort_run(m, weights, x)
    for g, p, r in zip(got, plain, ref):
        assert g.shape == p.shape == r.shape and g.dtype == p.dtype == np.float32
        assert g.flags.c_contiguous
        scale = max(float(np.abs(r).max()), 1e-6)
        np.testing.assert_allclose(g, p, rtol=rtol, atol=rtol * scale)
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * scale)
    return eng


def ops(eng: NumpyEngine) -> list[str]:
    return [node.op_type for _, node, _, _ in eng._steps]


CONV_CASES = [  # (C, M, kernel, attrs)
    (4, 6, 3, dict(pads=[1, 1, 1, 1])),
    (4, 6, 3, dict(strides=[2, 2], pads=[1, 0, 1, 0])),
    (4, 6, 3, dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    (4, 6, 1, dict()),
    (4, 6, 1, dict(strides=[2, 2])),
    (6, 6, 3, dict(group=6, pads=[1, 1, 1, 1])),                   # depthwise
    (6, 6, 3, dict(group=6, strides=[2, 2], pads=[1, 1, 1, 1])),   # depthwise, strided
    (6, 6, 3, dict(group=6, dilations=[2, 1], pads=[2, 1, 2, 1])),  # depthwise, dilated
    (6, 12, 3, dict(group=6, pads=[1, 1, 1, 1])),                  # depthwise with multiplier 2 (grouped)
    (6, 9, 3, dict(group=3, strides=[1, 2])),                      # grouped
    (4, 5, 5, dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    (3, 4, 2, dict(auto_pad="SAME_LOWER")),
]


@pytest.mark.parametrize("act", ["none", "relu", "clip6", "clip_lo", "clip_none", "leaky"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_bn_act(case, act):
    c, m, k, attrs = CONV_CASES[case]
    g = attrs.get("group", 1)
    w = {"w": f32(m, c // g, k, k, scale=0.5), "b": f32(m, scale=0.1), **bn_params("bn", m)}
    nodes = [make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], **attrs),
             make_node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], ["n"], epsilon=1e-3)]
    inits = {}
    if act == "relu":
        nodes.append(make_node("Relu", ["n"], ["y"]))
    elif act == "leaky":
        nodes.append(make_node("LeakyRelu", ["n"], ["y"], alpha=0.2))
    elif act == "clip6":
        inits = {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
        nodes.append(make_node("Clip", ["n", "lo", "hi"], ["y"]))
    elif act == "clip_lo":
        inits = {"lo": np.array(-0.5, np.float32)}
        nodes.append(make_node("Clip", ["n", "lo"], ["y"]))
    elif act == "clip_none":
        nodes.append(make_node("Clip", ["n"], ["y"]))
    else:
        nodes[-1].outputs = ["y"]
    x = f32(2, c, 9, 8)
    eng = check(model(nodes, inits=inits), w, x)
    assert ops(eng) == [CONV_OP], ops(eng)  # BN folded, activation fused, weights packed


def test_bn_not_folded_with_second_reader():
    w = {"w": f32(4, 3, 3, 3, scale=0.5), **bn_params("bn", 4)}
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             make_node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], ["n"]),
             make_node("Relu", ["n"], ["r"]),
             make_node("Add", ["r", "c"], ["y"])]
    eng = check(model(nodes), w, f32(2, 3, 6, 6))
    assert "BatchNormalization" in ops(eng) and CONV_OP in ops(eng)


def test_conv_output_as_graph_output_not_fused():
    w = {"w": f32(4, 3, 3, 3, scale=0.5)}
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), make_node("Relu", ["c"], ["y"])]
    eng = check(model(nodes, outputs=("y", "c")), w, f32(2, 3, 6, 6))
    assert ops(eng) == [CONV_OP, "Relu"]


def test_shared_weight_not_replaced():
    w = {"w": f32(3, 3, 3, 3, scale=0.5), **bn_params("bn", 3)}
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             make_node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], ["n"]),
             make_node("Conv", ["n", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    eng = check(model(nodes), w, f32(2, 3, 6, 6))
    assert ops(eng) == ["Conv", "BatchNormalization", "Conv"]


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", ["none", "vector", "scalar"])
def test_gemm_bn_relu(trans_b, bias):
    w = {"w": f32(5, 8) if trans_b else f32(8, 5), **bn_params("bn", 5)}
    ins = ["x", "w"]
    if bias != "none":
        w["c"] = f32(5) if bias == "vector" else f32(1)
        ins.append("c")
    nodes = [make_node("Gemm", ins, ["g"], transB=trans_b, alpha=0.5, beta=2.0),
             make_node("BatchNormalization", ["g", "bn.s", "bn.b", "bn.m", "bn.v"], ["n"]),
             make_node("Relu", ["n"], ["y"])]
    eng = check(model(nodes), w, f32(3, 8))
    assert ops(eng) == [GEMM_OP]


def test_identity_and_dropout_dropped():
    w = {"w": f32(4, 3, 1, 1)}
    nodes = [make_node("Identity", ["x"], ["i"]), make_node("Conv", ["i", "w"], ["c"]),
             make_node("Dropout", ["c"], ["d"]), make_node("Relu", ["d"], ["r"]), make_node("Identity", ["r"], ["y"])]
    eng = check(model(nodes), w, f32(2, 3, 5, 5))
    assert ops(eng) == [CONV_OP, "Identity"]  # the last Identity writes a graph output: kept


def test_clip_attribute_bounds_old_opset():
    w = {"w": f32(4, 3, 3, 3)}
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             make_node("Clip", ["c"], ["y"], min=-0.3, max=0.4)]
    x = f32(2, 3, 6, 6)
    m = model(nodes, opset=9)
    plain = NumpyEngine(m, w, rewrites=False).run({"x": x})[0]
    eng = NumpyEngine(m, w)
    assert ops(eng) == [CONV_OP]
    np.testing.assert_allclose(eng.run({"x": x})[0], plain, rtol=1e-5, atol=1e-6)
    assert plain.min() >= -0.3 - 1e-7 and plain.max() <= 0.4 + 1e-7


def test_clip_dynamic_bound_not_fused():
    w = {"w": f32(4, 3, 3, 3)}
    # the lower bound is computed from the input at run time: not a constant, so Clip stays a node
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), make_node("Flatten", ["x"], ["xf"], axis=0),
             make_node("Gather", ["xf", "zero"], ["lo"], axis=1), make_node("Clip", ["c", "lo"], ["y"])]
    m = model(nodes, inits={"zero": np.array(0, np.int64)})
    eng = check(m, w, f32(2, 3, 6, 6))
    assert "Clip" in ops(eng)


def test_own_weights_replaces_without_copy():
    w = {"w": f32(8, 4, 3, 3), **bn_params("bn", 8)}
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             make_node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], ["y"])]
    m = model(nodes)
    x = f32(2, 4, 7, 7)
    ref = NumpyEngine(m, dict(w), rewrites=False).run({"x": x})[0]
    owned = dict(w)
    eng = NumpyEngine(m, owned, own_weights=True)
    assert "w" not in owned and "w" not in eng._consts  # replaced, not kept beside the folded one
    np.testing.assert_allclose(eng.run({"x": x})[0], ref, rtol=1e-5, atol=1e-5)
    kept = dict(w)
    NumpyEngine(m, kept)
    assert set(kept) == set(w)  # not owned: the caller's mapping is left as it was


def test_internal_op_in_a_file_is_refused():
    from adt.runtime.errors import AdtUnsupportedOpError
    n = make_node(CONV_OP, ["x", "w"], ["y"], domain=INTERNAL_DOMAIN, w_shape=[1, 1, 1, 1], packing=0)
    with pytest.raises(AdtUnsupportedOpError):
        NumpyEngine(model([n]), {"w": f32(1, 1)})
    n = make_node(CONV_OP, ["x", "w"], ["y"], w_shape=[1, 1, 1, 1], packing=0)
    with pytest.raises(AdtUnsupportedOpError):
        NumpyEngine(model([n]), {"w": f32(1, 1)})


def test_budget_refuses_packed_conv_before_allocating():
    """The plan checks a fused conv's output and work space against max_memory before it runs."""
    from adt.runtime.errors import AdtBudgetError
    w = {"w": f32(8, 4, 3, 3)}
    m = model([make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
               make_node("Flatten", ["c"], ["y"])])
    eng = NumpyEngine(m, w, max_memory=14 << 20)
    assert ops(eng) == [CONV_OP, "Flatten"]
    eng.run({"x": np.zeros((16, 4, 64, 64), np.float32)})  # 1 + 2 MiB (+ work space): fits
    # input 4 MiB + output 8 MiB fill 12 MiB: the work space (column blocks) does not fit
    with pytest.raises(AdtBudgetError, match="Conv.*work space"):
        NumpyEngine(m, w, max_memory=12 << 20).plan({"x": ((64, 4, 64, 64), np.float32)})
    with pytest.raises(AdtBudgetError, match="Conv.*work space"):
        NumpyEngine(m, w, max_memory=12 << 20).run({"x": np.zeros((64, 4, 64, 64), np.float32)})


@pytest.mark.parametrize("pattern", ["add_relu", "relu_add", "add", "add_first_input", "clip_add"])
@pytest.mark.parametrize("case", [0, 1, 3, 5, 9])
def test_residual_fused(case, pattern):
    """Conv (+BN) -> Add(shortcut) -> Relu and Conv -> Relu -> Add: one AdtConv reading the shortcut."""
    c, m, k, attrs = CONV_CASES[case]
    g = attrs.get("group", 1)
    w = {"w": f32(m, c // g, k, k, scale=0.5), **bn_params("bn", m)}
    x = f32(2, c, 9, 8)
    h_out, w_out = NumpyEngine(model([make_node("Conv", ["x", "w"], ["y"], kernel_shape=[k, k], **attrs)]),
                               w, rewrites=False).run({"x": x})[0].shape[2:]
    # the shortcut: a stored tensor plus a scalar read from x, so that it is computed during the run
    w["short"] = f32(2, m, h_out, w_out)
    inits = {"zero": np.array(0, np.int64)}
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[k, k], **attrs),
             make_node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], ["n"]),
             make_node("Flatten", ["x"], ["xf"], axis=0), make_node("Gather", ["xf", "zero"], ["x0"], axis=1),
             make_node("Add", ["short", "x0"], ["r"])]
    if pattern == "add_relu":
        nodes += [make_node("Add", ["n", "r"], ["a"]), make_node("Relu", ["a"], ["y"])]
    elif pattern == "add_first_input":
        nodes += [make_node("Add", ["r", "n"], ["a"]), make_node("Relu", ["a"], ["y"])]
    elif pattern == "relu_add":
        nodes += [make_node("Relu", ["n"], ["a"]), make_node("Add", ["a", "r"], ["y"])]
    elif pattern == "clip_add":
        inits.update(lo=np.array(-0.2, np.float32), hi=np.array(0.3, np.float32))
        nodes += [make_node("Clip", ["n", "lo", "hi"], ["a"]), make_node("Add", ["a", "r"], ["y"])]
    else:
        nodes += [make_node("Add", ["n", "r"], ["y"])]
    eng = check(model(nodes, inits=inits), w, x)
    assert ops(eng).count(CONV_OP) == 1 and "Add" in ops(eng) and ops(eng)[-1] == CONV_OP, ops(eng)
    assert "Relu" not in ops(eng)[ops(eng).index("Add"):]


def test_residual_broadcast_falls_back():
    """A residual that broadcasts (not the conv's output shape) is added after the conv, exactly."""
    w = {"w": f32(4, 3, 3, 3, scale=0.5), "r": f32(1, 4, 1, 1)}
    for pattern in ("add_relu", "relu_add"):
        nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                 make_node("Identity", ["r"], ["r1"])]
        if pattern == "add_relu":
            nodes += [make_node("Add", ["c", "r1"], ["a"]), make_node("Relu", ["a"], ["y"])]
        else:
            nodes += [make_node("Relu", ["c"], ["a"]), make_node("Add", ["a", "r1"], ["y"])]
        eng = check(model(nodes), w, f32(2, 3, 5, 5))
        assert ops(eng) == [CONV_OP], ops(eng)


def test_residual_computed_after_the_conv():
    """The shortcut is produced after the main conv in file order: the fused node runs at the Add."""
    w = {"w": f32(4, 3, 3, 3, scale=0.5), "ws": f32(4, 3, 1, 1, scale=0.5)}
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             make_node("Conv", ["x", "ws"], ["s"]),
             make_node("Add", ["c", "s"], ["a"]), make_node("Relu", ["a"], ["y"])]
    eng = check(model(nodes), w, f32(2, 3, 6, 5))
    assert ops(eng) == [CONV_OP, CONV_OP]
    assert eng._steps[1][1].inputs[-1] == "s"  # the second step is the fused main conv reading the shortcut


def test_owned_large_weight_folded_and_relaid_in_place():
    """An owned group-1 weight over INPLACE_MIN_BYTES: BN folded and re-laid (OHWI) in its own memory."""
    from adt.runtime.graph_rewrites import INPLACE_MIN_BYTES
    w = {"w": f32(192, 160, 3, 3, scale=0.05), **bn_params("bn", 192)}
    assert w["w"].nbytes >= INPLACE_MIN_BYTES
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             make_node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], ["n"]),
             make_node("Relu", ["n"], ["y"])]
    m = model(nodes)
    x = f32(2, 160, 6, 5)
    ref = NumpyEngine(m, {k: v.copy() for k, v in w.items()}, rewrites=False).run({"x": x})[0]
    expect = ort_run(m, w, x)[0]
    owned = {k: v.copy() for k, v in w.items()}
    original = owned["w"]
    original.flags.writeable = False  # as the loader hands them over
    eng = NumpyEngine(m, owned, own_weights=True)
    (fn, node, ins, _), = eng._steps
    assert node.op_type == CONV_OP and node.attrs["packing"].value == Packing.OHWI
    assert np.shares_memory(eng._consts[ins[1]], original)  # the same memory: no second copy
    got = eng.run({"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4 * float(np.abs(expect).max()))
    # not owned: the caller's array is left as it was
    kept = {k: v.copy() for k, v in w.items()}
    NumpyEngine(m, kept)
    np.testing.assert_array_equal(kept["w"], w["w"])


@pytest.mark.parametrize("shape", [(6, 1, 1), (1, 6, 1, 1), (1,), (6,)])
def test_per_channel_mul_add_folded(shape):
    """The exporter's BatchNorm (Mul by a per-channel scale, Add a per-channel shift) folds like BN."""
    size = int(np.prod(shape))
    if shape == (6,):  # (6,) broadcasts along W (of size 6), not the channels: must not fold
        w = {"w": f32(6, 3, 3, 3, scale=0.5), "s": f32(6), "t": f32(6)}
    else:
        w = {"w": f32(6, 3, 3, 3, scale=0.5), "s": f32(*shape), "t": f32(*shape)}
    nodes = [make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             make_node("Mul", ["c", "s"], ["cs"]), make_node("Add", ["t", "cs"], ["ct"]),
             make_node("Relu", ["ct"], ["y"])]
    eng = check(model(nodes), w, f32(2, 3, 7, 6))
    if shape == (6,):
        assert "Mul" in ops(eng)
    else:
        assert ops(eng) == [CONV_OP], (size, ops(eng))


def test_output_over_the_platforms_largest_array_is_refused(monkeypatch):
    from adt.runtime import numpy_engine
    from adt.runtime.errors import AdtBudgetError
    monkeypatch.setattr(numpy_engine, "MAX_ARRAY_BYTES", 1 << 16)
    m = model([make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    eng = NumpyEngine(m, {"w": f32(8, 4, 3, 3)}, max_memory=None)
    eng.run({"x": f32(1, 4, 8, 8)})  # 8 KiB output: fine
    with pytest.raises(AdtBudgetError, match="largest array this platform"):
        eng.run({"x": f32(4, 4, 32, 32)})  # 128 KiB output


@pytest.mark.parametrize("hw,k,attrs", [
    ((1, 1), 3, dict(pads=[1, 1, 1, 1])),                      # only the centre tap reads the input
    ((2, 2), 3, dict(pads=[1, 1, 1, 1], strides=[2, 2])),      # the first row and column read padding only
    ((1, 2), 3, dict(pads=[2, 0, 2, 1], dilations=[2, 1])),
    ((1, 1), 3, dict(pads=[4, 4, 4, 4], strides=[6, 6])),      # no tap ever reads the input: bias only
    ((3, 1), 5, dict(pads=[2, 2, 2, 2])),
])
@pytest.mark.parametrize("owned", [False, True])
def test_taps_reading_only_padding_are_skipped(hw, k, attrs, owned, monkeypatch):
    from adt.runtime import graph_rewrites
    if owned:  # owned: the weight is re-laid in place (OHWI) whatever its size, to test that layout too
        monkeypatch.setattr(graph_rewrites, "INPLACE_MIN_BYTES", 0)
    w = {"w": f32(8, 4, k, k, scale=0.5), "b": f32(8)}
    nodes = [make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], **attrs), make_node("Relu", ["c"], ["y"])]
    m = model(nodes)
    x = f32(3, 4, *hw)
    ref = ort_run(m, w, x)[0]
    plain = NumpyEngine(m, w, rewrites=False).run({"x": x})[0]
    weights = {kk: v.copy() for kk, v in w.items()}
    eng = NumpyEngine(m, weights, own_weights=owned)
    assert ops(eng) == [CONV_OP]
    packing = eng._steps[0][1].attrs["packing"].value
    assert packing == (graph_rewrites.Packing.OHWI if owned else graph_rewrites.Packing.GEMM)
    got = eng.run({"x": x})[0]
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", [dict(), dict(strides=[2, 2]), dict(auto_pad="SAME_LOWER", strides=[2, 1]),
                                   dict(pads=[0, 2, 1, 0], dilations=[1, 2]), dict(pads=[1, 1, 1, 1], strides=[3, 2])])
@pytest.mark.parametrize("hw", [(9, 8), (150, 70)])  # (150, 70): several row bands per sample
def test_depthwise_padding_per_block(attrs, hw):
    c = 8
    w = {"w": f32(c, 1, 3, 3), "b": f32(c)}
    nodes = [make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], group=c, **attrs)]
    eng = check(model(nodes), w, f32(2, c, *hw))
    assert ops(eng) == [CONV_OP] and eng._steps[0][1].attrs["packing"].value == Packing.DEPTHWISE


@pytest.mark.parametrize("attrs", [dict(pads=[1, 1, 1, 1]), dict(pads=[2, 0, 1, 3], strides=[2, 1]),
                                   dict(pads=[1, 2, 1, 2], dilations=[2, 2]),
                                   dict(auto_pad="SAME_UPPER", strides=[3, 2])])
def test_group1_row_bands_with_padding(attrs):
    """Large maps: several row bands per sample, each filled from the unpadded input."""
    w = {"w": f32(16, 6, 3, 3, scale=0.3), "b": f32(16)}
    nodes = [make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], **attrs)]
    eng = check(model(nodes), w, f32(2, 6, 160, 96))
    assert ops(eng) == [CONV_OP]
