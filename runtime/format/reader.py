"""Read and fully validate a .adt file. The functions below follow FORMAT.md's headings in order;
every byte is read through :func:`~adt.runtime.format.binary.read_exact` (via :class:`Cursor`), every
count is checked against a limit before anything is allocated, and every failure is an AdtError."""
from __future__ import annotations

import os
import stat
import struct
import sys
import zlib
from math import prod
from pathlib import Path

import numpy as np
from bitarray import bitarray

from . import limits as L
from .archdict import ONNX_DICT_V1
from .binary import Cursor, read_exact
from .container import (
    ARCH_ONNX_DEFLATE, ARCH_ONNX_DEFLATE_DICT1, CORE_CP, CORE_TUCKER, ENC_PLAIN, ENC_TUCKER, QUANT_EQ13, REQUIRED_SECTIONS,
    SECTION_ARCH, SECTION_CODES, SECTION_META, SECTION_NAMES, SECTION_PAYLOAD, SECTION_TENSORS,
    AdtFile, Core, CoreKind, Encoding, Param, QuantGroup, QuantMode, SectionInfo, SectionKind,
)
from .errors import (
    AdtArchitectureError, AdtChecksumError, AdtLimitError, AdtMagicError, AdtMetadataError,
    AdtPayloadError, AdtReadError, AdtSectionError, AdtTableError, AdtTruncatedError, AdtVersionError,
)
from .huffman import HuffmanCode, decode_table

__all__ = ["MAX_FILE_BYTES", "MIN_FILE_BYTES", "read_adt"]

MIN_FILE_BYTES = len(L.MAGIC) + 2 + 1 + 4   # magic, version, section count, CRC-32
MAX_FILE_BYTES = L.MAX_PAYLOAD_BYTES + L.MAX_SECTIONS * L.MAX_SECTION_BYTES
_MAX_BUFFER = sys.maxsize   # the largest bytes object this Python can make (2**31 - 1 on 32-bit)


def _load_bytes(source: bytes | bytearray | memoryview | str | os.PathLike) -> bytes:
    """The file's bytes. A path is read with exactly as much memory as the file holds: its size is
    checked (``fstat``) before anything is allocated, then that many bytes are read; a file that grows
    or shrinks meanwhile is refused, never read unbounded (FORMAT.md, "Reading a file")."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        st = path.stat()
    except OSError as exc:
        raise AdtReadError(f"cannot open {str(path)!r}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        # a device or pipe has no size to check first (/dev/zero would never end; opening a FIFO blocks)
        raise AdtReadError(f"cannot read {str(path)!r}: not a regular file")
    _check_size(path, st.st_size)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())      # the file actually opened (it may have been replaced)
            if not stat.S_ISREG(st.st_mode):
                raise AdtReadError(f"cannot read {str(path)!r}: not a regular file")
            size = st.st_size
            _check_size(path, size)
            try:
                data = fh.read(size)        # allocates exactly ``size`` bytes; loops until EOF or size
            except MemoryError:
                raise AdtReadError(f"cannot read {str(path)!r}: its {size} bytes do not fit in memory") from None
            if len(data) != size or fh.read(1):
                raise AdtReadError(
                    f"cannot read {str(path)!r}: it changed size while being read ({size} bytes when opened, "
                    f"{'fewer' if len(data) != size else 'more'} when read)"
                )
    except OSError as exc:
        raise AdtReadError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    return data


def _check_size(path: Path, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise AdtLimitError(f"{str(path)!r} is {size} bytes, larger than any valid .adt file ({MAX_FILE_BYTES})")
    if size > _MAX_BUFFER:
        # a 32-bit build cannot make a buffer this large; the read would raise OverflowError
        raise AdtLimitError(f"{str(path)!r} is {size} bytes, more than this platform can hold in one buffer ({_MAX_BUFFER})")


# -- Header ------------------------------------------------------------------------------------
def _read_header(buf: bytes) -> tuple[tuple[int, int], list[SectionInfo], int]:
    # Magic and version first (on whatever prefix exists), so that a short foreign file is reported
    # as "not a .adt file" and a short newer file as a version problem, not as truncated.
    head = buf[:4]
    if head != L.MAGIC[:len(head)]:
        raise AdtMagicError(f"magic is {bytes(head)!r}, expected {L.MAGIC!r}: not a .adt file")
    if len(buf) >= 5 and buf[4] != L.MAJOR_VERSION:
        raise AdtVersionError(f"file has major version {buf[4]}, this reader reads major version {L.MAJOR_VERSION}")
    if len(buf) < MIN_FILE_BYTES:
        raise AdtTruncatedError(f"file is {len(buf)} bytes, the smallest .adt file is {MIN_FILE_BYTES}")
    major, minor = read_exact(buf, 4, 2, "version")
    body_end = len(buf) - 4

    # -- Section table
    cur = Cursor(buf, 6, body_end, "section table")
    n = cur.varint("section count", limit=L.MAX_SECTIONS)
    entries = []
    for i in range(n):
        kind = cur.u8(f"section {i} kind")
        length = cur.varint(f"section {i} length")
        entries.append((kind, length))
    offset = cur.pos
    sections = []
    prev_kind = 0
    for i, (kind, length) in enumerate(entries):
        if kind >= 128:
            raise AdtSectionError(f"section {i}: kind {kind} is reserved (must be < 128)")
        if kind < 64 and kind not in SECTION_NAMES:
            raise AdtSectionError(f"section {i}: unknown required section kind {kind} (known: {sorted(map(int, SECTION_NAMES))})")
        if kind <= prev_kind:
            raise AdtSectionError(f"section {i}: kind {kind} after kind {prev_kind}; kinds must be strictly increasing")
        limit = L.MAX_PAYLOAD_BYTES if kind == SECTION_PAYLOAD else L.MAX_SECTION_BYTES
        if length > limit:
            raise AdtLimitError(f"section {i} ({SECTION_NAMES.get(kind, kind)}): length {length} exceeds {limit}")
        if offset + length > body_end:
            raise AdtTruncatedError(
                f"section {i} ({SECTION_NAMES.get(kind, kind)}): bytes {offset}..{offset + length} run past "
                f"the end of the body at {body_end}: the file is {len(buf)} bytes, its section table "
                f"declares at least {offset + length + 4}"
            )
        # a known kind as its SectionKind member; an optional extension kind (64..127) stays an int
        sections.append(SectionInfo(SectionKind(kind) if kind in SECTION_NAMES else kind, offset, length))
        offset += length
        prev_kind = kind
    if offset != body_end:
        raise AdtSectionError(
            f"sections end at byte {offset} but the checksum starts at {body_end}: "
            f"{body_end - offset} bytes belong to no section"
        )
    for kind in REQUIRED_SECTIONS:
        if not any(s.kind == kind for s in sections):
            raise AdtSectionError(f"required section {SECTION_NAMES[kind]!r} (kind {kind}) is missing")
    # The checksum comes after the structural checks so that a truncated file is reported as
    # truncated (its section table declares more bytes than it has), not as merely corrupted.
    stored = struct.unpack("<I", read_exact(buf, body_end, 4, "checksum"))[0]
    actual = zlib.crc32(memoryview(buf)[:body_end]) & 0xFFFFFFFF   # a view: no copy of the file
    if stored != actual:
        raise AdtChecksumError(f"CRC-32 is {stored:#010x}, the contents give {actual:#010x}: the file is corrupted")
    return (major, minor), sections, cur.pos


# -- Metadata ----------------------------------------------------------------------------------
def _read_metadata(cur: Cursor) -> dict[str, str]:
    n = cur.varint("entry count", limit=L.MAX_META_ENTRIES)
    meta: dict[str, str] = {}
    for i in range(n):
        key = cur.string(f"key {i}", L.MAX_META_KEY_BYTES, AdtMetadataError)
        value = cur.string(f"value of {key!r}", L.MAX_META_VALUE_BYTES, AdtMetadataError)
        if not key:
            raise AdtMetadataError(f"metadata: key {i} is empty")
        if key in meta:
            raise AdtMetadataError(f"metadata: duplicate key {key!r}")
        meta[key] = value
    cur.expect_end()
    return meta


# -- Architecture --------------------------------------------------------------------------------
def _read_architecture(cur: Cursor) -> bytes:
    fmt = cur.u8("format")
    if fmt not in (ARCH_ONNX_DEFLATE, ARCH_ONNX_DEFLATE_DICT1):
        raise AdtArchitectureError(
            f"architecture: format {fmt} is unknown (expected {ARCH_ONNX_DEFLATE}: ONNX, DEFLATE or "
            f"{ARCH_ONNX_DEFLATE_DICT1}: ONNX, DEFLATE with the ADT-ONNX-1 dictionary)"
        )
    size = cur.varint("uncompressed size", limit=L.MAX_ARCH_BYTES)
    comp = cur.bytes(cur.remaining(), "compressed graph")
    if size > L.MAX_DEFLATE_RATIO * len(comp):
        # No DEFLATE stream expands more than 1032:1, so this size is a lie; refusing it here keeps a
        # hostile file from making the reader allocate the declared size.
        raise AdtArchitectureError(
            f"architecture: uncompressed size {size} is impossible for {len(comp)} compressed bytes "
            f"(DEFLATE expands at most {L.MAX_DEFLATE_RATIO}:1)"
        )
    d = zlib.decompressobj(-15, zdict=ONNX_DICT_V1) if fmt == ARCH_ONNX_DEFLATE_DICT1 else zlib.decompressobj(-15)
    try:
        # max_length bounds the output: a lying size or a zip bomb cannot make us allocate more.
        raw = d.decompress(comp, size + 1)
    except zlib.error as exc:
        raise AdtArchitectureError(f"architecture: DEFLATE stream is corrupt ({exc})") from None
    if len(raw) != size or not d.eof or d.unused_data or d.unconsumed_tail:
        raise AdtArchitectureError(
            f"architecture: DEFLATE stream gives {len(raw)}{'+' if not d.eof else ''} bytes, header says {size}"
            + (" (data after the end of the stream)" if d.unused_data else "")
        )
    return raw


# -- Code tables -------------------------------------------------------------------------------
def _read_codes(cur: Cursor) -> list[HuffmanCode]:
    n = cur.varint("table count", limit=L.MAX_TABLES)
    codes = [HuffmanCode(decode_table(cur, f"code table {i}")) for i in range(n)]
    cur.expect_end()
    return codes


# -- Tensor table ------------------------------------------------------------------------------
def _ref(cur: Cursor, what: str, count: int, target: str) -> int:
    """An index into an earlier list (tables, groups, cores): out of range is an AdtTableError."""
    at = cur.pos
    v = cur.varint(what)
    if v >= count:
        raise AdtTableError(f"{cur.where}: {what} = {v} at offset {at}, but the file has only {count} {target}")
    return v


def _dims(cur: Cursor, n: int, what: str) -> tuple[int, ...]:
    return tuple(cur.varint(f"{what} dim {i}", limit=L.MAX_DIM, minimum=1) for i in range(n))


def _read_tensors(cur: Cursor, codes: list[HuffmanCode]) -> tuple[list[QuantGroup], list[Core], list[Param]]:
    groups = []
    for i in range(cur.varint("group count", limit=L.MAX_GROUPS)):
        mode = cur.u8(f"group {i} mode")
        if mode != QUANT_EQ13:
            raise AdtTableError(f"tensor table: group {i} has quantizer mode {mode}, expected {QUANT_EQ13} (Eq. 13)")
        q = cur.varint(f"group {i} Q", limit=L.MAX_Q, minimum=1)
        b = cur.f32(f"group {i} b")
        if not (np.isfinite(b) and b > 0):
            raise AdtTableError(f"tensor table: group {i} has bound b = {b}, expected a finite value > 0")
        table = _ref(cur, f"group {i} table", len(codes), "code tables")
        groups.append(QuantGroup(q, b, table, QuantMode(mode)))

    cores = []
    for i in range(cur.varint("core count", limit=L.MAX_CORES)):
        kind = cur.u8(f"core {i} kind")
        if kind not in (CORE_TUCKER, CORE_CP):
            raise AdtTableError(f"tensor table: core {i} has kind {kind}, expected {CORE_TUCKER} (Tucker) or {CORE_CP} (CP)")
        order = cur.varint(f"core {i} order", limit=L.MAX_ORDER, minimum=1)
        if kind == CORE_TUCKER:
            dims = _dims(cur, order, f"core {i}")
        else:
            dims = (cur.varint(f"core {i} rank", limit=L.MAX_DIM, minimum=1),) * order
        group = _ref(cur, f"core {i} group", len(groups), "groups")
        core = Core(CoreKind(kind), dims, group, np.zeros(0, np.uint16))
        if core.stored_count > L.MAX_TENSOR_ELEMENTS:
            raise AdtLimitError(f"tensor table: core {i} has {core.stored_count} values, limit {L.MAX_TENSOR_ELEMENTS}")
        cores.append(core)

    params = []
    names: set[str] = set()
    total = 0
    for i in range(cur.varint("parameter count", limit=L.MAX_PARAMS)):
        name = cur.string(f"parameter {i} name", L.MAX_NAME_BYTES)
        if not name or name in names:
            raise AdtTableError(f"tensor table: parameter {i} name {name!r} is {'empty' if not name else 'a duplicate'}")
        names.add(name)
        ndim = cur.varint(f"parameter {name!r} ndim", limit=L.MAX_ORDER)
        shape = _dims(cur, ndim, f"parameter {name!r}")
        numel = prod(shape)
        total += numel
        if numel > L.MAX_TENSOR_ELEMENTS or total > L.MAX_TOTAL_ELEMENTS:
            raise AdtLimitError(
                f"tensor table: parameter {name!r} shape {shape} ({numel} elements, {total} in all) exceeds "
                f"{L.MAX_TENSOR_ELEMENTS} per tensor / {L.MAX_TOTAL_ELEMENTS} in all"
            )
        enc = cur.u8(f"parameter {name!r} encoding")
        if enc not in (ENC_PLAIN, ENC_TUCKER):
            raise AdtTableError(f"tensor table: parameter {name!r} has encoding {enc}, expected {ENC_PLAIN} (plain) or {ENC_TUCKER} (Tucker)")
        group = _ref(cur, f"parameter {name!r} group", len(groups), "groups")
        if enc == ENC_PLAIN:
            params.append(Param(name, shape, Encoding(enc), group))
        else:
            ci = _ref(cur, f"parameter {name!r} core", len(cores), "cores")
            reshape = _dims(cur, cores[ci].order, f"parameter {name!r} reshape")
            if prod(reshape) != numel:
                raise AdtTableError(
                    f"tensor table: parameter {name!r} reshape {reshape} has {prod(reshape)} elements, shape {shape} has {numel}"
                )
            factors = [np.zeros((n, 0), np.uint16) for n in reshape]  # placeholders until the payload
            p = Param(name, shape, Encoding(enc), group, core=ci, factors=factors)
            params.append(p)
    cur.expect_end()
    return groups, cores, params


# -- Payload -----------------------------------------------------------------------------------
def _read_payload(cur: Cursor, codes, groups, cores, params) -> int:
    # (what, group, count, kind of slot, where to put it) in payload order
    plan = []
    for i, c in enumerate(cores):
        plan.append((f"core {i}", c.group, c.stored_count, c, None))
    for p in params:
        if p.encoding == ENC_PLAIN:
            plan.append((f"parameter {p.name!r}", p.group, p.numel, p, None))
        else:
            for j, f in enumerate(p.factors):
                k = cores[p.core].dims[j]
                plan.append((f"parameter {p.name!r} factor {j}", p.group, f.shape[0] * k, p, j))
    nbytes = cur.remaining()
    total = sum(n for _, _, n, _, _ in plan)
    if total > 8 * nbytes:
        raise AdtPayloadError(
            f"payload: {total} coded values need at least {total} bits, the payload has only {8 * nbytes}"
        )
    bits = bitarray(endian="big")
    view = cur.view(nbytes, "bitstream")
    try:
        bits.frombytes(view)                # one copy of the payload, not two
    except TypeError:                       # a bitarray whose frombytes takes bytes only
        bits.frombytes(bytes(view))
    del view
    pos = 0
    for what, g, n, slot, j in plan:
        code = codes[groups[g].table]
        sym, end = code.decode(bits, pos, n, f"payload: {what}")
        if end > len(bits):
            raise AdtPayloadError(f"payload: {what} ends at bit {end}, past the end of the payload ({len(bits)} bits)")
        if n and int(sym.max()) >= groups[g].q:
            raise AdtPayloadError(f"payload: {what} holds symbol {int(sym.max())}, but its group {g} has only Q = {groups[g].q} levels")
        if isinstance(slot, Core):
            slot.symbols = sym.reshape(slot.dims) if slot.kind == CORE_TUCKER else sym
            slot.bits = end - pos
        elif j is None:
            slot.symbols = sym.reshape(slot.shape)
            slot.bits = end - pos
        else:
            k = cores[slot.core].dims[j]
            slot.factors[j] = sym.reshape(-1, k)
            slot.bits += end - pos
        pos = end
    if (pos + 7) // 8 != nbytes:
        raise AdtPayloadError(f"payload: codes end at bit {pos}, so the payload must be {(pos + 7) // 8} bytes, it is {nbytes}")
    if bits[pos:].any():
        raise AdtPayloadError(f"payload: the {len(bits) - pos} padding bits after the last code are not zero")
    return pos


# -- Whole file --------------------------------------------------------------------------------
def read_adt(source: bytes | bytearray | memoryview | str | os.PathLike) -> AdtFile:
    """Parse, validate and decode a .adt file (a path or its bytes). Raises an :class:`AdtError`
    subclass naming the first problem."""
    buf = _load_bytes(source)
    version, sections, header_end = _read_header(buf)
    by_kind = {s.kind: s for s in sections}

    def cursor(kind: int) -> Cursor:
        s = by_kind[kind]
        return Cursor(buf, s.offset, s.offset + s.length, SECTION_NAMES[kind])

    meta = _read_metadata(cursor(SECTION_META)) if SECTION_META in by_kind else {}
    arch = None
    if SECTION_ARCH in by_kind:
        c = cursor(SECTION_ARCH)
        arch = _read_architecture(c)
    codes = _read_codes(cursor(SECTION_CODES))
    groups, cores, params = _read_tensors(cursor(SECTION_TENSORS), codes)
    nbits = _read_payload(cursor(SECTION_PAYLOAD), codes, groups, cores, params)
    return AdtFile(
        version=version, metadata=meta, architecture=arch, tables=codes, groups=groups, cores=cores,
        params=params, sections=sections, file_size=len(buf), header_bytes=header_end, payload_bits=nbits,
    )
