"""The ops of adt.runtime.numpy_ops (issue 19), beyond ONNX's node test cases: every op on random
inputs with a spread of attributes and optional inputs, its shape rule against what it returns
(shapes and dtypes, with and without the values it may read), ONNX's reference evaluator for the
values (where onnx is installed), the engine's data-dependent path, and the typed refusals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from adt.runtime.errors import AdtBudgetError, AdtExecutionError, AdtUnsupportedOpError
from adt.runtime.format import AdtArchitectureError, AdtError
from adt.runtime.numpy_engine import ARITY, OPS, SHAPES, NumpyEngine, Val, _Dynamic, infer_node
from adt.runtime.numpy_ops import NEW_ARITY, NEW_OPS, NEW_SHAPES, erf
from adt.runtime.onnx_proto import Graph, OnnxModel, Tensor, ValueInfo, make_node, parse_model

RNG = np.random.default_rng(19)


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def i64(*v):
    return np.array(v, dtype=np.int64)


def model(node, feeds: dict, inits: dict | None = None, opset: int = 17) -> OnnxModel:
    """A one-node model: ``feeds`` become typed graph inputs, ``inits`` initializers."""
    g = Graph(nodes=[node], initializers=[Tensor.from_array(v, k) for k, v in (inits or {}).items()],
              inputs=[ValueInfo(k, Tensor.from_array(v).data_type, list(v.shape)) for k, v in feeds.items()],
              outputs=[ValueInfo(o) for o in node.outputs if o], name="g")
    return OnnxModel(ir_version=8, opsets={"ai.onnx": opset}, graph=g)


def engine(node, feeds, inits=None, opset=17, **kw) -> NumpyEngine:
    return NumpyEngine(parse_model(model(node, feeds, inits, opset).to_bytes()), {}, **kw)


# (id, op, attrs, inputs {name: array} in slot order ("" = an empty optional slot), opset, outputs,
#  the input slots whose VALUES the shape rule reads)
CASES = [
    ("hardsigmoid", "HardSigmoid", {}, {"x": f32(3, 4, scale=4)}, 17, 1, ()),
    ("hardsigmoid_ab", "HardSigmoid", {"alpha": 0.3, "beta": 0.4}, {"x": f32(3, 4, scale=4)}, 17, 1, ()),
    ("hardswish", "HardSwish", {}, {"x": f32(2, 5, scale=5)}, 17, 1, ()),
    ("erf", "Erf", {}, {"x": f32(4, 5, scale=2)}, 17, 1, ()),
    ("sqrt", "Sqrt", {}, {"x": np.abs(f32(3, 3))}, 17, 1, ()),
    ("exp", "Exp", {}, {"x": f32(3, 3)}, 17, 1, ()),
    ("log", "Log", {}, {"x": np.abs(f32(3, 3)) + 0.1}, 17, 1, ()),
    ("neg", "Neg", {}, {"x": f32(2, 3)}, 17, 1, ()),
    ("neg_int", "Neg", {}, {"x": i64(-3, 0, 5)}, 17, 1, ()),
    ("abs", "Abs", {}, {"x": f32(2, 3)}, 17, 1, ()),
    ("abs_int32", "Abs", {}, {"x": np.array([-4, 2, 0], np.int32)}, 17, 1, ()),
    ("pow", "Pow", {}, {"x": np.abs(f32(3, 4)) + 0.5, "y": f32(1, 4)}, 17, 1, ()),
    ("pow_int_exp", "Pow", {}, {"x": f32(3, 4), "y": np.array(2, np.int64)}, 17, 1, ()),
    ("pow_ints", "Pow", {}, {"x": i64(1, -2, 3), "y": i64(3, 2, 0)}, 17, 1, ()),
    ("mod_int", "Mod", {}, {"x": i64(-7, 7, -7, 7, 0), "y": i64(3, -3, -3, 3, 5)}, 17, 1, ()),
    ("fmod_float", "Mod", {"fmod": 1}, {"x": f32(3, 4, scale=5), "y": np.array([1.5, -2.0, 3.0, -0.7], np.float32)},
     17, 1, ()),
    ("mod_int32_bcast", "Mod", {}, {"x": np.arange(-6, 6, dtype=np.int32).reshape(3, 4),
                                    "y": np.array([[4], [-3], [5]], np.int32)}, 17, 1, ()),
    ("equal_int", "Equal", {}, {"x": i64(1, 2, 3, 4).reshape(2, 2), "y": i64(1, 3)}, 17, 1, ()),
    ("equal_float", "Equal", {}, {"x": np.array([1.0, 2.0, np.nan], np.float32), "y": np.array(2.0, np.float32)},
     17, 1, ()),
    ("where", "Where", {}, {"c": RNG.random((3, 1)) > 0.5, "x": f32(1, 4), "y": f32(3, 4)}, 17, 1, ()),
    ("min3", "Min", {}, {"a": f32(3, 1), "b": f32(4), "c": f32(2, 1, 1)}, 17, 1, ()),
    ("max3", "Max", {}, {"a": f32(3, 1), "b": f32(4), "c": f32(2, 1, 1)}, 17, 1, ()),
    ("max1", "Max", {}, {"a": f32(2, 3)}, 17, 1, ()),
    ("cast_f32_i64", "Cast", {"to": 7}, {"x": f32(3, 4, scale=10)}, 17, 1, ()),
    ("cast_f32_bool", "Cast", {"to": 9}, {"x": np.array([0.0, -1.5, 2.0, 0.0], np.float32)}, 17, 1, ()),
    ("cast_i64_f32", "Cast", {"to": 1}, {"x": i64(-3, 0, 1 << 40)}, 17, 1, ()),
    ("cast_f64_f32", "Cast", {"to": 1}, {"x": RNG.standard_normal((2, 3))}, 17, 1, ()),
    ("cast_f32_u8", "Cast", {"to": 2}, {"x": np.array([0.0, 1.9, 200.5, 255.0], np.float32)}, 17, 1, ()),
    ("cast_bool_f32", "Cast", {"to": 1}, {"x": np.array([True, False])}, 17, 1, ()),
    ("cast_i32_i64", "Cast", {"to": 7}, {"x": np.array([-5, 7], np.int32)}, 17, 1, ()),
    ("cast_f32_f16", "Cast", {"to": 10}, {"x": f32(5)}, 17, 1, ()),
    ("castlike", "CastLike", {}, {"x": f32(2, 3, scale=5), "like": np.zeros(1, np.int32)}, 17, 1, ()),
    ("reducemean_axes", "ReduceMean", {"axes": [1], "keepdims": 0}, {"x": f32(2, 3, 4)}, 17, 1, ()),
    ("reducemean_neg_axes", "ReduceMean", {"axes": [-1, 0]}, {"x": f32(2, 3, 4)}, 17, 1, ()),
    ("reducemean_all", "ReduceMean", {}, {"x": f32(2, 3, 4)}, 17, 1, ()),
    ("reducemean_input18", "ReduceMean", {"keepdims": 0}, {"x": f32(2, 3, 4), "axes": i64(2)}, 18, 1, (1,)),
    ("reducemean_noop18", "ReduceMean", {"noop_with_empty_axes": 1}, {"x": f32(2, 3)}, 18, 1, ()),
    ("reducesum_input", "ReduceSum", {}, {"x": f32(2, 3, 4), "axes": i64(1)}, 13, 1, (1,)),
    ("reducesum_all", "ReduceSum", {"keepdims": 0}, {"x": f32(2, 3, 4)}, 13, 1, ()),
    ("reducesum_noop", "ReduceSum", {"noop_with_empty_axes": 1}, {"x": f32(2, 3)}, 13, 1, ()),
    ("reducesum_attr11", "ReduceSum", {"axes": [0, 2]}, {"x": f32(2, 3, 4)}, 11, 1, ()),
    ("reducesum_int", "ReduceSum", {"keepdims": 0}, {"x": i64(1, 2, 3, 4).reshape(2, 2), "axes": i64(0)}, 13, 1, (1,)),
    ("reducemax", "ReduceMax", {"axes": [1]}, {"x": f32(3, 4)}, 17, 1, ()),
    ("reducemax_int32", "ReduceMax", {"keepdims": 0}, {"x": np.array([[1, -5], [7, 2]], np.int32)}, 17, 1, ()),
    ("slice", "Slice", {}, {"x": f32(4, 5), "starts": i64(1, 0), "ends": i64(3, -1), "axes": i64(0, 1)}, 13, 1,
     (1, 2, 3)),
    ("slice_neg_step", "Slice", {}, {"x": f32(4, 6), "starts": i64(-1), "ends": i64(-1000), "axes": i64(1),
                                     "steps": i64(-2)}, 13, 1, (1, 2, 3, 4)),
    ("slice_clamped", "Slice", {}, {"x": f32(3, 4, 5), "starts": i64(1, -100), "ends": i64(2 ** 62, 3),
                                    "axes": i64(2, -2), "steps": i64(2, 1)}, 13, 1, (1, 2, 3, 4)),
    ("slice_no_axes", "Slice", {}, {"x": f32(4, 5), "starts": i64(1), "ends": i64(10)}, 13, 1, (1, 2)),
    ("slice_empty", "Slice", {}, {"x": f32(4, 5), "starts": i64(3), "ends": i64(1), "axes": i64(0)}, 13, 1, (1, 2, 3)),
    ("slice_int32_idx", "Slice", {}, {"x": f32(4, 5), "starts": np.array([4], np.int32),
                                      "ends": np.array([0], np.int32), "axes": np.array([1], np.int32),
                                      "steps": np.array([-1], np.int32)}, 13, 1, (1, 2, 3, 4)),
    ("slice_attrs9", "Slice", {"starts": [1, 0], "ends": [3, 100], "axes": [0, 1]}, {"x": f32(4, 5)}, 9, 1, ()),
    ("split_input", "Split", {"axis": 1}, {"x": f32(2, 5), "split": i64(2, 3)}, 13, 2, (1,)),
    ("split_equal", "Split", {}, {"x": f32(6, 2)}, 13, 3, ()),
    ("split_attr11", "Split", {"axis": -1, "split": [1, 3]}, {"x": f32(2, 4)}, 11, 2, ()),
    ("expand", "Expand", {}, {"x": f32(3, 1), "shape": i64(2, 3, 4)}, 13, 1, (1,)),
    ("expand_bidir", "Expand", {}, {"x": f32(1, 4), "shape": i64(3, 1)}, 13, 1, (1,)),
    ("constantofshape", "ConstantOfShape", {}, {"shape": i64(2, 3)}, 17, 1, (0,)),
    ("constantofshape_int", "ConstantOfShape", {"value": np.array([7], np.int64)}, {"shape": i64(4)}, 17, 1, (0,)),
    ("constantofshape_zero_dim", "ConstantOfShape", {"value": np.array([1.5], np.float32)}, {"shape": i64(2, 0)},
     17, 1, (0,)),
    ("range_int", "Range", {}, {"s": np.array(0, np.int64), "l": np.array(10, np.int64), "d": np.array(3, np.int64)},
     17, 1, (0, 1, 2)),
    ("range_float", "Range", {}, {"s": np.array(1, np.float32), "l": np.array(2, np.float32),
                                  "d": np.array(0.3, np.float32)}, 17, 1, (0, 1, 2)),
    ("range_neg", "Range", {}, {"s": np.array(10, np.int32), "l": np.array(2, np.int32),
                                "d": np.array(-3, np.int32)}, 17, 1, (0, 1, 2)),
    ("range_empty", "Range", {}, {"s": np.array(5, np.int64), "l": np.array(1, np.int64),
                                  "d": np.array(1, np.int64)}, 17, 1, (0, 1, 2)),
    ("pad_constant", "Pad", {}, {"x": f32(2, 3), "pads": i64(0, 1, 2, 0), "v": np.array(1.5, np.float32)}, 17, 1,
     (1,)),
    ("pad_default_value", "Pad", {}, {"x": f32(2, 3), "pads": i64(1, 1, 1, 1)}, 17, 1, (1,)),
    ("pad_reflect", "Pad", {"mode": "reflect"}, {"x": f32(3, 4), "pads": i64(0, 2, 1, 3)}, 17, 1, (1,)),
    ("pad_edge", "Pad", {"mode": "edge"}, {"x": f32(1, 2, 3, 3), "pads": i64(0, 0, 1, 2, 0, 0, 2, 1)}, 17, 1, (1,)),
    ("pad_crop", "Pad", {}, {"x": f32(3, 4), "pads": i64(0, -1, 1, 0)}, 17, 1, (1,)),
    ("pad_int", "Pad", {}, {"x": i64(1, 2, 3), "pads": i64(2, 1), "v": np.array(-1, np.int64)}, 17, 1, (1,)),
    ("pad_attrs10", "Pad", {"pads": [1, 0, 0, 2], "value": 2.5}, {"x": f32(2, 3)}, 10, 1, ()),
    ("pad_axes18", "Pad", {}, {"x": f32(2, 3, 4), "pads": i64(1, 2), "v": "", "axes": i64(-1)}, 18, 1, (1, 3)),
    ("layernorm", "LayerNormalization", {}, {"x": f32(2, 3, 5), "scale": f32(5), "bias": f32(5)}, 17, 1, ()),
    ("layernorm_axis1", "LayerNormalization", {"axis": 1, "epsilon": 1e-3}, {"x": f32(2, 3, 5), "scale": f32(3, 5)},
     17, 3, ()),
    ("layernorm_stats", "LayerNormalization", {"axis": -2}, {"x": f32(4, 2, 3), "scale": f32(2, 3),
                                                             "bias": f32(1, 3)}, 17, 3, ()),
]
B = RNG.random((3, 4)) > 0.5
CASES += [
    ("reducemin", "ReduceMin", {"axes": [0]}, {"x": f32(3, 4)}, 17, 1, ()),
    ("reduceprod", "ReduceProd", {"axes": [1], "keepdims": 0}, {"x": f32(3, 4)}, 17, 1, ()),
    ("argmax", "ArgMax", {"axis": 1}, {"x": f32(3, 4)}, 17, 1, ()),
    ("argmin_last", "ArgMin", {"axis": -1, "keepdims": 0, "select_last_index": 1},
     {"x": np.array([[1, 0, 0, 2], [3, 3, 1, 1]], np.float32)}, 17, 1, ()),
    ("not", "Not", {}, {"x": B}, 17, 1, ()),
    ("and", "And", {}, {"a": B, "b": RNG.random((4,)) > 0.5}, 17, 1, ()),
    ("or", "Or", {}, {"a": B, "b": RNG.random((3, 1)) > 0.5}, 17, 1, ()),
    ("xor", "Xor", {}, {"a": B, "b": ~B}, 17, 1, ()),
    ("less", "Less", {}, {"a": f32(3, 4), "b": f32(4)}, 17, 1, ()),
    ("lessorequal", "LessOrEqual", {}, {"a": i64(1, 2, 3), "b": i64(2)}, 17, 1, ()),
    ("greater", "Greater", {}, {"a": f32(3, 1), "b": f32(1, 4)}, 17, 1, ()),
    ("greaterorequal", "GreaterOrEqual", {}, {"a": i64(1, 2, 3), "b": i64(2)}, 17, 1, ()),
    ("sum3", "Sum", {}, {"a": f32(3, 1), "b": f32(4), "c": f32(2, 1, 1)}, 17, 1, ()),
    ("reciprocal", "Reciprocal", {}, {"x": f32(3, 3) + 3}, 17, 1, ()),
    ("floor", "Floor", {}, {"x": f32(3, 3, scale=3)}, 17, 1, ()),
    ("ceil", "Ceil", {}, {"x": f32(3, 3, scale=3)}, 17, 1, ()),
    ("sin", "Sin", {}, {"x": f32(3, 3, scale=3)}, 17, 1, ()),
    ("cos", "Cos", {}, {"x": f32(3, 3, scale=3)}, 17, 1, ()),
    ("prelu", "PRelu", {}, {"x": f32(2, 3, 4, 4), "slope": f32(3, 1, 1)}, 17, 1, ()),
    ("elu", "Elu", {"alpha": 0.7}, {"x": f32(3, 4, scale=3)}, 17, 1, ()),
    ("softplus", "Softplus", {}, {"x": f32(3, 4, scale=10)}, 17, 1, ()),
    ("tile", "Tile", {}, {"x": f32(2, 1, 3), "repeats": i64(2, 3, 1)}, 17, 1, (1,)),
]
H = 3
CASES += [
    ("lstm", "LSTM", {"hidden_size": H}, {"x": f32(5, 2, 4), "w": f32(1, 4 * H, 4), "r": f32(1, 4 * H, H)}, 17, 3,
     ()),
    ("lstm_bidir_full", "LSTM", {"hidden_size": H, "direction": "bidirectional"},
     {"x": f32(4, 2, 3), "w": f32(2, 4 * H, 3), "r": f32(2, 4 * H, H), "b": f32(2, 8 * H), "lens": "",
      "h0": f32(2, 2, H), "c0": f32(2, 2, H), "p": f32(2, 3 * H)}, 17, 3, ()),
    ("lstm_seq_lens_reverse", "LSTM", {"hidden_size": H, "direction": "reverse"},
     {"x": f32(4, 3, 2), "w": f32(1, 4 * H, 2), "r": f32(1, 4 * H, H), "b": f32(1, 8 * H),
      "lens": np.array([4, 2, 1], np.int32)}, 17, 2, ()),
    ("lstm_clip_input_forget", "LSTM", {"hidden_size": H, "clip": 0.5, "input_forget": 1},
     {"x": f32(5, 2, 4, scale=3), "w": f32(1, 4 * H, 4), "r": f32(1, 4 * H, H)}, 17, 3, ()),
    ("lstm_batchwise", "LSTM", {"hidden_size": H, "layout": 1},
     {"x": f32(2, 5, 4), "w": f32(1, 4 * H, 4), "r": f32(1, 4 * H, H), "b": f32(1, 8 * H), "lens": "",
      "h0": f32(2, 1, H), "c0": f32(2, 1, H)}, 17, 3, ()),
    ("gru", "GRU", {"hidden_size": H}, {"x": f32(5, 2, 4), "w": f32(1, 3 * H, 4), "r": f32(1, 3 * H, H)}, 17, 2, ()),
    ("gru_bidir_lbr", "GRU", {"hidden_size": H, "direction": "bidirectional", "linear_before_reset": 1},
     {"x": f32(4, 2, 3), "w": f32(2, 3 * H, 3), "r": f32(2, 3 * H, H), "b": f32(2, 6 * H), "lens": "",
      "h0": f32(2, 2, H)}, 17, 2, ()),
    ("gru_seq_lens", "GRU", {"hidden_size": H},
     {"x": f32(4, 3, 2), "w": f32(1, 3 * H, 2), "r": f32(1, 3 * H, H), "b": f32(1, 6 * H),
      "lens": np.array([1, 4, 3], np.int32)}, 17, 2, ()),
    ("gru_batchwise", "GRU", {"hidden_size": H, "layout": 1}, {"x": f32(2, 5, 4), "w": f32(1, 3 * H, 4),
                                                               "r": f32(1, 3 * H, H)}, 17, 2, ()),
]
IDS = [c[0] for c in CASES]
# onnx.reference lacks these (its Pad refuses negative pads, its LSTM/GRU ignore sequence_lens and clip):
# onnxruntime instead
AGAINST_ORT = {"pad_crop", "lstm_seq_lens_reverse", "lstm_clip_input_forget", "gru_seq_lens"}


def node_of(case):
    _, op, attrs, ins, _, n_out, _ = case
    return make_node(op, [k if not isinstance(v, str) else "" for k, v in ins.items()],
                     [f"y{i}" for i in range(n_out)], **attrs)


def arrays(case):
    return {k: v for k, v in case[3].items() if not isinstance(v, str)}


def test_the_tables_agree_and_are_registered():
    assert set(NEW_OPS) == set(NEW_ARITY) == set(NEW_SHAPES)
    for op in NEW_OPS:
        assert OPS[op] is NEW_OPS[op] and ARITY[op] == NEW_ARITY[op] and SHAPES[op] is NEW_SHAPES[op]
    assert set(NEW_OPS) <= {c[1] for c in CASES}, "every new op has a case here"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_shape_rule_matches_the_output(case):
    """The rule's shapes and dtypes are those the op returns; it needs the values of the slots it
    declares (else: the data-dependent marker) and of no other."""
    node, opset, value_slots = node_of(case), case[4], case[6]
    ins = list(case[3].values())
    args = [None if isinstance(v, str) else v for v in ins]
    fn = OPS[node.op_type](node, opset, {})
    outs = NumpyEngine._call(fn, node, list(args))
    known = [None if a is None else Val.of(a) for a in args]
    rule = infer_node(node, opset, known)
    blind = [None if a is None else Val(a.shape, a.dtype, a if i in value_slots else None) for i, a in enumerate(args)]
    assert [(v.shape, v.dtype) for v in infer_node(node, opset, blind)] == [(v.shape, v.dtype) for v in rule]
    assert len(rule) == len(outs) == len(node.outputs)
    for v, o in zip(rule, outs):
        assert (v.shape, v.dtype) == (np.asarray(o).shape, np.asarray(o).dtype)
    if value_slots:
        with pytest.raises(_Dynamic):
            infer_node(node, opset, [None if a is None else Val(a.shape, a.dtype) for a in args])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_against_the_onnx_reference(case):
    """Values against onnx.reference; the engine gets the inputs as feeds (shapes inferred at run
    time where they depend on values) and, once more, all but the first as constants (planned)."""
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    node, opset = node_of(case), case[4]
    feeds = arrays(case)
    m = model(node, feeds, None, opset)
    if case[0] in AGAINST_ORT:
        ort = pytest.importorskip("onnxruntime")
        for vi in m.graph.outputs:  # onnxruntime wants typed outputs
            vi.elem_type = m.graph.inputs[0].elem_type
        ref = ort.InferenceSession(m.to_bytes(), providers=["CPUExecutionProvider"]).run(None, feeds)
    else:
        ref = ReferenceEvaluator(onnx.load_from_string(m.to_bytes())).run(None, feeds)
    first = next(iter(feeds))
    rest = {k: v for k, v in feeds.items() if k != first}
    for got in (engine(node, feeds, None, opset).run(feeds),
                engine(node, {first: feeds[first]}, rest, opset).run({first: feeds[first]})):
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            r = np.asarray(r)
            assert (g.shape, g.dtype) == (r.shape, r.dtype)
            if r.dtype.kind == "f":
                np.testing.assert_allclose(g, r, rtol=1e-5 if r.dtype != np.float16 else 1e-3, atol=1e-6)
            else:
                np.testing.assert_array_equal(g, r)


def test_data_dependent_shapes_are_planned_at_run_time():
    """A Slice whose starts come from a graph input: the plan stops at it, the run infers (and
    budgets) its shape just before it runs."""
    node = make_node("Slice", ["x", "s", "e"], ["y"])
    feeds = {"x": f32(4, 6), "s": i64(1), "e": i64(3)}
    eng = engine(node, feeds, opset=13)
    assert eng.plan(feeds).dynamic_from == 0
    np.testing.assert_array_equal(eng.run(feeds)[0], feeds["x"][1:3])
    const = engine(node, {"x": feeds["x"]}, {"s": feeds["s"], "e": feeds["e"]}, opset=13)
    assert const.plan({"x": feeds["x"]}).dynamic_from is None


def test_shape_arithmetic_folds_through_the_new_ops():
    """Shape -> Slice -> Concat -> ConstantOfShape -> Expand: all known at plan time from the input's
    shape (small values are computed during inference)."""
    g = Graph(nodes=[make_node("Shape", ["x"], ["sh"]),
                     make_node("Slice", ["sh", "zero", "one"], ["n"]),
                     make_node("ConstantOfShape", ["n"], ["ones"], value=np.array([1.0], np.float32)),
                     make_node("Expand", ["x", "sh"], ["y0"]),
                     make_node("Mul", ["y0", "ones"], ["y"])],
              initializers=[Tensor.from_array(i64(0), "zero"), Tensor.from_array(i64(1), "one")],
              inputs=[ValueInfo("x", 1, [3, 3])], outputs=[ValueInfo("y")])
    eng = NumpyEngine(OnnxModel(ir_version=8, opsets={"ai.onnx": 17}, graph=g), {})
    x = f32(3, 3)
    assert eng.plan({"x": x}).dynamic_from is None
    np.testing.assert_array_equal(eng.run({"x": x})[0], x)


def test_erf_matches_math_erf():
    x = np.concatenate([RNG.standard_normal(20000) * 3, np.linspace(-7, 7, 14001),
                        [0.0, -0.0, 0.5, -0.5, 4.0, -4.0, 1e-300, 30.0, -30.0, np.inf, -np.inf]])
    want = np.array([math.erf(v) for v in x])
    assert np.abs(erf(x) - want).max() < 1e-7
    assert np.isnan(erf(np.array([np.nan]))).all()
    got32 = NEW_OPS["Erf"](make_node("Erf", ["x"], ["y"]), 17, {})(x.astype(np.float32))[0]
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, [math.erf(v) for v in x.astype(np.float32)], rtol=0, atol=1e-7)


# -- typed refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("op,attrs,feeds,opset", [
    ("Cast", {"to": 16}, {"x": f32(2)}, 17),                        # bfloat16
    ("Cast", {"to": 8}, {"x": f32(2)}, 17),                         # string
    ("Split", {"num_outputs": 2}, {"x": f32(4)}, 18),
    ("Pad", {"mode": "mirror"}, {"x": f32(2, 2), "pads": i64(1, 1, 1, 1)}, 17),
    ("LayerNormalization", {"stash_type": 11}, {"x": f32(2, 3), "scale": f32(3)}, 17),
    ("LSTM", {"hidden_size": 2, "activations": ["Sigmoid", "Elu", "Tanh"]},
     {"x": f32(3, 1, 2), "w": f32(1, 8, 2), "r": f32(1, 8, 2)}, 17),
    ("GRU", {"hidden_size": 2, "activation_alpha": [0.5]}, {"x": f32(3, 1, 2), "w": f32(1, 6, 2), "r": f32(1, 6, 2)},
     17),
])
def test_unsupported_attribute_values_are_refused_at_load(op, attrs, feeds, opset):
    node = make_node(op, list(feeds), ["y"] if op != "Split" else ["y0", "y1"], **attrs)
    with pytest.raises(AdtUnsupportedOpError, match=op):
        engine(node, feeds, opset=opset)
    from adt.runtime.ort_engine import check_ops  # the onnxruntime engine refuses the same, before ORT
    with pytest.raises(AdtUnsupportedOpError, match=op):
        check_ops(model(node, feeds, None, opset))


@pytest.mark.parametrize("op,attrs,feeds,opset,match", [
    ("Slice", {}, {"x": f32(4), "s": i64(0), "e": i64(2), "a": i64(0), "st": i64(0)}, 13, "step 0"),
    ("Slice", {}, {"x": f32(4), "s": i64(0, 1), "e": i64(2)}, 13, "ends"),
    ("Slice", {}, {"x": f32(4), "s": i64(0), "e": i64(2), "a": i64(3)}, 13, "axes"),
    ("Range", {}, {"s": np.array(0, np.int64), "l": np.array(5, np.int64), "d": np.array(0, np.int64)}, 17, "delta"),
    ("Range", {}, {"s": np.array(0, np.int64), "l": np.array(5, np.int32), "d": np.array(1, np.int64)}, 17, "type"),
    ("Expand", {}, {"x": f32(3, 2), "shape": i64(4, 3)}, 13, "broadcast"),
    ("ConstantOfShape", {}, {"shape": i64(2, -1)}, 17, "negative"),
    ("Where", {}, {"c": np.array([1, 0], np.int64), "x": f32(2), "y": f32(2)}, 17, "bool"),
    ("Exp", {}, {"x": i64(1, 2)}, 17, "floating"),
    ("ReduceMean", {"axes": [2]}, {"x": f32(2, 3)}, 17, "axes"),
    ("ReduceSum", {}, {"x": f32(2, 3), "axes": i64(1, 1)}, 13, "axes"),
    ("Split", {"axis": 0}, {"x": f32(5), "split": i64(2, 2)}, 13, "split"),
    ("Pad", {}, {"x": f32(2, 2), "pads": i64(1, 1)}, 17, "pads"),
    ("Pad", {}, {"x": f32(2, 2), "pads": i64(0, -3, 0, 0)}, 17, "crop"),
    ("Pad", {"mode": "reflect"}, {"x": f32(2, 2), "pads": i64(0, 2, 0, 0)}, 17, "reflect"),
    ("LayerNormalization", {}, {"x": f32(2, 3), "scale": f32(4)}, 17, "Scale"),
    ("Pow", {}, {"x": i64(2), "y": i64(-1)}, 17, "negative"),
    ("LSTM", {"hidden_size": 2}, {"x": f32(3, 1, 2), "w": f32(1, 6, 2), "r": f32(1, 8, 2)}, 17, "W has shape"),
    ("And", {}, {"a": i64(1, 0), "b": i64(1, 1)}, 17, "bool"),
    ("Not", {}, {"x": f32(2)}, 17, "bool"),
    ("Tile", {}, {"x": f32(2, 2), "r": i64(2)}, 17, "repeats"),
    ("ArgMax", {"axis": 2}, {"x": f32(2, 2)}, 17, "axis"),
    ("PRelu", {}, {"x": f32(2, 3), "s": f32(2)}, 17, "slope"),
    ("GRU", {"hidden_size": 2}, {"x": f32(3, 1, 2), "w": f32(1, 6, 2), "r": f32(1, 6, 2), "b": f32(1, 12),
                                 "lens": np.array([4], np.int32)}, 17, "sequence_lens"),
])
def test_inputs_that_do_not_fit_raise_typed_errors(op, attrs, feeds, opset, match):
    """Every input slot a graph input (so the shape rule sees the values at run time), and again as
    constants where that is possible (refused at load, by the plan or the constant folding)."""
    n_out = 2 if op == "Split" else 1
    node = make_node(op, list(feeds), [f"y{i}" for i in range(n_out)], **attrs)
    with pytest.raises(AdtExecutionError, match=match):
        engine(node, feeds, opset=opset).run(feeds)
    with pytest.raises(AdtError):
        engine(node, {}, feeds, opset=opset)  # all constant: folded at load


def test_huge_data_dependent_outputs_are_budgeted_before_allocation():
    for node, feeds, opset in [
        (make_node("Range", ["s", "l", "d"], ["y"]), {"s": np.array(0, np.int64), "l": np.array(1 << 40, np.int64),
                                                      "d": np.array(1, np.int64)}, 17),
        (make_node("ConstantOfShape", ["s"], ["y"]), {"s": i64(1 << 20, 1 << 20)}, 17),
        (make_node("Expand", ["x", "s"], ["y"]), {"x": f32(1), "s": i64(1 << 16, 1 << 16)}, 13),
        (make_node("Pad", ["x", "p"], ["y"]), {"x": f32(2, 2), "p": i64(0, 0, 1 << 30, 1 << 30)}, 17),
    ]:
        with pytest.raises(AdtBudgetError):
            engine(node, feeds, opset=opset, max_memory=1 << 26).run(feeds)
        with pytest.raises(AdtBudgetError):
            engine(node, {}, feeds, opset=opset, max_memory=1 << 26)


def test_invalid_attributes_are_architecture_errors():
    with pytest.raises(AdtArchitectureError):
        engine(make_node("Cast", ["x"], ["y"]), {"x": f32(2)})                      # no 'to'
    with pytest.raises(AdtArchitectureError):
        engine(make_node("Mod", ["x", "y"], ["z"], fmod=2), {"x": f32(2), "y": f32(2)})
    with pytest.raises(AdtArchitectureError):
        engine(make_node("Slice", ["x"], ["y"]), {"x": f32(2)}, opset=13)           # starts/ends inputs
    with pytest.raises(AdtArchitectureError):
        engine(make_node("ReduceMean", ["x", "a"], ["y"]), {"x": f32(2), "a": i64(0)}, opset=17).run(
            {"x": f32(2), "a": i64(0)})                                              # axes input before 18
    with pytest.raises(AdtArchitectureError):
        engine(make_node("ConstantOfShape", ["s"], ["y"], value=np.array([1.0, 2.0], np.float32)), {"s": i64(2)})


# -- both engines -------------------------------------------------------------------------------------
def _block_graph():
    """A small encoder block and an LSTM head with the ops torch.onnx.export writes for them
    (LayerNormalization, GELU as Erf, Cast, Slice, ReduceMean, Pad, Where/Equal, Expand, LSTM), the
    weights as stored weights (not initializers), the way a .adt file hands them to an engine."""
    d, h = 8, 5
    weights = {"ln_s": f32(d), "ln_b": f32(d), "w1": f32(d, d, scale=0.3), "w_ih": f32(1, 4 * h, d, scale=0.3),
               "w_hh": f32(1, 4 * h, h, scale=0.3), "b": f32(1, 8 * h, scale=0.1)}
    consts = {"half": np.array(0.5, np.float32), "rsqrt2": np.array(2 ** -0.5, np.float32),
              "one": np.array(1.0, np.float32), "s0": i64(1), "e0": i64(-1), "ax1": i64(1),
              "pads": i64(0, 1, 0, 0, 1, 0),
              "zero_i": np.array(0, np.int64), "exp_shape": i64(2, 6, d)}
    nodes = [
        make_node("LayerNormalization", ["x", "ln_s", "ln_b"], ["ln"], axis=-1, epsilon=1e-5),
        make_node("MatMul", ["ln", "w1"], ["mm"]),
        make_node("Mul", ["mm", "rsqrt2"], ["sc"]), make_node("Erf", ["sc"], ["erf"]),
        make_node("Add", ["erf", "one"], ["erf1"]), make_node("Mul", ["mm", "erf1"], ["g0"]),
        make_node("Mul", ["g0", "half"], ["gelu"]),
        make_node("Cast", ["tok"], ["tok_f"], to=1), make_node("Equal", ["tok", "zero_i"], ["mask"]),
        make_node("Unsqueeze", ["mask", "ax2"], ["mask3"]),
        make_node("Expand", ["mask3", "exp_shape"], ["mask_e"]),
        make_node("Where", ["mask_e", "zero_f", "gelu"], ["masked"]),
        make_node("Slice", ["masked", "s0", "e0", "ax1"], ["sl"]),
        make_node("Pad", ["sl", "pads"], ["pd"], mode="edge"),
        make_node("Transpose", ["pd"], ["seq"], perm=[1, 0, 2]),
        make_node("LSTM", ["seq", "w_ih", "w_hh", "b"], ["", "yh", "yc"], hidden_size=h),
        make_node("ReduceMean", ["tok_f"], ["tm"], axes=[1], keepdims=1),
        make_node("HardSwish", ["tm"], ["ths"]),
        make_node("Squeeze", ["yh", "ax0"], ["yh2"]),
        make_node("Mul", ["yh2", "ths"], ["y"]),
    ]
    consts.update({"ax2": i64(2), "ax0": i64(0), "zero_f": np.array(0.0, np.float32)})
    g = Graph(nodes=nodes, initializers=[Tensor.from_array(v, k) for k, v in consts.items()],
              inputs=[ValueInfo("x", 1, [2, 6, d]), ValueInfo("tok", 7, [2, 6])],
              outputs=[ValueInfo("y", 1, [2, h])], name="block")
    return OnnxModel(ir_version=8, opsets={"ai.onnx": 17}, graph=g), weights


def test_a_block_of_the_new_ops_runs_alike_in_both_engines():
    pytest.importorskip("onnxruntime")
    from adt.runtime.ort_engine import OrtEngine

    m, weights = _block_graph()
    feeds = {"x": f32(2, 6, 8), "tok": RNG.integers(0, 4, (2, 6)).astype(np.int64)}
    got = NumpyEngine(parse_model(m.to_bytes()), weights).run(feeds)[0]
    want = OrtEngine(m.to_bytes(), weights, ["y"]).run(feeds)[0]
    assert got.shape == want.shape == (2, 5) and got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_random_slices_and_pads_against_the_reference():
    """Index arithmetic on random starts/ends/steps (negative, out of range, INT64 extremes) and random
    pads of every mode: the shape rule, the op and onnxruntime (Slice) or onnx.reference (Pad) agree."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(7)
    big = [2 ** 63 - 1, -(2 ** 63), 2 ** 31, -(2 ** 31)]
    for k in range(60):
        shape = tuple(int(d) for d in rng.integers(0, 5, rng.integers(1, 4)))
        x = rng.standard_normal(shape).astype(np.float32)
        if k % 2:
            axes = rng.permutation(len(shape))[:rng.integers(1, len(shape) + 1)]
            pick = lambda: int(rng.choice(big)) if rng.random() < 0.2 else int(rng.integers(-6, 7))  # noqa: E731
            steps = [int(rng.choice([-3, -2, -1, 1, 2, 3])) for _ in axes]
            # onnxruntime reads an end of INT_MAX with a negative step as "to the first element"; the spec
            # clamps it to dims-1 (an empty slice), as the engine and onnx.reference do: not drawn here
            ends = [pick() for _ in axes]
            ends = [-e if st < 0 and e >= 2 ** 31 - 1 else e for e, st in zip(ends, steps)]
            feeds = {"x": x, "s": i64(*[pick() for _ in axes]), "e": i64(*ends),
                     "a": i64(*[int(a) - len(shape) if rng.random() < 0.5 else int(a) for a in axes]),
                     "st": i64(*steps)}
            node, opset = make_node("Slice", list(feeds), ["y"]), 13
        else:
            mode = ["constant", "edge", "reflect"][k % 3]
            hi = 3 if mode != "reflect" else max(0, min(shape) - 1)
            if mode != "constant" and min(shape) == 0:
                continue  # edge/reflect of an empty axis: refused (tested above)
            # (onnx.reference refuses negative pads: cropping is checked against onnxruntime above)
            feeds = {"x": x, "p": i64(*[int(rng.integers(0, hi + 1)) for _ in range(2 * len(shape))])}
            node, opset = make_node("Pad", list(feeds), ["y"], mode=mode), 17
        m = model(node, feeds, None, opset)
        if node.op_type == "Slice":  # onnx.reference slices like NumPy, not as the spec clamps a negative step's
            # start (x[-6:-5:-1] of 4 elements: the spec and onnxruntime give [x[0]], NumPy nothing)
            m.graph.outputs[0].elem_type = 1
            want = ort.InferenceSession(m.to_bytes(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        else:
            want = ReferenceEvaluator(onnx.load_from_string(m.to_bytes())).run(None, feeds)[0]
        rule = infer_node(node, opset, [Val.of(v) for v in feeds.values()])[0]
        got = engine(node, feeds, opset=opset).run(feeds)[0]
        assert rule.shape == got.shape == want.shape, (node.op_type, feeds)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("first", ["adt.runtime.numpy_ops", "adt.runtime.numpy_engine", "adt.runtime"])
def test_the_ops_are_registered_whatever_is_imported_first(first):
    import subprocess
    import sys

    code = (f"import {first}\nfrom adt.runtime import numpy_engine as ne, numpy_ops as no\n"
            "assert no.NEW_OPS and all(ne.OPS[k] is v for k, v in no.NEW_OPS.items())\n"
            "assert all(ne.SHAPES[k] is v for k, v in no.NEW_SHAPES.items())\n"
            "assert all(ne.ARITY[k] == v for k, v in no.NEW_ARITY.items())\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_erf_of_a_tensor_larger_than_one_chunk():
    from adt.runtime import numpy_ops

    x = f32(3, numpy_ops._ERF_CHUNK // 2 + 5, scale=2)
    got = engine(make_node("Erf", ["x"], ["y"]), {"x": x}).run({"x": x})[0]
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, erf(x.astype(np.float64)).astype(np.float32), rtol=0, atol=0)


def test_layer_norm_over_several_variance_blocks():
    from adt.runtime import numpy_ops

    x = f32(5, numpy_ops._LN_BLOCK // 3 + 1, 3, scale=4)  # rows of 3 elements: many rows per block, 2 blocks
    scale, bias = f32(3), f32(3)
    node = make_node("LayerNormalization", ["x", "s", "b"], ["y", "m", "i"], axis=-1)
    y, m, inv = engine(node, {"x": x}, {"s": scale, "b": bias}).run({"x": x})
    x64 = x.astype(np.float64)
    mu = x64.mean(-1, keepdims=True)
    want = (x64 - mu) / np.sqrt(((x64 - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * scale + bias
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m, mu, rtol=1e-5, atol=1e-6)
    assert y.dtype == m.dtype == inv.dtype == np.float32 and inv.shape == m.shape == x.shape[:2] + (1,)
