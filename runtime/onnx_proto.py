"""A minimal, bounds-checked reader and writer of the ONNX protobuf subset ADT stores.

The NumPy engine must run without the ``onnx`` package, so the architecture section (a serialized
``onnx.ModelProto``) is parsed here directly from the protobuf wire format. Only the fields the
runtime needs are decoded; every other field is skipped after its wire type and length are checked.
Any malformed byte raises :class:`AdtArchitectureError` naming the field path (e.g.
``graph.node[3].attribute[0].t.raw_data``); nothing is allocated beyond the bytes actually present.

Field numbers follow onnx/onnx.proto (proto2). The writer side appends weight initializers to an
existing ModelProto (:func:`add_initializers`, all the onnxruntime engine needs) and encodes the
dataclasses below back to bytes (:func:`encode_model`, the mirror of :func:`parse_model`), so that
graphs can be built without the ``onnx`` package (tests, :mod:`adt.runtime.samples`). The encoder writes
fields in field-number order with proto2 presence rules, as the protobuf library does, so a graph
built with :func:`make_node` gives the bytes ``onnx.helper`` would.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np

from .format import AdtArchitectureError
from .format.binary import encode_leb128
from .format.limits import MAX_DIM, MAX_ORDER, MAX_TENSOR_ELEMENTS

__all__ = [
    "DEFAULT_PARSE_LIMITS", "ParseLimits", "count_model",
    "A_FLOAT", "A_FLOATS", "A_GRAPH", "A_INT", "A_INTS", "A_STRING", "A_STRINGS", "A_TENSOR", "DTYPES", "DTYPE_NAMES",
    "EXTERNAL_LOCATION", "FLOAT", "INT64", "Attribute", "Graph", "Node", "OnnxModel", "Tensor", "ValueInfo",
    "add_initializers", "encode_graph", "encode_model", "encode_pb_varint", "encode_tensor", "encode_tensor_proto",
    "make_attribute", "make_node", "parse_model", "parse_tensor",
]

# TensorProto.DataType -> little-endian NumPy dtype
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("u1"), 3: np.dtype("i1"), 4: np.dtype("<u2"), 5: np.dtype("<i2"),
    6: np.dtype("<i4"), 7: np.dtype("<i8"), 9: np.dtype("?"), 10: np.dtype("<f2"), 11: np.dtype("<f8"),
    12: np.dtype("<u4"), 13: np.dtype("<u8"),
}
DTYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
               8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
               14: "complex64", 15: "complex128", 16: "bfloat16"}
FLOAT = 1
INT64 = 7
MAX_TENSOR_RANK = MAX_ORDER   # dims of a graph initializer or tensor attribute: the .adt order limit (8)
_DTYPE_CODES: dict[np.dtype, int] = {dt: code for code, dt in DTYPES.items()}

# AttributeProto.AttributeType
A_FLOAT, A_INT, A_STRING, A_TENSOR, A_GRAPH, A_FLOATS, A_INTS, A_STRINGS = 1, 2, 3, 4, 5, 6, 7, 8

# wire types
VARINT, I64, LEN, I32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


def _err(path: str, message: str) -> AdtArchitectureError:
    return AdtArchitectureError(f"architecture: ONNX field {path}: {message}")


# -- parse limits -----------------------------------------------------------------------------------
# What parse_model will build is counted first (one pass over the wire fields, no objects: packed
# values are counted from their bytes), so a hostile architecture is refused before it costs memory
# or time. Real graphs are far inside: a 3,000-node chain of Conv/BatchNormalization/Relu with
# torch-export names and attributes (some 17x ResNet-50's node count) walks 55,024 wire fields and
# 10,000 attribute values, and the committed architectures under 100 fields each
# (tests/runtime/test_parse_caps.py).
MAX_ARCH_FIELDS = 1 << 20         # wire fields walked in all (every message, every level): ~1 s at worst
MAX_NODES = 65536                 # graph.node
MAX_NODE_INPUTS = 1024            # node.input (a Concat of many tensors stays far inside)
MAX_NODE_OUTPUTS = 1024           # node.output
MAX_NODE_ATTRIBUTES = 64          # node.attribute
MAX_ATTRIBUTE_VALUES = 65536      # ints / floats / strings of one attribute (pads, shapes: a handful)
MAX_TOTAL_ATTRIBUTE_VALUES = 1 << 20   # the same, over the whole graph
MAX_INITIALIZERS = 65536          # graph.initializer
MAX_GRAPH_VALUES = 65536          # graph.input and graph.output, each
MAX_STRING_BYTES = 4096           # one name, op_type, domain or string attribute value
MAX_TENSOR_BYTES = 64 << 20       # initializers and tensor attributes together, decoded (8 bytes per typed value)


@dataclass(frozen=True)
class ParseLimits:
    """The caps :func:`parse_model` checks before it builds anything (module constants of the same
    names, documented above); a caller with a legitimately larger graph passes raised ones."""

    max_fields: int = MAX_ARCH_FIELDS
    max_nodes: int = MAX_NODES
    max_node_inputs: int = MAX_NODE_INPUTS
    max_node_outputs: int = MAX_NODE_OUTPUTS
    max_node_attributes: int = MAX_NODE_ATTRIBUTES
    max_attribute_values: int = MAX_ATTRIBUTE_VALUES
    max_total_attribute_values: int = MAX_TOTAL_ATTRIBUTE_VALUES
    max_initializers: int = MAX_INITIALIZERS
    max_graph_values: int = MAX_GRAPH_VALUES
    max_string_bytes: int = MAX_STRING_BYTES
    max_tensor_bytes: int = MAX_TENSOR_BYTES


DEFAULT_PARSE_LIMITS = ParseLimits()


# -- wire format ------------------------------------------------------------------------------------
def _varint(buf: memoryview, pos: int, end: int, path: str) -> tuple[int, int]:
    if pos < end and buf[pos] < 0x80:  # fast path: most keys, lengths and attribute values
        return buf[pos], pos + 1
    result = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= end:
            raise _err(path, f"varint runs past the end of its message (byte {pos})")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if result >= 1 << 64:
                raise _err(path, "varint exceeds 64 bits")
            return result, pos
        shift += 7
    raise _err(path, f"varint longer than {_MAX_VARINT_BYTES} bytes")


def _signed(v: int, bits: int = 64) -> int:
    """Two's complement of a (sign-extended, 64-bit) varint; int32 fields are encoded sign-extended."""
    v &= (1 << 64) - 1
    v = v - (1 << 64) if v >= 1 << 63 else v
    if bits == 32 and not -(1 << 31) <= v < 1 << 31:
        raise ValueError(v)
    return v


# field names per message, only to name a malformed field in errors
_NAMES = {
    "model": {1: "ir_version", 2: "producer_name", 7: "graph", 8: "opset_import"},
    "graph": {1: "node", 2: "name", 5: "initializer", 11: "input", 12: "output"},
    "node": {1: "input", 2: "output", 3: "name", 4: "op_type", 5: "attribute", 7: "domain"},
    "attribute": {1: "name", 2: "f", 3: "i", 4: "s", 5: "t", 7: "floats", 8: "ints", 20: "type"},
    "tensor": {1: "dims", 2: "data_type", 4: "float_data", 5: "int32_data", 7: "int64_data", 8: "name",
               9: "raw_data", 10: "double_data", 11: "uint64_data"},
}


def _fields(buf: memoryview, path: str, kind: str = "") -> Iterator[tuple[int, int, object, str]]:
    """Yield ``(field number, wire type, value, path)`` of one message; LEN values are memoryviews,
    VARINT values ints, I32/I64 values raw bytes. Validates tags and lengths as it goes."""
    names = _NAMES.get(kind, {})
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, end, f"{path} (field key)")
        num, wt = key >> 3, key & 7
        if num == 0 or num >= 1 << 29:
            raise _err(path, f"invalid field number {num} at byte {pos}")
        where = f"{path}.{names[num]}" if num in names else f"{path} (field {num})"
        if wt == VARINT:
            val, pos = _varint(buf, pos, end, where)
        elif wt == LEN:
            n, pos = _varint(buf, pos, end, where)
            if n > end - pos:
                raise _err(where, f"length {n} runs past the end of its message ({end - pos} bytes left)")
            val, pos = buf[pos:pos + n], pos + n
        elif wt == I32 or wt == I64:
            n = 4 if wt == I32 else 8
            if n > end - pos:
                raise _err(where, f"needs {n} bytes, {end - pos} left")
            val, pos = bytes(buf[pos:pos + n]), pos + n
        else:
            raise _err(where, f"unsupported wire type {wt}")
        yield num, wt, val, where


def _expect(wt: int, want: int, where: str) -> None:
    if wt != want:
        names = {VARINT: "varint", I64: "64-bit", LEN: "length-delimited", I32: "32-bit"}
        raise _err(where, f"has wire type {names.get(wt, wt)}, expected {names[want]}")


def _text(val: object, wt: int, where: str) -> str:
    _expect(wt, LEN, where)
    try:
        return bytes(val).decode("utf-8")
    except UnicodeDecodeError:
        raise _err(where, "is not valid UTF-8") from None


def _int(val: object, wt: int, where: str, bits: int = 64) -> int:
    _expect(wt, VARINT, where)
    try:
        return _signed(val, bits)
    except ValueError:
        raise _err(where, f"value {val} does not fit in int{bits}") from None


def _packed_varints(val, wt: int, where: str, bits: int = 64) -> list[int]:
    """A repeated integer field, packed (LEN) or one element (VARINT)."""
    if wt == VARINT:
        return [_int(val, wt, where, bits)]
    _expect(wt, LEN, where)
    out, pos = [], 0
    while pos < len(val):
        v, pos = _varint(val, pos, len(val), where)
        try:
            out.append(_signed(v, bits))
        except ValueError:
            raise _err(where, f"value {v} does not fit in int{bits}") from None
    return out


def _packed_fixed(val, wt: int, where: str, dtype: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    if wt != LEN:  # one unpacked element
        _expect(wt, I32 if size == 4 else I64, where)
    if len(val) % size:
        raise _err(where, f"packed length {len(val)} is not a multiple of {size}")
    return np.frombuffer(bytes(val), dtype=dtype)


# -- messages ---------------------------------------------------------------------------------------
@dataclass
class Tensor:
    """A TensorProto: ``array`` is native-endian with shape ``dims``."""

    name: str
    dims: tuple[int, ...]
    data_type: int
    array: np.ndarray

    @classmethod
    def from_array(cls, array: np.ndarray, name: str = "") -> "Tensor":
        """A tensor of ``array`` (its dtype must be one of :data:`DTYPES`), like ``numpy_helper.from_array``."""
        arr = np.asarray(array)
        code = _DTYPE_CODES.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
        if code is None:
            raise AdtArchitectureError(f"cannot encode tensor {name!r} of dtype {arr.dtype}")
        return cls(name, tuple(int(d) for d in arr.shape), code, arr)


@dataclass
class Attribute:
    """An AttributeProto; ``type`` is one of the ``A_*`` constants."""

    name: str
    type: int
    value: object            # float | int | bytes | Tensor | list[float] | list[int] | list[bytes]


@dataclass
class Node:
    """A NodeProto; ``attrs`` keeps the file's order (the encoder writes them in that order)."""

    op_type: str
    name: str = ""
    domain: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attrs: dict[str, Attribute] = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.op_type} node {self.name!r}" if self.name else f"{self.op_type} node -> {self.outputs[:1]}"


@dataclass
class ValueInfo:
    """A graph input or output: a tensor type (elem_type, shape) or, when ``elem_type`` is None, none."""

    name: str
    elem_type: int | None = None
    shape: list[int | str | None] | None = None   # None: unknown rank; a dim: int, dim_param or None


@dataclass
class Graph:
    """A GraphProto: nodes in order, initializers, inputs and outputs."""

    nodes: list[Node] = field(default_factory=list)
    initializers: list[Tensor] = field(default_factory=list)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    name: str = ""


@dataclass
class OnnxModel:
    """A ModelProto (named so to tell it from :class:`adt.runtime.Model`, the loaded .adt model).
    ``opsets`` maps a domain (the default one as "ai.onnx") to its version."""

    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)
    graph: Graph | None = None
    producer_name: str | None = None   # None: the field is absent

    def opset(self, domain: str = "") -> int:
        return self.opsets.get("ai.onnx" if domain in ("", "ai.onnx") else domain, 0)

    def to_bytes(self) -> bytes:
        """The serialized ModelProto (:func:`encode_model`)."""
        return encode_model(self)


def parse_tensor(buf: memoryview, path: str) -> Tensor:
    name, dims, dt = "", [], 0
    raw = None
    typed: dict[int, list] = {}
    external = False
    for num, wt, val, where in _fields(buf, path, "tensor"):
        if num == 1:
            dims += _packed_varints(val, wt, f"{path}.dims")
        elif num == 2:
            dt = _int(val, wt, f"{path}.data_type", 32)
        elif num == 8:
            name = _text(val, wt, f"{path}.name")
        elif num == 9:
            _expect(wt, LEN, f"{path}.raw_data")
            raw = val
        elif num == 4:
            typed.setdefault(4, []).append(_packed_fixed(val, wt, f"{path}.float_data", "<f4"))
        elif num == 10:
            typed.setdefault(10, []).append(_packed_fixed(val, wt, f"{path}.double_data", "<f8"))
        elif num in (5, 7, 11):
            fname = {5: "int32_data", 7: "int64_data", 11: "uint64_data"}[num]
            vals = _packed_varints(val, wt, f"{path}.{fname}", 32 if num == 5 else 64)
            if num == 11:
                vals = [v & ((1 << 64) - 1) for v in vals]
            typed.setdefault(num, []).append(np.array(vals, dtype=np.uint64 if num == 11 else np.int64))
        elif num == 14:
            external = _int(val, wt, f"{path}.data_location", 32) == 1
        elif num == 6:
            raise _err(f"{path}.string_data", "string tensors are not supported")
    label = f"{path} ({name!r})" if name else path
    if external:
        raise _err(label, "external data is not supported (the tensor must be stored inline)")
    if dt not in DTYPES:
        raise _err(f"{label}.data_type", f"data type {dt} ({DTYPE_NAMES.get(dt, 'unknown')}) is not supported")
    # the rank first: numpy makes no array of more than 64 dims
    if len(dims) > MAX_TENSOR_RANK:
        raise _err(f"{label}.dims", f"has {len(dims)} dims, the limit is {MAX_TENSOR_RANK}")
    if any(d < 0 for d in dims):
        raise _err(f"{label}.dims", f"negative dimension in {dims}")
    dtype = DTYPES[dt]
    # The element count must be backed by bytes present in the buffer, so a lying dims field cannot
    # trigger a huge allocation: compare against the data before creating anything of that size.
    numel = 1
    for d in dims:
        numel *= d
    if raw is not None:
        if typed:
            raise _err(label, "has both raw_data and typed data fields")
        if numel * dtype.itemsize != len(raw):
            raise _err(f"{label}.raw_data", f"is {len(raw)} bytes, dims {dims} of {dtype.name} need {numel * dtype.itemsize}")
        arr = np.frombuffer(bytes(raw), dtype=dtype)
    else:
        field_for = {1: 4, 11: 10, 7: 7, 12: 11, 13: 11}.get(dt, 5)
        extra = set(typed) - {field_for}
        if extra:
            raise _err(label, f"holds data field {sorted(extra)} that does not fit data type {DTYPE_NAMES[dt]}")
        parts = typed.get(field_for, [])
        data = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if data.size != numel:
            raise _err(label, f"holds {data.size} values, dims {dims} need {numel}")
        if dt == 10:  # float16 travels as its bit pattern in int32_data
            arr = data.astype(np.uint16).view(np.float16)
        else:
            arr = data.astype(dtype)
    # numel matches the data; an empty tensor may still name dims numpy cannot make ([2**62, 4, 0])
    nominal = 1  # the element count with empty dims left out: what numpy checks a shape against
    for d in dims:
        nominal *= max(d, 1)
    if max(dims, default=0) > MAX_DIM or nominal > MAX_TENSOR_ELEMENTS:
        raise _err(f"{label}.dims", f"dims {dims} are out of range (each at most {MAX_DIM}, "
                                    f"{MAX_TENSOR_ELEMENTS} elements in all, empty dims aside)")
    return Tensor(name, tuple(dims), dt, arr.astype(dtype.newbyteorder("=")).reshape(dims))


def _parse_attribute(buf: memoryview, path: str) -> Attribute:
    name, typ = "", 0
    scalars: dict[int, object] = {}
    floats: list[float] = []
    ints: list[int] = []
    strings: list[bytes] = []
    for num, wt, val, where in _fields(buf, path, "attribute"):
        if num == 1:
            name = _text(val, wt, f"{path}.name")
        elif num == 20:
            typ = _int(val, wt, f"{path}.type", 32)
        elif num == 2:
            _expect(wt, I32, f"{path}.f")
            scalars[2] = struct.unpack("<f", val)[0]
        elif num == 3:
            scalars[3] = _int(val, wt, f"{path}.i")
        elif num == 4:
            _expect(wt, LEN, f"{path}.s")
            scalars[4] = bytes(val)
        elif num == 5:
            _expect(wt, LEN, f"{path}.t")
            scalars[5] = parse_tensor(val, f"{path}.t")
        elif num == 6:
            scalars[6] = None  # subgraphs are not parsed: no supported op takes one
        elif num == 7:
            floats += [float(v) for v in _packed_fixed(val, wt, f"{path}.floats", "<f4")]
        elif num == 8:
            ints += _packed_varints(val, wt, f"{path}.ints")
        elif num == 9:
            _expect(wt, LEN, f"{path}.strings")
            strings.append(bytes(val))
    label = f"{path} ({name!r})"
    if not name:
        raise _err(f"{path}.name", "attribute has no name")
    if typ == 0:  # very old files leave the type out: infer it from the field present
        typ = {2: A_FLOAT, 3: A_INT, 4: A_STRING, 5: A_TENSOR, 6: A_GRAPH}.get(next(iter(scalars), 0), 0)
        typ = typ or (A_FLOATS if floats else A_INTS if ints else A_STRINGS if strings else 0)
    value: object
    if typ == A_FLOAT:
        value = scalars.get(2, 0.0)
    elif typ == A_INT:
        value = scalars.get(3, 0)
    elif typ == A_STRING:
        value = scalars.get(4, b"")
    elif typ == A_TENSOR:
        if 5 not in scalars:
            raise _err(label, "TENSOR attribute without a tensor")
        value = scalars[5]
    elif typ == A_FLOATS:
        value = floats
    elif typ == A_INTS:
        value = ints
    elif typ == A_STRINGS:
        value = strings
    elif typ == A_GRAPH:
        value = None
    else:
        raise _err(f"{label}.type", f"attribute type {typ} is not supported")
    return Attribute(name, typ, value)


def _parse_node(buf: memoryview, path: str) -> Node:
    node = Node(op_type="")
    for num, wt, val, where in _fields(buf, path, "node"):
        if num == 1:
            node.inputs.append(_text(val, wt, f"{path}.input"))
        elif num == 2:
            node.outputs.append(_text(val, wt, f"{path}.output"))
        elif num == 3:
            node.name = _text(val, wt, f"{path}.name")
        elif num == 4:
            node.op_type = _text(val, wt, f"{path}.op_type")
        elif num == 7:
            node.domain = _text(val, wt, f"{path}.domain")
        elif num == 5:
            _expect(wt, LEN, f"{path}.attribute")
            a = _parse_attribute(val, f"{path}.attribute[{len(node.attrs)}]")
            if a.name in node.attrs:
                raise _err(f"{path}.attribute", f"duplicate attribute {a.name!r}")
            node.attrs[a.name] = a
    if not node.op_type:
        raise _err(f"{path}.op_type", "node has no op_type")
    return node


def _parse_value_info(buf: memoryview, path: str) -> ValueInfo:
    vi = ValueInfo(name="")
    for num, wt, val, _ in _fields(buf, path):
        if num == 1:
            vi.name = _text(val, wt, f"{path}.name")
        elif num == 2:
            _expect(wt, LEN, f"{path}.type")
            for tn, twt, tval, _ in _fields(val, f"{path}.type"):
                if tn != 1:  # sequence/map/optional types: left unknown
                    continue
                _expect(twt, LEN, f"{path}.type.tensor_type")
                for en, ewt, eval_, _ in _fields(tval, f"{path}.type.tensor_type"):
                    if en == 1:
                        vi.elem_type = _int(eval_, ewt, f"{path}.type.tensor_type.elem_type", 32)
                    elif en == 2:
                        _expect(ewt, LEN, f"{path}.type.tensor_type.shape")
                        vi.shape = []
                        for dn, dwt, dval, _ in _fields(eval_, f"{path}.type.tensor_type.shape"):
                            if dn != 1:
                                continue
                            dpath = f"{path}.type.tensor_type.shape.dim[{len(vi.shape)}]"
                            _expect(dwt, LEN, dpath)
                            dim: int | str | None = None
                            for xn, xwt, xval, _ in _fields(dval, dpath):
                                if xn == 1:
                                    dim = _int(xval, xwt, f"{dpath}.dim_value")
                                elif xn == 2:
                                    dim = _text(xval, xwt, f"{dpath}.dim_param")
                            vi.shape.append(dim)
    if not vi.name:
        raise _err(f"{path}.name", "value has no name")
    return vi


def _parse_graph(buf: memoryview, path: str) -> Graph:
    g = Graph()
    # repeated message fields: number -> (field name, the Graph list it fills, its parser)
    lists = {1: ("node", g.nodes, _parse_node), 5: ("initializer", g.initializers, parse_tensor),
             11: ("input", g.inputs, _parse_value_info), 12: ("output", g.outputs, _parse_value_info)}
    for num, wt, val, where in _fields(buf, path, "graph"):
        if num in lists:
            name, items, parse = lists[num]
            _expect(wt, LEN, f"{path}.{name}")
            items.append(parse(val, f"{path}.{name}[{len(items)}]"))
        elif num == 2:
            g.name = _text(val, wt, f"{path}.name")
        elif num == 15:
            raise _err(f"{path}.sparse_initializer", "sparse initializers are not supported")
    return g


# -- counting pass ----------------------------------------------------------------------------------
_STEP = 1 << 20


def _n_varints(val) -> int:
    """How many varints a packed field holds: its bytes below 0x80 (each ends one), counted by NumPy
    in 1 MiB steps (no copy of the field, no temporary larger than a step)."""
    raw = np.frombuffer(val, dtype=np.uint8)
    return sum(int(np.count_nonzero(raw[i:i + _STEP] < 0x80)) for i in range(0, len(raw), _STEP))


class _Counter:
    """Counts of one model against one :class:`ParseLimits`; raises on the first count over its cap."""

    def __init__(self, limits: ParseLimits):
        self.limits = limits
        self.fields = 0
        self.attribute_values = 0
        self.tensor_bytes = 0
        self.nodes = self.initializers = 0

    def over(self, where: str, what: str, count: int, limit: int, name: str) -> AdtArchitectureError:
        return _err(where, f"{what} {count} exceeds the parse limit {limit} ({name}); "
                           "a larger graph needs raised ParseLimits")

    def walk(self, buf, path: str, kind: str = ""):
        """:func:`_fields`, counting every field against ``max_fields``."""
        for item in _fields(buf, path, kind):
            self.fields += 1
            if self.fields > self.limits.max_fields:
                raise self.over(path, "wire field count reaches", self.fields, self.limits.max_fields, "MAX_ARCH_FIELDS")
            yield item

    def string(self, val, wt: int, where: str) -> None:
        if wt == LEN and len(val) > self.limits.max_string_bytes:
            raise self.over(where, "string of bytes:", len(val), self.limits.max_string_bytes, "MAX_STRING_BYTES")

    def tensor(self, buf, path: str) -> None:
        nbytes = dims = 0
        name = ""
        for num, wt, val, where in self.walk(buf, path, "tensor"):
            if num == 1:
                dims += _n_varints(val) if wt == LEN else 1
            elif num == 8:
                self.string(val, wt, where)
                name = bytes(val).decode("utf-8", "replace") if wt == LEN else ""
            elif wt == LEN and num in (4, 9, 10):      # float_data, raw_data, double_data: their bytes
                nbytes += len(val)
            elif num in (5, 7, 11):                    # int32/int64/uint64_data: 8 bytes each, decoded
                nbytes += 8 * (_n_varints(val) if wt == LEN else 1)
            elif num in (4, 10):                       # one unpacked float / double
                nbytes += len(val) if isinstance(val, bytes) else 8
        if dims > MAX_TENSOR_RANK:   # the message parse_tensor gives
            raise _err(f"{path} ({name!r}).dims" if name else f"{path}.dims",
                       f"has {dims} dims, the limit is {MAX_TENSOR_RANK}")
        self.tensor_bytes += nbytes
        if self.tensor_bytes > self.limits.max_tensor_bytes:
            raise self.over(path, "tensor bytes in all (initializers and tensor attributes):", self.tensor_bytes,
                            self.limits.max_tensor_bytes, "MAX_TENSOR_BYTES")

    def node(self, buf, path: str) -> None:
        lim = self.limits
        counts = {1: 0, 2: 0, 5: 0}
        caps = {1: ("inputs:", lim.max_node_inputs, "MAX_NODE_INPUTS"),
                2: ("outputs:", lim.max_node_outputs, "MAX_NODE_OUTPUTS"),
                5: ("attributes:", lim.max_node_attributes, "MAX_NODE_ATTRIBUTES")}
        for num, wt, val, where in self.walk(buf, path, "node"):
            if num in counts:
                counts[num] += 1
                what, cap, name = caps[num]
                if counts[num] > cap:
                    raise self.over(where, what, counts[num], cap, name)
            if num in (1, 2, 3, 4, 7):
                self.string(val, wt, where)
            elif num == 5 and wt == LEN:
                self.attribute(val, f"{path}.attribute[{counts[5] - 1}]")

    def attribute(self, buf, path: str) -> None:
        n = 0   # floats, ints and strings of this attribute (the parser keeps the ones its type names)
        for num, wt, val, where in self.walk(buf, path, "attribute"):
            if num in (1, 4, 9):
                self.string(val, wt, where)
            if num in (7, 8, 9):
                n += 1 if wt != LEN else len(val) // 4 if num == 7 else _n_varints(val) if num == 8 else 1
                if n > self.limits.max_attribute_values:
                    raise self.over(where, "values in one attribute:", n, self.limits.max_attribute_values,
                                    "MAX_ATTRIBUTE_VALUES")
            elif num == 5 and wt == LEN:
                self.tensor(val, f"{path}.t")
        self.attribute_values += n
        if self.attribute_values > self.limits.max_total_attribute_values:
            raise self.over(path, "attribute values in all:", self.attribute_values,
                            self.limits.max_total_attribute_values, "MAX_TOTAL_ATTRIBUTE_VALUES")

    def value_info(self, buf, path: str) -> None:
        # a graph input/output: name, type.tensor_type.{elem_type, shape.dim[].{dim_value, dim_param}};
        # every field walked counts against max_fields (the parser reads the same ones)
        for num, wt, val, where in self.walk(buf, path):
            if num == 1:
                self.string(val, wt, where)
            elif num == 2 and wt == LEN:
                for tn, twt, tval, _ in self.walk(val, f"{path}.type"):
                    if tn != 1 or twt != LEN:
                        continue
                    for en, ewt, eval_, _ in self.walk(tval, f"{path}.type.tensor_type"):
                        if en != 2 or ewt != LEN:
                            continue
                        for dn, dwt, dval, _ in self.walk(eval_, f"{path}.type.tensor_type.shape"):
                            if dn != 1 or dwt != LEN:
                                continue
                            for xn, xwt, xval, xwhere in self.walk(dval, f"{path}.type.tensor_type.shape.dim"):
                                if xn == 2:
                                    self.string(xval, xwt, xwhere)

    def graph(self, buf, path: str) -> None:
        lim = self.limits
        caps = {1: ("node", lim.max_nodes, "MAX_NODES"), 5: ("initializer", lim.max_initializers, "MAX_INITIALIZERS"),
                11: ("input", lim.max_graph_values, "MAX_GRAPH_VALUES"), 12: ("output", lim.max_graph_values, "MAX_GRAPH_VALUES")}
        counts = dict.fromkeys(caps, 0)
        # the graph's own fields first, counted only (a flood of nodes is refused after MAX_NODES of
        # them, before any node is opened), then each message in turn (those fields counted as they
        # are walked; the graph's own were counted in the first pass)
        for num, wt, val, where in self.walk(buf, path, "graph"):
            if num in caps:
                counts[num] += 1
                name, cap, cname = caps[num]
                if counts[num] > cap:
                    raise self.over(f"{path}.{name}", f"{name} count", counts[num], cap, cname)
            elif num == 2:
                self.string(val, wt, where)
        self.nodes, self.initializers = counts[1], counts[5]
        counts = dict.fromkeys(caps, 0)
        for num, wt, val, _ in _fields(buf, path, "graph"):
            if num not in caps or wt != LEN:
                continue
            where = f"{path}.{caps[num][0]}[{counts[num]}]"
            counts[num] += 1
            if num == 1:
                self.node(val, where)
            elif num == 5:
                self.tensor(val, where)
            else:
                self.value_info(val, where)


def count_model(data: bytes | memoryview, limits: ParseLimits = DEFAULT_PARSE_LIMITS) -> dict[str, int]:
    """Check serialized ModelProto bytes against ``limits`` without building anything: one pass over
    the wire fields (packed values counted from their bytes). Raises AdtArchitectureError naming the
    field, the count and the limit. :func:`parse_model` calls it first. Returns the totals
    (``fields``, ``nodes``, ``initializers``, ``attribute_values``, ``tensor_bytes``)."""
    buf = data if isinstance(data, memoryview) else memoryview(data)
    c = _Counter(limits)
    for num, wt, val, where in c.walk(buf, "model", "model"):
        if num == 7 and wt == LEN:
            c.graph(val, "model.graph")
        elif num == 2:
            c.string(val, wt, where)
        elif num == 8 and wt == LEN:
            for on, owt, oval, owhere in c.walk(val, "model.opset_import"):
                if on == 1:
                    c.string(oval, owt, owhere)
    return {"fields": c.fields, "nodes": c.nodes, "initializers": c.initializers,
            "attribute_values": c.attribute_values, "tensor_bytes": c.tensor_bytes}


def parse_model(data: bytes | memoryview, limits: ParseLimits = DEFAULT_PARSE_LIMITS) -> OnnxModel:
    """Parse serialized ``onnx.ModelProto`` bytes into :class:`OnnxModel`; raises AdtArchitectureError.
    The counts are checked first against ``limits`` (:func:`count_model`), before any object is made."""
    buf = memoryview(bytes(data))
    count_model(buf, limits)
    m = OnnxModel()
    graphs = 0
    for num, wt, val, where in _fields(buf, "model", "model"):
        if num == 1:
            m.ir_version = _int(val, wt, "model.ir_version")
        elif num == 2:
            m.producer_name = _text(val, wt, "model.producer_name")
        elif num == 8:
            _expect(wt, LEN, "model.opset_import")
            domain, version = "", 0
            for on, owt, oval, _ in _fields(val, "model.opset_import"):
                if on == 1:
                    domain = _text(oval, owt, "model.opset_import.domain")
                elif on == 2:
                    version = _int(oval, owt, "model.opset_import.version")
            m.opsets["ai.onnx" if domain == "" else domain] = version
        elif num == 7:
            _expect(wt, LEN, "model.graph")
            graphs += 1
            if graphs > 1:
                raise _err("model.graph", "appears more than once")
            m.graph = _parse_graph(val, "model.graph")
    if m.graph is None:
        raise _err("model.graph", "the model has no graph")
    return m


# -- writer ------------------------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


def encode_pb_varint(v: int) -> bytes:
    """A protobuf varint: a negative int64 as its 64-bit two's complement (10 bytes), like protobuf."""
    return encode_leb128(v & _MASK64)


def _key(num: int, wt: int) -> bytes:
    return encode_pb_varint(num << 3 | wt)


def _len_field(num: int, payload: bytes) -> bytes:
    return _key(num, LEN) + encode_pb_varint(len(payload)) + payload


def _int_field(num: int, v: int) -> bytes:
    return _key(num, VARINT) + encode_pb_varint(int(v))


def _str_field(num: int, text: str | bytes) -> bytes:
    return _len_field(num, text.encode("utf-8") if isinstance(text, str) else bytes(text))


EXTERNAL_LOCATION = b"adt-runtime-memory"


def _tensor_fields(name: str, dims, data_type: int, raw: bytes | None) -> bytes:
    """TensorProto fields in field order: dims (unpacked, as protobuf writes proto2), data_type,
    name (when set), then raw_data, or, for ``raw=None``, an EXTERNAL placeholder (see :func:`encode_tensor`)."""
    out = bytearray()
    for d in dims:
        out += _int_field(1, d)
    out += _int_field(2, data_type)
    if name:
        out += _str_field(8, name)
    if raw is None:
        out += _len_field(13, _str_field(1, "location") + _str_field(2, EXTERNAL_LOCATION))  # external_data
        out += _int_field(14, 1)                                                             # data_location
    else:
        out += _len_field(9, raw)
    return bytes(out)


def _raw(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_tensor(name: str, array: np.ndarray, external: bool = False) -> bytes:
    """A TensorProto (dims, data_type, name, raw_data little-endian) for a float32/int64 array.
    ``external``: no data, only a placeholder marked EXTERNAL whose values are handed to onnxruntime
    separately (``SessionOptions.add_external_initializers``); no such file is ever read."""
    arr = np.asarray(array)
    codes = {np.dtype("float32"): FLOAT, np.dtype("int64"): INT64}
    if arr.dtype not in codes:
        raise AdtArchitectureError(f"cannot encode tensor {name!r} of dtype {arr.dtype}")
    return _tensor_fields(name, arr.shape, codes[arr.dtype], None if external else _raw(arr))


def encode_tensor_proto(t: Tensor) -> bytes:
    """A :class:`Tensor` as TensorProto bytes, its values as raw_data (like ``numpy_helper.from_array``)."""
    if t.data_type not in DTYPES:
        raise AdtArchitectureError(f"cannot encode tensor {t.name!r} of data type {t.data_type}")
    arr = np.asarray(t.array, dtype=DTYPES[t.data_type])
    if tuple(arr.shape) != tuple(t.dims):
        raise AdtArchitectureError(f"tensor {t.name!r}: array shape {arr.shape} is not its dims {tuple(t.dims)}")
    return _tensor_fields(t.name, t.dims, t.data_type, _raw(arr))


def make_attribute(name: str, value: object) -> Attribute:
    """An :class:`Attribute` with its type inferred from ``value`` as ``onnx.helper.make_attribute``
    does: float, int, str/bytes, Tensor or ndarray, or a list of one of float, int, str/bytes."""
    def text(v):
        return v.encode("utf-8") if isinstance(v, str) else bytes(v)

    if isinstance(value, (float, np.floating)):
        return Attribute(name, A_FLOAT, float(value))
    if isinstance(value, (int, np.integer)):
        return Attribute(name, A_INT, int(value))
    if isinstance(value, (str, bytes)):
        return Attribute(name, A_STRING, text(value))
    if isinstance(value, np.ndarray):
        value = Tensor.from_array(value)
    if isinstance(value, Tensor):
        return Attribute(name, A_TENSOR, value)
    items = list(value)  # type: ignore[call-overload]
    if items and all(isinstance(v, (int, np.integer)) for v in items):
        return Attribute(name, A_INTS, [int(v) for v in items])
    if items and all(isinstance(v, (int, float, np.integer, np.floating)) for v in items):
        return Attribute(name, A_FLOATS, [float(v) for v in items])
    if items and all(isinstance(v, (str, bytes)) for v in items):
        return Attribute(name, A_STRINGS, [text(v) for v in items])
    raise AdtArchitectureError(f"attribute {name!r}: cannot infer an ONNX attribute type for {value!r}")


def make_node(op_type: str, inputs: list[str], outputs: list[str], name: str = "", domain: str = "",
              **attrs: object) -> Node:
    """A :class:`Node` like ``onnx.helper.make_node``: keyword attributes, sorted by name."""
    return Node(op_type, name, domain, list(inputs), list(outputs),
                {k: make_attribute(k, v) for k, v in sorted(attrs.items())})


def _encode_attribute(a: Attribute) -> bytes:
    out = bytearray(_str_field(1, a.name))
    if a.type == A_FLOAT:
        out += _key(2, I32) + struct.pack("<f", a.value)
    elif a.type == A_INT:
        out += _int_field(3, a.value)
    elif a.type == A_STRING:
        out += _str_field(4, a.value)
    elif a.type == A_TENSOR:
        out += _len_field(5, encode_tensor_proto(a.value))
    elif a.type == A_FLOATS:
        out += b"".join(_key(7, I32) + struct.pack("<f", v) for v in a.value)
    elif a.type == A_INTS:
        out += b"".join(_int_field(8, v) for v in a.value)
    elif a.type == A_STRINGS:
        out += b"".join(_str_field(9, v) for v in a.value)
    else:
        raise AdtArchitectureError(f"attribute {a.name!r}: type {a.type} cannot be encoded")
    return bytes(out + _int_field(20, a.type))


def _encode_node(n: Node) -> bytes:
    out = bytearray()
    out += b"".join(_str_field(1, i) for i in n.inputs)
    out += b"".join(_str_field(2, o) for o in n.outputs)
    if n.name:
        out += _str_field(3, n.name)
    out += _str_field(4, n.op_type)
    out += b"".join(_len_field(5, _encode_attribute(a)) for a in n.attrs.values())
    if n.domain:
        out += _str_field(7, n.domain)
    return bytes(out)


def _encode_value_info(v: ValueInfo) -> bytes:
    out = bytearray(_str_field(1, v.name))
    if v.elem_type is not None:
        tensor_type = _int_field(1, v.elem_type)
        if v.shape is not None:
            dims = b""
            for d in v.shape:
                dim = _int_field(1, d) if isinstance(d, int) else _str_field(2, d) if isinstance(d, str) else b""
                dims += _len_field(1, dim)
            tensor_type += _len_field(2, dims)
        out += _len_field(2, _len_field(1, tensor_type))
    return bytes(out)


def encode_graph(g: Graph) -> bytes:
    """A :class:`Graph` as GraphProto bytes (fields in field order: nodes, name, initializers, inputs, outputs)."""
    out = bytearray()
    out += b"".join(_len_field(1, _encode_node(n)) for n in g.nodes)
    if g.name:
        out += _str_field(2, g.name)
    out += b"".join(_len_field(5, encode_tensor_proto(t)) for t in g.initializers)
    out += b"".join(_len_field(11, _encode_value_info(v)) for v in g.inputs)
    out += b"".join(_len_field(12, _encode_value_info(v)) for v in g.outputs)
    return bytes(out)


def encode_model(m: OnnxModel) -> bytes:
    """An :class:`OnnxModel` as ModelProto bytes, the mirror of :func:`parse_model`:
    ``parse_model(encode_model(m)) == m`` for every model the parser returns (subgraph attributes aside)."""
    if m.graph is None:
        raise _err("model.graph", "the model has no graph")
    out = bytearray()
    if m.ir_version:
        out += _int_field(1, m.ir_version)
    if m.producer_name is not None:
        out += _str_field(2, m.producer_name)
    out += _len_field(7, encode_graph(m.graph))
    for domain, version in m.opsets.items():
        out += _len_field(8, _str_field(1, "" if domain == "ai.onnx" else domain) + _int_field(2, version))
    return bytes(out)


def add_initializers(model_bytes: bytes, tensors: Mapping[str, np.ndarray], external: bool = False) -> bytes:
    """``model_bytes`` with ``tensors`` appended to ``graph.initializer`` (wire-format concatenation:
    repeated fields may be appended to a message, so every other byte stays as it was).
    ``external``: placeholders only (see :func:`encode_tensor`)."""
    buf = memoryview(bytes(model_bytes))
    extra = b"".join(_len_field(5, encode_tensor(n, a, external)) for n, a in tensors.items())
    out = bytearray()
    found = False
    for num, wt, val, _ in _fields(buf, "model"):
        if num == 7 and wt == LEN:
            out += _len_field(7, bytes(val) + extra)
            found = True
        else:
            out += _enc_field(num, wt, val)
    if not found:
        raise _err("model.graph", "the model has no graph")
    return bytes(out)


def _enc_field(num: int, wt: int, val: object) -> bytes:
    """One field as :func:`_fields` yielded it, re-encoded unchanged."""
    key = _key(num, wt)
    if wt == VARINT:
        return key + encode_pb_varint(val)
    if wt == LEN:
        return key + encode_pb_varint(len(val)) + bytes(val)
    return key + bytes(val)
