"""The onnxruntime engine obeys the NumPy engine's rules (issue 17, item 4): the same op set (control
flow, other domains, unsupported attributes and subgraphs refused at load with the NumPy engine's
AdtUnsupportedOpError), a run timeout through RunOptions.terminate, failures as AdtExecutionError
naming the node, and onnxruntime's log lines kept off stderr (the CLI prints one line)."""
from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

import adt.runtime as rt  # noqa: E402
from adt.runtime import ort_engine  # noqa: E402
from adt.runtime.errors import AdtExecutionError, AdtUnsupportedOpError  # noqa: E402
from adt.runtime.format import AdtError, AdtWriter, quantize  # noqa: E402
from adt.runtime.onnx_proto import (  # noqa: E402
    A_GRAPH, FLOAT, INT64, Graph, OnnxModel, Tensor, ValueInfo, _encode_node, _int_field, _len_field, _str_field,
    encode_graph, make_node, parse_model)
from adt.runtime.ort_engine import OrtEngine  # noqa: E402

OPSET = 17
BOOL = 9  # TensorProto.BOOL


def _io(name, shape, elem_type=FLOAT) -> ValueInfo:
    return ValueInfo(name, elem_type, list(shape) if shape is not None else None)


def _model(nodes, inputs, outputs, initializers=()) -> OnnxModel:
    return OnnxModel(ir_version=8, opsets={"ai.onnx": OPSET}, graph=Graph(
        nodes=list(nodes), name="g", initializers=list(initializers), inputs=list(inputs), outputs=list(outputs)))


def _adt(architecture: bytes) -> bytes:
    """A .adt file with ``architecture`` and one (unused) plain parameter."""
    w = AdtWriter()
    w.set_architecture(architecture)
    g = w.add_group(256, 1.0)
    w.add_plain("unused", quantize(np.zeros(3), 256, 1.0), g)
    return w.to_bytes()


def _with_graph_attrs(model: OnnxModel, node_index: int, graphs: dict[str, Graph]) -> bytes:
    """``model``'s bytes with the subgraph attributes ``graphs`` on node ``node_index`` (the
    runtime's encoder writes no subgraph, so the GRAPH attributes are spliced in at the wire level)."""
    attrs = b"".join(_len_field(5, _str_field(1, n) + _len_field(6, encode_graph(body)) + _int_field(20, A_GRAPH))
                     for n, body in graphs.items())
    g = model.graph
    rest = encode_graph(Graph(nodes=[], name=g.name, initializers=g.initializers, inputs=g.inputs, outputs=g.outputs))
    nodes = b"".join(_len_field(1, _encode_node(n) + (attrs if i == node_index else b""))
                     for i, n in enumerate(g.nodes))
    return (_int_field(1, model.ir_version) + _len_field(7, nodes + rest)
            + _len_field(8, _str_field(1, "") + _int_field(2, OPSET)))


def _reshape_to_7(name: str = "") -> OnnxModel:
    """Reshape to [7]: loads, and fails at run for any input whose size is not 7 (the input's
    first dim is dynamic, so onnxruntime cannot see it at load)."""
    shape = Tensor.from_array(np.array([7], np.int64), "shape")
    return _model([make_node("Reshape", ["input", "shape"], ["output"], name=name)],
                  [_io("input", ["N", 4])], [_io("output", [7])], initializers=[shape])


# -- the op rules ----------------------------------------------------------------------------------------
def _loop(trip: int = 2 ** 62) -> bytes:
    """A valid Loop with trip count ``trip`` (2**62: it would never return) over an Identity body."""
    m = _model([make_node("Loop", ["trip", "cond", "input"], ["output"])],
               [_io("input", [1])], [_io("output", [1])],
               initializers=[Tensor.from_array(np.array(trip, np.int64), "trip"),
                             Tensor.from_array(np.array(True), "cond")])
    body = Graph(nodes=[make_node("Identity", ["c_in"], ["c_out"]), make_node("Identity", ["x_in"], ["x_out"])],
                 name="body", inputs=[_io("i", [], INT64), _io("c_in", [], BOOL), _io("x_in", [1])],
                 outputs=[_io("c_out", [], BOOL), _io("x_out", [1])])
    return _with_graph_attrs(m, 0, {"body": body})


def _if() -> bytes:
    m = _model([make_node("If", ["cond"], ["output"])], [_io("input", [1])], [_io("output", [1])],
               initializers=[Tensor.from_array(np.array(True), "cond")])
    branch = Graph(nodes=[make_node("Identity", ["input"], ["b_out"])], name="branch", outputs=[_io("b_out", [1])])
    return _with_graph_attrs(m, 0, {"then_branch": branch, "else_branch": branch})


def _scan() -> bytes:
    m = _model([make_node("Scan", ["input"], ["output"], num_scan_inputs=1)], [_io("input", [1])], [_io("output", [1])])
    body = Graph(nodes=[make_node("Identity", ["s_in"], ["s_out"])], name="body",
                 inputs=[_io("s_in", [])], outputs=[_io("s_out", [])])
    return _with_graph_attrs(m, 0, {"body": body})


@pytest.mark.parametrize("build, op", [(_loop, "Loop"), (_if, "If"), (_scan, "Scan")])
def test_control_flow_is_refused_at_load(build, op):
    data = _adt(build())
    with pytest.raises(AdtUnsupportedOpError):
        rt.load(data, engine="onnxruntime")
    with pytest.raises(AdtUnsupportedOpError):  # the NumPy engine refuses it too
        rt.load(data)
    with pytest.raises(AdtUnsupportedOpError, match=rf"control-flow op '{op}'.*refused by both engines"):
        OrtEngine(parse_model(build()), {}, ["output"])


def _hardmax():
    # an ONNX default-domain op onnxruntime runs and the NumPy engine does not (Erf was one until
    # the NumPy engine learnt it)
    return _model([make_node("Hardmax", ["input"], ["output"], name="my_hardmax")], [_io("input", ["N", 4])],
                  [_io("output", ["N", 4])]).to_bytes()


def _contrib_gelu():
    return _model([make_node("Gelu", ["input"], ["output"], name="g1", domain="com.microsoft")],
                  [_io("input", ["N", 4])], [_io("output", ["N", 4])]).to_bytes()


def _maxpool_indices():
    return _model([make_node("MaxPool", ["input"], ["output", "indices"], kernel_shape=[2, 2])],
                  [_io("input", ["N", 1, 4, 4])], [_io("output", ["N", 1, 2, 2])]).to_bytes()


@pytest.mark.parametrize("build, match", [
    (_hardmax, r"'Hardmax'.*my_hardmax.*not supported by the NumPy engine"),      # onnxruntime runs Hardmax
    (_contrib_gelu, r"Gelu.*g1.*com\.microsoft"),                                 # and its contrib ops
    (_maxpool_indices, r"Indices output of MaxPool"),                             # and this output
])
def test_what_the_numpy_engine_refuses_the_ort_engine_refuses(build, match):
    data = _adt(build())
    with pytest.raises(AdtUnsupportedOpError) as numpy_refusal:
        rt.load(data)
    with pytest.raises(AdtUnsupportedOpError) as ort_refusal:
        rt.load(data, engine="onnxruntime")
    assert type(ort_refusal.value) is type(numpy_refusal.value)
    with pytest.raises(AdtUnsupportedOpError, match=match):
        OrtEngine(parse_model(build()), {}, ["output"])


def test_a_subgraph_attribute_is_refused():
    """No engine runs a subgraph (the NumPy engine ignores attributes its ops do not read)."""
    arch = _with_graph_attrs(_model([make_node("Relu", ["input"], ["output"])], [_io("input", ["N", 4])],
                                    [_io("output", ["N", 4])]), 0, {"body": Graph(name="body")})
    with pytest.raises(AdtUnsupportedOpError, match=r"Relu.*node #0.*attribute 'body' is a subgraph"):
        rt.load(_adt(arch), engine="onnxruntime")


def test_refusal_happens_before_onnxruntime_sees_the_graph(monkeypatch):
    def no_session(*args, **kwargs):
        raise AssertionError("onnxruntime was handed a graph the NumPy engine refuses")
    monkeypatch.setattr(ort, "InferenceSession", no_session)
    with pytest.raises(AdtUnsupportedOpError):
        OrtEngine(parse_model(_loop()), {}, ["output"])
    assert ort_engine.EXTRA_OPS == frozenset()  # the documented list of extra ops: none


def test_onnxruntime_runs_the_graph_adt_parsed():
    """What adt's parser skips (here: ModelProto field 25, model-local functions, holding bytes
    onnxruntime cannot parse) never reaches onnxruntime: it gets the re-encoded parsed model."""
    m = _model([make_node("Relu", ["input"], ["output"])], [_io("input", ["N", 4])], [_io("output", ["N", 4])])
    engine = OrtEngine(m.to_bytes() + _len_field(25, b"\x00" * 3), {}, ["output"])
    x = np.array([[-1, 2, -3, 4]], np.float32)
    np.testing.assert_array_equal(engine.run({"input": x})[0], np.maximum(x, 0))


# -- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, where", [("", r"Reshape node -> \['output'\] \(node #0\)"),
                                         ("my_reshape", r"Reshape node 'my_reshape' \(node #0\)")])
def test_run_failure_is_an_execution_error_naming_the_node(name, where):
    model = rt.load(_adt(_reshape_to_7(name).to_bytes()), engine="onnxruntime")
    with pytest.raises(AdtExecutionError, match=rf"^onnxruntime failed: {where}: .*cannot be reshaped") as info:
        model.run(np.ones((2, 4), np.float32))
    assert "onnxruntime_src" not in str(info.value) and "\n" not in str(info.value)


def test_run_failure_message_has_no_source_location():
    m = _model([make_node("MatMul", ["input", "w"], ["output"], name="mm")], [_io("input", ["N", "K"])],
               [_io("output", ["N", 3])], initializers=[Tensor.from_array(np.ones((5, 3), np.float32), "w")])
    with pytest.raises(AdtExecutionError, match=r"^onnxruntime failed: MatMul node 'mm' \(node #0\): MatMul dimension"):
        OrtEngine(m, {}, ["output"]).run({"input": np.ones((2, 4), np.float32)})


def test_load_failure_is_an_execution_error():
    # MatMul of a static [1, 4] input with a [5, 3] constant: onnxruntime's shape inference refuses it
    m = _model([make_node("MatMul", ["input", "w"], ["output"])], [_io("input", [1, 4])], [_io("output", [1, 3])],
               initializers=[Tensor.from_array(np.ones((5, 3), np.float32), "w")])
    with pytest.raises(AdtExecutionError, match=r"^onnxruntime cannot load the model: "):
        OrtEngine(m, {}, ["output"])


# -- run timeout -----------------------------------------------------------------------------------------
def _matmul_chain(n: int = 200, k: int = 512) -> OnnxModel:
    """``n`` MatMuls by a k x k identity: allowed ops only, slow enough (n * 2 * 256 * k * k flops
    for a 256-row batch, seconds on a small CPU) for a short timeout to stop it between nodes."""
    nodes = [make_node("MatMul", ["input" if i == 0 else f"t{i - 1}", "w"], ["output" if i == n - 1 else f"t{i}"])
             for i in range(n)]
    return _model(nodes, [_io("input", ["N", k])], [_io("output", ["N", k])],
                  initializers=[Tensor.from_array(np.eye(k, dtype=np.float32), "w")])


def test_run_timeout_stops_a_run_with_an_execution_error():
    x = np.ones((256, 512), np.float32)
    engine = OrtEngine(_matmul_chain(), {}, ["output"], run_timeout=0.005)
    with pytest.raises(AdtExecutionError, match=r"onnxruntime run stopped: it ran past its 0.005 s timeout"):
        engine.run({"input": x})
    with pytest.raises(AdtExecutionError, match=r"ran past its 0 s timeout"):  # per-call override
        engine.run({"input": x}, timeout=0)


def test_run_timeout_leaves_a_run_that_finishes_unchanged():
    m = _matmul_chain(n=3, k=8)
    x = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    plain = OrtEngine(m, {}, ["output"]).run({"input": x})[0]
    engine = OrtEngine(m, {}, ["output"], run_timeout=600)
    np.testing.assert_array_equal(engine.run({"input": x})[0], plain)
    np.testing.assert_array_equal(engine.run({"input": x})[0], plain)  # a later run is not stopped
    np.testing.assert_array_equal(engine.run({"input": x}, timeout=None)[0], plain)


# -- logging ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(ort, "set_default_logger_callback"), reason="onnxruntime has no logger callback")
def test_onnxruntime_errors_go_to_the_python_logger(caplog):
    ort_engine.configure_logging(severity=3)
    try:
        engine = OrtEngine(_reshape_to_7(), {}, ["output"])
        with caplog.at_level(logging.DEBUG, logger=ort_engine.LOGGER.name):
            with pytest.raises(AdtExecutionError):
                engine.run({"input": np.ones((2, 4), np.float32)})
        records = [r for r in caplog.records if r.name == ort_engine.LOGGER.name]
        assert records and records[0].levelno == logging.ERROR
        assert "Reshape" in records[0].getMessage()
    finally:
        ort_engine.configure_logging()


def test_configure_logging_rejects_a_bad_severity():
    with pytest.raises(ValueError):
        ort_engine.configure_logging(severity=7)


def _cli(tmp_path, architecture: bytes, *extra) -> subprocess.CompletedProcess:
    path = tmp_path / "model.adt"
    path.write_bytes(_adt(architecture))
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    return subprocess.run([sys.executable, "-m", "adt.tools.cli", "run", str(path), "--input", str(tmp_path / "x.npy"),
                           "--engine", "onnxruntime", *extra], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("severity", [None, 3])
def test_cli_onnxruntime_failure_is_one_line_on_stderr(tmp_path, severity):
    """`adt run --engine onnxruntime` on a graph that makes onnxruntime fail: one line, no
    [E:onnxruntime...] line beside it (with the routed severity 3 as with the CLI's 4)."""
    arch = _reshape_to_7().to_bytes()
    if severity is None:
        out = _cli(tmp_path, arch)
    else:  # the library default, through the same entry point
        if not hasattr(ort, "set_default_logger_callback"):
            pytest.skip("onnxruntime has no logger callback: severity 3 would print")
        path = tmp_path / "model.adt"
        path.write_bytes(_adt(arch))
        np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
        code = ("import sys; from adt.tools import cli; "
                "cli._quiet_onnxruntime = lambda: None; "
                f"sys.exit(cli.main(['run', {str(path)!r}, '--input', {str(tmp_path / 'x.npy')!r}, "
                "'--engine', 'onnxruntime']))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("adt run: error: onnxruntime failed: Reshape node")


def test_cli_refused_op_is_one_line_on_stderr(tmp_path):
    out = _cli(tmp_path, _loop())
    assert out.returncode == 1
    assert out.stderr.splitlines() == [out.stderr.strip()] and "control-flow op 'Loop'" in out.stderr


def test_every_error_is_an_adt_error():
    assert issubclass(AdtUnsupportedOpError, AdtError) and issubclass(AdtExecutionError, AdtError)


def test_configure_threads_sets_the_sessions_pools():
    """The runtime's public thread setting (what ``adt bench --threads`` uses): sessions created
    afterwards get it; None restores onnxruntime's default; nonsense is refused."""
    default = ort_engine.session_options()
    try:
        ort_engine.configure_threads(1, 1)
        so = ort_engine.session_options()
        assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
        ort_engine.configure_threads(2)
        so = ort_engine.session_options()
        assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == default.inter_op_num_threads
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="threads"):
                ort_engine.configure_threads(bad)
    finally:
        ort_engine.configure_threads(None, None)
    so = ort_engine.session_options()
    assert so.intra_op_num_threads == default.intra_op_num_threads
    assert so.inter_op_num_threads == default.inter_op_num_threads
