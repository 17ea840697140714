"""The malformed-file corpus: every broken file raises its specific AdtError subclass, quickly and
without large allocations. Fields are lied about with the CRC recomputed, so the intended check fires
(the checksum is verified after the structural header checks, see FORMAT.md "Reading order")."""
from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest

import adt_format_craft as C
from adt.runtime.format import (
    AdtArchitectureError, AdtChecksumError, AdtCodeTableError, AdtError, AdtLimitError, AdtMagicError,
    AdtMetadataError, AdtPayloadError, AdtSectionError, AdtTableError, AdtTruncatedError, AdtVarintError,
    AdtVersionError, read_adt,
)
from adt.runtime.format import limits as L

PLAIN = (C.VECTORS / "plain.adt").read_bytes()       # 39 bytes, FORMAT.md's worked example
META = (C.VECTORS / "tucker_bias_meta.adt").read_bytes()
ARCH = (C.VECTORS / "arch.adt").read_bytes()

# The plain vector's parts, rebuilt (test_format_vectors checks they give PLAIN byte for byte).
CODES = C.varint(1) + C.table({1: 2, 2: 1, 3: 2})
GROUP = C.group(4, 1.0)
PARAM = C.plain_param("x", [4], 0)
PAY = C.payload("100011")


def build(codes=CODES, groups=(GROUP,), cores=(), params=(PARAM,), pay=PAY, extra=(), **kw) -> bytes:
    sections = sorted([(3, codes), (4, C.tensors(list(groups), list(cores), list(params))), (5, pay), *extra])
    return C.assemble(sections, **kw)


def assert_rejected(data: bytes, exc: type[AdtError]) -> AdtError:
    """read_adt(data) must raise exactly ``exc`` (a subclass of it fails too: classes are asserted)."""
    with pytest.raises(AdtError) as info:
        read_adt(data)
    assert type(info.value) is exc, f"expected {exc.__name__}, got {type(info.value).__name__}: {info.value}"
    return info.value


def test_build_reproduces_plain_vector():
    assert build() == PLAIN


# -- truncation, magic, version, checksum ---------------------------------------------------------
@pytest.mark.parametrize("vector", ["plain", "tucker_bias_meta", "arch"])
def test_truncation_at_every_offset(vector):
    data = (C.VECTORS / f"{vector}.adt").read_bytes()
    for n in range(len(data)):
        assert_rejected(data[:n], AdtTruncatedError)


@pytest.mark.parametrize("magic", [b"ADT\x00", b"GGUF", b"\x89PNG", b"adt\x1a", b"ADT"[:0] + b"X"])
def test_bad_magic(magic):
    assert_rejected(magic + PLAIN[4:], AdtMagicError)


@pytest.mark.parametrize("major", [0, 3, 255])
def test_other_major_version(major):
    assert_rejected(build(major=major), AdtVersionError)
    assert_rejected(PLAIN[:5].replace(b"\x01", bytes([major])), AdtVersionError)   # even when truncated


def test_future_minor_version_is_read():
    f = read_adt(build(minor=7))
    assert f.version == (1, 7) and f.param("x").symbols.tolist() == [1, 2, 2, 3]
    f = read_adt(build(major=2, minor=3))   # a 2.x file without tensor trains reads the same
    assert f.version == (2, 3) and f.param("x").symbols.tolist() == [1, 2, 2, 3]


def test_flipped_bits():
    """Every single-bit flip is caught; after the section table it is always the checksum."""
    header_end = read_adt(PLAIN).header_bytes
    for i in range(len(PLAIN)):
        for bit in range(8):
            bad = bytearray(PLAIN)
            bad[i] ^= 1 << bit
            if i >= header_end:
                assert_rejected(bytes(bad), AdtChecksumError)
            else:
                with pytest.raises(AdtError):
                    read_adt(bytes(bad))


def test_trailing_bytes():
    assert_rejected(PLAIN + b"\x00", AdtSectionError)
    assert_rejected(C.recrc(PLAIN + b"\x00\x00\x00\x00\x00"), AdtSectionError)


# -- section table ------------------------------------------------------------------------------
def test_section_count_limits_and_lies():
    assert_rejected(build(count=L.MAX_SECTIONS + 1), AdtLimitError)
    assert_rejected(build(count=0), AdtSectionError)                  # no entries: bytes belong to no section
    assert_rejected(C.assemble([(3, CODES)] * 0, count=0), AdtSectionError)


@pytest.mark.parametrize("kind,exc", [(0, AdtSectionError), (9, AdtSectionError), (63, AdtSectionError),
                                      (128, AdtSectionError), (255, AdtSectionError)])
def test_bad_section_kinds(kind, exc):
    assert_rejected(build(extra=[(kind, b"")]) if kind < 3 else
          C.assemble([(3, CODES), (4, C.tensors([GROUP], [], [PARAM])), (5, PAY), (kind, b"")]), exc)


def test_optional_extension_section_is_skipped():
    f = read_adt(build(extra=[(64, b"anything"), (127, b"")]))
    assert [s.kind for s in f.sections] == [3, 4, 5, 64, 127] and f.param("x").symbols.tolist() == [1, 2, 2, 3]


def test_section_order_and_duplicates():
    tens = C.tensors([GROUP], [], [PARAM])
    assert_rejected(C.assemble([(4, tens), (3, CODES), (5, PAY)]), AdtSectionError)
    assert_rejected(C.assemble([(3, CODES), (3, CODES), (4, tens), (5, PAY)]), AdtSectionError)


@pytest.mark.parametrize("missing", [3, 4, 5])
def test_missing_required_section(missing):
    secs = [(3, CODES), (4, C.tensors([GROUP], [], [PARAM])), (5, PAY)]
    assert_rejected(C.assemble([s for s in secs if s[0] != missing]), AdtSectionError)


def test_mis_sized_sections():
    real = [len(CODES), len(C.tensors([GROUP], [], [PARAM])), len(PAY)]
    for i in range(3):
        longer = list(real)
        longer[i] += 1
        assert_rejected(build(lengths=longer), AdtTruncatedError)      # runs past the end of the file
        shorter = list(real)
        shorter[i] -= 1
        assert_rejected(build(lengths=shorter), AdtSectionError)       # leaves bytes that belong to no section
    assert_rejected(build(lengths=[L.MAX_SECTION_BYTES + 1, real[1], real[2]]), AdtLimitError)
    assert_rejected(build(lengths=[real[0], real[1], L.MAX_PAYLOAD_BYTES + 1]), AdtLimitError)
    assert_rejected(build(lengths=[real[0], real[1], (1 << 63) - 1]), AdtLimitError)


def test_overlong_and_non_minimal_varints():
    head = b"ADT\x1a\x01\x00"
    body = PLAIN[7:-4]
    assert_rejected(C.recrc(head + b"\x83\x00" + body + b"\0\0\0\0"), AdtVarintError)   # 3 written in 2 bytes
    assert_rejected(C.recrc(head + b"\xff" * 10 + body + b"\0\0\0\0"), AdtVarintError)  # > 9 bytes
    # a non-minimal Q inside the tensor table
    assert_rejected(build(groups=[b"\x00" + b"\x84\x00" + struct.pack("<f", 1.0) + b"\x00"]), AdtVarintError)


# -- metadata -----------------------------------------------------------------------------------
def _meta(entries: list[tuple[bytes, bytes]], count: int | None = None) -> bytes:
    body = C.varint(len(entries) if count is None else count)
    return body + b"".join(C.string(k) + C.string(v) for k, v in entries)


@pytest.mark.parametrize("body,exc", [
    (_meta([(b"a", b"1"), (b"a", b"2")]), AdtMetadataError),            # duplicate key
    (_meta([(b"\xff\xfe", b"1")]), AdtMetadataError),                   # key not UTF-8
    (_meta([(b"k", b"\xc3")]), AdtMetadataError),                       # value not UTF-8
    (_meta([(b"", b"1")]), AdtMetadataError),                           # empty key
    (_meta([(b"k" * (L.MAX_META_KEY_BYTES + 1), b"1")]), AdtLimitError),
    (_meta([], count=L.MAX_META_ENTRIES + 1), AdtLimitError),
    (_meta([(b"k", b"1")], count=2), AdtTruncatedError),                # fewer entries than declared
    (_meta([(b"k", b"1")]) + b"\x00", AdtSectionError),                 # unused bytes
])
def test_bad_metadata(body, exc):
    assert_rejected(build(extra=[(1, body)]), exc)


def test_metadata_value_length_limit():
    body = C.varint(1) + C.string("k") + C.varint(L.MAX_META_VALUE_BYTES + 1)
    assert_rejected(build(extra=[(1, body)]), AdtLimitError)


# -- architecture --------------------------------------------------------------------------------
def _arch(raw: bytes, size: int | None = None, fmt: int = 0, comp: bytes | None = None) -> bytes:
    return bytes([fmt]) + C.varint(len(raw) if size is None else size) + (C.deflate(raw) if comp is None else comp)


def test_good_architecture_reads():
    assert read_adt(build(extra=[(2, _arch(b"graph bytes"))])).architecture == b"graph bytes"


def _dict_deflate(data: bytes) -> bytes:
    from adt.runtime.format.archdict import ONNX_DICT_V1

    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=ONNX_DICT_V1)
    return c.compress(data) + c.flush()


def test_architecture_with_preset_dictionary():
    from adt.runtime.format.archdict import ONNX_DICT_V1

    raw = ONNX_DICT_V1[100:400] + b"tail"              # back-references into the dictionary
    comp = _dict_deflate(raw)
    assert len(comp) < len(C.deflate(raw)) // 2
    assert read_adt(build(extra=[(2, _arch(raw, fmt=1, comp=comp))])).architecture == raw
    # the same stream declared as format 0 (no dictionary) refers to bytes before its start
    assert_rejected(build(extra=[(2, _arch(raw, fmt=0, comp=comp))]), AdtArchitectureError)


@pytest.mark.parametrize("body,exc", [
    (_arch(b"graph", fmt=2), AdtArchitectureError),                     # unknown format
    (_arch(b"graph", size=6), AdtArchitectureError),                    # size lies (bigger)
    (_arch(b"graph", size=4), AdtArchitectureError),                    # size lies (smaller)
    (_arch(b"graph", comp=b"\xff\xff\xff\xff"), AdtArchitectureError),  # not DEFLATE
    (_arch(b"graph", comp=C.deflate(b"graph")[:-1]), AdtArchitectureError),   # stream cut short
    (_arch(b"graph", comp=C.deflate(b"graph") + b"xx"), AdtArchitectureError),  # data after the stream
    (_arch(b"graph", size=L.MAX_ARCH_BYTES + 1), AdtLimitError),
    (b"", AdtTruncatedError),                                            # no format byte
])
def test_bad_architecture(body, exc):
    assert_rejected(build(extra=[(2, body)]), exc)


def _peak_of(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_zip_bombs_are_bounded():
    bomb = C.deflate(b"\x00" * (50 << 20))          # 50 MiB of zeros in ~50 KB
    # (a) honest about the bomb's size but over the limit? no: 50 MiB < 64 MiB, so claim a small size
    data_small = build(extra=[(2, _arch(b"", size=1000, comp=bomb))])
    # (b) claims the full 64 MiB limit with only a few bytes of DEFLATE behind it
    data_huge = build(extra=[(2, _arch(b"", size=L.MAX_ARCH_BYTES, comp=C.deflate(b"\x00" * 100)))])
    for data in (data_small, data_huge):
        peak = _peak_of(lambda: assert_rejected(data, AdtArchitectureError))
        assert peak < 4 * len(data) + (1 << 20), f"peak {peak} bytes for a {len(data)}-byte file"


# -- code tables --------------------------------------------------------------------------------
@pytest.mark.parametrize("codes,exc", [
    (C.varint(1) + C.table({1: 1, 2: 2}), AdtCodeTableError),                     # incomplete
    (C.varint(1) + C.table({1: 1, 2: 1, 3: 1}), AdtCodeTableError),               # oversubscribed
    (C.varint(1) + C.table({1: 1, 2: 2, 3: 25}), AdtCodeTableError),              # too long
    (C.varint(1) + C.table({2: 2}), AdtCodeTableError),                           # one symbol, length 2
    (C.varint(1) + C.table({1: 2, 2: 1, 3: 2}, pad="1"), AdtCodeTableError),      # padding bits set
    (C.varint(1) + C.varint(1) + C.varint(3) + b"\x00\x00\x00\x80", AdtCodeTableError),  # >15 leading zeros
    (C.varint(1) + C.varint(65535) + C.varint(2) + C.payload(C.eg_bits(2)), AdtLimitError),  # nused > MAX_Q - smin
    (C.varint(1) + C.varint(65535 + 1), AdtLimitError),                           # smin >= MAX_Q
    (C.varint(1) + C.varint(0) + C.varint(0), AdtLimitError),                     # nused 0
    (C.varint(1) + C.varint(0) + C.varint(1000) + b"\xff", AdtCodeTableError),    # nused > bits left
    (C.varint(1) + C.varint(1) + C.varint(3) + b"\x2d", AdtCodeTableError),       # bits end early
    (C.varint(L.MAX_TABLES + 1), AdtLimitError),
    (C.varint(2) + C.table({1: 2, 2: 1, 3: 2}), AdtTruncatedError),               # second table missing
    (CODES + b"\x00", AdtSectionError),                                           # unused bytes
])
def test_bad_code_tables(codes, exc):
    assert_rejected(build(codes=codes), exc)


def test_code_table_symbol_gap_past_alphabet():
    bits = C.eg_bits(2) + C.eg_bits(65534) + C.eg_bits(0)     # symbol 65000, then a gap past 65535
    codes = C.varint(1) + C.varint(65000) + C.varint(2) + C.payload(bits)
    assert_rejected(build(codes=codes), AdtCodeTableError)


def test_code_length_zero_inside_list():
    bits = C.eg_bits(2) + C.eg_bits(0) + C.eg_bits(C.zigzag(-1))   # lengths 1 then 0
    assert_rejected(build(codes=C.varint(1) + C.varint(1) + C.varint(2) + C.payload(bits)), AdtCodeTableError)


def test_biggest_code_table():
    """All 65536 symbols at length 16 (a valid complete code) is read; the 1-byte payload then cannot
    hold four 16-bit codes. (Read by bitarray's C decoder: the suite's run time shows it is quick.)"""
    lengths = {s: 16 for s in range(65536)}
    codes = C.varint(1) + C.table(lengths)
    assert_rejected(build(codes=codes), AdtPayloadError)


# -- tensor table -------------------------------------------------------------------------------
B1 = struct.pack("<f", 1.0)


@pytest.mark.parametrize("groups,exc", [
    ([C.group(4, 1.0, mode=1)], AdtTableError),
    ([C.group(0, 1.0)], AdtLimitError),
    ([C.group(L.MAX_Q + 1, 1.0)], AdtLimitError),
    ([C.group(4, 0.0, b_raw=struct.pack("<f", float("nan")))], AdtTableError),
    ([C.group(4, 0.0, b_raw=struct.pack("<f", float("inf")))], AdtTableError),
    ([C.group(4, -1.0)], AdtTableError),
    ([C.group(4, 0.0)], AdtTableError),
    ([C.group(4, 1.0, tab=1)], AdtTableError),              # table 1 of 1
    ([C.group(4, 1.0, tab=(1 << 62))], AdtTableError),
    ([C.group(4, 1.0)] * (L.MAX_GROUPS + 1), AdtLimitError),
])
def test_bad_groups(groups, exc):
    assert_rejected(build(groups=groups), exc)


def test_group_count_lie():
    tens = C.varint(2) + GROUP + C.varint(0) + C.varint(1) + PARAM
    # the second "group" swallows the core count and the parameter: the section ends inside a field
    assert_rejected(C.assemble([(3, CODES), (4, tens), (5, PAY)]), AdtTruncatedError)


@pytest.mark.parametrize("core,exc", [
    (C.core(2, [2, 2], 0), AdtTableError),                   # kind
    (C.core(0, [], 0), AdtLimitError),                        # order 0
    (C.core(0, [1] * 9, 0), AdtLimitError),                   # order 9
    (C.core(0, [2, 0], 0), AdtLimitError),                    # zero dim
    (C.core(0, [L.MAX_DIM + 1, 1], 0), AdtLimitError),
    (C.core(0, [L.MAX_DIM, L.MAX_DIM], 0), AdtLimitError),    # huge dims: > MAX_TENSOR_ELEMENTS
    (C.core(1, [L.MAX_DIM], 0, order=3), AdtLimitError),      # CP rank over the element limit
    (C.core(1, [0], 0, order=2), AdtLimitError),              # CP rank 0
    (C.core(0, [2, 2], 1), AdtTableError),                    # group 1 of 1
])
def test_bad_cores(core, exc):
    assert_rejected(build(cores=[core], params=[PARAM]), exc)


@pytest.mark.parametrize("params,exc", [
    ([C.plain_param("", [4], 0)], AdtTableError),
    ([PARAM, PARAM], AdtTableError),                                      # duplicate name
    ([C.plain_param(b"\xff", [4], 0)], AdtTableError),                     # not UTF-8
    ([C.plain_param("n" * (L.MAX_NAME_BYTES + 1), [4], 0)], AdtLimitError),
    ([C.plain_param("x", [1] * 9, 0)], AdtLimitError),                     # ndim 9
    ([C.plain_param("x", [4, 0], 0)], AdtLimitError),                      # zero dim
    ([C.plain_param("x", [L.MAX_DIM, L.MAX_DIM], 0)], AdtLimitError),       # huge dims
    ([C.plain_param("x", [4], 0, enc=2)], AdtTableError),                  # encoding
    ([C.plain_param("x", [4], 1)], AdtTableError),                         # group 1 of 1
    ([C.tucker_param("x", [4], 0, 0, [4])], AdtTableError),                # core 0 of 0
    ([C.plain_param(f"p{i}", [1 << 14, 1 << 14], 0) for i in range(5)], AdtLimitError),  # total elements
    ([C.varint(L.MAX_PARAMS + 1)], None),                                   # count (built below)
])
def test_bad_params(params, exc):
    if exc is None:
        tens = C.varint(1) + GROUP + C.varint(0) + C.varint(L.MAX_PARAMS + 1)
        assert_rejected(C.assemble([(3, CODES), (4, tens), (5, PAY)]), AdtLimitError)
        return
    assert_rejected(build(params=params), exc)


def test_tucker_reshape_mismatch_and_unused_bytes():
    core = C.core(0, [1, 1], 0)
    assert_rejected(build(cores=[core], params=[C.tucker_param("x", [4], 0, 0, [2, 3])]), AdtTableError)
    assert_rejected(build(cores=[core], params=[C.tucker_param("x", [4], 0, 0, [2, 0])]), AdtLimitError)
    tens = C.tensors([GROUP], [], [PARAM]) + b"\x00"
    assert_rejected(C.assemble([(3, CODES), (4, tens), (5, PAY)]), AdtSectionError)


def test_huge_dims_are_rejected_without_allocating():
    cases = [
        build(params=[C.plain_param("x", [L.MAX_DIM, L.MAX_DIM, L.MAX_DIM], 0)]),
        build(cores=[C.core(0, [L.MAX_DIM] * 8, 0)]),
        # at the limits (2**28 symbols) but with a 1-byte payload: the symbol count check fires
        build(params=[C.plain_param("x", [1 << 14, 1 << 14], 0)]),
        build(cores=[C.core(0, [1 << 14, 1 << 14], 0)], params=[PARAM]),
        # a Tucker factor of 2**31-1 rows: reshape (2**31-1, 1) of a shape with as many elements
        build(cores=[C.core(0, [1, 1], 0)], params=[C.tucker_param("x", [L.MAX_DIM], 0, 0, [L.MAX_DIM, 1])]),
    ]
    for data in cases:
        peak = _peak_of(lambda: pytest.raises(AdtError, read_adt, data))
        assert peak < 1 << 20, f"peak {peak} bytes"
    assert_rejected(cases[0], AdtLimitError)
    assert_rejected(cases[1], AdtLimitError)
    for data in cases[2:]:
        assert_rejected(data, AdtPayloadError if data is not cases[4] else AdtLimitError)


# -- payload ------------------------------------------------------------------------------------
def test_symbol_count_exceeds_8x_payload_bytes():
    assert_rejected(build(params=[C.plain_param("x", [9], 0)]), AdtPayloadError)   # 9 symbols, 1 byte


@pytest.mark.parametrize("pay,exc", [
    (C.payload("100011", pad="1"), AdtPayloadError),    # padding bits set
    (PAY + b"\x00", AdtPayloadError),                    # a byte too many
    (b"", AdtPayloadError),                              # no bits for 4 symbols
])
def test_bad_payload(pay, exc):
    assert_rejected(build(pay=pay), exc)


def test_codes_run_out():
    # 5 symbols of at most 2 bits fit in 8 bits only if one is the 1-bit code; "11" x 4 leaves none
    assert_rejected(build(params=[C.plain_param("x", [5], 0)], pay=C.payload("11111111")), AdtPayloadError)


def test_symbol_beyond_group_q():
    # table covers symbols 1..4; the group has Q = 4 levels (0..3); the payload codes symbol 4
    codes = C.varint(1) + C.table({1: 2, 2: 2, 3: 2, 4: 2})
    assert_rejected(build(codes=codes, pay=C.payload("00" + "01" + "10" + "11")), AdtPayloadError)


def test_one_symbol_code_rejects_bit_one():
    codes = C.varint(1) + C.table({2: 1})
    assert read_adt(build(codes=codes, pay=C.payload("0000"))).param("x").symbols.tolist() == [2] * 4
    assert_rejected(build(codes=codes, pay=C.payload("0010")), AdtPayloadError)


# -- no other exception type escapes, on random corruption --------------------------------------
def test_random_corruption_only_raises_adt_errors():
    rng = np.random.default_rng(7)
    for src in (PLAIN, META, ARCH):
        for _ in range(300):
            bad = bytearray(src)
            for _ in range(int(rng.integers(1, 4))):
                bad[int(rng.integers(len(bad) - 4))] = int(rng.integers(256))
            try:
                read_adt(C.recrc(bytes(bad)))
            except AdtError:
                pass


def test_missing_file_is_an_adt_error(tmp_path):
    with pytest.raises(AdtError):
        read_adt(tmp_path / "nope.adt")
    with pytest.raises(AdtError):
        read_adt(tmp_path)                      # a directory


def test_device_file_is_refused_before_reading():
    import os

    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with pytest.raises(AdtError, match="not a regular file"):
        read_adt("/dev/zero")


def test_path_and_bytes_read_the_same(tmp_path):
    path = tmp_path / "p.adt"
    path.write_bytes(PLAIN)
    assert read_adt(path).param("x").symbols.tolist() == read_adt(PLAIN).param("x").symbols.tolist()
    assert read_adt(str(path)).file_size == len(PLAIN) == read_adt(memoryview(PLAIN)).file_size


def test_crc_is_zlib_crc32_le():
    assert PLAIN[-4:] == struct.pack("<I", zlib.crc32(PLAIN[:-4]))


@pytest.mark.parametrize("vector", ["plain", "scada_shared", "per_group"])
def test_every_byte_value_at_every_offset(vector):
    """Exhaustive single-byte substitutions (CRC recomputed): each either reads or raises an AdtError.
    Any other exception type escaping fails the test."""
    src = (C.VECTORS / f"{vector}.adt").read_bytes()
    ok = 0
    for i in range(len(src) - 4):
        for v in range(256):
            if v == src[i]:
                continue
            bad = bytearray(src)
            bad[i] = v
            try:
                read_adt(C.recrc(bytes(bad)))
                ok += 1
            except AdtError:
                pass
    assert ok < (len(src) - 4) * 255          # most substitutions are caught


# -- tensor-train parameters (format 2.0, encoding 2) ----------------------------------------------
# The plain vector's table and group hold 4 symbols in 5..6 bits; a TT "x" of shape (4,) reshaped (2, 2)
# with rank 1 has cores (1, 2, 1) and (1, 2, 1): the same 4 values, so the same payload decodes.
TT = C.tt_param("x", [4], 0, [2, 2], [1])


def assert_tt_rejected(data: bytes, exc: type[AdtError]) -> AdtError:
    """Rejected with exactly ``exc``, and the message names the parameter."""
    err = assert_rejected(data, exc)
    assert "'x'" in str(err), f"the message does not name the parameter: {err}"
    return err


def test_tt_parameter_reads_in_a_2_0_file():
    f = read_adt(build(params=[TT], major=2))
    p = f.param("x")
    assert f.version == (2, 0) and p.encoding == 2 and p.core is None
    assert p.reshape == (2, 2) and p.ranks == (1,) and [g.shape for g in p.factors] == [(1, 2, 1)] * 2
    assert [g.reshape(-1).tolist() for g in p.factors] == [[1, 2], [2, 3]] and p.stored_count == 4


def test_tt_in_a_1_0_file_needs_version_2():
    err = assert_tt_rejected(build(params=[TT]), AdtTableError)
    assert "version 2.0" in str(err)


@pytest.mark.parametrize("param,exc", [
    (C.tt_param("x", [4], 0, [], [], order=0), AdtLimitError),                  # order 0
    (C.tt_param("x", [4], 0, [1] * 8 + [4], [1] * 8, order=9), AdtLimitError),  # order 9
    (C.tt_param("x", [4], 0, [2, 2], [0]), AdtLimitError),                      # rank 0
    (C.tt_param("x", [4], 0, [2, 2], [L.MAX_DIM + 1]), AdtLimitError),          # rank over 2^31-1
    (C.tt_param("x", [4], 0, [2, 0], [1]), AdtLimitError),                      # reshape dim 0
    (C.tt_param("x", [4], 0, [2, 3], [1]), AdtTableError),                      # reshape product 6 != 4
    (C.tt_param("x", [4], 0, [2, 2], [1 << 27]), AdtLimitError),                # 2^28 + 2^28 values in all
    (C.tt_param("x", [4], 0, [2, 2], [1 << 28]), AdtLimitError),                # core (1, 2, 2^28) alone over 2^28
])
def test_bad_tt_fields(param, exc):
    assert_tt_rejected(build(params=[param], major=2), exc)


def test_tt_core_sum_over_the_limit():
    # three cores of 2^27 + 2, 2^27 + 2, 2 values: each under 2^28, together over it
    r = (1 << 26) + 1
    param = C.tt_param("x", [8], 0, [2, 2, 2], [r, 1])
    err = assert_tt_rejected(build(params=[param], major=2), AdtLimitError)
    assert "in all" in str(err)


def test_order_1_tt_has_no_ranks():
    f = read_adt(build(params=[C.tt_param("x", [4], 0, [4], [])], major=2))
    assert f.param("x").ranks == () and f.param("x").factors[0].reshape(-1).tolist() == [1, 2, 2, 3]
    # a rank written anyway is a byte the tensor table does not use
    assert_rejected(build(params=[C.tt_param("x", [4], 0, [4], [1])], major=2), AdtSectionError)


def test_truncated_tt_ranks():
    tens = C.tensors([GROUP], [], [C.tt_param("x", [8], 0, [2, 2, 2], [1, 1])])
    for cut in (1, 2):   # the last rank, then both, missing: the tensor table ends inside the field
        assert_tt_rejected(C.assemble([(3, CODES), (4, tens[:-cut]), (5, PAY)], major=2), AdtTruncatedError)


def test_payload_too_short_for_tt_cores():
    # rank 2: cores (1, 2, 2) and (2, 2, 1), 8 values; 8 <= 8 bits of payload passes the count bound,
    # then the codes (at least 1 bit each, here 6 bits for the first four) run out in core 1
    param = C.tt_param("x", [4], 0, [2, 2], [2])
    err = assert_tt_rejected(build(params=[param], major=2), AdtPayloadError)
    assert "TT core 1" in str(err)
    # ranks far beyond the payload: the symbol-count bound names the first core that cannot fit
    param = C.tt_param("x", [4], 0, [2, 2], [1 << 12])
    err = assert_tt_rejected(build(params=[param], major=2), AdtPayloadError)
    assert "TT core 0" in str(err)


def test_symbol_beyond_group_q_in_a_tt_core():
    codes = C.varint(1) + C.table({1: 2, 2: 2, 3: 2, 4: 2})
    err = assert_tt_rejected(build(codes=codes, params=[TT], pay=C.payload("00" + "01" + "10" + "11"), major=2),
                             AdtPayloadError)
    assert "TT core 1" in str(err)      # symbol 4 is the second value of core 1


def test_major_version_3_with_a_tt_parameter():
    assert_rejected(build(params=[TT], major=3), AdtVersionError)


def test_hostile_tt_ranks_are_rejected_without_allocating():
    # cores (1, 2^14, 2^13) and (2^13, 2^14, 1): 2^28 values in all, within the limits; the 1-byte
    # payload cannot hold them, found before any array of the cores' size exists
    param = C.tt_param("x", [1 << 28], 0, [1 << 14, 1 << 14], [1 << 13])
    data = build(params=[param], major=2)
    peak = _peak_of(lambda: pytest.raises(AdtError, read_adt, data))
    assert peak < 1 << 20, f"peak {peak} bytes"
    assert_tt_rejected(data, AdtPayloadError)
