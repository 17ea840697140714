"""A structure-aware fuzzer of ADT's whole runtime: container, ONNX parser, rebuild and both engines.

    python -m research.fuzz.adt_fuzz --seconds 60 --seed 0 --out results/fuzz.json
    python -m research.fuzz.adt_fuzz --cases 200 --seed 0 --workers 2 --out /tmp/fuzz.json
    python -m research.fuzz.adt_fuzz --replay research/fuzz/crashes/untyped-KeyError-....adt
    python -m research.fuzz.adt_fuzz --seed 0 --case 17 --write-case /tmp/case17.adt

**Seeds.** The test vectors (``format_spec/vectors/*.adt``), ``adt.runtime.samples.lenet5_file()``,
a few of the smallest committed ``results/adt`` files, and small graphs built with
:mod:`adt.runtime.onnx_proto`'s encoder (Conv/pooling/Reshape/Concat/Gather/BatchNorm/... chains whose
weights are stored plain or Tucker-coded). Each seed is decoded with ``read_adt`` into FIELDS: metadata
pairs, the architecture as a permissive ONNX tree (nodes, attributes, initializers, graph inputs and
outputs), code-length tables, groups (mode, Q, b), cores (kind, dims, group), parameters (name, shape,
encoding, group, core, reshape) and the symbols of every payload stream.

**Mutations.** One to three per case, drawn from: op types (other ops, unknown ops, Loop/If/Scan),
attributes (pads, kernel_shape, strides, dilations, axis, perm, group, trans*, alpha, ... set to
interesting integers, long or empty lists, NaN/Inf, wrong attribute types), node inputs and outputs
(swapped, repeated, emptied, ghost outputs, undefined names), initializer dims (huge, 0, 65 dims,
lying data), Constant values and Reshape shapes, graph input shapes and types, inserted and deleted
nodes, amplifiers (Concat(x, x) doublings, zero-constant broadcasts, huge pads and kernels), opset
and IR version, raw protobuf bytes; and in the container: the architecture's format byte, inflated
size and stream; code lengths; group Q/b/mode/table; core kind/order/dims/group; parameter names,
shapes (also consistently transposed or re-split, so the file stays valid and the engine sees a
weight of the wrong shape), encodings, groups, cores and reshapes; payload bits, padding and length;
metadata; section kinds, extension sections, the version; and raw bytes of one section body.

**Re-encoding.** The case is then written consistently: the ONNX tree re-serialized, DEFLATEd (with
or without the ADT-ONNX-1 dictionary) with its size field recomputed, the payload re-coded with the
(possibly mutated) canonical Huffman tables for the (possibly mutated) stream lengths, every section
length and the CRC-32 recomputed; so mutations reach the deep parser, the rebuild and the engines
(a lie in a length or the CRC is itself one of the rarer mutations).

**Execution.** Each case runs in its own forked child process with ``RLIMIT_AS`` = 1 GiB and a 10 s
wall-clock limit (``--workers`` children at a time): ``read_adt``, then ``load`` (NumPy engine) and
``run`` on a small input built from the graph's input shapes (symbolic dims = 2), then, when
onnxruntime is installed and the NumPy engine ran the case, the same with ``engine="onnxruntime"``.
Outcomes per engine: ``ok``, ``typed:<AdtError subclass>``, ``untyped:<exception type>``,
``over-memory`` (a MemoryError, or the child killed by SIGKILL that we did not send); per case:
``timeout`` (killed after 10 s) and ``worker-died:<signal or exit code>``. Untyped cases are saved
under ``--crash-dir`` (default ``research/fuzz/crashes/``) with their traceback beside them.

**Figures** (``--out`` JSON, and the same name with ``.md``): executions, outcomes by class and by
depth (refused by the reader, refused after parsing, ran), the slowest cases, the peak RSS of a case
(``ru_maxrss`` of its child, which includes the ~100 MB the interpreter and NumPy already hold), and
whether untyped / over 10 s / over 1 GiB are zero. The sequence of cases is a function of ``--seed``
alone (case ``i`` is drawn from ``(seed, i)``); ``--seconds`` only decides how many are run.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import hashlib
import json
import os
import random
import resource
import select
import signal
import struct
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":  # run as a script: before NumPy starts its BLAS pool (forked children inherit
    for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # it); imported (tests): the
        os.environ.setdefault(_v, "1")  # importer's environment and its child processes stay as they were

import numpy as np  # noqa: E402
from bitarray import bitarray  # noqa: E402

import adt.runtime as rt  # noqa: E402
from adt.runtime.format import AdtError, read_adt, write_atomic  # noqa: E402
from adt.runtime.format.archdict import ONNX_DICT_V1  # noqa: E402
from adt.runtime.onnx_proto import (  # noqa: E402
    A_FLOAT, A_FLOATS, A_GRAPH, A_INT, A_INTS, A_STRING, A_STRINGS, A_TENSOR, DTYPES, FLOAT, INT64, Graph,
    OnnxModel, Tensor, ValueInfo, make_node, parse_model,
)
from adt.runtime.samples import lenet5_file  # noqa: E402
from research.paths import REPO  # noqa: E402

__all__ = ["LIMIT_AS", "CASE_TIMEOUT", "FuzzCase", "build_case", "execute", "fuzz", "load_seeds", "main"]

LIMIT_AS = 1 << 30          # address-space limit of every case's child process
CASE_TIMEOUT = 10.0         # seconds of wall-clock time per case
MAX_INPUT_ELEMENTS = 1 << 20
CRASH_DIR = REPO / "research" / "fuzz" / "crashes"

INTS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 28, 31, 63, 64, 65, 127, 128, 255, 256, 1000, 1023, 4096,
        16384, 65535, 65536, 2 ** 20, 2 ** 28, 2 ** 28 + 1, 2 ** 30, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 62,
        2 ** 63 - 1]
NEG = [-1, -2, -3, -28, -65, -(2 ** 31), -(2 ** 62), -(2 ** 63)]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 1e-38, 3.4e38, 1e30, float("nan"), float("inf"), float("-inf")]
OPS = ["Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Gemm", "MatMul", "Add",
       "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Softmax", "LogSoftmax",
       "BatchNormalization", "Flatten", "Reshape", "Transpose", "Concat", "Shape", "Gather", "Unsqueeze",
       "Squeeze", "Constant", "Identity", "Dropout"]
OTHER_OPS = ["Loop", "If", "Scan", "Tile", "Expand", "Resize", "Pad", "ConstantOfShape", "Range", "NonZero",
             "Foo", ""]
ATTR_NAMES = ["pads", "kernel_shape", "strides", "dilations", "axis", "axes", "perm", "group", "transA",
              "transB", "alpha", "beta", "epsilon", "auto_pad", "ceil_mode", "count_include_pad", "allowzero",
              "start", "end", "storage_order", "min", "max", "value", "value_int", "value_ints",
              "value_float", "value_floats", "training_mode"]


# ==================================================================================================
# Encoders (permissive: they write whatever the fields say, lies included)
# ==================================================================================================
def uvarint(v: int) -> bytes:
    out = bytearray()
    v = int(v)
    if v < 0:
        v &= (1 << 64) - 1
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _b(s) -> bytes:
    return s.encode("utf-8", "surrogatepass") if isinstance(s, str) else bytes(s)


def string(s) -> bytes:
    raw = _b(s)
    return uvarint(len(raw)) + raw


# -- ONNX protobuf, as a tree of dicts ---------------------------------------------------------------
def _key(num: int, wt: int) -> bytes:
    return uvarint(num << 3 | wt)


def _len(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + uvarint(len(payload)) + payload


def _vint(num: int, v: int) -> bytes:
    return _key(num, 0) + uvarint(v)


def tensor_dict(t: Tensor) -> dict:
    dt = DTYPES.get(t.data_type, np.dtype("<f4"))
    return {"name": t.name, "dims": list(t.dims), "dt": t.data_type,
            "raw": np.ascontiguousarray(t.array, dtype=dt.newbyteorder("<")).tobytes(), "ints": None}


def enc_tensor(t: dict) -> bytes:
    out = bytearray()
    for d in t["dims"]:
        out += _vint(1, d)
    out += _vint(2, t["dt"])
    if t.get("ints") is not None:          # int64_data, packed
        out += _len(7, b"".join(uvarint(v) for v in t["ints"]))
    if t["name"]:
        out += _len(8, _b(t["name"]))
    if t.get("raw") is not None:
        out += _len(9, t["raw"])
    return bytes(out)


def enc_attr(a: dict) -> bytes:
    out = bytearray(_len(1, _b(a["name"])))
    typ, v = a["type"], a["value"]
    if typ == A_FLOAT:
        out += _key(2, 5) + struct.pack("<f", float(np.float32(v)) if np.isfinite(v) else v)
    elif typ == A_INT:
        out += _vint(3, v)
    elif typ == A_STRING:
        out += _len(4, _b(v))
    elif typ == A_TENSOR:
        out += _len(5, enc_tensor(v))
    elif typ == A_GRAPH:
        out += _len(6, v or b"")
    elif typ == A_FLOATS:
        out += b"".join(_key(7, 5) + struct.pack("<f", f) for f in v)
    elif typ == A_INTS:
        out += b"".join(_vint(8, i) for i in v)
    elif typ == A_STRINGS:
        out += b"".join(_len(9, _b(s)) for s in v)
    return bytes(out + _vint(20, typ))


def enc_node(n: dict) -> bytes:
    out = bytearray()
    out += b"".join(_len(1, _b(i)) for i in n["inputs"])
    out += b"".join(_len(2, _b(o)) for o in n["outputs"])
    if n["name"]:
        out += _len(3, _b(n["name"]))
    out += _len(4, _b(n["op"]))
    out += b"".join(_len(5, enc_attr(a)) for a in n["attrs"])
    if n["domain"]:
        out += _len(7, _b(n["domain"]))
    return bytes(out)


def enc_vi(v: dict) -> bytes:
    out = bytearray(_len(1, _b(v["name"])))
    if v["elem"] is not None:
        tt = _vint(1, v["elem"])
        if v["shape"] is not None:
            dims = b"".join(_len(1, _vint(1, d) if isinstance(d, int) else _len(2, _b(d)) if d is not None else b"")
                            for d in v["shape"])
            tt += _len(2, dims)
        out += _len(2, _len(1, tt))
    return bytes(out)


def enc_model(m: dict) -> bytes:
    g = m["graph"]
    gb = bytearray()
    gb += b"".join(_len(1, enc_node(n)) for n in g["nodes"])
    if g["name"]:
        gb += _len(2, _b(g["name"]))
    gb += b"".join(_len(5, enc_tensor(t)) for t in g["inits"])
    gb += b"".join(_len(11, enc_vi(v)) for v in g["inputs"])
    gb += b"".join(_len(12, enc_vi(v)) for v in g["outputs"])
    out = bytearray()
    if m["ir"]:
        out += _vint(1, m["ir"])
    out += _len(7, bytes(gb))
    for domain, version in m["opsets"]:
        out += _len(8, _len(1, _b(domain)) + _vint(2, version))
    return bytes(out)


def model_dict(m: OnnxModel) -> dict:
    g = m.graph

    def attr(a):
        v = a.value
        if a.type == A_TENSOR:
            v = tensor_dict(v)
        return {"name": a.name, "type": a.type, "value": copy.copy(v)}

    return {
        "ir": m.ir_version,
        "opsets": [("" if d == "ai.onnx" else d, v) for d, v in m.opsets.items()],
        "graph": {
            "name": g.name,
            "nodes": [{"op": n.op_type, "name": n.name, "domain": n.domain, "inputs": list(n.inputs),
                       "outputs": list(n.outputs), "attrs": [attr(a) for a in n.attrs.values()]} for n in g.nodes],
            "inits": [tensor_dict(t) for t in g.initializers],
            "inputs": [{"name": v.name, "elem": v.elem_type, "shape": None if v.shape is None else list(v.shape)}
                       for v in g.inputs],
            "outputs": [{"name": v.name, "elem": v.elem_type, "shape": None if v.shape is None else list(v.shape)}
                        for v in g.outputs],
        },
    }


# -- .adt container ---------------------------------------------------------------------------------
def _eg(v: int) -> str:
    u = v + 1
    return "0" * (u.bit_length() - 1) + format(u, "b")


def _zz(d: int) -> int:
    return 2 * d if d >= 0 else -2 * d - 1


def _pack(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def enc_table(lengths: dict[int, int]) -> bytes:
    syms = sorted(lengths)
    if not syms:
        return uvarint(0) + uvarint(0)
    bits, prev_len, prev = [], 0, None
    for s in syms:
        if prev is not None:
            bits.append(_eg(s - prev - 1))
        bits.append(_eg(_zz(lengths[s] - prev_len)))
        prev_len, prev = lengths[s], s
    return uvarint(syms[0]) + uvarint(len(syms)) + _pack("".join(bits))


def codebook(lengths: dict[int, int]) -> dict[int, bitarray]:
    """Canonical code words (DEFLATE's rule) of the used symbols, whatever the lengths are."""
    used = sorted((n, s) for s, n in lengths.items() if 0 < n <= 32)
    book, code, prev = {}, 0, None
    for n, s in used:
        if prev is not None:
            code = (code + 1) << (n - prev)
        prev = n
        if code >> n:
            break   # oversubscribed: no more code words of this length
        book[s] = bitarray(format(code, f"0{n}b"), endian="big")
    return book


@dataclass
class FuzzCase:
    """The fields of one .adt file (mutable; :meth:`encode` writes them consistently)."""

    seed_name: str
    meta: list[tuple[bytes, bytes]]
    arch: dict | None
    tables: list[dict[int, int]]
    groups: list[list]           # [mode, Q, b (4 raw bytes), table]
    cores: list[list]            # [kind, dims, group]   (CP: dims = [rank] * order)
    params: list[list]           # [name, shape, encoding, group, core, reshape]; TT: core = the ranks list
    core_syms: list
    param_syms: list
    arch_fmt: int = 1
    arch_raw: bytes | None = None      # protobuf-level mutation: these bytes instead of enc_model(arch)
    arch_size_delta: int = 0
    arch_tail: bytes = b""
    arch_cut: int = 0
    payload_raw: bytes | None = None
    payload_pad: bool = False          # set a padding bit
    extras: list = field(default_factory=list)   # (kind, body) sections after the payload
    drop_kind: int | None = None
    version: tuple[int, int] = (1, 0)
    body_mut: tuple | None = None      # (section index, op, position, value)
    length_lie: tuple | None = None    # (section index, delta)
    count_lie: int = 0
    bad_crc: bool = False
    mutations: list[str] = field(default_factory=list)

    # -- encoding --------------------------------------------------------------------------------
    def _streams(self):
        """(group, count, original symbols or None) in payload order; None where an index is invalid."""
        out = []
        for i, (kind, dims, g) in enumerate(self.cores):
            n = dims[0] if kind == 1 and dims else _prod(dims)
            out.append((g, n, self.core_syms[i] if i < len(self.core_syms) else None))
        for i, (name, shape, enc, g, c, reshape) in enumerate(self.params):
            syms = self.param_syms[i] if i < len(self.param_syms) else None
            if enc == 2:        # tensor train: cores of r_{k-1} * n_k * r_k values
                r = [1] + _tt_ranks(c, reshape) + [1]
                for j, n in enumerate(reshape):
                    out.append((g, r[j] * n * r[j + 1], syms[j] if syms and j < len(syms) else None))
            elif enc != 1:
                out.append((g, _prod(shape), syms[0] if syms else None))
            else:
                c = c if isinstance(c, int) else 0
                if not (0 <= c < len(self.cores)):
                    return None
                kdims = self.cores[c][1]
                for j, n in enumerate(reshape):
                    k = kdims[j] if j < len(kdims) else 1
                    out.append((g, n * k, syms[j] if syms and j < len(syms) else None))
        return out

    def _payload(self, rng: np.random.Generator) -> bytes:
        if self.payload_raw is not None:
            return self.payload_raw
        streams = self._streams()
        if streams is None:
            return b"\x00"
        total = sum(n for _, n, _ in streams)
        if total > 1 << 21:     # the reader refuses it by the symbol-count bound (or later); keep it small
            return bytes(min(total // 8, 1 << 16))
        bits = bitarray(endian="big")
        books: dict[int, tuple] = {}
        for g, n, orig in streams:
            if not (0 <= g < len(self.groups)) or not (0 <= self.groups[g][3] < len(self.tables)):
                return b"\x00"
            t = self.groups[g][3]
            if t not in books:
                book = codebook(self.tables[t])
                books[t] = (book, set(book))
            book, keys = books[t]
            if not book:
                return b"\x00"
            q = self.groups[g][1]
            if orig is not None and orig.size == n and set(np.unique(orig).tolist()) <= keys and \
                    (n == 0 or int(orig.max()) < q):
                syms = orig.reshape(-1).tolist()
            else:
                valid = sorted(s for s in keys if s < q) or sorted(keys)
                syms = rng.choice(valid, size=n).tolist() if n else []
            bits.encode(book, syms)
        nbits = len(bits)
        bits.fill()
        if self.payload_pad and len(bits) > nbits:
            bits[-1] = 1
        return bits.tobytes()

    def encode(self, rng: np.random.Generator) -> bytes:
        sections: list[tuple[int, bytes]] = []
        if self.meta:
            sections.append((1, uvarint(len(self.meta)) + b"".join(string(k) + string(v) for k, v in self.meta)))
        if self.arch is not None or self.arch_raw is not None:
            raw = self.arch_raw if self.arch_raw is not None else enc_model(self.arch)
            zd = ONNX_DICT_V1 if self.arch_fmt == 1 else None
            c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=zd) if zd else zlib.compressobj(9, zlib.DEFLATED, -15, 9)
            comp = c.compress(raw) + c.flush()
            if self.arch_cut:
                comp = comp[:max(0, len(comp) - self.arch_cut)]
            sections.append((2, bytes([self.arch_fmt & 0xFF]) + uvarint(max(0, len(raw) + self.arch_size_delta))
                             + comp + self.arch_tail))
        sections.append((3, uvarint(len(self.tables)) + b"".join(enc_table(t) for t in self.tables)))
        t = bytearray(uvarint(len(self.groups)))
        for mode, q, b, tab in self.groups:
            t += bytes([mode & 0xFF]) + uvarint(q) + b + uvarint(tab)
        t += uvarint(len(self.cores))
        for kind, dims, g in self.cores:
            t += bytes([kind & 0xFF]) + uvarint(len(dims))
            t += (uvarint(dims[0]) if dims else b"") if kind == 1 else b"".join(uvarint(d) for d in dims)
            t += uvarint(g)
        t += uvarint(len(self.params))
        for name, shape, enc, g, c, reshape in self.params:
            t += string(name) + uvarint(len(shape)) + b"".join(uvarint(d) for d in shape) + bytes([enc & 0xFF])
            t += uvarint(g)
            if enc == 1:
                t += uvarint(c if isinstance(c, int) else 0) + b"".join(uvarint(n) for n in reshape)
            elif enc == 2:
                t += uvarint(len(reshape)) + b"".join(uvarint(n) for n in reshape)
                t += b"".join(uvarint(x) for x in _tt_ranks(c, reshape))
        sections.append((4, bytes(t)))
        sections.append((5, self._payload(rng)))
        sections += self.extras
        if self.drop_kind is not None:
            sections = [s for s in sections if s[0] != self.drop_kind]
        if self.body_mut is not None and sections:
            i, op, pos, val = self.body_mut
            kind, body = sections[i % len(sections)]
            body = bytearray(body)
            p = pos % (len(body) + 1)
            if op == "flip" and body:
                body[p % len(body)] ^= 1 << (val % 8)
            elif op == "set" and body:
                body[p % len(body)] = val & 0xFF
            elif op == "insert":
                body[p:p] = bytes([val & 0xFF])
            elif op == "delete" and body:
                del body[p % len(body)]
            elif op == "varint":
                body[p:p + 1] = uvarint(val)
            sections[i % len(sections)] = (kind, bytes(body))
        out = bytearray(b"ADT\x1a" + bytes(self.version))
        out += uvarint(len(sections) + self.count_lie)
        for j, (kind, body) in enumerate(sections):
            n = len(body)
            if self.length_lie is not None and j == self.length_lie[0] % len(sections):
                n = max(0, n + self.length_lie[1])
            out += bytes([kind & 0xFF]) + uvarint(n)
        for _, body in sections:
            out += body
        crc = zlib.crc32(out) & 0xFFFFFFFF
        out += struct.pack("<I", crc ^ (1 if self.bad_crc else 0))
        return bytes(out)


def _tt_ranks(c, reshape) -> list[int]:
    """A TT parameter's ranks: its list, or all 1 when a mutation made a Tucker parameter a TT one."""
    return list(c) if isinstance(c, list) else [1] * max(len(reshape) - 1, 0)


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


def case_from_bytes(name: str, data: bytes) -> FuzzCase:
    f = read_adt(data)
    arch = None
    fmt = 1
    if f.architecture is not None:
        arch = model_dict(parse_model(f.architecture))
        for s in f.sections:
            if int(s.kind) == 2:
                fmt = data[s.offset]
    tables = []
    for code in f.tables:
        lens = np.asarray(code.lengths)
        used = np.flatnonzero(lens)
        tables.append({int(s): int(lens[s]) for s in used})
    groups = [[int(g.mode), g.q, struct.pack("<f", g.b), g.table] for g in f.groups]
    cores = [[int(c.kind), list(c.dims), c.group] for c in f.cores]
    core_syms = [np.asarray(c.symbols).reshape(-1) for c in f.cores]
    params, psyms = [], []
    for p in f.params:
        if int(p.encoding) == 2:
            params.append([p.name, list(p.shape), 2, p.group, list(p.ranks), list(p.reshape)])
            psyms.append([np.asarray(m).reshape(-1) for m in p.factors])
        elif int(p.encoding) == 1:
            reshape = [m.shape[0] for m in p.factors]
            params.append([p.name, list(p.shape), 1, p.group, p.core, reshape])
            psyms.append([np.asarray(m).reshape(-1) for m in p.factors])
        else:
            params.append([p.name, list(p.shape), 0, p.group, 0, []])
            psyms.append([np.asarray(p.symbols).reshape(-1)])
    meta = [(k.encode(), v.encode()) for k, v in f.metadata.items()]
    return FuzzCase(name, meta, arch, tables, groups, cores, params, core_syms, psyms, arch_fmt=fmt,
                    version=tuple(f.version))


# ==================================================================================================
# Seeds
# ==================================================================================================
def _graph_seeds() -> list[tuple[str, bytes]]:
    """Small graphs built with the runtime's ONNX encoder; weights plain or Tucker-coded."""
    from adt.runtime.format import AdtWriter, quantize

    def build(name, nodes, in_shape, params, inits=(), out_shape=None, opset=17):
        g = Graph(nodes=nodes, name=name, initializers=list(inits),
                  inputs=[ValueInfo("input", FLOAT, list(in_shape))],
                  outputs=[ValueInfo("output", FLOAT, out_shape)])
        arch = OnnxModel(ir_version=8, opsets={"ai.onnx": opset}, graph=g).to_bytes()
        rng = np.random.default_rng(len(name))
        w = AdtWriter()
        w.add_metadata("producer", "adt_fuzz seed")
        w.set_architecture(arch)
        grp = w.add_group(256, 1.0)
        cores = {}
        for pname, (shape, tucker) in params.items():
            if tucker:
                cores[pname] = w.add_core(quantize(rng.normal(0, 0.5, tucker[1]), 256, 1.0), grp)
        for pname, (shape, tucker) in params.items():
            if tucker:
                facs = [quantize(rng.normal(0, 0.3, (n, k)), 256, 1.0) for n, k in zip(tucker[0], tucker[1])]
                w.add_tucker(pname, shape, cores[pname], facs, grp)
            elif pname.endswith(".v"):   # a BatchNorm variance: positive, so the seed runs without NaNs
                w.add_plain(pname, quantize(rng.uniform(0.5, 0.9, shape), 256, 1.0), grp)
            else:
                w.add_plain(pname, quantize(rng.normal(0, 0.3, shape), 256, 1.0), grp)
        return name, w.to_bytes()

    i64 = lambda name, v: Tensor.from_array(np.array(v, np.int64), name)  # noqa: E731
    out = [
        build("convnet", [
            make_node("Conv", ["input", "c.w", "c.b"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            make_node("BatchNormalization", ["a", "bn.s", "bn.b", "bn.m", "bn.v"], ["b"], epsilon=1e-5),
            make_node("Relu", ["b"], ["c"]),
            make_node("AveragePool", ["c"], ["d"], kernel_shape=[2, 2], strides=[2, 2]),
            make_node("MaxPool", ["d"], ["e"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
            make_node("GlobalAveragePool", ["e"], ["f"]),
            make_node("Flatten", ["f"], ["g"]),
            make_node("Gemm", ["g", "fc.w", "fc.b"], ["h"], transB=1),
            make_node("Softmax", ["h"], ["output"], axis=1),
        ], ["N", 2, 8, 8], {"c.w": ((4, 2, 3, 3), ((4, 2, 9), (2, 2, 3))), "c.b": ((4,), None),
                            "bn.s": ((4,), None), "bn.b": ((4,), None), "bn.m": ((4,), None), "bn.v": ((4,), None),
                            "fc.w": ((3, 4), ((3, 4), (2, 2))), "fc.b": ((3,), None)}, out_shape=["N", 3]),
        build("shapes", [
            make_node("Shape", ["input"], ["s"]),
            make_node("Gather", ["s", "i0"], ["n"], axis=0),
            make_node("Unsqueeze", ["n", "ax"], ["nu"]),
            make_node("Concat", ["nu", "m1"], ["shp"], axis=0),
            make_node("Reshape", ["input", "shp"], ["r"]),
            make_node("MatMul", ["r", "w"], ["m"]),
            make_node("Transpose", ["m"], ["t"], perm=[1, 0]),
            make_node("Transpose", ["t"], ["t2"], perm=[1, 0]),
            make_node("Sub", ["t2", "b"], ["u"]),
            make_node("Div", ["u", "two"], ["v"]),
            make_node("Clip", ["v", "lo", "hi"], ["cl"]),
            make_node("LeakyRelu", ["cl"], ["lr"], alpha=0.1),
            make_node("Tanh", ["lr"], ["th"]),
            make_node("Sigmoid", ["th"], ["sg"]),
            make_node("Concat", ["sg", "sg"], ["cc"], axis=1),
            make_node("LogSoftmax", ["cc"], ["output"], axis=-1),
        ], ["N", 2, 3, 4], {"w": ((24, 5), ((4, 6, 5), (2, 2, 2))), "b": ((5,), None)},
            inits=[i64("i0", 0), i64("ax", [0]), i64("m1", [-1]), Tensor.from_array(np.array(2.0, np.float32), "two"),
                   Tensor.from_array(np.array(-1.0, np.float32), "lo"), Tensor.from_array(np.array(1.0, np.float32), "hi")],
            out_shape=["N", 10], opset=13),
        build("constfold", [
            make_node("Constant", [], ["k"], value=Tensor.from_array(np.ones((1, 6), np.float32))),
            make_node("Mul", ["k", "w"], ["kw"]),
            make_node("Constant", [], ["shape"], value_ints=[-1, 6]),
            make_node("Reshape", ["input", "shape"], ["x"]),
            make_node("Add", ["x", "kw"], ["y"]),
            make_node("Unsqueeze", ["y", "ax"], ["z"]),
            make_node("Squeeze", ["z", "ax"], ["zz"]),
            make_node("Dropout", ["zz"], ["d"]),
            make_node("Identity", ["d"], ["i"]),
            make_node("Relu", ["i"], ["output"]),
        ], ["N", 6], {"w": ((1, 6), None)}, inits=[i64("ax", [1])], out_shape=["N", 6]),
    ]
    return out


def load_seeds() -> list[FuzzCase]:
    """The seed files, decoded into fields (deterministic order)."""
    raw: list[tuple[str, bytes]] = []
    for p in sorted((REPO / "format_spec" / "vectors").glob("*.adt")):
        raw.append((f"vector:{p.stem}", p.read_bytes()))
    raw.append(("samples:lenet5", lenet5_file(seed=0, b=0.6)))
    adts = sorted((REPO / "results" / "adt").glob("*.adt"), key=lambda p: (p.stat().st_size, p.name))
    for p in adts[:3] + [q for q in adts if q.name.startswith("lenet300")][:1]:
        raw.append((f"results:{p.name}", p.read_bytes()))
    raw += [(f"graph:{n}", d) for n, d in _graph_seeds()]
    return [case_from_bytes(n, d) for n, d in raw]


# ==================================================================================================
# Mutators: each changes the case in place and returns a short description
# ==================================================================================================
def _int(r: random.Random, neg: bool = False) -> int:
    x = r.random()
    if x < 0.6:
        v = r.choice(INTS)
    elif x < 0.85:
        v = r.randint(0, 40)
    else:
        v = r.getrandbits(r.choice([8, 16, 32, 64]))
    return -v if neg and r.random() < 0.3 else (r.choice(NEG) if neg and r.random() < 0.1 else v)


def _names(a: dict) -> list[str]:
    g = a["graph"]
    names = [v["name"] for v in g["inputs"]] + [t["name"] for t in g["inits"]]
    for n in g["nodes"]:
        names += n["inputs"] + n["outputs"]
    return [x for x in dict.fromkeys(names) if x] or ["input"]


def _rand_attr(r: random.Random, name: str | None = None) -> dict:
    name = name or r.choice(ATTR_NAMES)
    x = r.random()
    if x < 0.45:
        k = r.choice([0, 1, 2, 2, 2, 3, 4, 4, 8, 9, 65, 300])
        vals = [_int(r, neg=True) if r.random() < 0.3 else r.randint(0, 5) for _ in range(k)]
        return {"name": name, "type": A_INTS, "value": vals}
    if x < 0.7:
        return {"name": name, "type": A_INT, "value": _int(r, neg=True)}
    if x < 0.8:
        return {"name": name, "type": A_FLOAT, "value": r.choice(FLOATS)}
    if x < 0.88:
        return {"name": name, "type": A_STRING,
                "value": r.choice([b"SAME_UPPER", b"SAME_LOWER", b"VALID", b"NOTSET", b"", b"\xff\xfe", b"x" * 70])}
    if x < 0.94:
        return {"name": name, "type": A_FLOATS, "value": [r.choice(FLOATS) for _ in range(r.randint(0, 5))]}
    return {"name": name, "type": A_TENSOR, "value": _rand_tensor(r, "")}


def _rand_tensor(r: random.Random, name: str) -> dict:
    dt = r.choice([1, 1, 7, 7, 6, 11, 10, 9, 2, 3, 8, 0, 17])
    x = r.random()
    if x < 0.5:
        dims = [r.choice([1, 2, 3, 4, 6]) for _ in range(r.randint(0, 4))]
    elif x < 0.7:
        dims = [r.choice([16384, 1]), r.choice([1, 16384])]
    elif x < 0.8:
        dims = [1] * r.choice([9, 65, 100])
    elif x < 0.9:
        dims = [r.choice([2 ** 62, 2 ** 31, 0, -1, 5]), 4, r.choice([0, 1])]
    else:
        dims = [_int(r, neg=True) for _ in range(r.randint(1, 3))]
    n = _prod(d for d in dims if d > 0) if all(d >= 0 for d in dims) else 0
    itemsize = DTYPES[dt].itemsize if dt in DTYPES else 4
    nbytes = n * itemsize if n * itemsize <= 1 << 17 else r.choice([0, 16])
    if r.random() < 0.2:
        nbytes = max(0, nbytes + r.choice([-1, 1, 4, -4]))
    raw = bytes(nbytes) if r.random() < 0.6 else r.randbytes(nbytes)
    return {"name": name, "dims": dims, "dt": dt, "raw": raw, "ints": None}


def m_op_type(c: FuzzCase, r: random.Random) -> str:
    nodes = c.arch["graph"]["nodes"]
    if not nodes:
        return "op_type: no nodes"
    n = r.choice(nodes)
    old = n["op"]
    n["op"] = r.choice(OPS if r.random() < 0.75 else OTHER_OPS)
    if r.random() < 0.05:
        n["domain"] = r.choice(["com.microsoft", "ai.onnx.ml", "x"])
    return f"op_type {old}->{n['op']}"


def m_attr(c: FuzzCase, r: random.Random) -> str:
    nodes = c.arch["graph"]["nodes"]
    if not nodes:
        return "attr: no nodes"
    n = r.choice(nodes)
    x = r.random()
    if n["attrs"] and x < 0.5:
        a = r.choice(n["attrs"])
        new = _rand_attr(r, a["name"])
        if a["type"] == A_INTS and r.random() < 0.6:   # same type, one element changed: stays near-valid
            vals = list(a["value"]) or [0]
            vals[r.randrange(len(vals))] = _int(r, neg=True) if r.random() < 0.5 else r.randint(0, 64)
            new = {"name": a["name"], "type": A_INTS, "value": vals}
        n["attrs"][n["attrs"].index(a)] = new
        return f"attr {n['op']}.{a['name']}={str(new['value'])[:40]}"
    if n["attrs"] and x < 0.65:
        a = n["attrs"].pop(r.randrange(len(n["attrs"])))
        return f"attr {n['op']} -{a['name']}"
    new = _rand_attr(r)
    n["attrs"] = [a for a in n["attrs"] if a["name"] != new["name"]] + [new]
    if r.random() < 0.03:
        n["attrs"].append(dict(new))   # duplicate attribute
    return f"attr {n['op']} +{new['name']}={str(new['value'])[:40]}"


def m_node_io(c: FuzzCase, r: random.Random) -> str:
    g = c.arch["graph"]
    if not g["nodes"]:
        return "io: no nodes"
    n = r.choice(g["nodes"])
    names = _names(c.arch)
    x = r.random()
    side = "inputs" if x < 0.7 else "outputs"
    lst = n[side]
    op = r.choice(["swap", "repeat", "empty", "other", "add", "drop", "ghost"])
    if op == "swap" and len(lst) >= 2:
        i, j = r.sample(range(len(lst)), 2)
        lst[i], lst[j] = lst[j], lst[i]
    elif op == "repeat" and lst:
        lst[r.randrange(len(lst))] = r.choice(lst)
    elif op == "empty" and lst:
        lst[r.randrange(len(lst))] = ""
    elif op == "other" and lst:
        lst[r.randrange(len(lst))] = r.choice(names + ["undefined", "input"])
    elif op == "add":
        lst.append(r.choice(names) if side == "inputs" else f"extra{r.randrange(99)}")
    elif op == "drop" and lst:
        lst.pop(r.randrange(len(lst)))
    elif op == "ghost":
        n["outputs"].append("ghost")
        if r.random() < 0.5 and g["outputs"]:
            g["outputs"][0]["name"] = "ghost"
        else:
            later = [m for m in g["nodes"] if m is not n and m["inputs"]]
            if later:
                m = r.choice(later)
                m["inputs"][r.randrange(len(m["inputs"]))] = "ghost"
    return f"io {n['op']}.{side} {op}"


def m_initializer(c: FuzzCase, r: random.Random) -> str:
    g = c.arch["graph"]
    if g["inits"] and r.random() < 0.7:
        t = r.choice(g["inits"])
        x = r.random()
        if x < 0.4:
            new = _rand_tensor(r, t["name"])
            t.update(new)
        elif x < 0.7 and t["dt"] == INT64 and t["raw"] is not None:
            vals = list(np.frombuffer(t["raw"], "<i8")) or [0]
            vals[r.randrange(len(vals))] = _int(r, neg=True)
            t["raw"] = np.array([v if -(2 ** 63) <= v < 2 ** 63 else -1 for v in vals], "<i8").tobytes()
        elif x < 0.85:
            t["dims"] = t["dims"] + [1] * r.choice([1, 57, 60])
        else:
            t["dims"] = list(reversed(t["dims"])) + [r.choice([0, 2])]
        return f"initializer {t['name']} dims={str(t['dims'])[:40]}"
    t = _rand_tensor(r, r.choice(_names(c.arch) + ["newinit"]))
    g["inits"].append(t)
    return f"initializer +{t['name']} dims={str(t['dims'])[:40]}"


def m_constant(c: FuzzCase, r: random.Random) -> str:
    g = c.arch["graph"]
    consts = [n for n in g["nodes"] if n["op"] == "Constant"]
    if consts and r.random() < 0.7:
        n = r.choice(consts)
    else:
        n = {"op": "Constant", "name": "", "domain": "", "inputs": [], "outputs": [f"k{r.randrange(999)}"], "attrs": []}
        g["nodes"].insert(r.randrange(len(g["nodes"]) + 1), n)
        users = [m for m in g["nodes"] if m["inputs"] and m is not n]
        if users:
            m = r.choice(users)
            m["inputs"][r.randrange(len(m["inputs"]))] = n["outputs"][0]
    x = r.random()
    if x < 0.4:
        n["attrs"] = [{"name": "value", "type": A_TENSOR, "value": _rand_tensor(r, "")}]
    elif x < 0.7:
        n["attrs"] = [{"name": "value_ints", "type": A_INTS, "value": [_int(r, neg=True) for _ in range(r.randint(0, 5))]}]
    elif x < 0.8:
        n["attrs"] = [{"name": "value_float", "type": A_FLOAT, "value": r.choice(FLOATS)}]
    elif x < 0.9:
        n["attrs"] = [_rand_attr(r, r.choice(["value", "value_int", "sparse_value", "value_string"]))]
    else:
        n["attrs"] = n["attrs"] + [_rand_attr(r, "value_int")]
    return f"constant {n['outputs'][:1]} {n['attrs'][0]['name'] if n['attrs'] else ''}"


def m_reshape(c: FuzzCase, r: random.Random) -> str:
    g = c.arch["graph"]
    rs = [n for n in g["nodes"] if n["op"] in ("Reshape", "Unsqueeze", "Squeeze", "Gather") and len(n["inputs"]) >= 2]
    if not rs:
        n = next((n for n in g["nodes"] if n["inputs"]), None)
        if n is None:
            return "reshape: none"
        out = f"rs{r.randrange(999)}"
        g["nodes"].insert(g["nodes"].index(n), {"op": "Reshape", "name": "", "domain": "", "inputs": [n["inputs"][0], out + "s"],
                                                "outputs": [out], "attrs": []})
        n["inputs"][0] = out
        rs = [g["nodes"][g["nodes"].index(n) - 1]]
        g["inits"].append({"name": out + "s", "dims": [2], "dt": INT64, "raw": np.array([-1, 1], "<i8").tobytes(), "ints": None})
    n = r.choice(rs)
    k = r.choice([0, 1, 2, 3, 4, 8, 9])
    vals = [r.choice([-1, 0, 1, 2, 3, 28, -2, 2 ** 31, 2 ** 62, 16384, -(2 ** 63)]) for _ in range(k)]
    name = f"shape{r.randrange(999)}"
    g["inits"].append({"name": name, "dims": [k], "dt": INT64, "raw": np.array(vals, "<i8").tobytes(), "ints": None})
    n["inputs"][1] = name
    return f"shape of {n['op']} = {vals}"


def m_graph_io(c: FuzzCase, r: random.Random) -> str:
    g = c.arch["graph"]
    x = r.random()
    lst = g["inputs"] if x < 0.7 else g["outputs"]
    if not lst:
        return "graph io: empty"
    v = r.choice(lst)
    op = r.choice(["dim", "dim", "rank", "elem", "noshape", "name", "dup"])
    if op == "dim" and v["shape"]:
        v["shape"][r.randrange(len(v["shape"]))] = r.choice([0, 1, 2, 3, 28, 1000, 2 ** 31, -1, 2 ** 62, "M", None])
    elif op == "rank":
        v["shape"] = [r.choice(["N", 1, 2, 3]) for _ in range(r.choice([0, 1, 2, 4, 5, 9]))]
    elif op == "elem":
        v["elem"] = r.choice([None, 0, 7, 11, 10, 9, 8, 99, 6])
    elif op == "noshape":
        v["shape"] = None
    elif op == "name":
        v["name"] = r.choice(_names(c.arch) + ["", "zzz"])
    elif op == "dup":
        lst.append(dict(v))
    return f"graph {'input' if lst is g['inputs'] else 'output'} {op}"


def _fresh(r):
    return f"n{r.randrange(10 ** 6)}"


def m_add_node(c: FuzzCase, r: random.Random) -> str:
    g = c.arch["graph"]
    names = _names(c.arch)
    op = r.choice(OPS + OTHER_OPS[:3])
    k = r.choice([0, 1, 1, 2, 2, 3, 5])
    n = {"op": op, "name": "", "domain": "", "inputs": [r.choice(names) for _ in range(k)], "outputs": [_fresh(r)],
         "attrs": [_rand_attr(r) for _ in range(r.choice([0, 0, 1, 2]))]}
    pos = r.randrange(len(g["nodes"]) + 1)
    g["nodes"].insert(pos, n)
    if r.random() < 0.5 and g["outputs"]:
        later = [m for m in g["nodes"][pos + 1:] if m["inputs"]]
        if later and r.random() < 0.5:
            m = r.choice(later)
            m["inputs"][r.randrange(len(m["inputs"]))] = n["outputs"][0]
        else:
            g["outputs"][0]["name"] = n["outputs"][0]
    return f"add node {op}({k})"


def m_delete_node(c: FuzzCase, r: random.Random) -> str:
    g = c.arch["graph"]
    if not g["nodes"]:
        return "delete: none"
    n = g["nodes"].pop(r.randrange(len(g["nodes"])))
    if r.random() < 0.7 and n["inputs"] and n["outputs"]:   # splice: readers of its output read its input
        for m in g["nodes"]:
            m["inputs"] = [n["inputs"][0] if x == n["outputs"][0] else x for x in m["inputs"]]
        for v in g["outputs"]:
            if v["name"] == n["outputs"][0]:
                v["name"] = n["inputs"][0]
    return f"delete node {n['op']}"


def m_amplifier(c: FuzzCase, r: random.Random) -> str:
    """Hostile-but-valid constructions: small in the file, large at load or run."""
    g = c.arch["graph"]
    kind = r.choice(["concat", "broadcast", "pads", "kernel", "matmul", "gather"])
    head = g["outputs"][0]["name"] if g["outputs"] else "input"
    nodes = []
    if kind == "concat":
        x = r.choice(["input", head])
        for i in range(r.choice([8, 12, 20, 24])):
            nodes.append({"op": "Concat", "name": "", "domain": "", "inputs": [x, x], "outputs": [f"cat{i}"],
                          "attrs": [{"name": "axis", "type": A_INT, "value": r.choice([0, 1, -1])}]})
            x = f"cat{i}"
    elif kind == "broadcast":
        n = r.choice([1024, 4096, 16384])
        a = {"name": "", "dims": [n, 1], "dt": 1, "raw": bytes(4 * n), "ints": None}
        b = {"name": "", "dims": [1, n], "dt": 1, "raw": bytes(4 * n), "ints": None}
        nodes += [{"op": "Constant", "name": "", "domain": "", "inputs": [], "outputs": ["ka"],
                   "attrs": [{"name": "value", "type": A_TENSOR, "value": a}]},
                  {"op": "Constant", "name": "", "domain": "", "inputs": [], "outputs": ["kb"],
                   "attrs": [{"name": "value", "type": A_TENSOR, "value": b}]},
                  {"op": r.choice(["Add", "Mul", "Sub"]), "name": "", "domain": "", "inputs": ["ka", "kb"],
                   "outputs": ["cat0"], "attrs": []}]
        x = "cat0"
    else:
        targets = [n for n in g["nodes"] if n["op"] in ("Conv", "MaxPool", "AveragePool", "Gemm", "MatMul", "Gather")]
        if not targets:
            return f"amplifier {kind}: no target"
        n = r.choice(targets)
        nd = 2
        if kind == "pads":
            p = r.choice([100, 1000, 2000, 10 ** 5])
            n["attrs"] = [a for a in n["attrs"] if a["name"] not in ("pads", "auto_pad")] + [
                {"name": "pads", "type": A_INTS, "value": [p] * (2 * nd)}]
        elif kind == "kernel":
            k = r.choice([64, 512, 1000, 2048])
            n["attrs"] = [a for a in n["attrs"] if a["name"] not in ("kernel_shape", "pads", "auto_pad")] + [
                {"name": "kernel_shape", "type": A_INTS, "value": [k] * nd},
                {"name": "pads", "type": A_INTS, "value": [k // 2] * (2 * nd)}]
        elif kind == "matmul" and n["inputs"]:
            n["inputs"] = [n["inputs"][0]] * max(2, len(n["inputs"]))
        elif kind == "gather" and len(n["inputs"]) >= 2:
            name = f"idx{r.randrange(999)}"
            g["inits"].append({"name": name, "dims": [1 << 16], "dt": INT64, "raw": bytes(8 << 16), "ints": None})
            n["inputs"][1] = name
        return f"amplifier {kind} on {n['op']}"
    g["nodes"] += nodes
    if g["outputs"] and r.random() < 0.7:
        g["outputs"][0]["name"] = x
    return f"amplifier {kind} ({len(nodes)} nodes)"


def m_opset(c: FuzzCase, r: random.Random) -> str:
    x = r.random()
    if x < 0.6:
        c.arch["opsets"] = [("", r.choice([1, 7, 9, 11, 12, 13, 17, 18, 19, 21, 99, 2 ** 40]))]
    elif x < 0.8:
        c.arch["opsets"] = []
    else:
        c.arch["ir"] = r.choice([0, 1, 3, 9, 10, 99])
    return f"opset {c.arch['opsets']} ir {c.arch['ir']}"


def m_arch_bytes(c: FuzzCase, r: random.Random) -> str:
    raw = bytearray(c.arch_raw if c.arch_raw is not None else enc_model(c.arch))
    if not raw:
        return "arch bytes: empty"
    p = r.randrange(len(raw))
    op = r.choice(["flip", "set", "insert", "delete", "dup"])
    if op == "flip":
        raw[p] ^= 1 << r.randrange(8)
    elif op == "set":
        raw[p] = r.choice([0, 1, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x22])
    elif op == "insert":
        raw[p:p] = uvarint(_int(r))
    elif op == "delete":
        del raw[p:p + r.randint(1, 4)]
    else:
        q = r.randrange(len(raw))
        raw[q:q] = raw[p:p + r.randint(1, 64)]
    c.arch_raw = bytes(raw)
    return f"arch protobuf {op}@{p}"


def m_arch_container(c: FuzzCase, r: random.Random) -> str:
    x = r.random()
    if x < 0.3:
        c.arch_fmt = r.choice([0, 1, 2, 255])
        return f"arch format {c.arch_fmt}"
    if x < 0.6:
        c.arch_size_delta = r.choice([-1, 1, -100, 2 ** 26, 2 ** 30])
        return f"arch size {c.arch_size_delta:+d}"
    if x < 0.8:
        c.arch_cut = r.choice([1, 2, 5])
        return f"arch stream cut {c.arch_cut}"
    c.arch_tail = r.choice([b"\x00", b"\x03\x00", r.randbytes(4)])
    return "arch tail bytes"


def m_group(c: FuzzCase, r: random.Random) -> str:
    if not c.groups:
        return "group: none"
    g = r.choice(c.groups)
    f = r.choice(["mode", "q", "q", "b", "b", "table"])
    if f == "mode":
        g[0] = r.choice([1, 2, 255])
    elif f == "q":
        g[1] = r.choice([0, 1, 2, 3, 16, 65535, 65536, 65537, 2 ** 63 - 1, g[1] - 1, g[1] + 1])
    elif f == "b":
        g[2] = struct.pack("<f", r.choice(FLOATS + [1e-3, 100.0, -3.0]))
    else:
        g[3] = r.choice([0, 1, len(c.tables), 2 ** 31])
    return f"group {f}"


def m_core(c: FuzzCase, r: random.Random) -> str:
    if not c.cores:
        return "core: none"
    k = r.choice(c.cores)
    f = r.choice(["kind", "dims", "dims", "order", "group"])
    if f == "kind":
        k[0] = r.choice([0, 1, 2, 255])
    elif f == "dims" and k[1]:
        k[1][r.randrange(len(k[1]))] = r.choice([0, 1, 2, 5, 2 ** 14, 2 ** 28, 2 ** 31 - 1, 2 ** 31])
    elif f == "order":
        k[1] = k[1] + [1] * r.choice([1, 8]) if r.random() < 0.7 else []
    else:
        k[2] = r.choice([0, 1, len(c.groups), 2 ** 40])
    return f"core {f}"


def m_param(c: FuzzCase, r: random.Random) -> str:
    if not c.params:
        return "param: none"
    i = r.randrange(len(c.params))
    p = c.params[i]
    f = r.choice(["name", "shape", "transpose", "transpose", "resplit", "scalar", "enc", "group", "core", "reshape"])
    if f == "name":
        p[0] = r.choice(["", c.params[0][0], "x" * 256, b"\xff\xfe", "input", "output", "a", "ghost"])
    elif f == "shape":
        if p[1] and r.random() < 0.6:
            p[1][r.randrange(len(p[1]))] = r.choice([0, 1, 2, 3, 2 ** 28, 2 ** 31 - 1, 2 ** 31])
        else:
            p[1] = [r.choice([1, 2, 3]) for _ in range(r.choice([0, 1, 9]))]
    elif f == "transpose" and len(p[1]) >= 2:       # same numel: the file stays valid
        r.shuffle(p[1])
    elif f == "resplit":                            # same numel, other rank: valid file, odd weight
        n = _prod(p[1])
        p[1] = r.choice([[n], [1, n], [n, 1], [1, 1, n], [1] * 8])
    elif f == "scalar" and _prod(p[1]) == 1:
        p[1] = []
    elif f == "enc":
        p[2] = r.choice([0, 1, 2, 255])
    elif f == "group":
        p[3] = r.choice([0, 1, len(c.groups), 2 ** 31])
    elif f == "core" and p[2] == 2 and isinstance(p[4], list) and p[4]:   # a TT rank
        j = r.randrange(len(p[4]))
        p[4][j] = r.choice([0, 1, 2, p[4][j] + 1, 2 ** 14, 2 ** 31])
    elif f == "core":
        p[4] = r.choice([0, 1, len(c.cores), 2 ** 31])
    elif f == "reshape" and p[5]:
        j = r.randrange(len(p[5]))
        p[5][j] = r.choice([1, 2, p[5][j] + 1, 2 ** 31])
    return f"param {p[0]!s:.20} {f}"


def m_table(c: FuzzCase, r: random.Random) -> str:
    if not c.tables:
        return "table: none"
    t = r.choice(c.tables)
    op = r.choice(["len", "add", "remove", "swap"])
    if op == "len" and t:
        s = r.choice(list(t))
        t[s] = r.choice([0, 1, 24, 25, t[s] + 1, max(1, t[s] - 1)])
    elif op == "add":
        t[r.choice([0, 1, 65535, 65536, max(t, default=0) + 1])] = r.choice([1, 2, 24])
    elif op == "remove" and len(t) > 1:
        del t[r.choice(list(t))]
    elif op == "swap" and len(t) > 1:
        a, b = r.sample(list(t), 2)
        t[a], t[b] = t[b], t[a]     # still complete: lengths only move between symbols
    return f"table {op}"


def m_meta(c: FuzzCase, r: random.Random) -> str:
    op = r.choice(["add", "dup", "long", "utf8", "empty", "drop"])
    if op == "add":
        c.meta.append((f"k{r.randrange(999)}".encode(), r.randbytes(r.choice([0, 5, 100]))))
    elif op == "dup" and c.meta:
        c.meta.append(c.meta[0])
    elif op == "long":
        c.meta.append((b"k" * r.choice([64, 65]), b"v" * r.choice([65535, 65536])))
    elif op == "utf8":
        c.meta.append((b"\xc3\x28", b"ok"))
    elif op == "empty":
        c.meta.append((b"", b""))
    elif op == "drop" and c.meta:
        c.meta.pop()
    return f"metadata {op}"


def m_payload(c: FuzzCase, r: random.Random) -> str:
    x = r.random()
    if x < 0.4:
        c.payload_pad = True
        return "payload padding bit"
    data = bytearray(c._payload(np.random.default_rng(r.getrandbits(32))))
    if x < 0.7 and data:
        data[r.randrange(len(data))] ^= 1 << r.randrange(8)
    elif x < 0.85:
        data = data[:-1] if data else data
    else:
        data += b"\x00"
    c.payload_raw = bytes(data)
    return "payload bytes"


def m_sections(c: FuzzCase, r: random.Random) -> str:
    op = r.choice(["ext", "ext", "reserved", "drop", "length", "count", "version", "crc"])
    if op == "ext":
        c.extras.append((r.choice([64, 100, 127]), r.randbytes(r.choice([0, 3, 40]))))
    elif op == "reserved":
        c.extras.append((r.choice([0, 6, 63, 128, 255]), b""))
    elif op == "drop":
        c.drop_kind = r.choice([1, 2, 3, 4, 5])
    elif op == "length":
        c.length_lie = (r.randrange(6), r.choice([-1, 1, 2 ** 26 + 1]))
    elif op == "count":
        c.count_lie = r.choice([-1, 1, 20])
    elif op == "version":
        c.version = r.choice([(1, 1), (1, 255), (2, 0), (3, 0), (0, 0)])   # 2.x reads like 1.x without TT
    else:
        c.bad_crc = True
    return f"sections {op}"


def m_body_bytes(c: FuzzCase, r: random.Random) -> str:
    c.body_mut = (r.randrange(6), r.choice(["flip", "set", "insert", "delete", "varint"]), r.getrandbits(20),
                  r.choice([r.getrandbits(8), _int(r)]))
    return f"body {c.body_mut[1]} in section {c.body_mut[0]}"


ARCH_MUTATORS = [(m_op_type, 6), (m_attr, 14), (m_node_io, 8), (m_initializer, 6), (m_constant, 5), (m_reshape, 6),
                 (m_graph_io, 6), (m_add_node, 6), (m_delete_node, 3), (m_amplifier, 5), (m_opset, 2),
                 (m_arch_bytes, 4), (m_arch_container, 2)]
FILE_MUTATORS = [(m_group, 3), (m_core, 3), (m_param, 10), (m_table, 3), (m_meta, 2), (m_payload, 2),
                 (m_sections, 2), (m_body_bytes, 3)]


def build_case(seeds: list[FuzzCase], seed: int, index: int) -> tuple[FuzzCase, bytes]:
    """Case ``index`` of the run with ``seed``: a seed, 1-3 mutations, the consistent re-encoding."""
    r = random.Random(f"adt-fuzz:{seed}:{index}")
    nrng = np.random.default_rng([seed & 0xFFFFFFFF, index])
    base = seeds[r.randrange(len(seeds))]
    c = copy.deepcopy(base)
    for _ in range(r.choice([1, 1, 1, 2, 2, 3])):
        pool = FILE_MUTATORS + (ARCH_MUTATORS if c.arch is not None and c.arch_raw is None else
                                [(m_arch_container, 2)] if c.arch_raw is not None else [])
        if c.arch is not None and c.arch_raw is None and r.random() < 0.55:
            pool = ARCH_MUTATORS
        fns, weights = zip(*pool)
        fn = r.choices(fns, weights)[0]
        try:
            c.mutations.append(fn(c, r))
        except (IndexError, ValueError, OverflowError, struct.error) as exc:   # a mutator that cannot apply
            c.mutations.append(f"{fn.__name__}: skipped ({type(exc).__name__})")
    try:
        data = c.encode(nrng)
    except (OverflowError, ValueError, struct.error) as exc:   # e.g. a float attribute NumPy cannot pack
        c.mutations.append(f"encode fell back ({type(exc).__name__})")
        data = copy.deepcopy(base).encode(nrng)
    return c, data


# ==================================================================================================
# Execution (in the child)
# ==================================================================================================
def _feeds(model, rng: np.random.Generator) -> dict | None:
    feeds = {}
    for vi in model.inputs:
        dt = DTYPES.get(vi.elem_type, np.dtype("<f4")) if vi.elem_type is not None else np.dtype("<f4")
        dt = dt.newbyteorder("=")
        shape = [2] if vi.shape is None else [d if isinstance(d, int) and d > 0 else 2 for d in vi.shape]
        if _prod(shape) > MAX_INPUT_ELEMENTS:
            return None
        if dt.kind == "f":
            x = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            x = rng.random(shape) < 0.5
        else:
            x = rng.integers(0, 3, shape).astype(dt)
        feeds[vi.name] = x
    return feeds


def _agree(a, b) -> str:
    """Whether the two engines gave the same outputs (float32 tolerance; NaN equal to NaN)."""
    try:
        xs = list(a.values()) if isinstance(a, dict) else [a]
        ys = list(b.values()) if isinstance(b, dict) else [b]
        if sum(np.size(x) for x in xs) > 1 << 22:
            return "too large to compare"
        if not all(np.isfinite(np.asarray(v, np.float64)).all() for v in xs + ys):
            return "non-finite outputs (not compared)"   # NaN/Inf propagation differs between engines
        same = len(xs) == len(ys) and all(
            np.shape(x) == np.shape(y) and np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                                       rtol=1e-3, atol=1e-4, equal_nan=True)
            for x, y in zip(xs, ys))
    except (TypeError, ValueError, MemoryError):
        return "not comparable"
    return "same outputs" if same else "different outputs"


def _classify(exc: BaseException) -> str:
    if isinstance(exc, AdtError):
        return f"typed:{type(exc).__name__}"
    if isinstance(exc, MemoryError):
        return "over-memory"
    return f"untyped:{type(exc).__name__}"


def _tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]


def execute(data: bytes, with_ort: bool) -> dict:
    """Read, load, run (NumPy engine, then onnxruntime); returns the outcomes (no exception escapes)."""
    res: dict = {"depth": "read", "numpy": None, "ort": None}
    rng = np.random.default_rng(0)
    stage = "read"
    try:
        f = read_adt(data)
        res["depth"] = "load"
        stage = "load"
        m = rt.load(f)
        if m.architecture is None:
            res["numpy"] = "ok"
            res["depth"] = "loaded (weights only)"
            return res
        res["depth"] = "run"
        stage = "run"
        feeds = _feeds(m, rng)
        if feeds is None:
            res["numpy"] = "ok"
            res["depth"] = "loaded (input too large to run)"
            return res
        y_np = m.run(feeds)
        res["numpy"] = "ok"
        res["depth"] = "ran"
    except BaseException as exc:  # noqa: BLE001 -- classifying every exception is the point
        res["numpy"] = _classify(exc)
        res["stage"] = stage
        if not res["numpy"].startswith("typed"):
            res["traceback"] = _tb(exc)
        else:
            res["message"] = str(exc)[:300]
        return res
    if with_ort:
        stage = "ort load"
        try:
            m2 = rt.load(f, engine="onnxruntime")
            stage = "ort run"
            y_ort = m2.run(feeds)
            res["ort"] = "ok"
        except BaseException as exc:  # noqa: BLE001
            res["ort"] = _classify(exc)
            res["stage"] = stage
            if not res["ort"].startswith("typed"):
                res["traceback"] = _tb(exc)
            return res
        res["agree"] = _agree(y_np, y_ort)   # the harness's own work: outside the classified stages
    return res


def _child(data: bytes, wfd: int, with_ort: bool) -> None:
    """In the forked child: limits, quiet output, execute, send the JSON result, exit."""
    code = 0
    try:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        import warnings
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = execute(data, with_ort)
        res["seconds"] = time.perf_counter() - t0
        out = json.dumps(res).encode()
        view = memoryview(out)
        while view:
            n = os.write(wfd, view)
            view = view[n:]
    except BaseException:  # noqa: BLE001 -- e.g. MemoryError while reporting
        code = 3
    finally:
        os._exit(code)


# ==================================================================================================
# The driver
# ==================================================================================================
@dataclass
class _Running:
    pid: int
    fd: int
    index: int
    start: float
    case: FuzzCase
    data: bytes
    buf: bytearray = field(default_factory=bytearray)
    killed: bool = False


def _limit_malloc_arenas() -> None:
    """glibc gives every thread a 64 MiB malloc arena of address space; onnxruntime's thread pool
    would then hit RLIMIT_AS long before it uses that memory. Best effort (Linux/glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)   # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def fuzz(seconds: float | None = None, cases: int | None = None, seed: int = 0, workers: int = 1,
         crash_dir: Path = CRASH_DIR, with_ort: bool | None = None, progress: bool = False,
         files: list[Path] | None = None, start: int = 0) -> dict:
    """Run cases ``0, 1, 2, ...`` until ``seconds`` have passed or ``cases`` are done; return the figures.
    ``files``: run these files, unmutated, as the cases instead (e.g. a crash folder, a corpus).
    ``start``: the first case index (to shard a run, or to go on where one stopped)."""
    if files is not None:
        cases = len(files) if cases is None else min(cases, len(files))
        seconds = None
    if seconds is None and cases is None:
        raise ValueError("give seconds or cases")
    if with_ort is None:
        with_ort = _ort_available()
    _limit_malloc_arenas()
    seeds = load_seeds()
    counts: dict[str, dict[str, int]] = {"numpy": {}, "onnxruntime": {}, "case": {}, "depth": {}, "agreement": {}}
    untyped: list[dict] = []
    disagree: list[dict] = []   # cases where both engines ran but gave different outputs (informational)
    slow: list[dict] = []
    peak = (0, -1)
    t_start = time.monotonic()
    deadline = None if seconds is None else t_start + seconds
    running: dict[int, _Running] = {}
    next_index = 0 if files is not None else start
    stop = None if cases is None else next_index + cases
    done = 0
    mutation_counts: dict[str, int] = {}

    def bump(kind, key):
        counts[kind][key] = counts[kind].get(key, 0) + 1

    def finish(job: _Running, status: int, rusage) -> None:
        nonlocal done, peak
        done += 1
        secs = time.monotonic() - job.start
        rss = rusage.ru_maxrss * 1024 if rusage is not None else 0
        if rss > peak[0]:
            peak = (rss, job.index)
        res = None
        if job.buf:
            try:
                res = json.loads(job.buf.decode())
            except ValueError:
                res = None
        if job.killed:
            outcome = "timeout"
        elif res is None:
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                outcome = "over-memory" if sig == signal.SIGKILL else f"worker-died:{signal.Signals(sig).name}"
            else:
                outcome = f"worker-died:exit {os.WEXITSTATUS(status)}"
        else:
            outcome = "completed"
            bump("numpy", res["numpy"])
            if res.get("ort"):
                bump("onnxruntime", res["ort"])
            if res.get("agree"):
                bump("agreement", res["agree"])
                if res["agree"] == "different outputs" and len(disagree) < 50:
                    disagree.append({"case": job.index, "seed_file": job.case.seed_name, "mutations": job.case.mutations})
            bump("depth", res["depth"])
            bad = [o for o in (res["numpy"], res.get("ort")) if o and (o.startswith("untyped") or o == "over-memory")]
            if bad:
                outcome = bad[0]
        bump("case", outcome)
        for m in job.case.mutations:
            key = m.split(" ")[0]
            mutation_counts[key] = mutation_counts.get(key, 0) + 1
        rec = {"case": job.index, "seconds": round(secs, 3), "outcome": outcome, "seed_file": job.case.seed_name,
               "mutations": job.case.mutations,
               "numpy": res["numpy"] if res else None, "onnxruntime": res.get("ort") if res else None}
        slow.append(rec)
        slow.sort(key=lambda x: -x["seconds"])
        del slow[10:]
        if outcome != "completed":
            digest = hashlib.sha256(job.data).hexdigest()[:12]
            crash_dir.mkdir(parents=True, exist_ok=True)
            stem = f"{outcome.replace(':', '-').replace(' ', '_')}-{digest}"
            (crash_dir / f"{stem}.adt").write_bytes(job.data)
            tb = (res or {}).get("traceback", "")
            (crash_dir / f"{stem}.txt").write_text(
                f"outcome: {outcome}\nseed {seed} case {job.index} ({job.case.seed_name})\nmutations: "
                f"{job.case.mutations}\nstage: {(res or {}).get('stage')}\n\n{tb}\n")
            untyped.append(dict(rec, file=str(crash_dir / f"{stem}.adt"), stage=(res or {}).get("stage"),
                                traceback=tb.strip().splitlines()[-3:] if tb else []))
        if progress and done % 100 == 0:
            print(f"[adt_fuzz] {done} cases, {time.monotonic() - t_start:.0f} s, {counts['case']}", flush=True)

    def more() -> bool:
        if stop is not None and next_index >= stop:
            return False
        return deadline is None or time.monotonic() < deadline

    while True:
        while len(running) < workers and more():
            if files is not None:
                data = files[next_index].read_bytes()
                case = FuzzCase(str(files[next_index]), [], None, [], [], [], [], [], [], mutations=["(file)"])
            else:
                case, data = build_case(seeds, seed, next_index)
            rfd, wfd = os.pipe()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.close(rfd)
                _child(data, wfd, with_ort)
            os.close(wfd)
            running[rfd] = _Running(pid, rfd, next_index, time.monotonic(), case, data)
            next_index += 1
        if not running:
            break
        now = time.monotonic()
        wait = max(0.0, min(j.start + CASE_TIMEOUT for j in running.values()) - now)
        ready, _, _ = select.select(list(running), [], [], min(wait, 1.0))
        for fd in ready:
            job = running[fd]
            chunk = os.read(fd, 1 << 16)
            if chunk:
                job.buf += chunk
                continue
            os.close(fd)
            del running[fd]
            _, status, ru = os.wait4(job.pid, 0)
            finish(job, status, ru)
        now = time.monotonic()
        for fd, job in list(running.items()):
            if now - job.start > CASE_TIMEOUT:
                job.killed = True
                os.kill(job.pid, signal.SIGKILL)
                _, status, ru = os.wait4(job.pid, 0)
                os.close(fd)
                del running[fd]
                finish(job, status, ru)

    elapsed = time.monotonic() - t_start
    n_untyped = sum(v for k, v in counts["case"].items() if k.startswith("untyped"))
    return {
        "seed": seed, "start": start, "files": None if files is None else len(files), "seconds_budget": seconds, "cases_budget": cases, "workers": workers,
        "onnxruntime": with_ort, "executions": done, "elapsed_s": round(elapsed, 1),
        "executions_per_s": round(done / elapsed, 2) if elapsed else None,
        "limits": {"address_space_bytes": LIMIT_AS, "case_timeout_s": CASE_TIMEOUT},
        "seeds": [s.seed_name for s in seeds],
        "outcomes": counts,
        "untyped": n_untyped,
        "timeouts": counts["case"].get("timeout", 0),
        "over_memory": counts["case"].get("over-memory", 0),
        "worker_died": sum(v for k, v in counts["case"].items() if k.startswith("worker-died")),
        "zero_untyped": n_untyped == 0,
        "zero_over_10s": counts["case"].get("timeout", 0) == 0,
        "zero_over_1gib": counts["case"].get("over-memory", 0) == 0,
        "max_case_seconds": slow[0]["seconds"] if slow else 0.0,
        "peak_rss_bytes": peak[0], "peak_rss_case": peak[1],
        "slowest": slow,
        "mutations": dict(sorted(mutation_counts.items())),
        "failures": untyped,
        "engine_disagreements": disagree,
    }


def report_md(fig: dict) -> str:
    def table(d: dict) -> str:
        rows = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))
        return "\n".join(f"| `{k}` | {v:,} |" for k, v in rows) or "| — | 0 |"

    yes = lambda b: "**yes**" if b else "**NO**"  # noqa: E731
    lines = [
        "# Structure-aware fuzzing of the runtime (`research/fuzz/adt_fuzz.py`)",
        "",
        "Command: `python -m research.fuzz.adt_fuzz"
        + ("" if fig["seconds_budget"] is None else f" --seconds {fig['seconds_budget']:g}")
        + ("" if fig["cases_budget"] is None or fig.get("files") else f" --cases {fig['cases_budget']}")
        + (f" --files ({fig['files']} files)" if fig.get("files") else "")
        + f" --seed {fig['seed']}" + (f" --start {fig['start']}" if fig.get("start") else "")
        + f" --workers {fig['workers']}`",
        f"(onnxruntime {'on' if fig['onnxruntime'] else 'not installed: NumPy engine only'}). Each case runs in "
        f"its own child process under RLIMIT_AS = {fig['limits']['address_space_bytes'] >> 20} MiB with a "
        f"{fig['limits']['case_timeout_s']:.0f} s limit.",
        "",
        f"- executions: **{fig['executions']:,}** in {fig['elapsed_s']} s ({fig['executions_per_s']} /s)",
        f"- zero untyped exceptions: {yes(fig['zero_untyped'])} ({fig['untyped']})",
        f"- zero cases over 10 s: {yes(fig['zero_over_10s'])} ({fig['timeouts']}); slowest case "
        f"{fig['max_case_seconds']:.2f} s",
        f"- zero cases over 1 GiB: {yes(fig['zero_over_1gib'])} ({fig['over_memory']}); peak RSS of a case "
        f"{fig['peak_rss_bytes'] / 2 ** 20:.0f} MiB (includes the interpreter, NumPy and onnxruntime the child inherits)",
        f"- workers that died otherwise: {fig['worker_died']}",
        "",
        "## Outcomes per case", "", "| outcome | cases |", "|---|---:|", table(fig["outcomes"]["case"]), "",
        "## How deep the cases went", "", "| depth | cases |", "|---|---:|", table(fig["outcomes"]["depth"]), "",
        "## NumPy engine (read, load, run)", "", "| outcome | cases |", "|---|---:|", table(fig["outcomes"]["numpy"]), "",
        "## onnxruntime engine (cases the NumPy engine ran)", "", "| outcome | cases |", "|---|---:|",
        table(fig["outcomes"]["onnxruntime"]), "",
        "## NumPy engine vs onnxruntime (cases both ran; informational: rtol 1e-3, atol 1e-4)", "",
        "| outputs | cases |", "|---|---:|", table(fig["outcomes"]["agreement"]), "",
        "## Slowest cases", "", "| case | seconds | outcome | seed | mutations |", "|---:|---:|---|---|---|",
    ]
    for s in fig["slowest"]:
        lines.append(f"| {s['case']} | {s['seconds']:.2f} | `{s['outcome']}` | {s['seed_file']} | "
                     f"{'; '.join(s['mutations'])[:120]} |")
    if fig["engine_disagreements"]:
        lines += ["", "Cases where the engines disagree (regenerate one with `--seed S --case I --write-case F`): "
                  + ", ".join(str(d["case"]) for d in fig["engine_disagreements"][:20])]
    if fig["failures"]:
        lines += ["", "## Failures (untyped, timeout, over-memory, died)", ""]
        for u in fig["failures"][:50]:
            lines.append(f"- case {u['case']} `{u['outcome']}` at {u['stage']}: {u['mutations']} -> "
                         f"`{(u['traceback'] or [''])[-1]}` ({u['file']})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.fuzz.adt_fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=None, help="time budget (default 60 unless --cases)")
    ap.add_argument("--cases", type=int, default=None, help="number of cases (with --seconds: whichever ends first)")
    ap.add_argument("--seed", type=int, default=0, help="the run's seed: case i is a function of (seed, i)")
    ap.add_argument("--start", type=int, default=0, help="first case index (shards, or resuming a run)")
    ap.add_argument("--workers", type=int, default=1, help="child processes at a time")
    ap.add_argument("--out", type=Path, default=None,
                    help="figures as JSON, and as Markdown beside it (same name, .md); e.g. results/fuzz.json")
    ap.add_argument("--crash-dir", type=Path, default=CRASH_DIR, help="where failing cases are saved")
    ap.add_argument("--no-ort", action="store_true", help="NumPy engine only, even if onnxruntime is installed")
    ap.add_argument("--replay", type=Path, default=None, help="run one saved case in this process and print the outcome")
    ap.add_argument("--files", type=Path, nargs="+", default=None,
                    help="run these files (or the .adt files of these folders) unmutated, under the same limits")
    ap.add_argument("--case", type=int, default=None, help="with --write-case: the case index to regenerate")
    ap.add_argument("--write-case", type=Path, default=None, help="write case --case of --seed to this file")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.replay is not None:
        res = execute(args.replay.read_bytes(), with_ort=not args.no_ort and _ort_available())
        print(json.dumps(res, indent=1))
        if "traceback" in res:
            print(res["traceback"])
        return 0
    if args.write_case is not None:
        case, data = build_case(load_seeds(), args.seed, args.case or 0)
        args.write_case.write_bytes(data)
        print(f"case {args.case or 0} of seed {args.seed}: {case.seed_name}, {case.mutations}, {len(data)} bytes")
        return 0
    seconds = args.seconds if args.seconds is not None or args.cases is not None else 60.0
    files = None
    if args.files is not None:
        files = [q for p in args.files for q in (sorted(p.glob("*.adt")) if p.is_dir() else [p])]
    fig = fuzz(seconds, args.cases, args.seed, max(1, args.workers), args.crash_dir,
               False if args.no_ort else None, progress=not args.quiet, files=files, start=args.start)
    text = report_md(fig)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, (json.dumps(fig, indent=1) + "\n").encode())
        write_atomic(args.out.with_suffix(".md"), text.encode())
    if not args.quiet:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
