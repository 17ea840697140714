"""Hostile-but-valid architectures (issue 17, "typed errors after parsing"): the graph is validated
once at load and every structural fault is an AdtGraphError naming the node and the tensor; 0-d
parameters load and run; an input read twice runs; bad initializer dims are refused before numpy
sees them; an op that fails in an unexpected way is an AdtExecutionError naming the node.

Files are built with AdtWriter and the runtime's own ONNX encoder (no onnx, no torch)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import adt.runtime as rt
from adt.runtime import numpy_engine
from adt.runtime.errors import AdtExecutionError, AdtGraphError
from adt.runtime.format import AdtArchitectureError, AdtWriter, dequantize, quantize
from adt.runtime.numpy_engine import NumpyEngine, validate_graph
from adt.runtime.onnx_proto import (
    FLOAT, OnnxModel, Tensor, _enc_field, _fields, _len_field, _tensor_fields, make_node, parse_model,
)

from runtime_models import _io, _model

REPO = Path(__file__).resolve().parents[2]
Q, B = 256, 2.0


def adt_bytes(model: OnnxModel | bytes | None, weights: dict[str, np.ndarray]) -> bytes:
    """A .adt file: ``model`` as its architecture, ``weights`` stored plain (quantized, Q=256, b=2)."""
    w = AdtWriter()
    if model is not None:
        w.set_architecture(model if isinstance(model, bytes) else model.to_bytes())
    g = w.add_group(Q, B) if weights else None
    for name, v in weights.items():
        w.add_plain(name, quantize(np.asarray(v, np.float64), Q, B), g)
    return w.to_bytes()


def stored(v) -> np.ndarray:
    """What a weight becomes after its round trip through the file."""
    return dequantize(quantize(np.asarray(v, np.float64), Q, B), Q, B)


def one_input(nodes, out="output", shape=(2, 3), initializers=(), inputs=None, outputs=None) -> OnnxModel:
    return _model(nodes, inputs or [_io("input", ["N", *shape[1:]])], outputs or [_io(out, None)], initializers)


X = np.random.default_rng(7).standard_normal((2, 3)).astype(np.float32)
W = np.random.default_rng(8).uniform(-1, 1, (3, 4))


# -- 0-d parameters ---------------------------------------------------------------------------------
def test_committed_per_group_vector_loads_with_its_0d_parameter():
    m = rt.load(REPO / "format_spec" / "vectors" / "per_group.adt")
    c = m.weights["c"]
    assert isinstance(c, np.ndarray) and c.shape == () and c.dtype == np.float32
    assert not c.flags.writeable
    want = np.load(REPO / "format_spec" / "vectors" / "per_group.npz")["param2_values"]
    assert c == want


def test_0d_parameter_rebuilds_as_a_0d_array():
    data = adt_bytes(None, {"s": np.float64(0.75), "v": [0.5, -0.25]})
    w = rt.rebuild_weights(data)
    assert isinstance(w["s"], np.ndarray) and w["s"].shape == () and w["s"].dtype == np.float32
    assert w["s"] == stored(0.75)


@pytest.mark.parametrize("engine", ["numpy", "onnxruntime"])
def test_0d_parameter_runs(engine):
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    nodes = [make_node("Mul", ["input", "scale"], ["1"]), make_node("Add", ["1", "shift"], ["output"])]
    data = adt_bytes(one_input(nodes), {"scale": np.float64(0.75), "shift": np.float64(-0.5)})
    m = rt.load(data, engine=engine)
    y = m(X)
    np.testing.assert_allclose(y, X * stored(0.75) + stored(-0.5), rtol=1e-6)
    assert m.weights["scale"].shape == ()


# -- a value read more than once ------------------------------------------------------------------
def test_graph_input_used_twice_by_one_node_runs():
    data = adt_bytes(one_input([make_node("Mul", ["input", "input"], ["output"])]), {})
    np.testing.assert_array_equal(rt.load(data)(X), X * X)


def test_intermediate_read_by_several_nodes_and_twice_by_its_last_reader_runs():
    nodes = [
        make_node("Relu", ["input"], ["a"]),
        make_node("Add", ["a", "input"], ["c"]),      # a: read by several nodes ...
        make_node("Mul", ["a", "a"], ["b"]),          # ... and twice by its last reader
        make_node("Sub", ["b", "c"], ["output"]),
    ]
    a = np.maximum(X, 0)
    want = a * a - (a + X)
    m = rt.load(adt_bytes(one_input(nodes), {}))
    for _ in range(3):  # several runs on one engine: the bookkeeping is per run
        np.testing.assert_allclose(m(X), want, rtol=1e-6)


# -- ghost outputs, empty names, arity --------------------------------------------------------------
@pytest.mark.parametrize("engine", ["numpy", None])
def test_ghost_output_read_by_a_node_is_a_graph_error_at_load(engine):
    nodes = [make_node("Relu", ["input"], ["y", "ghost"]), make_node("Add", ["y", "ghost"], ["output"])]
    with pytest.raises(AdtGraphError, match=r"Add node.*node #1.*'ghost'.*Relu node.*node #0.*never produces"):
        rt.load(adt_bytes(one_input(nodes), {}), engine=engine)


def test_ghost_output_as_graph_output_is_a_graph_error_at_load():
    nodes = [make_node("Relu", ["input"], ["y", "ghost"])]
    model = one_input(nodes, outputs=[_io("y", None), _io("ghost", None)])
    with pytest.raises(AdtGraphError, match=r"graph output 'ghost'.*Relu node.*never produces"):
        rt.load(adt_bytes(model, {}))


def test_unread_ghost_output_is_tolerated():
    nodes = [make_node("Relu", ["input"], ["output", "unused"])]
    np.testing.assert_array_equal(rt.load(adt_bytes(one_input(nodes), {}))(X), np.maximum(X, 0))


def test_empty_name_in_a_required_slot_is_a_graph_error():
    nodes = [make_node("Gemm", ["", "w"], ["output"])]
    with pytest.raises(AdtGraphError, match=r"Gemm node.*node #0.*input 0 has an empty name"):
        rt.load(adt_bytes(one_input(nodes), {"w": W}))


def test_empty_name_in_an_optional_slot_runs():
    nodes = [make_node("Gemm", ["input", "w", ""], ["1"]), make_node("Clip", ["1", "", "hi"], ["output"])]
    y = rt.load(adt_bytes(one_input(nodes), {"w": W, "hi": np.float64(0.25)}))(X)
    np.testing.assert_allclose(y, np.minimum(X @ stored(W), stored(0.25)), rtol=1e-5)


def test_too_many_inputs_is_a_graph_error_at_load():
    nodes = [make_node("Relu", ["input", "input"], ["output"])]
    with pytest.raises(AdtGraphError, match=r"Relu node.*has 2 inputs, Relu takes at most 1"):
        rt.load(adt_bytes(one_input(nodes), {}))


def test_too_few_inputs_is_a_graph_error_at_load():
    nodes = [make_node("BatchNormalization", ["input", "s", "b"], ["output"])]
    with pytest.raises(AdtGraphError, match=r"has 3 inputs, BatchNormalization needs 5"):
        rt.load(adt_bytes(one_input(nodes), {"s": [1.0] * 3, "b": [0.0] * 3}))


# -- single assignment, definitions, outputs, cycles ------------------------------------------------
@pytest.mark.parametrize("target,what", [("input", "a graph input"), ("w", "a stored weight"),
                                         ("init", "a graph initializer")])
def test_node_output_shadowing_a_value_is_a_graph_error(target, what):
    nodes = [make_node("Relu", ["input"], [target]), make_node("Identity", ["input"], ["output"])]
    inits = [Tensor.from_array(np.ones(3, np.float32), "init")]
    with pytest.raises(AdtGraphError, match=rf"Relu node.*node #0.*output '{target}' is defined twice.*{what}"):
        rt.load(adt_bytes(one_input(nodes, initializers=inits), {"w": W}))


def test_value_produced_by_two_nodes_is_a_graph_error():
    nodes = [make_node("Relu", ["input"], ["output"]), make_node("Tanh", ["input"], ["output"])]
    with pytest.raises(AdtGraphError, match=r"Tanh node.*node #1.*'output' is defined twice.*Relu node.*node #0"):
        rt.load(adt_bytes(one_input(nodes), {}))


def test_duplicate_graph_input_or_initializer_is_a_graph_error():
    twice = [_io("input", ["N", 3]), _io("input", ["N", 3])]
    model = one_input([make_node("Relu", ["input"], ["output"])], inputs=twice)
    with pytest.raises(AdtGraphError, match=r"graph input 'input' is declared twice"):
        rt.load(adt_bytes(model, {}))
    inits = [Tensor.from_array(np.ones(3, np.float32), "k"), Tensor.from_array(np.zeros(3, np.float32), "k")]
    model = one_input([make_node("Add", ["input", "k"], ["output"])], initializers=inits)
    with pytest.raises(AdtGraphError, match=r"graph initializer 'k' is defined twice"):
        rt.load(adt_bytes(model, {}))


def test_undefined_input_is_a_graph_error_naming_node_and_tensor():
    nodes = [make_node("Relu", ["input"], ["1"]), make_node("Add", ["1", "nowhere"], ["output"])]
    with pytest.raises(AdtGraphError, match=r"Add node.*node #1.*input 'nowhere' is neither"):
        rt.load(adt_bytes(one_input(nodes), {}), engine=None)


def test_undefined_graph_output_and_cycle_are_graph_errors():
    model = one_input([make_node("Relu", ["input"], ["1"])], out="missing")
    with pytest.raises(AdtGraphError, match=r"graph output 'missing' is not produced by any node"):
        rt.load(adt_bytes(model, {}))
    nodes = [make_node("Add", ["input", "b"], ["a"]), make_node("Relu", ["a"], ["b"]),
             make_node("Identity", ["a"], ["output"])]
    with pytest.raises(AdtGraphError, match=r"cycle"):
        rt.load(adt_bytes(one_input(nodes), {}))


def test_graph_errors_are_architecture_errors():
    assert issubclass(AdtGraphError, AdtArchitectureError)


def test_every_op_of_the_engine_has_an_arity():
    assert set(numpy_engine.ARITY) == set(numpy_engine.OPS)


def test_validate_graph_returns_a_topological_order():
    nodes = [make_node("Relu", ["a"], ["output"]), make_node("Tanh", ["input"], ["a"])]
    g = one_input(nodes).graph
    assert validate_graph(g) == [1, 0]
    eng = NumpyEngine(one_input(nodes), {})
    np.testing.assert_allclose(eng.run({"input": X})[0], np.maximum(np.tanh(X), 0))


# -- initializer dims -------------------------------------------------------------------------------
def _model_with_raw_initializer(dims, raw: bytes, name="big") -> bytes:
    """A model whose graph holds one initializer with these dims (encoded by hand: numpy cannot make
    such an array) next to Identity(input) -> output."""
    m = one_input([make_node("Identity", ["input"], ["output"])]).to_bytes()
    extra = _len_field(5, _tensor_fields(name, dims, FLOAT, raw))  # appended to graph.initializer
    return b"".join(_len_field(7, bytes(val) + extra) if num == 7 else _enc_field(num, wt, val)
                    for num, wt, val, _ in _fields(memoryview(m), "model"))


@pytest.mark.parametrize("dims,raw,match", [
    ([1] * 65, b"\0" * 4, r"'big'.*has 65 dims, the limit is 8"),
    ([2 ** 62, 4, 0], b"", r"'big'.*dims \[4611686018427387904, 4, 0\] are out of range"),
    ([1 << 31, 0], b"", r"'big'.*out of range"),
])
def test_bad_initializer_dims_are_architecture_errors(dims, raw, match):
    data = _model_with_raw_initializer(dims, raw)
    with pytest.raises(AdtArchitectureError, match=match):
        parse_model(data)
    with pytest.raises(AdtArchitectureError, match=match):
        rt.load(adt_bytes(data, {}))


def test_initializer_rank_at_the_limit_and_empty_dims_in_range_parse():
    arr = np.arange(2 ** 8, dtype=np.float32).reshape((2,) * 8)
    t = parse_model(_model_with_raw_initializer(arr.shape, arr.tobytes())).graph.initializers[0]
    np.testing.assert_array_equal(t.array, arr)
    t = parse_model(_model_with_raw_initializer([5, 0, 3], b"")).graph.initializers[0]
    assert t.array.shape == (5, 0, 3)


# -- unexpected failures inside an op ---------------------------------------------------------------
@pytest.mark.parametrize("exc", [KeyError("k"), AttributeError("no attribute"), OverflowError("big"),
                                 ZeroDivisionError("zero")])
def test_an_unexpected_exception_in_an_op_is_an_execution_error_naming_the_node(monkeypatch, exc):
    def factory(node, opset, consts):
        def run(x):
            raise exc
        return run
    monkeypatch.setitem(numpy_engine.OPS, "Relu", factory)
    m = rt.load(adt_bytes(one_input([make_node("Relu", ["input"], ["output"], name="r7")]), {}))
    with pytest.raises(AdtExecutionError, match=r"Relu node 'r7' failed on inputs of shapes \[\[2, 3\]\]"):
        m(X)


def test_an_unexpected_exception_while_compiling_a_node_is_an_architecture_error(monkeypatch):
    def factory(node, opset, consts):
        raise KeyError("attr")
    monkeypatch.setitem(numpy_engine.OPS, "Relu", factory)
    with pytest.raises(AdtArchitectureError, match=r"Relu node 'r8' \(node #0\): invalid attributes"):
        rt.load(adt_bytes(one_input([make_node("Relu", ["input"], ["output"], name="r8")]), {}))
