"""The hostile-but-valid corpus of issue 17: small .adt files whose container is valid but whose
contents cost gigabytes or minutes (or used to raise an untyped exception) in the rebuild, the ONNX
parser or an engine. One file per class; ``tests/runtime/test_hostile_corpus.py`` runs each in a child
process under RLIMIT_AS = 1 GiB and a 10 s timeout: it must run, or raise its typed ``AdtError``.

    python tests/runtime/hostile/make_hostile.py            # (re)write the committed files
    python tests/runtime/hostile/make_hostile.py --check    # fail if a committed file would change

Deterministic: the same code gives the same bytes (the DEFLATE of the architecture section aside,
which FORMAT.md allows to vary between zlib builds; --check reports such a difference). Two classes
are too large to commit (a 65,535-parameter file, an 8 MiB node flood): :data:`ON_THE_FLY` builds
them, and the test writes them to a temporary folder. Uses only the runtime (no onnx, no torch): graphs
are built with :mod:`adt.runtime.onnx_proto`, and the few protobuf fields that encoder refuses to
write (a 65-dim initializer, a Loop body) are written here by hand.
"""
from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from adt.runtime.format import AdtWriter
from adt.runtime.onnx_proto import (
    FLOAT, Graph, OnnxModel, Tensor, ValueInfo, encode_graph, encode_pb_varint, make_node,
)

HERE = Path(__file__).resolve().parent
OPSET = 17


# -- protobuf by hand (only where onnx_proto's encoder refuses on purpose) ---------------------------
def _key(num: int, wt: int) -> bytes:
    return encode_pb_varint(num << 3 | wt)


def _len(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + encode_pb_varint(len(payload)) + payload


def _vint(num: int, v: int) -> bytes:
    return _key(num, 0) + encode_pb_varint(v)


def _model_bytes(graph: bytes, opset: int = OPSET) -> bytes:
    """ModelProto fields as onnx_proto.encode_model writes them: ir_version, graph, opset_import."""
    return _vint(1, 8) + _len(7, graph) + _len(8, _len(1, b"") + _vint(2, opset))


def _tensor(name: str, dims: list[int], data_type: int, raw: bytes) -> bytes:
    return b"".join(_vint(1, d) for d in dims) + _vint(2, data_type) + _len(8, name.encode()) + _len(9, raw)


def _vi(name: str, elem: int, shape: list) -> bytes:
    dims = b"".join(_len(1, _vint(1, d) if isinstance(d, int) else _len(2, d.encode())) for d in shape)
    return _len(1, name.encode()) + _len(2, _len(1, _vint(1, elem) + _len(2, dims)))


def _model(nodes, inputs, outputs, initializers=()) -> OnnxModel:
    g = Graph(nodes=list(nodes), name="hostile", initializers=list(initializers), inputs=list(inputs),
              outputs=list(outputs))
    return OnnxModel(ir_version=8, opsets={"ai.onnx": OPSET}, graph=g)


def _file(arch: bytes | None, params: dict[str, np.ndarray] | None = None, tucker=None,
          meta: str = "") -> bytes:
    """A .adt file: ``arch`` (ONNX bytes), plain parameters ``params`` (symbols, Q = 256, b = 1),
    and optionally one Tucker parameter ``tucker = (name, shape, core symbols, [factor symbols])``."""
    w = AdtWriter(tables="shared")
    w.add_metadata("producer", "tests/runtime/hostile/make_hostile.py")
    if meta:
        w.add_metadata("class", meta)
    if arch is not None:
        w.set_architecture(arch)
    if params or tucker:
        g = w.add_group(256, 1.0)
        if tucker:
            name, shape, core, factors = tucker
            c = w.add_core(core, g)
            w.add_tucker(name, shape, c, factors, g)
        for name, sym in (params or {}).items():
            w.add_plain(name, sym, g)
    return w.to_bytes()


def _x(shape) -> ValueInfo:
    return ValueInfo("input", FLOAT, list(shape))


def _y(shape) -> ValueInfo:
    return ValueInfo("output", FLOAT, list(shape))


ONE = np.array([192], np.uint16)   # symbol 192 of Q = 256, b = 1: the value 0.5


# -- the classes --------------------------------------------------------------------------------------
def tucker_amplifier() -> bytes:
    """An order-8 Tucker core of size 1 with 11 x 1 factors: 11**8 = 214M weights (0.86 GB float32,
    1.7 GB float64 while rebuilt) from a file of a hundred bytes. Intended: AdtBudgetError at load."""
    n = 11
    return _file(None, tucker=("w", (n,) * 8, np.full((1,) * 8, 200, np.uint16),
                               [np.full((n, 1), 200, np.uint16)] * 8), meta="tucker amplifier")


def zero_broadcast() -> bytes:
    """Zero constants (16384, 1) + (1, 16384), folded at load: a 1 GiB float32 result from a few
    hundred bytes. Intended: AdtBudgetError before the fold."""
    n = 16384
    nodes = [
        make_node("Constant", [], ["a"], value=Tensor.from_array(np.zeros((n, 1), np.float32))),
        make_node("Constant", [], ["b"], value=Tensor.from_array(np.zeros((1, n), np.float32))),
        make_node("Add", ["a", "b"], ["s"]),
        make_node("Mul", ["input", "s"], ["output"]),
    ]
    return _file(_model(nodes, [_x(["N", 1])], [_y([n, n])]).to_bytes(), meta="zero-constant broadcast")


def concat_doublings() -> bytes:
    """20 Concat(x, x) doublings of a (1, 512) constant, folded at load: 2**20 x 512 floats = 2 GiB.
    Intended: AdtBudgetError before the fold."""
    nodes = [make_node("Constant", [], ["c0"], value=Tensor.from_array(np.zeros((1, 512), np.float32)))]
    for i in range(20):
        nodes.append(make_node("Concat", [f"c{i}", f"c{i}"], [f"c{i + 1}"], axis=0))
    nodes.append(make_node("Add", ["input", "c20"], ["output"]))
    return _file(_model(nodes, [_x(["N", 512])], [_y([2 ** 20, 512])]).to_bytes(), meta="20 Concat doublings")


def maxpool_loop() -> bytes:
    """MaxPool with a 2048 x 2048 kernel over a padded 28 x 28 input: 4M kernel positions, which a
    Python loop over kernel offsets takes tens of seconds to walk. Intended: a vectorised pool (or a
    typed refusal) within 10 s."""
    nodes = [make_node("MaxPool", ["input"], ["output"], kernel_shape=[2048, 2048], pads=[1010] * 4)]
    return _file(_model(nodes, [_x(["N", 1, 28, 28])], [_y(["N", 1, 1, 1])]).to_bytes(), meta="MaxPool loop")


def conv_pads() -> bytes:
    """A 1 x 1 Conv with 64 output channels and pads of 1010 on a 28 x 28 input: a 64 x 2048 x 2048
    output, 1 GiB per sample, from 64 weights. Intended: AdtBudgetError before the Conv runs."""
    nodes = [make_node("Conv", ["input", "w"], ["output"], kernel_shape=[1, 1], pads=[1010] * 4)]
    arch = _model(nodes, [_x(["N", 1, 28, 28])], [_y(["N", 64, 2048, 2048])]).to_bytes()
    return _file(arch, {"w": np.full((64, 1, 1, 1), 192, np.uint16)}, meta="Conv with large pads")


def arch_64mib() -> bytes:
    """An architecture that inflates to 64 MiB (the format's limit) from ~65 KB: one Relu node with
    an attribute holding 64M packed zero varints, each a Python int to a naive parser. Intended: the
    parser refuses by a count cap before making the objects (typed error), or parses within limits."""
    graph_tail = encode_graph(Graph(inputs=[_x(["N", 4])], outputs=[_y(["N", 4])]))
    head = _len(1, b"input") + _len(2, b"output") + _len(4, b"Relu")
    overhead = 64
    n = (1 << 26) - len(graph_tail) - len(head) - overhead
    attr = _len(1, b"junk") + _key(8, 2) + encode_pb_varint(n) + bytes(n) + _vint(20, 7)
    model = _model_bytes(_len(1, head + _len(5, attr)) + graph_tail)
    pad = (1 << 26) - len(model)
    assert 0 <= pad < overhead + 16, pad
    return _file(model, meta="64 MiB architecture")


def zero_d_param() -> bytes:
    """A 0-d (scalar) parameter used by the graph. Must load and run."""
    nodes = [make_node("Mul", ["input", "s"], ["output"])]
    arch = _model(nodes, [_x(["N", 4])], [_y(["N", 4])]).to_bytes()
    return _file(arch, {"s": np.array(192, np.uint16)}, meta="0-d parameter")


def input_twice() -> bytes:
    """One input read twice by one node (Mul(input, input)). Must run."""
    nodes = [make_node("Mul", ["input", "input"], ["a"]), make_node("Add", ["a", "w"], ["output"])]
    arch = _model(nodes, [_x(["N", 4])], [_y(["N", 4])]).to_bytes()
    return _file(arch, {"w": np.full((4,), 192, np.uint16)}, meta="input used twice")


def ghost_output() -> bytes:
    """Relu declares a second output it never produces, and the next node reads it. AdtGraphError."""
    nodes = [make_node("Relu", ["input"], ["a", "ghost"]), make_node("Add", ["a", "ghost"], ["output"])]
    arch = _model(nodes, [_x(["N", 4])], [_y(["N", 4])]).to_bytes()
    return _file(arch, meta="ghost output")


def empty_input_name() -> bytes:
    """Gemm(["", "w"]): an empty name in a required input slot. AdtGraphError."""
    nodes = [make_node("Gemm", ["", "w"], ["output"], transB=1), make_node("Relu", ["input"], ["unused"])]
    arch = _model(nodes, [_x(["N", 4])], [_y(["N", 3])]).to_bytes()
    return _file(arch, {"w": np.full((3, 4), 192, np.uint16)}, meta="empty required input name")


def _with_initializer(tensor: bytes) -> bytes:
    g = Graph(nodes=[make_node("Add", ["input", "k"], ["output"])], inputs=[_x(["N", 1])], outputs=[_y(["N", 1])])
    return encode_graph(g) + _len(5, tensor)


def init_65_dims() -> bytes:
    """A graph initializer with 65 dims of 1 (numpy makes no array of more than 64). A typed error."""
    arch = _model_bytes(_with_initializer(_tensor("k", [1] * 65, FLOAT, struct.pack("<f", 1.0))))
    return _file(arch, meta="65-dim initializer")


def init_huge_dims() -> bytes:
    """A graph initializer with dims [2**62, 4, 0] (no elements, so no data). A typed error."""
    arch = _model_bytes(_with_initializer(_tensor("k", [2 ** 62, 4, 0], FLOAT, b"")))
    return _file(arch, meta="[2**62, 4, 0] initializer")


def ort_loop() -> bytes:
    """A Loop whose trip count is 2**62 and whose body passes its state through: onnxruntime would
    never return. Intended: the onnxruntime engine refuses control-flow ops at load (typed), as the
    NumPy engine does (AdtUnsupportedOpError)."""
    body = (
        _len(1, _len(1, b"cond_in") + _len(2, b"cond_out") + _len(4, b"Identity"))
        + _len(1, _len(1, b"v_in") + _len(2, b"v_out") + _len(4, b"Identity"))
        + _len(2, b"body")
        + _len(11, _vi("i", 7, [])) + _len(11, _vi("cond_in", 9, [])) + _len(11, _vi("v_in", FLOAT, ["N", 4]))
        + _len(12, _vi("cond_out", 9, [])) + _len(12, _vi("v_out", FLOAT, ["N", 4]))
    )
    attr = _len(1, b"body") + _len(6, body) + _vint(20, 5)      # AttributeProto.g, type GRAPH
    loop = _len(1, b"M") + _len(1, b"cond") + _len(1, b"input") + _len(2, b"output") + _len(4, b"Loop") + _len(5, attr)
    graph = (_len(1, loop) + _len(2, b"hostile")
             + _len(5, _tensor("M", [], 7, struct.pack("<q", 2 ** 62)))
             + _len(5, _tensor("cond", [], 9, b"\x01"))
             + _len(11, _vi("input", FLOAT, ["N", 4])) + _len(12, _vi("output", FLOAT, ["N", 4])))
    return _file(_model_bytes(graph), meta="ORT Loop 2**62")


# -- built on the fly (too large to commit) -------------------------------------------------------------
def many_params(count: int = 65535) -> bytes:
    """``count`` (the format's limit, 65,535) order-8 Tucker parameters of one element each, sharing
    one 1^8 core, all symbols one 1-bit code: ~1.8 MB of tensor table. Valid; must read and rebuild in
    time linear in the file size. Written by hand (the writer would take longer than the test)."""
    def varint(v: int) -> bytes:
        return bytes(encode_pb_varint(v))   # LEB128, as FORMAT.md's varint for v < 2**63

    codes = varint(1) + varint(0) + varint(1) + bytes([0b01100000])   # 1 table: symbol 0, length 1 (EG(zigzag(1)) = 011)
    t = bytearray(varint(1) + bytes([0]) + varint(2) + struct.pack("<f", 1.0) + varint(0))   # group Q=2 b=1
    t += varint(1) + bytes([0]) + varint(8) + bytes([1] * 8) + varint(0)                     # core 1^8
    t += varint(count)
    entry_tail = varint(8) + bytes([1] * 8) + bytes([1]) + varint(0) + varint(0) + bytes([1] * 8)
    for i in range(count):
        name = f"p{i:05d}".encode()
        t += varint(len(name)) + name + entry_tail
    nbits = 1 + 8 * count
    payload = bytes((nbits + 7) // 8)
    sections = [(3, codes), (4, bytes(t)), (5, payload)]
    out = bytearray(b"ADT\x1a\x01\x00" + varint(len(sections)))
    for kind, body in sections:
        out += bytes([kind]) + varint(len(body))
    for _, body in sections:
        out += body
    return bytes(out + struct.pack("<I", zlib.crc32(out) & 0xFFFFFFFF))


def node_flood(size: int = 8 << 20) -> bytes:
    """An architecture of ``size`` bytes of nodes (~400k Identity nodes reading the input, the last one
    writing the output): a valid graph. Intended: the node count is capped before the objects are made
    (typed error), or it parses within the limits."""
    tail = encode_graph(Graph(inputs=[_x(["N", 4])], outputs=[_y(["N", 4])]))
    parts = []
    total = 0
    i = 0
    while total < size:
        node = _len(1, _len(1, b"input") + _len(2, f"t{i}".encode()) + _len(4, b"Identity"))
        parts.append(node)
        total += len(node)
        i += 1
    parts.append(_len(1, _len(1, b"input") + _len(2, b"output") + _len(4, b"Identity")))
    return _file(_model_bytes(b"".join(parts) + tail), meta="node flood")


#: class -> builder of the committed file (tests/runtime/hostile/<class>.adt)
COMMITTED: dict[str, Callable[[], bytes]] = {
    "tucker_amplifier": tucker_amplifier,
    "zero_broadcast": zero_broadcast,
    "concat_doublings": concat_doublings,
    "maxpool_loop": maxpool_loop,
    "conv_pads": conv_pads,
    "arch_64mib": arch_64mib,
    "ort_loop": ort_loop,
    "zero_d_param": zero_d_param,
    "input_twice": input_twice,
    "ghost_output": ghost_output,
    "empty_input_name": empty_input_name,
    "init_65_dims": init_65_dims,
    "init_huge_dims": init_huge_dims,
}
#: class -> builder of a file the test writes to a temporary folder
ON_THE_FLY: dict[str, Callable[[], bytes]] = {"many_params": many_params, "node_flood": node_flood}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = ap.parse_args(argv)
    bad = 0
    for name, build in COMMITTED.items():
        data = build()
        path = HERE / f"{name}.adt"
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                print(f"{path.name}: differs from what the generator builds")
                bad += 1
        else:
            path.write_bytes(data)
            print(f"{path.name}: {len(data)} bytes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
