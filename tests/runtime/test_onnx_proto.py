"""The runtime's own protobuf reader and writer: same fields as the onnx package reads, the encoder is
the parser's mirror (and writes what protobuf writes), and malformed bytes give AdtArchitectureError
naming the field (never IndexError, never a huge allocation). The comparisons with the onnx package
skip where it is not installed; everything else runs on the base install."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adt.runtime.format import AdtArchitectureError
from adt.runtime.onnx_proto import (
    A_FLOAT, A_FLOATS, A_INT, A_INTS, A_STRING, A_STRINGS, A_TENSOR, FLOAT, INT64, Graph, OnnxModel, Tensor,
    ValueInfo, add_initializers, encode_pb_varint, encode_tensor, encode_tensor_proto, make_attribute, make_node,
    parse_model, parse_tensor,
)

from runtime_models import lenet5, mlp, resblock

BUILDERS = [lenet5, mlp, resblock]


def _onnx():
    """The onnx package's modules, or skip: only the comparisons with it need it."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    return onnx, TensorProto, helper, numpy_helper


def _rich_model():
    onnx, TensorProto, helper, numpy_helper = _onnx()
    """Every field kind the reader decodes: all attribute types, initializers of several dtypes stored
    as raw_data and as typed fields, negative ints, dim_param and dim_value, two opset domains."""
    t_raw = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "t_raw")
    t_f = helper.make_tensor("t_f", TensorProto.FLOAT, [2, 2], [1.5, -2.0, 3.25, 0.0])
    t_i64 = helper.make_tensor("t_i64", TensorProto.INT64, [3], [-1, 0, 2**40])
    t_i32 = helper.make_tensor("t_i32", TensorProto.INT32, [2], [-7, 2**31 - 1])
    t_f16 = helper.make_tensor("t_f16", TensorProto.FLOAT16, [2], np.array([1.5, -0.25], np.float16).view(np.uint16))
    t_bool = helper.make_tensor("t_bool", TensorProto.BOOL, [3], [True, False, True])
    t_u8 = numpy_helper.from_array(np.array([0, 255, 7], np.uint8), "t_u8")
    t_f64 = helper.make_tensor("t_f64", TensorProto.DOUBLE, [2], [0.1, -1e300])
    t_empty = numpy_helper.from_array(np.zeros((0, 3), np.float32), "t_empty")
    node = helper.make_node("Foo", ["x", "", "t_raw"], ["y", "z"], name="n0", domain="ai.custom",
                            f=0.5, i=-3, s=b"hello", t=numpy_helper.from_array(np.array([1, 2], np.int64)),
                            floats=[1.0, -2.5], ints=[-1, 5, 2**40], strings=[b"a", b"bc"])
    node2 = helper.make_node("Relu", ["y"], ["out"])
    graph = helper.make_graph(
        [node, node2], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, "W"]),
         helper.make_tensor_value_info("u", TensorProto.INT64, None)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 5])],
        initializer=[t_raw, t_f, t_i64, t_i32, t_f16, t_bool, t_u8, t_f64, t_empty])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.custom", 3)])
    m.ir_version = 8
    return m


def test_reader_matches_onnx_package():
    onnx, TensorProto, helper, numpy_helper = _onnx()
    m = _rich_model()
    p = parse_model(m.SerializeToString())
    assert p.ir_version == 8 and p.opset("") == 17 and p.opset("ai.custom") == 3
    g = p.graph
    assert [n.op_type for n in g.nodes] == ["Foo", "Relu"]
    n = g.nodes[0]
    assert (n.name, n.domain, n.inputs, n.outputs) == ("n0", "ai.custom", ["x", "", "t_raw"], ["y", "z"])
    a = n.attrs
    assert (a["f"].type, a["f"].value) == (A_FLOAT, 0.5)
    assert (a["i"].type, a["i"].value) == (A_INT, -3)
    assert (a["s"].type, a["s"].value) == (A_STRING, b"hello")
    assert a["t"].type == A_TENSOR and np.array_equal(a["t"].value.array, [1, 2])
    assert (a["floats"].type, a["floats"].value) == (A_FLOATS, [1.0, -2.5])
    assert (a["ints"].type, a["ints"].value) == (A_INTS, [-1, 5, 2**40])
    assert a["strings"].value == [b"a", b"bc"]
    for t in m.graph.initializer:
        got = next(x for x in g.initializers if x.name == t.name)
        want = numpy_helper.to_array(t)
        assert got.array.dtype == want.dtype and got.array.shape == want.shape, t.name
        assert np.array_equal(got.array, want), t.name
    assert [(v.name, v.elem_type, v.shape) for v in g.inputs] == [("x", 1, ["N", 3, 224, "W"]), ("u", 7, None)]
    assert [(v.name, v.shape) for v in g.outputs] == [("out", ["N", 5])]


@pytest.mark.parametrize("builder", BUILDERS)
def test_reader_on_test_architectures(builder):
    onnx, TensorProto, helper, numpy_helper = _onnx()
    m = onnx.load_from_string(builder()[0].to_bytes())
    p = parse_model(m.SerializeToString())
    assert [(n.op_type, list(n.input), list(n.output)) for n in m.graph.node] == \
        [(n.op_type, n.inputs, n.outputs) for n in p.graph.nodes]
    for mn, pn in zip(m.graph.node, p.graph.nodes):
        for a in mn.attribute:
            assert pn.attrs[a.name].value == helper.get_attribute_value(a)


def test_add_initializers_round_trips_through_onnx():
    onnx, TensorProto, helper, numpy_helper = _onnx()
    m, _ = mlp()
    raw = m.to_bytes()
    w = {"fc1.bias": np.arange(300, dtype=np.float32), "k": np.array([[1, -2]], np.int64)}
    out = onnx.load_from_string(add_initializers(raw, w))
    got = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert set(got) == set(w) and all(np.array_equal(got[k], w[k]) and got[k].dtype == w[k].dtype for k in w)
    # everything else is untouched
    del out.graph.initializer[:]
    assert out.SerializeToString() == onnx.load_from_string(raw).SerializeToString()


def test_encode_tensor_parses_back():
    a = np.random.default_rng(0).standard_normal((3, 1, 4)).astype(np.float32)
    t = parse_tensor(memoryview(encode_tensor("w", a)), "t")
    assert t.name == "w" and t.dims == (3, 1, 4) and np.array_equal(t.array, a)


def test_encode_tensor_is_read_by_onnx():
    onnx, TensorProto, helper, numpy_helper = _onnx()
    a = np.random.default_rng(0).standard_normal((3, 1, 4)).astype(np.float32)
    assert np.array_equal(numpy_helper.to_array(onnx.TensorProto.FromString(encode_tensor("w", a))), a)


# -- the encoder (the parser's mirror) ------------------------------------------------------------
def _rich_own_model() -> OnnxModel:
    """The rich model's content built with the runtime's encoder (every tensor as raw_data)."""
    inits = [Tensor.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "t_raw"),
             Tensor.from_array(np.array([-1, 0, 2**40], np.int64), "t_i64"),
             Tensor.from_array(np.array([-7, 2**31 - 1], np.int32), "t_i32"),
             Tensor.from_array(np.array([1.5, -0.25], np.float16), "t_f16"),
             Tensor.from_array(np.array([True, False, True]), "t_bool"),
             Tensor.from_array(np.array([0, 255, 7], np.uint8), "t_u8"),
             Tensor.from_array(np.array([0.1, -1e300]), "t_f64"),
             Tensor.from_array(np.zeros((0, 3), np.float32), "t_empty")]
    node = make_node("Foo", ["x", "", "t_raw"], ["y", "z"], name="n0", domain="ai.custom",
                     f=0.5, i=-3, s=b"hello", t=np.array([1, 2], np.int64),
                     floats=[1.0, -2.5], ints=[-1, 5, 2**40], strings=[b"a", "bc"])
    graph = Graph(nodes=[node, make_node("Relu", ["y"], ["out"])], name="g", initializers=inits,
                  inputs=[ValueInfo("x", FLOAT, ["N", 3, 224, "W"]), ValueInfo("u", INT64, None)],
                  outputs=[ValueInfo("out", FLOAT, ["N", 5])])
    return OnnxModel(ir_version=8, opsets={"ai.onnx": 17, "ai.custom": 3}, graph=graph)


def test_encoder_round_trips_through_the_parser():
    m = _rich_own_model()
    raw = m.to_bytes()
    p = parse_model(raw)
    assert p.ir_version == 8 and p.opsets == {"ai.onnx": 17, "ai.custom": 3} and p.graph.name == "g"
    n = p.graph.nodes[0]
    assert (n.name, n.domain, n.inputs, n.outputs) == ("n0", "ai.custom", ["x", "", "t_raw"], ["y", "z"])
    a = n.attrs
    assert list(a) == sorted(a)  # make_node sorts attributes by name, as onnx.helper does
    assert (a["f"].type, a["f"].value) == (A_FLOAT, 0.5) and (a["i"].type, a["i"].value) == (A_INT, -3)
    assert (a["s"].type, a["s"].value) == (A_STRING, b"hello")
    assert a["t"].type == A_TENSOR and np.array_equal(a["t"].value.array, [1, 2])
    assert (a["floats"].type, a["floats"].value) == (A_FLOATS, [1.0, -2.5])
    assert (a["ints"].type, a["ints"].value) == (A_INTS, [-1, 5, 2**40])
    assert (a["strings"].type, a["strings"].value) == (A_STRINGS, [b"a", b"bc"])
    for want in m.graph.initializers:
        got = next(t for t in p.graph.initializers if t.name == want.name)
        assert got.data_type == want.data_type and got.dims == want.dims
        assert got.array.dtype == want.array.dtype and np.array_equal(got.array, want.array), want.name
    assert [(v.name, v.elem_type, v.shape) for v in p.graph.inputs] == [("x", 1, ["N", 3, 224, "W"]), ("u", 7, None)]
    assert p.to_bytes() == raw  # encode(parse(b)) == b


@pytest.mark.parametrize("builder", BUILDERS)
def test_encoder_is_the_parsers_mirror_on_test_architectures(builder):
    model = builder()[0]
    raw = model.to_bytes()
    assert parse_model(raw).to_bytes() == raw
    if builder is not resblock:  # resblock's epsilon=1e-5 is stored as float32, so it comes back rounded
        assert parse_model(raw) == model


@pytest.mark.parametrize("builder", BUILDERS + [_rich_own_model])
def test_onnx_reads_what_the_encoder_writes(builder):
    """onnx parses the bytes to the same content and re-serializes them byte for byte: the encoder
    writes what protobuf itself writes."""
    onnx, TensorProto, helper, numpy_helper = _onnx()
    model = builder() if builder is _rich_own_model else builder()[0]
    raw = model.to_bytes()
    proto = onnx.load_from_string(raw)
    assert proto.SerializeToString() == raw
    assert [(n.op_type, n.name, n.domain, list(n.input), list(n.output)) for n in proto.graph.node] == \
        [(n.op_type, n.name, n.domain, n.inputs, n.outputs) for n in model.graph.nodes]
    for pn, mn in zip(proto.graph.node, model.graph.nodes):
        for a in pn.attribute:
            want = mn.attrs[a.name].value
            got = helper.get_attribute_value(a)
            if isinstance(want, Tensor):
                assert np.array_equal(numpy_helper.to_array(got), want.array)
            elif isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-7)
            elif isinstance(want, list) and want and isinstance(want[0], float):
                assert got == pytest.approx(want, rel=1e-7)
            else:
                assert got == want
    for t in proto.graph.initializer:
        want = next(x for x in model.graph.initializers if x.name == t.name)
        assert np.array_equal(numpy_helper.to_array(t), want.array)
    assert [(v.name, v.type.tensor_type.elem_type) for v in proto.graph.input] == \
        [(v.name, v.elem_type) for v in model.graph.inputs]


def test_encoder_errors():
    with pytest.raises(AdtArchitectureError, match="no graph"):
        OnnxModel().to_bytes()
    with pytest.raises(AdtArchitectureError, match="dtype complex64"):
        Tensor.from_array(np.zeros(2, np.complex64), "c")
    with pytest.raises(AdtArchitectureError, match="is not its dims"):
        encode_tensor_proto(Tensor("w", (3,), FLOAT, np.zeros(2, np.float32)))
    with pytest.raises(AdtArchitectureError, match="cannot infer"):
        make_attribute("a", [])


# -- malformed input ------------------------------------------------------------------------------
def _field(num: int, wt: int, payload: bytes) -> bytes:
    key = encode_pb_varint(num << 3 | wt)
    return key + (encode_pb_varint(len(payload)) + payload if wt == 2 else payload)


def _graph_with_tensor(tensor: bytes) -> bytes:
    return _field(7, 2, _field(5, 2, tensor))


@pytest.mark.parametrize("data,match", [
    (b"\x08", "model.ir_version.*varint runs past"),
    (b"\x08" + b"\xff" * 11, "model.ir_version.*longer than 10 bytes"),
    (b"\x3a\x05\x0a", "model.graph: length 5 runs past"),
    (b"\x98\x01", r"model \(field 19\): varint runs past"),  # unknown fields are named by number
    (b"\x0b", "unsupported wire type 3"),
    (b"\x00\x01", "invalid field number 0"),
    (b"\x08\x01", "model.graph.*has no graph"),
    (b"\x3a\x00\x3a\x00", "model.graph.*more than once"),
    (_field(7, 2, _field(1, 2, b"")), r"graph.node\[0\].op_type.*no op_type"),
    (_field(7, 2, _field(1, 2, _field(4, 2, b"\xff\xfe"))), r"node\[0\].op_type.*not valid UTF-8"),
    (_field(7, 2, _field(1, 2, _field(4, 0, b"\x01"))), r"op_type.*wire type varint, expected length-delimited"),
    # a tensor claiming 2**40 x 2**20 floats but holding 8 bytes: refused before any allocation
    (_graph_with_tensor(_field(1, 0, b"\x80\x80\x80\x80\x80\x80\x01") + _field(1, 0, b"\x80\x80\x40")
                        + _field(2, 0, b"\x01") + _field(9, 2, b"\x00" * 8)), r"raw_data.*is 8 bytes"),
    (_graph_with_tensor(_field(1, 0, b"\x02") + _field(2, 0, b"\x01") + _field(4, 2, b"\x00" * 4)),
     r"holds 1 values, dims \[2\] need 2"),
    (_graph_with_tensor(_field(2, 0, b"\x08") + _field(6, 2, b"ab")), "string tensors are not supported"),
    (_graph_with_tensor(_field(2, 0, b"\x10")), r"data type 16 \(bfloat16\) is not supported"),
    (_graph_with_tensor(_field(2, 0, b"\x01") + _field(14, 0, b"\x01")), "external data is not supported"),
    (_graph_with_tensor(_field(1, 0, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01") + _field(2, 0, b"\x01")),
     "negative dimension"),
    (_graph_with_tensor(_field(2, 0, b"\x01") + _field(4, 2, b"\x00" * 5)), "packed length 5 is not a multiple of 4"),
    (_field(7, 2, _field(1, 2, _field(4, 2, b"Relu") + _field(5, 2, _field(20, 0, b"\x02")))),
     r"attribute\[0\].name.*no name"),
    (_field(7, 2, _field(1, 2, _field(4, 2, b"Relu") + _field(5, 2, _field(1, 2, b"a") + _field(20, 0, b"\x63")))),
     "attribute type 99 is not supported"),
])
def test_malformed_bytes_name_the_field(data, match):
    with pytest.raises(AdtArchitectureError, match=match):
        parse_model(data)


def assert_parses_or_adt_error(data: bytes) -> None:
    """Hostile bytes either parse into a model with a graph or raise AdtArchitectureError; any other
    exception (IndexError, MemoryError, ...) propagates and fails the test."""
    try:
        model = parse_model(data)
    except AdtArchitectureError as exc:
        assert str(exc), "the error must say what is wrong"
    else:
        assert model.graph is not None


def test_every_truncation_of_a_real_architecture():
    raw = resblock()[0].to_bytes()
    for n in range(len(raw)):
        # some prefixes end on a field boundary and parse (as a smaller model); none crash
        assert_parses_or_adt_error(raw[:n])


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes_never_crash(data):
    assert_parses_or_adt_error(data)


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_byte_flips_of_a_real_architecture_never_crash(data):
    raw = bytearray(lenet5()[0].to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    assert_parses_or_adt_error(bytes(raw))
