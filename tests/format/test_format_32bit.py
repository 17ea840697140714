"""The reader on 32-bit builds (armv7l), simulated here: bitarray's canonical decoder takes codes of at
most 30 bits there (``len(count) cannot be larger than 31``), too short for a code table's longest
Exp-Golomb code (31 bits), so tables are then read by the scan decoder; and a bitarray (hence a payload)
holds at most sys.maxsize bits. Both table paths must give identical results on every committed file,
on generated tables and on malformed ones; the platform limits must be typed errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bitarray.util import canonical_decode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adt.runtime.format import AdtCodeTableError, AdtError, AdtLimitError, AdtPayloadError, HuffmanCode, read_adt
from adt.runtime.format import huffman as H
from adt.runtime.format import reader as R
from adt.runtime.format.binary import Cursor
from adt.runtime.format.limits import MAX_CODE_LENGTH, MAX_Q
from adt.runtime.samples import lenet5_file

REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted((REPO / "results" / "adt").glob("*.adt"))
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _canonical_decode_32bit(bits, count, symbol):
    """bitarray's canonical_decode as a 32-bit build has it: len(count) at most 31."""
    if len(count) > 31:
        raise ValueError(f"len(count) cannot be larger than 31, got {len(count)}")
    return canonical_decode(bits, count, symbol)


@pytest.fixture
def bitarray_32bit(monkeypatch):
    """This process's reader as on a 32-bit build: the limited canonical decoder, the probe run again
    against it, and bitarray lengths limited to 2**31 - 1 bits."""
    monkeypatch.setattr(H, "canonical_decode", _canonical_decode_32bit)
    limit = H._canonical_max_length()
    monkeypatch.setattr(H, "CANONICAL_MAX_LENGTH", limit)
    monkeypatch.setattr(H, "EG_CANONICAL", limit >= H.EG_MAX_BITS)
    monkeypatch.setattr(R, "_MAX_BITS", 2**31 - 1)
    return limit


def _decoded(f) -> list:
    """Everything the decoder produced, as comparable Python values."""
    out = [(t.lengths.dtype.str, t.lengths.tolist(), t.count, t.symbol) for t in f.tables]
    out += [(g.q, g.b, g.table) for g in f.groups]
    out += [(c.dims, c.symbols.dtype.str, c.symbols.tolist(), c.bits) for c in f.cores]
    for p in f.params:
        out.append((p.name, p.shape, p.bits, None if p.symbols is None else p.symbols.tolist(),
                    [m.tolist() for m in p.factors]))
    return out + [f.payload_bits, f.metadata, f.architecture]


def test_probe_finds_the_32bit_limit(bitarray_32bit):
    assert bitarray_32bit == 30 and not H.EG_CANONICAL


def test_this_build_probe_is_consistent():
    # bitarray < 2.8 limits codes to 30 bits on 64-bit builds too (Debian bookworm's 2.7.3): the
    # scan decoder then reads the tables everywhere; the payload's codes (<= 24 bits) always fit
    assert H.CANONICAL_MAX_LENGTH >= MAX_CODE_LENGTH
    assert H.EG_CANONICAL == (H.CANONICAL_MAX_LENGTH >= H.EG_MAX_BITS)


@pytest.mark.skipif(not COMMITTED, reason="no committed results/adt files")
def test_committed_files_decode_identically_as_on_32bit(monkeypatch):
    """Every committed file: the same tables, symbols and bit counts through the canonical table decoder
    and through the 32-bit path (scan decoder, limited canonical decoder for the payload)."""
    native = [_decoded(read_adt(p)) for p in COMMITTED]
    monkeypatch.setattr(H, "canonical_decode", _canonical_decode_32bit)
    monkeypatch.setattr(H, "EG_CANONICAL", False)
    for p, want in zip(COMMITTED, native):
        assert _decoded(read_adt(p)) == want, p.name


def test_sample_and_longest_gap_decode_on_32bit(bitarray_32bit):
    data = lenet5_file()
    got = _decoded(read_adt(data))
    assert got  # read through the 32-bit path
    lengths = np.zeros(MAX_Q, dtype=np.uint8)
    lengths[0] = lengths[MAX_Q - 1] = 1           # gap 65534: a 31-bit Exp-Golomb code
    raw = H.encode_table(lengths)
    assert np.array_equal(H.decode_table(Cursor(raw, 0, len(raw), "t"), "t"), lengths)


@st.composite
def valid_lengths(draw):
    """Complete codes over a random subset of the alphabet (gaps up to the longest)."""
    n = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    spread = draw(st.sampled_from([n, 4 * n, MAX_Q]))
    used = np.unique(rng.integers(0, min(spread, MAX_Q), size=n))
    counts = np.zeros(MAX_Q, dtype=np.int64)
    counts[used] = rng.geometric(draw(st.floats(0.01, 0.9)), size=len(used))
    return H.code_lengths(counts)


def _both_paths(raw: bytes, monkeypatch):
    """(result or error type) of decode_table on ``raw`` through each table decoder, and the end offsets."""
    out = []
    # the canonical table decoder only where this build's bitarray takes 31-bit codes
    for canonical in ((True, False) if H.CANONICAL_MAX_LENGTH >= H.EG_MAX_BITS else (False, False)):
        monkeypatch.setattr(H, "EG_CANONICAL", canonical)
        cur = Cursor(raw, 0, len(raw), "t")
        try:
            out.append((H.decode_table(cur, "t").tolist(), cur.pos))
        except AdtError as exc:
            out.append(type(exc))
        except Exception as exc:  # anything untyped fails the tests below
            out.append(("untyped", type(exc)))
    return out


@SETTINGS
@given(lengths=valid_lengths())
def test_generated_tables_decode_identically_on_both_paths(lengths):
    raw = H.encode_table(lengths) + b"\xff"       # something after the table: it must not be consumed
    with pytest.MonkeyPatch.context() as mp:
        a, b = _both_paths(raw, mp)
    assert a == b == (lengths[:int(np.flatnonzero(lengths)[-1]) + 1].tolist(), len(raw) - 1)
    code = H.read_code(Cursor(raw, 0, len(raw), "t"), "t")
    ref = HuffmanCode(lengths[:int(np.flatnonzero(lengths)[-1]) + 1])
    assert code.count == ref.count and code.symbol == ref.symbol


@SETTINGS
@given(raw=st.binary(min_size=1, max_size=64))
def test_malformed_tables_fail_alike_on_both_paths(raw):
    with pytest.MonkeyPatch.context() as mp:
        a, b = _both_paths(raw, mp)
    assert a == b
    assert (isinstance(a, type) and issubclass(a, AdtError)) or isinstance(a[0], list), a


@pytest.mark.parametrize("raw", [
    b"\x00\x01\x00\x00\x00\x80",                  # 24 zeros: more than 15 leading zeros
    b"\x00\x02\x80",                              # 3 codes wanted, the bits hold 1 and then zeros
    b"\x00\x02\x00\x01",                          # a code cut off by the end of the section
])
def test_scan_decoder_refuses_like_the_canonical_one(raw, monkeypatch):
    a, b = _both_paths(raw, monkeypatch)
    assert a == b == AdtCodeTableError


def test_payload_longer_than_the_platform_bitarray_is_a_limit_error(monkeypatch):
    data = lenet5_file()
    monkeypatch.setattr(R, "_MAX_BITS", 8 * 100)            # as a 32-bit build sees a > 256 MiB payload
    with pytest.raises(AdtLimitError, match=r"payload: \d+ bytes are \d+ bits, more than this platform"):
        read_adt(data)


def test_code_longer_than_the_platform_decoder_is_a_payload_error(monkeypatch):
    code = HuffmanCode(np.array([1, 2, 3, 3], dtype=np.uint8))
    from bitarray import bitarray
    bits = bitarray("0110", endian="big")
    monkeypatch.setattr(H, "CANONICAL_MAX_LENGTH", 2)
    with pytest.raises(AdtPayloadError, match="exceeds what this platform's bitarray decodes"):
        code.decode(bits, 0, 2, "payload: t")


def test_memory_error_while_decoding_is_a_limit_error(monkeypatch):
    def no_memory(*a, **k):
        raise MemoryError
    monkeypatch.setattr(R, "_read_payload", no_memory)
    with pytest.raises(AdtLimitError, match="do not fit in this machine's memory"):
        read_adt(lenet5_file())
