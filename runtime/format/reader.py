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
    ARCH_ONNX_DEFLATE, ARCH_ONNX_DEFLATE_DICT1, CORE_CP, CORE_TUCKER, ENC_PLAIN, ENC_TT, ENC_TUCKER, QUANT_EQ13,
    REQUIRED_SECTIONS,
    SECTION_ARCH, SECTION_CODES, SECTION_META, SECTION_NAMES, SECTION_PAYLOAD, SECTION_TENSORS,
    AdtFile, Core, CoreKind, Param, QuantGroup, QuantMode, SectionInfo, SectionKind,
)
from .errors import (
    AdtArchitectureError, AdtChecksumError, AdtLimitError, AdtMagicError, AdtMetadataError,
    AdtPayloadError, AdtReadError, AdtSectionError, AdtTableError, AdtTruncatedError, AdtVersionError,
)
from .huffman import HuffmanCode, read_code

__all__ = ["MAX_FILE_BYTES", "MIN_FILE_BYTES", "read_adt"]

MIN_FILE_BYTES = len(L.MAGIC) + 2 + 1 + 4   # magic, version, section count, CRC-32
MAX_FILE_BYTES = L.MAX_PAYLOAD_BYTES + L.MAX_SECTIONS * L.MAX_SECTION_BYTES
_MAX_BUFFER = sys.maxsize   # the largest bytes object this Python can make (2**31 - 1 on 32-bit)
# The longest bitarray this build can index: bitarray counts bits in a Py_ssize_t, so a 32-bit build
# holds at most 2**31 - 1 bits (a 256 MiB payload); a longer payload is refused before it is copied.
_MAX_BITS = sys.maxsize


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
    if len(buf) >= 5 and buf[4] not in L.READ_MAJORS:
        raise AdtVersionError(
            f"file has major version {buf[4]}, this reader reads major versions "
            f"{' and '.join(map(str, L.READ_MAJORS))}")
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
_INFLATE_STEP = 1 << 20   # bytes of architecture inflated per zlib call


def _read_architecture(cur: Cursor, max_bytes: int = L.MAX_ARCH_BYTES) -> bytes:
    """The inflated ONNX bytes. The inflation is bounded before it starts: the declared size must be
    at most ``max_bytes`` (the format's MAX_ARCH_BYTES unless a caller lowers it) and possible for the
    compressed length (DEFLATE expands at most 1032:1); then zlib runs in steps of _INFLATE_STEP
    output bytes (``max_length``) and stops at the first byte past the declared size, so neither a
    lying size nor a zip bomb makes the reader hold more than the declared size plus one step."""
    fmt = cur.u8("format")
    if fmt not in (ARCH_ONNX_DEFLATE, ARCH_ONNX_DEFLATE_DICT1):
        raise AdtArchitectureError(
            f"architecture: format {fmt} is unknown (expected {ARCH_ONNX_DEFLATE}: ONNX, DEFLATE or "
            f"{ARCH_ONNX_DEFLATE_DICT1}: ONNX, DEFLATE with the ADT-ONNX-1 dictionary)"
        )
    size = cur.varint("uncompressed size", limit=L.MAX_ARCH_BYTES)
    if size > max_bytes:
        raise AdtArchitectureError(
            f"architecture: uncompressed size {size} exceeds the limit max_architecture_bytes={max_bytes}")
    comp = cur.bytes(cur.remaining(), "compressed graph")
    if size > L.MAX_DEFLATE_RATIO * len(comp):
        # No DEFLATE stream expands more than 1032:1, so this size is a lie; refusing it here keeps a
        # hostile file from making the reader allocate the declared size.
        raise AdtArchitectureError(
            f"architecture: uncompressed size {size} is impossible for {len(comp)} compressed bytes "
            f"(DEFLATE expands at most {L.MAX_DEFLATE_RATIO}:1)"
        )
    d = zlib.decompressobj(-15, zdict=ONNX_DICT_V1) if fmt == ARCH_ONNX_DEFLATE_DICT1 else zlib.decompressobj(-15)
    out = bytearray()
    tail = comp
    try:
        while not d.eof and len(out) <= size:
            # max_length bounds each step's output; at most size + 1 bytes in all
            chunk = d.decompress(tail, min(_INFLATE_STEP, size + 1 - len(out)))
            tail = d.unconsumed_tail
            if not chunk and not tail:      # input used up, stream not finished: truncated
                break
            out += chunk
    except zlib.error as exc:
        raise AdtArchitectureError(f"architecture: DEFLATE stream is corrupt ({exc})") from None
    del comp, tail
    if len(out) != size or not d.eof or d.unused_data or d.unconsumed_tail:
        raise AdtArchitectureError(
            f"architecture: DEFLATE stream gives {len(out)}{'+' if not d.eof else ''} bytes, header says {size}"
            + (" (data after the end of the stream)" if d.unused_data else "")
        )
    return bytes(out)


# -- Code tables -------------------------------------------------------------------------------
def _read_codes(cur: Cursor) -> list[HuffmanCode]:
    n = cur.varint("table count", limit=L.MAX_TABLES)
    codes = [read_code(cur, f"code table {i}") for i in range(n)]
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


# Fast paths for the tensor table, which has one entry per parameter (up to 65,535): a field that is
# a one-byte varint in range is taken directly; anything else (longer, out of range, truncated) is
# read again by the Cursor, which names the field in its error exactly as before.
def _small(cur: Cursor, limit: int) -> int | None:
    """A minimal one- or two-byte varint in ``0..limit`` at the cursor (consumed), or None (nothing consumed)."""
    pos = cur.pos
    if pos < cur.end:
        v = cur.buf[pos]
        if v < 0x80:
            if v <= limit:
                cur.pos = pos + 1
                return v
        elif pos + 1 < cur.end and 0 < cur.buf[pos + 1] < 0x80:
            v = (v & 0x7F) | cur.buf[pos + 1] << 7
            if v <= limit:
                cur.pos = pos + 2
                return v
    return None


def _name(cur: Cursor) -> str | None:
    """A parameter name of fewer than 128 UTF-8 bytes (consumed), or None (nothing consumed)."""
    pos = cur.pos
    if pos < cur.end:
        n = cur.buf[pos]
        if n < 0x80 and n <= L.MAX_NAME_BYTES and pos + 1 + n <= cur.end:
            try:
                name = bytes(cur.buf[pos + 1:pos + 1 + n]).decode("utf-8")
            except UnicodeDecodeError:
                return None
            cur.pos = pos + 1 + n
            return name
    return None


def _dims(cur: Cursor, n: int, what: str) -> tuple[int, ...]:
    pos = cur.pos
    if pos + n <= cur.end:       # fast path: every dim a one-byte varint in 1..127 (checked as the slow path would)
        raw = cur.buf[pos:pos + n]
        if not n or (min(raw) >= 1 and max(raw) < 0x80):
            cur.pos = pos + n
            return tuple(raw)
    out = []
    for i in range(n):            # dims of two bytes (128..16383: 500, 800, ...) still without the Cursor
        v = _small(cur, L.MAX_DIM)
        if not v:                 # None: longer or malformed; 0: invalid. The Cursor names the error
            if v == 0:
                cur.pos -= 1
            v = cur.varint(f"{what} dim {i}", limit=L.MAX_DIM, minimum=1)
        out.append(v)
    return tuple(out)


def _read_tt(cur: Cursor, name: str, shape: tuple[int, ...], numel: int) -> list[np.ndarray]:
    """A TT parameter's fields after its group (FORMAT.md §7.3, encoding 2): order, reshape, ranks.
    Returns placeholders of the cores' shapes ``(r_{k-1}, n_k, r_k)`` that hold no memory (zero
    strides) until the payload fills them, so a hostile rank costs nothing before the payload check."""
    what = f"parameter {name!r}"
    d = cur.varint(f"{what} TT order", limit=L.MAX_ORDER, minimum=1)
    reshape = _dims(cur, d, f"{what} TT reshape")
    if prod(reshape) != numel:
        raise AdtTableError(
            f"tensor table: {what} TT reshape {reshape} has {prod(reshape)} elements, shape {shape} has {numel}")
    inner = tuple(cur.varint(f"{what} TT rank {k}", limit=L.MAX_DIM, minimum=1) for k in range(1, d))
    ranks = (1,) + inner + (1,)
    sizes = [ranks[k] * reshape[k] * ranks[k + 1] for k in range(d)]
    for k, n in enumerate(sizes):
        if n > L.MAX_TENSOR_ELEMENTS:
            raise AdtLimitError(
                f"tensor table: {what} TT core {k} ({ranks[k]}, {reshape[k]}, {ranks[k + 1]}) has {n} values, "
                f"limit {L.MAX_TENSOR_ELEMENTS}")
    if sum(sizes) > L.MAX_TENSOR_ELEMENTS:
        raise AdtLimitError(
            f"tensor table: {what} TT cores with ranks {inner} have {sum(sizes)} values in all, limit {L.MAX_TENSOR_ELEMENTS}")
    empty = np.zeros((), np.uint16)
    return [np.broadcast_to(empty, (ranks[k], reshape[k], ranks[k + 1])) for k in range(d)]


def _read_tensors(cur: Cursor, codes: list[HuffmanCode],
                  major: int = L.MAJOR_VERSION) -> tuple[list[QuantGroup], list[Core], list[Param]]:
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
    placeholder: dict[int, np.ndarray] = {}
    for i in range(cur.varint("parameter count", limit=L.MAX_PARAMS)):
        name = _name(cur)
        if name is None:
            name = cur.string(f"parameter {i} name", L.MAX_NAME_BYTES)
        if not name or name in names:
            raise AdtTableError(f"tensor table: parameter {i} name {name!r} is {'empty' if not name else 'a duplicate'}")
        names.add(name)
        ndim = _small(cur, L.MAX_ORDER)
        if ndim is None:
            ndim = cur.varint(f"parameter {name!r} ndim", limit=L.MAX_ORDER)
        shape = _dims(cur, ndim, f"parameter {name!r}")
        numel = prod(shape)
        total += numel
        if numel > L.MAX_TENSOR_ELEMENTS or total > L.MAX_TOTAL_ELEMENTS:
            raise AdtLimitError(
                f"tensor table: parameter {name!r} shape {shape} ({numel} elements, {total} in all) exceeds "
                f"{L.MAX_TENSOR_ELEMENTS} per tensor / {L.MAX_TOTAL_ELEMENTS} in all"
            )
        enc = _small(cur, ENC_TT)
        if enc is None:
            enc = cur.u8(f"parameter {name!r} encoding")
        if enc not in (ENC_PLAIN, ENC_TUCKER, ENC_TT):
            raise AdtTableError(
                f"tensor table: parameter {name!r} has encoding {enc}, expected {ENC_PLAIN} (plain), "
                f"{ENC_TUCKER} (Tucker) or {ENC_TT} (tensor train)")
        if enc == ENC_TT and major < L.TT_MIN_MAJOR:
            # a 1.x reader would reject encoding 2, so a 1.x file cannot hold it (FORMAT.md §13)
            raise AdtTableError(
                f"tensor table: parameter {name!r} has encoding {ENC_TT} (tensor train), which needs version "
                f"{L.TT_MIN_MAJOR}.0; the file is version {major}.x")
        group = _small(cur, len(groups) - 1)
        if group is None:
            group = _ref(cur, f"parameter {name!r} group", len(groups), "groups")
        if enc == ENC_PLAIN:
            params.append(Param(name, shape, ENC_PLAIN, group))
        elif enc == ENC_TT:
            params.append(Param(name, shape, ENC_TT, group, factors=_read_tt(cur, name, shape, numel)))
        else:
            ci = _small(cur, len(cores) - 1)
            if ci is None:
                ci = _ref(cur, f"parameter {name!r} core", len(cores), "cores")
            reshape = _dims(cur, cores[ci].order, f"parameter {name!r} reshape")
            if prod(reshape) != numel:
                raise AdtTableError(
                    f"tensor table: parameter {name!r} reshape {reshape} has {prod(reshape)} elements, shape {shape} has {numel}"
                )
            factors = [placeholder.get(n) if n in placeholder else placeholder.setdefault(n, np.zeros((n, 0), np.uint16))
                       for n in reshape]  # placeholders (shared, empty) until the payload
            p = Param(name, shape, ENC_TUCKER, group, core=ci, factors=factors)
            params.append(p)
    cur.expect_end()
    return groups, cores, params


# -- Payload -----------------------------------------------------------------------------------
def _read_payload(cur: Cursor, codes, groups, cores, params) -> int:
    # (core index or None, group, count, slot, factor index or None) in payload order; the stream's
    # name for errors is made only when one is raised (_what)
    plan = []
    for i, c in enumerate(cores):
        plan.append((i, c.group, c.stored_count, c, None))
    for p in params:
        if p.encoding == ENC_PLAIN:
            plan.append((None, p.group, p.numel, p, None))
        elif p.encoding == ENC_TT:
            for j, f in enumerate(p.factors):
                plan.append((None, p.group, f.size, p, j))
        else:
            dims = cores[p.core].dims
            for j, f in enumerate(p.factors):
                plan.append((None, p.group, f.shape[0] * dims[j], p, j))
    nbytes = cur.remaining()
    if 8 * nbytes > _MAX_BITS:
        raise AdtLimitError(
            f"payload: {nbytes} bytes are {8 * nbytes} bits, more than this platform's bitarray can index "
            f"({_MAX_BITS} bits, a {8 * struct.calcsize('P')}-bit build); read the file on a 64-bit machine"
        )
    total = sum(n for _, _, n, _, _ in plan)
    if total > 8 * nbytes:
        # name the first stream that cannot fit (a TT parameter's ranks can ask for far more values than
        # its shape has): only on this error path, so a valid file pays nothing for it
        upto = 0
        for item in plan:
            upto += item[2]
            if upto > 8 * nbytes:
                break
        raise AdtPayloadError(
            f"payload: {total} coded values need at least {total} bits, the payload has only {8 * nbytes} "
            f"({_what(item)} ends at value {upto})"
        )
    view = cur.view(nbytes, "bitstream")
    try:
        # the file's own bytes, read in place (a read-only import of the buffer, bitarray >= 2.3): no
        # copy of the payload, which is most of the file
        bits = bitarray(buffer=view, endian="big")
    except (TypeError, ValueError, BufferError):
        bits = bitarray(endian="big")
        try:
            bits.frombytes(view)            # one copy of the payload, not two
        except TypeError:                   # a bitarray whose frombytes takes bytes only
            bits.frombytes(bytes(view))
    del view
    # Consecutive streams of one group (a parameter's factors, a run of parameters) are decoded by
    # one call: the per-stream cost of a decode (a bitarray slice, a C decoder, numpy arrays) would
    # otherwise dominate a file of many small parameters. A run that fails in any way is decoded
    # again stream by stream, which names the stream at fault exactly as before.
    pos = 0
    i = 0
    while i < len(plan):
        j = i + 1
        g = plan[i][1]
        count = plan[i][2]
        while j < len(plan) and plan[j][1] == g and count + plan[j][2] <= _RUN_SYMBOLS:
            count += plan[j][2]
            j += 1
        run = _decode_run(bits, pos, codes[groups[g].table], groups[g].q, [n for _, _, n, _, _ in plan[i:j]])
        if run is None:   # some stream of the run is bad: find it (and raise) one stream at a time
            for k in range(i, j):
                pos = _decode_one(bits, pos, codes, groups, cores, plan[k])
        else:
            for (_, _, _, slot, jf), (sym, nb) in zip(plan[i:j], run):
                _store(slot, jf, sym, nb, cores)
                pos += nb
        i = j
    if (pos + 7) // 8 != nbytes:
        raise AdtPayloadError(f"payload: codes end at bit {pos}, so the payload must be {(pos + 7) // 8} bytes, it is {nbytes}")
    if bits[pos:].any():
        raise AdtPayloadError(f"payload: the {len(bits) - pos} padding bits after the last code are not zero")
    return pos


_RUN_SYMBOLS = 1 << 18   # symbols decoded by one call at most (bounds the run's int64 temporaries: 2 MiB each)


def _decode_run(bits: bitarray, pos: int, code: HuffmanCode, q: int, counts: list[int]):
    """Decode consecutive streams of one group from bit ``pos``: a list of (symbols, bits) per stream,
    or None when anything is wrong (a bad code, too few bits, a symbol >= Q)."""
    total = sum(counts)
    if total == 0:
        return [(np.zeros(0, np.uint16), 0) for _ in counts]
    try:
        sym = code.decode_symbols(bits, pos, total, "payload")
    except AdtPayloadError:
        return None
    if int(sym.max()) >= q:
        return None
    if len(counts) == 1:
        # one stream, possibly far longer than _RUN_SYMBOLS (a plain 3x3x512x512 conv: 2.4M symbols):
        # its bits counted in chunks, never an int64 array of its size (two would be 38 MB)
        nbits = code.bit_count(sym)
        return [(sym, nbits)] if pos + nbits <= len(bits) else None
    # bits per stream: the cumulated code lengths at the stream boundaries (one pass for the run;
    # several streams are joined only up to _RUN_SYMBOLS, so at most that many int64 temporaries)
    cum = np.cumsum(code.lengths.astype(np.int64)[sym])
    if pos + int(cum[-1]) > len(bits):
        return None
    bounds = np.cumsum(np.asarray(counts, dtype=np.int64))
    ends = [0] + [int(cum[b - 1]) if b else 0 for b in bounds.tolist()]
    out, at = [], 0
    for k, n in enumerate(counts):
        out.append((sym[at:at + n], ends[k + 1] - ends[k]))
        at += n
    return out


def _what(item) -> str:
    ci, _, _, slot, j = item
    if ci is not None:
        return f"core {ci}"
    if j is None:
        return f"parameter {slot.name!r}"
    return f"parameter {slot.name!r} " + (f"TT core {j}" if slot.encoding == ENC_TT else f"factor {j}")


def _decode_one(bits: bitarray, pos: int, codes, groups, cores, item) -> int:
    _, g, n, slot, j = item
    what = _what(item)
    code = codes[groups[g].table]
    sym, end = code.decode(bits, pos, n, f"payload: {what}")
    if end > len(bits):
        raise AdtPayloadError(f"payload: {what} ends at bit {end}, past the end of the payload ({len(bits)} bits)")
    if n and int(sym.max()) >= groups[g].q:
        raise AdtPayloadError(f"payload: {what} holds symbol {int(sym.max())}, but its group {g} has only Q = {groups[g].q} levels")
    _store(slot, j, sym, end - pos, cores)
    return end


def _store(slot, j, sym: np.ndarray, nbits: int, cores) -> None:
    if isinstance(slot, Core):
        slot.symbols = sym.reshape(slot.dims) if slot.kind == CORE_TUCKER else sym
        slot.bits = nbits
    elif j is None:
        slot.symbols = sym.reshape(slot.shape)
        slot.bits = nbits
    elif slot.encoding == ENC_TT:
        slot.factors[j] = sym.reshape(slot.factors[j].shape)   # the placeholder's (r_{k-1}, n_k, r_k)
        slot.bits += nbits
    else:
        slot.factors[j] = sym.reshape(-1, cores[slot.core].dims[j])
        slot.bits += nbits


# -- Whole file --------------------------------------------------------------------------------
def read_adt(source: bytes | bytearray | memoryview | str | os.PathLike, *,
             max_architecture_bytes: int = L.MAX_ARCH_BYTES) -> AdtFile:
    """Parse, validate and decode a .adt file (a path or its bytes). Raises an :class:`AdtError`
    subclass naming the first problem. ``max_architecture_bytes``: the largest inflated architecture
    accepted (default the format's limit, MAX_ARCH_BYTES = 64 MiB), checked before inflating."""
    buf = _load_bytes(source)
    try:
        return _read_buffer(buf, max_architecture_bytes)
    except MemoryError:
        # every count was checked against the format's limits first; what is left is a machine with less
        # memory than the file needs (a 512 MiB board, a 32-bit address space)
        raise AdtLimitError(
            f"the decoded contents of this {len(buf)}-byte file do not fit in this machine's memory"
        ) from None


def _read_buffer(buf: bytes, max_architecture_bytes: int) -> AdtFile:
    version, sections, header_end = _read_header(buf)
    by_kind = {s.kind: s for s in sections}

    def cursor(kind: int) -> Cursor:
        s = by_kind[kind]
        return Cursor(buf, s.offset, s.offset + s.length, SECTION_NAMES[kind])

    meta = _read_metadata(cursor(SECTION_META)) if SECTION_META in by_kind else {}
    arch = None
    if SECTION_ARCH in by_kind:
        c = cursor(SECTION_ARCH)
        arch = _read_architecture(c, max_architecture_bytes)
    codes = _read_codes(cursor(SECTION_CODES))
    groups, cores, params = _read_tensors(cursor(SECTION_TENSORS), codes, version[0])
    nbits = _read_payload(cursor(SECTION_PAYLOAD), codes, groups, cores, params)
    return AdtFile(
        version=version, metadata=meta, architecture=arch, tables=codes, groups=groups, cores=cores,
        params=params, sections=sections, file_size=len(buf), header_bytes=header_end, payload_bits=nbits,
    )
