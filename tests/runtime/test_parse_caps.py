"""Architecture parsing with its counts capped before any object is made (issue 17, "linear-time
pieces"): :func:`adt.runtime.onnx_proto.count_model` walks the wire fields once, counting (packed
values from their bytes), and refuses with an AdtArchitectureError naming the field, the count and
the limit; only then does :func:`parse_model` build nodes. The architecture itself is inflated in
bounded steps, never past its declared size (``read_adt(max_architecture_bytes=...)``).

Bounds are checked with tracemalloc (peak bytes), never with timings."""
from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
import pytest

import adt.runtime as rt
from adt.runtime.format import AdtArchitectureError, AdtWriter, read_adt
from adt.runtime.format.limits import MAX_ARCH_BYTES
from adt.runtime.onnx_proto import (
    DEFAULT_PARSE_LIMITS, LEN, Graph, Node, OnnxModel, ParseLimits, Tensor, ValueInfo, _key, _len_field,
    _str_field, count_model, make_node, parse_model,
)

MiB = 1 << 20


def _graph_model(nodes: list[Node], initializers=(), name: str = "g") -> OnnxModel:
    return OnnxModel(ir_version=8, opsets={"ai.onnx": 13}, graph=Graph(
        nodes=list(nodes), initializers=list(initializers),
        inputs=[ValueInfo("x", 1, [1, 4])], outputs=[ValueInfo(nodes[-1].outputs[0] if nodes else "x", 1, [1, 4])],
        name=name))


def _model_with_graph_bytes(graph: bytes) -> bytes:
    """ModelProto bytes around raw GraphProto bytes (ir_version, graph, opset 13)."""
    return (_key(1, 0) + b"\x08" + _len_field(7, graph)
            + _len_field(8, _str_field(1, "") + _key(2, 0) + b"\x0d"))


def _adt(arch: bytes) -> bytes:
    w = AdtWriter()
    w.set_architecture(arch)
    g = w.add_group(16, 1.0)
    w.add_plain("w", np.zeros(4, np.uint16), g)
    return w.to_bytes()


def _peak(fn) -> tuple[object, int]:
    """(what ``fn`` raised or returned, tracemalloc peak bytes during the call)."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as exc:      # the caller checks the type
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- the two crafted files of the issue ---------------------------------------------------------------
def test_64mib_architecture_is_refused_with_little_memory():
    # one attribute of packed ints, 1 byte each, inflating to just under 64 MiB (the format's limit):
    # it used to build 64M Python ints (2.94 GB, then MemoryError)
    n = MAX_ARCH_BYTES - 4096
    attr = _str_field(1, "ints") + _key(8, LEN) + _varint(n) + b"\x01" * n + _key(20, 0) + b"\x07"
    node = _str_field(1, "x") + _str_field(2, "y") + _str_field(4, "Relu") + _len_field(5, attr)
    arch = _model_with_graph_bytes(_len_field(1, node))
    assert len(arch) <= MAX_ARCH_BYTES
    data = _adt(arch)
    del arch, attr, node
    assert len(data) < MiB                    # ~64 KiB of DEFLATE

    err, peak = _peak(lambda: rt.load(data))
    assert isinstance(err, AdtArchitectureError), err
    assert "MAX_ATTRIBUTE_VALUES" in str(err) and "attribute[0]" in str(err)
    # the inflated bytes and their one copy, nothing per value (before: 2.94 GB)
    assert peak < 2 * MAX_ARCH_BYTES + 16 * MiB, peak

    # a caller who wants less refuses the declared size before anything is inflated
    err, peak = _peak(lambda: read_adt(data, max_architecture_bytes=MiB))
    assert isinstance(err, AdtArchitectureError) and "max_architecture_bytes" in str(err)
    assert peak < 4 * MiB, peak


def test_node_flood_is_refused_before_any_node_is_built():
    # 8 MiB of minimal nodes (~400,000): refused after MAX_NODES of them, none opened (before: 18 s, 813 MB)
    node = _len_field(1, _str_field(1, "x") + _str_field(2, "y") + _str_field(4, "Relu"))
    graph = node * (8 * MiB // len(node))
    arch = _model_with_graph_bytes(graph)
    del graph

    err, peak = _peak(lambda: parse_model(arch))
    assert isinstance(err, AdtArchitectureError), err
    assert "model.graph.node" in str(err) and "MAX_NODES" in str(err) and str(DEFAULT_PARSE_LIMITS.max_nodes) in str(err)
    assert peak < 2 * MiB, peak             # no node objects (the bytes themselves are not traced here)

    data = _adt(arch)
    err, peak = _peak(lambda: rt.load(data))
    assert isinstance(err, AdtArchitectureError) and "MAX_NODES" in str(err)
    assert peak < 2 * len(arch) + 8 * MiB, peak


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | 0x80 if v else b)
        if not v:
            return bytes(out)


# -- every cap, with a small limit ----------------------------------------------------------------------
def _relu(i: int, **attrs) -> Node:
    return make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"n{i}", **attrs)


CASES = {
    "nodes": (ParseLimits(max_nodes=3), _graph_model([_relu(i) for i in range(4)]), "MAX_NODES"),
    "inputs": (ParseLimits(max_node_inputs=2), _graph_model([make_node("Sum", ["a", "b", "c"], ["y"])]), "MAX_NODE_INPUTS"),
    "outputs": (ParseLimits(max_node_outputs=1), _graph_model([make_node("Split", ["a"], ["y", "z"])]), "MAX_NODE_OUTPUTS"),
    "attributes": (ParseLimits(max_node_attributes=2), _graph_model([_relu(0, a=1, b=2, c=3)]), "MAX_NODE_ATTRIBUTES"),
    "ints": (ParseLimits(max_attribute_values=4), _graph_model([_relu(0, a=[1, 2, 3, 4, 5])]), "MAX_ATTRIBUTE_VALUES"),
    "floats": (ParseLimits(max_attribute_values=2), _graph_model([_relu(0, a=[1.0, 2.0, 3.0])]), "MAX_ATTRIBUTE_VALUES"),
    "strings": (ParseLimits(max_attribute_values=1), _graph_model([_relu(0, a=["u", "v"])]), "MAX_ATTRIBUTE_VALUES"),
    "all values": (ParseLimits(max_total_attribute_values=5),
                   _graph_model([_relu(0, a=[1, 2, 3]), _relu(1, a=[1, 2, 3])]), "MAX_TOTAL_ATTRIBUTE_VALUES"),
    "initializers": (ParseLimits(max_initializers=1),
                     _graph_model([_relu(0)], [Tensor.from_array(np.zeros(2, np.float32), f"c{i}") for i in range(2)]),
                     "MAX_INITIALIZERS"),
    "graph values": (ParseLimits(max_graph_values=0), _graph_model([_relu(0)]), "MAX_GRAPH_VALUES"),
    "string": (ParseLimits(max_string_bytes=8), _graph_model([make_node("Relu", ["x"], ["y"], name="n" * 9)]),
               "MAX_STRING_BYTES"),
    "dim_param": (ParseLimits(max_string_bytes=8), OnnxModel(ir_version=8, opsets={"ai.onnx": 13}, graph=Graph(
        nodes=[_relu(0)], inputs=[ValueInfo("t0", 1, ["batch_size", 4])], outputs=[ValueInfo("t1")])),
        "MAX_STRING_BYTES"),
    "tensor bytes": (ParseLimits(max_tensor_bytes=12),
                     _graph_model([_relu(0)], [Tensor.from_array(np.zeros(4, np.float32), "c")]), "MAX_TENSOR_BYTES"),
    "tensor attribute bytes": (ParseLimits(max_tensor_bytes=12),
                               _graph_model([make_node("Constant", [], ["y"], value=np.zeros(4, np.float32))]),
                               "MAX_TENSOR_BYTES"),
    "fields": (ParseLimits(max_fields=20), _graph_model([_relu(i) for i in range(4)]), "MAX_ARCH_FIELDS"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_cap_refuses_with_its_name_and_the_default_accepts(case):
    limits, model, name = CASES[case]
    data = model.to_bytes()
    with pytest.raises(AdtArchitectureError, match=name):
        parse_model(data, limits)
    with pytest.raises(AdtArchitectureError, match=name):
        count_model(data, limits)
    assert parse_model(data).to_bytes() == data   # the defaults: accepted, and parsed in full


def test_int64_data_is_counted_as_decoded_bytes():
    # 1-byte varints become 8-byte int64 values: the cap counts what parse_tensor will hold
    t = Tensor.from_array(np.ones(100, np.int64), "c")
    tensor = (_key(1, 0) + _varint(100) + _key(2, 0) + _varint(7) + _str_field(8, "c")
              + _key(7, LEN) + _varint(100) + b"\x01" * 100)
    arch = _model_with_graph_bytes(_len_field(1, make_node_bytes()) + _len_field(5, tensor))
    assert parse_model(arch).graph.initializers[0].array.tolist() == t.array.tolist()
    with pytest.raises(AdtArchitectureError, match="MAX_TENSOR_BYTES"):
        parse_model(arch, ParseLimits(max_tensor_bytes=799))
    assert count_model(arch)["tensor_bytes"] == 800


def make_node_bytes() -> bytes:
    return _str_field(1, "x") + _str_field(2, "y") + _str_field(4, "Relu")


# -- real graphs stay far inside --------------------------------------------------------------------------
def _resnet_like(n_blocks: int) -> OnnxModel:
    """A chain of Conv/BatchNormalization/Relu blocks with torch-export-style names and attributes:
    ResNet-50 has ~53 such blocks (some 180 nodes), this builds many more."""
    nodes, prev = [], "input"
    for i in range(n_blocks):
        p = f"/layer{i // 100}/layer{i // 100}.{i % 100}/conv"
        conv, bn, relu = f"{p}/Conv_output_0", f"{p}/BatchNormalization_output_0", f"{p}/Relu_output_0"
        nodes.append(make_node("Conv", [prev, f"layer.{i}.conv.weight", f"layer.{i}.conv.bias"], [conv],
                               name=f"{p}/Conv", dilations=[1, 1], group=1, kernel_shape=[3, 3],
                               pads=[1, 1, 1, 1], strides=[1, 1]))
        nodes.append(make_node("BatchNormalization", [conv] + [f"layer.{i}.bn.{k}" for k in
                                                               ("weight", "bias", "running_mean", "running_var")],
                               [bn], name=f"{p}/BatchNormalization", epsilon=1e-5, momentum=0.9))
        nodes.append(make_node("Relu", [bn], [relu], name=f"{p}/Relu"))
        prev = relu
    return OnnxModel(ir_version=8, opsets={"ai.onnx": 13}, graph=Graph(
        nodes=nodes, inputs=[ValueInfo("input", 1, [1, 3, 224, 224])], outputs=[ValueInfo(prev, 1, None)]))


def test_a_graph_of_thousands_of_nodes_is_far_inside_the_defaults():
    data = _resnet_like(1000).to_bytes()     # 3,000 nodes: ~17x ResNet-50
    counts = count_model(data)
    lim = DEFAULT_PARSE_LIMITS
    assert counts["nodes"] == 3000 and counts["nodes"] * 16 <= lim.max_nodes
    assert counts["fields"] * 4 <= lim.max_fields, counts
    assert counts["attribute_values"] * 16 <= lim.max_total_attribute_values
    assert len(parse_model(data).graph.nodes) == 3000


def test_committed_architectures_are_far_inside_the_defaults():
    import glob
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    seen = 0
    for path in sorted(glob.glob(str(root / "results" / "adt" / "*.adt")))[:40]:
        f = read_adt(path)
        if f.architecture is None:
            continue
        c = count_model(f.architecture)
        assert c["fields"] * 100 <= DEFAULT_PARSE_LIMITS.max_fields and c["nodes"] * 100 <= DEFAULT_PARSE_LIMITS.max_nodes
        seen += 1
    assert seen


# -- bounded inflation ----------------------------------------------------------------------------------
def test_inflation_stops_at_the_declared_size():
    # a stream that inflates past its declared size is refused after size + 1 bytes, whatever it holds
    arch = _resnet_like(2).to_bytes()
    good = _adt(arch)
    f = read_adt(good)
    assert f.architecture == arch
    with pytest.raises(AdtArchitectureError, match="max_architecture_bytes"):
        read_adt(good, max_architecture_bytes=len(arch) - 1)
    assert read_adt(good, max_architecture_bytes=len(arch)).architecture == arch


def test_stepwise_inflation_reads_streams_longer_than_one_step():
    from adt.runtime.format import reader
    arch = _resnet_like(60).to_bytes()
    data = _adt(arch)
    old = reader._INFLATE_STEP
    try:
        reader._INFLATE_STEP = 1000       # many steps, some ending inside a match
        assert read_adt(data).architecture == arch
    finally:
        reader._INFLATE_STEP = old
    assert zlib.crc32(arch) == zlib.crc32(read_adt(data).architecture)
