"""load / Model.run on hand-built LeNet-5, MLP and ResNet-block files: both engines against
onnx.reference on the dense model, dynamic batch, input checks, dense ONNX export, clear errors.

The files are built without onnx; the tests that compare against the onnx package (its reference
evaluator, its checker) or run onnxruntime skip where those are not installed."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import adt.runtime as rt
from adt.runtime.errors import (
    AdtEngineError, AdtInputError, AdtNoArchitectureError, AdtUnsupportedOpError,
)
from adt.runtime.format import ENC_PLAIN, AdtArchitectureError, AdtError, AdtWriter, read_adt
from adt.runtime.onnx_proto import FLOAT, Tensor, ValueInfo, parse_model

from runtime_models import dense_model, lenet5, make_adt, mlp, resblock

BUILDERS = {"lenet5": lenet5, "mlp": mlp, "resblock": resblock}


@pytest.fixture(scope="module", params=list(BUILDERS))
def case(request):
    model, specs = BUILDERS[request.param]()
    return request.param, model, make_adt(model, specs)


def _x(m: rt.Model, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal([n] + m.input_shape[1:]).astype(np.float32)


def _close(a, ref, rtol=1e-4):
    """Outputs within ``rtol`` relative to the output's scale."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert a.shape == ref.shape
    scale = np.abs(ref).max()
    assert np.abs(a - ref).max() <= rtol * scale, (np.abs(a - ref).max(), scale)


@pytest.mark.parametrize("engine", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("batch", [1, 64])
def test_engines_agree_with_onnx_reference(case, engine, batch):
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    name, model, data = case
    m = rt.load(data, engine=engine)
    x = _x(m, batch, seed=batch)
    y = m.run(x)
    assert y.dtype == np.float32 and y.shape == (batch, 10)
    # reference: the dense model assembled with the onnx package from the runtime's rebuilt weights
    ref = ReferenceEvaluator(dense_model(model, m.weights)).run(None, {"input": x})[0]
    _close(y, ref)
    assert np.array_equal(m(x), y)  # __call__ is run


def test_engines_agree_with_each_other_on_predictions(case):
    pytest.importorskip("onnxruntime")
    _, _, data = case
    a, b = rt.load(data), rt.load(data, engine="onnxruntime")
    x = _x(a, 64, seed=7)
    ya, yb = a(x), b(x)
    _close(ya, yb)
    assert np.array_equal(ya.argmax(1), yb.argmax(1))


def test_model_attributes(case):
    name, model, data = case
    m = rt.load(data)
    f = read_adt(data)
    assert m.file.params[0].name == f.params[0].name
    assert set(m.weights) == {p.name for p in f.params}
    assert m.input_name == "input" and m.input_shape[0] == "N" and m.input_dtype == np.float32
    assert m.output_names == ["output"]
    assert "engine 'numpy'" in repr(m)


def test_onnx_bytes_is_a_valid_dense_model_and_deterministic(case, tmp_path):
    onnx = pytest.importorskip("onnx")
    name, model, data = case
    m = rt.load(data)
    raw = m.onnx_bytes()
    proto = onnx.load_from_string(raw)
    onnx.checker.check_model(proto, full_check=True)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    used = {i for n in proto.graph.node for i in n.input}
    assert set(inits) == set(m.weights) & used
    for k, v in inits.items():
        assert np.array_equal(v, m.weights[k])
    # the same file gives the same bytes; to_onnx writes exactly them
    assert rt.load(data).onnx_bytes() == raw
    out = tmp_path / "dense.onnx"
    assert m.to_onnx(out) == len(raw) and out.read_bytes() == raw
    assert not [p for p in tmp_path.iterdir() if p.name != "dense.onnx"]  # no temp file left


def test_path_and_file_sources(tmp_path):
    model, specs = mlp()
    data = make_adt(model, specs)
    p = tmp_path / "m.adt"
    p.write_bytes(data)
    x = np.ones((2, 1, 28, 28), np.float32)
    ys = [rt.load(src)(x) for src in (data, p, str(p), read_adt(data), bytearray(data), memoryview(data))]
    for y in ys[1:]:
        assert np.array_equal(y, ys[0])


# -- input checks ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet():
    model, specs = lenet5()
    return rt.load(make_adt(model, specs))


@pytest.mark.parametrize("x,match", [
    (np.zeros((2, 1, 28, 28), np.float64), r"dtype float64, expected float32.*astype"),
    (np.zeros((2, 1, 28, 28), np.int32), r"dtype int32"),
    (np.zeros((2, 28, 28), np.float32), r"\(rank 3\), expected rank 4: \[N, 1, 28, 28\]"),
    (np.zeros((2, 3, 28, 28), np.float32), r"dim 1 is 3, must be 1"),
    (np.zeros((2, 1, 32, 32), np.float32), r"dim 2 is 32, must be 28"),
    (np.zeros((0, 1, 28, 28), np.float32), r"dim 0 is empty"),
    ([[0.0]], r"must be a NumPy array, got list"),
])
def test_bad_input_is_a_clear_error(lenet, x, match):
    with pytest.raises(AdtInputError, match=match):
        lenet.run(x)


def test_input_by_name(lenet):
    x = np.zeros((3, 1, 28, 28), np.float32)
    assert np.array_equal(lenet.run({"input": x}), lenet.run(x))
    with pytest.raises(AdtInputError, match=r"inputs \['image'\] given, the model expects \['input'\]"):
        lenet.run({"image": x})


def test_non_contiguous_input(lenet):
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 56)).astype(np.float32)
    view = x[:, :, :, ::2]
    assert np.array_equal(lenet.run(view), lenet.run(np.ascontiguousarray(view)))


def test_fixed_batch_architecture_refuses_other_batches():
    model, specs = mlp()
    model.graph.inputs[0].shape[0] = 1
    m = rt.load(make_adt(model, specs))
    assert m.input_shape[0] == 1
    m.run(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(AdtInputError, match="dim 0 is 64, must be 1"):
        m.run(np.zeros((64, 1, 28, 28), np.float32))


# -- files and engines that cannot run ------------------------------------------------------------
def test_file_without_architecture_loads_weights_but_cannot_run():
    model, specs = mlp()
    m = rt.load(make_adt(None, specs))
    assert m.architecture is None and m.input_shape is None and m.input_name is None
    assert m.weights["fc1.weight"].shape == (300, 784)
    with pytest.raises(AdtNoArchitectureError, match="no architecture section"):
        m.run(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(AdtNoArchitectureError):
        m.onnx_bytes()


def test_unknown_engine():
    model, specs = mlp()
    with pytest.raises(AdtEngineError, match="unknown engine 'tvm'"):
        rt.load(make_adt(model, specs), engine="tvm")


def test_onnxruntime_missing_is_a_clear_error(monkeypatch):
    model, specs = mlp()
    data = make_adt(model, specs)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(AdtEngineError, match=r"needs the onnxruntime package.*adt\[onnx\]") as info:
        rt.load(data, engine="onnxruntime")
    assert isinstance(info.value, ImportError) and isinstance(info.value, AdtError)
    rt.load(data).run(np.zeros((1, 1, 28, 28), np.float32))  # numpy engine unaffected


def test_unsupported_op_at_load_names_op_and_node():
    model, specs = mlp()
    relu = [n for n in model.graph.nodes if n.op_type == "Relu"][0]
    relu.op_type = "Selu"
    relu.name = "act_1"
    with pytest.raises(AdtUnsupportedOpError, match=r"op 'Selu' \(Selu node 'act_1'\)"):
        rt.load(make_adt(model, specs))


def test_missing_weight_is_an_architecture_error():
    model, specs = mlp()
    del specs["fc2.bias"]
    with pytest.raises(AdtArchitectureError, match=r"input 'fc2.bias' is neither a graph input, a stored weight"):
        rt.load(make_adt(model, specs))


def test_malformed_architecture_bytes_are_an_architecture_error():
    model, specs = mlp()
    raw = model.to_bytes()
    w = AdtWriter()
    w.set_architecture(raw[: len(raw) // 2])  # truncated protobuf
    g = w.add_group(16, 1.0)
    w.add_plain("fc1.bias", np.zeros(300, np.uint16), g)
    with pytest.raises(AdtArchitectureError, match="architecture: ONNX field"):
        rt.load(w.to_bytes())


def test_engine_frees_intermediates_but_keeps_results_stable(lenet):
    x = _x(lenet, 8, seed=3)
    a = lenet.run(x)
    b = lenet.run(x)
    assert np.array_equal(a, b) and a is not b


def test_weight_also_stored_as_initializer_is_refused():
    model, specs = mlp()
    model.graph.initializers.append(Tensor.from_array(np.zeros(10, np.float32), "fc3.bias"))
    with pytest.raises(AdtArchitectureError, match="'fc3.bias' is both a graph initializer and a stored weight"):
        rt.load(make_adt(model, specs))


@pytest.mark.parametrize("engine", ["numpy", "onnxruntime"])
def test_several_outputs_come_back_by_name(engine):
    """A graph with another input name and two outputs: run() returns {name: array}."""
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    model, specs = mlp()
    model.graph.nodes[0].inputs[0] = "pixels"
    model.graph.inputs[0].name = "pixels"
    model.graph.outputs.append(ValueInfo("3", FLOAT, ["N", 300]))
    m = rt.load(make_adt(model, specs), engine=engine)
    assert m.input_name == "pixels" and m.output_names == ["output", "3"]
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    out = m.run(x)
    assert set(out) == {"output", "3"} and out["output"].shape == (2, 10) and out["3"].shape == (2, 300)
    assert (out["3"] >= 0).all()  # the Relu output
    np.testing.assert_allclose(out["output"].sum(1), 1.0, rtol=1e-5)  # softmax rows
    assert np.array_equal(m.run({"pixels": x})["output"], out["output"])


def test_onnxruntime_engine_hands_weights_over_without_protobuf(monkeypatch):
    """The engine passes the rebuilt arrays as external initializers; outputs are bit-identical to a
    session on the serialized dense model, and the fallback (serialized model) gives the same."""
    ort = pytest.importorskip("onnxruntime")
    model, specs = lenet5()
    data = make_adt(model, specs)
    m = rt.load(data, engine="onnxruntime")
    assert m._runner.external
    x = _x(m, 8, seed=5)
    dense = ort.InferenceSession(m.onnx_bytes(), providers=["CPUExecutionProvider"])
    assert np.array_equal(m.run(x), dense.run(None, {"input": x})[0])

    def refuse(self, names, values):
        raise RuntimeError("not in this build")
    monkeypatch.setattr(ort.SessionOptions, "add_external_initializers", refuse)
    fallback = rt.load(data, engine="onnxruntime")
    assert not fallback._runner.external
    assert np.array_equal(fallback.run(x), m.run(x))


def test_weights_are_read_only(lenet):
    w = lenet.weights["fc1.weight"]
    with pytest.raises(ValueError, match="read-only"):
        w[0, 0] = 1.0


def test_engine_none_gives_weights_and_dense_onnx_for_any_op():
    """engine=None builds no engine: the dense ONNX model can be written even for an op the NumPy
    engine lacks (onnxruntime runs it), but run() says how to get an engine."""
    model, specs = mlp()
    relu = [n for n in model.graph.nodes if n.op_type == "Relu"][0]
    relu.op_type = "Selu"
    m = rt.load(make_adt(model, specs), engine=None)
    assert m.engine is None and "Selu" in {n.op_type for n in parse_model(m.onnx_bytes()).graph.nodes}
    with pytest.raises(AdtEngineError, match="engine=None"):
        m.run(np.zeros((1, 1, 28, 28), np.float32))


def test_big_endian_float32_input_is_accepted(lenet):
    x = _x(lenet, 2, seed=9)
    assert np.array_equal(lenet.run(x.astype(">f4")), lenet.run(x))


# -- corrupted architectures: only AdtError, never a raw Python exception ------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ_BASE: dict = {}


def _fuzz_parts(name: str):
    if name not in _FUZZ_BASE:
        model, specs = BUILDERS[name]()
        _FUZZ_BASE[name] = (model.to_bytes(), read_adt(make_adt(model, specs)))
    return _FUZZ_BASE[name]


@given(st.sampled_from(sorted(BUILDERS)), st.data())
@settings(max_examples=int(os.environ.get("ADT_FUZZ_EXAMPLES", 150)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_corrupted_architecture_gives_only_adt_errors(name, data):
    """Byte flips in a valid architecture (LeNet-5, MLP, ResNet block): loading and running either
    works or raises an AdtError subclass (architecture, unsupported op, input, execution), nothing
    else. (ADT_FUZZ_EXAMPLES raises the count for a longer hunt; 20k examples passed.)"""
    import dataclasses
    raw, base = _fuzz_parts(name)
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    f = dataclasses.replace(base, architecture=bytes(buf))
    try:
        m = rt.load(f)
        dims = (m.input_shape or [0, 1, 28, 28])[1:]
        m.run(np.ones([2] + [d if isinstance(d, int) and 0 < d <= 64 else 8 for d in dims], np.float32))
    except AdtError:
        pass


# -- memory: every weight held once (issue 18) -------------------------------------------------------
def test_weights_are_the_files_whatever_the_engine_replaced(case, tmp_path):
    """The NumPy engine's rewrites take conv/BN weights over (folded, packed); Model.weights still
    gives the file's weights, bit for bit, rebuilt again from the source (bytes, path or AdtFile)."""
    _, _, data = case
    ref = rt.rebuild_weights(data)
    path = tmp_path / "m.adt"
    path.write_bytes(data)
    for source in (data, path, read_adt(data)):
        m = rt.load(source)
        assert list(m.weights) == list(ref) and len(m.weights) == len(ref)
        for k, w in m.weights.items():
            assert w.dtype == np.float32 and not w.flags.writeable and np.array_equal(w, ref[k]), k
        assert all(np.array_equal(m.weights[k], ref[k]) for k in ref)
        assert "nope" not in m.weights
        with pytest.raises(KeyError):
            m.weights["nope"]


def test_load_holds_each_weight_once(case):
    """tracemalloc after load(bytes): the dense float32 weights plus small bookkeeping, not a second
    copy of what the engine rewrote, and no decoded symbols of the plain parameters and cores."""
    import tracemalloc
    _, _, data = case
    dense = read_adt(data).original_float32_bytes()
    rt.load(data)  # imports and caches warm
    tracemalloc.start()
    try:
        m = rt.load(data)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held <= 1.05 * dense + (256 << 10), (held, dense)
    assert all(p.symbols is None for p in m.file.params if p.encoding == ENC_PLAIN)
    assert all(c.symbols is None for c in m.file.cores)


def test_a_file_changed_after_load_is_not_read_again(tmp_path):
    model, specs = resblock()
    path = tmp_path / "m.adt"
    path.write_bytes(make_adt(model, specs))
    m = rt.load(path)
    if all(k in m._kept for k in m.weights):
        pytest.skip("the NumPy engine replaced no weight of this model")
    path.write_bytes(make_adt(model, specs, seed=1))   # another file at the same path
    os.utime(path, ns=(1, 1))
    with pytest.raises(AdtError, match="changed since the model was loaded"):
        dict(m.weights.items())
