"""Property tests (hypothesis) of the canonical Huffman codec, the stored code tables and the Eq. 13
quantizer."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from bitarray import bitarray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adt.runtime.format import AdtCodeTableError, AdtQuantizationError, HuffmanCode, code_lengths
from adt.runtime.format import dequantize, fake_quantize, quantize
from adt.runtime.format.binary import Cursor
from adt.runtime.format.huffman import check_lengths, decode_table, encode_table
from adt.runtime.format.limits import MAX_CODE_LENGTH, MAX_Q

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def symbol_streams(draw):
    """Random streams: uniform, Laplacian-like, one symbol, all equal, wide alphabets."""
    kind = draw(st.sampled_from(["uniform", "laplace", "one", "equal", "wide"]))
    n = draw(st.integers(1, 3000))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "one":
        return np.array([draw(st.integers(0, MAX_Q - 1))], dtype=np.uint16)
    if kind == "equal":
        return np.full(n, draw(st.integers(0, MAX_Q - 1)), dtype=np.uint16)
    if kind == "uniform":
        q = draw(st.integers(2, 2000))
        return rng.integers(0, q, size=n).astype(np.uint16)
    if kind == "wide":
        return rng.integers(0, MAX_Q, size=n).astype(np.uint16)
    q = draw(st.sampled_from([16, 512, 1500]))
    scale = draw(st.floats(0.5, 50))
    return np.clip(np.round(rng.laplace(q / 2, scale, size=n)), 0, q - 1).astype(np.uint16)


def _kraft_ok(lengths: np.ndarray) -> bool:
    used = lengths[lengths > 0].astype(np.int64)
    if len(used) == 1:
        return used[0] == 1
    return int(np.sum(1 << (MAX_CODE_LENGTH - used))) == 1 << MAX_CODE_LENGTH


@SETTINGS
@given(symbol_streams())
def test_huffman_round_trip(stream):
    code = HuffmanCode.from_counts(np.bincount(stream, minlength=MAX_Q))
    bits = bitarray(endian="big")
    bits.extend("1")                       # decode from a non-zero bit offset too
    code.encode_into(bits, stream)
    assert len(bits) == 1 + code.bit_count(stream)
    out, end = code.decode(bits, 1, len(stream), "test")
    assert out.dtype == np.uint16 and np.array_equal(out, stream) and end == len(bits)


@SETTINGS
@given(symbol_streams())
def test_code_lengths_are_limited_complete_and_optimal_enough(stream):
    counts = np.bincount(stream, minlength=MAX_Q)
    lengths = code_lengths(counts)
    assert lengths.dtype == np.uint8 and lengths.max() <= MAX_CODE_LENGTH
    assert np.array_equal(lengths > 0, counts > 0)
    assert _kraft_ok(lengths)
    check_lengths(lengths, "test")
    # within 1 bit/symbol of the entropy (Huffman's bound; one symbol costs exactly 1 bit)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    avg = float((lengths.astype(np.int64) * counts).sum() / counts.sum())
    assert entropy - 1e-9 <= avg <= entropy + 1 + 1e-9


@SETTINGS
@given(st.integers(25, 40))
def test_length_limit_on_fibonacci_counts(n):
    """Fibonacci counts make plain Huffman exceed 24 bits; the limiter still gives a valid code."""
    fib = [1, 1]
    while len(fib) < n:
        fib.append(fib[-1] + fib[-2])
    counts = np.zeros(MAX_Q, dtype=np.int64)
    counts[:n] = fib
    lengths = code_lengths(counts)
    assert lengths.max() <= MAX_CODE_LENGTH and _kraft_ok(lengths) and np.count_nonzero(lengths) == n
    stream = np.repeat(np.arange(n), 1).astype(np.uint16)
    code = HuffmanCode(lengths)
    bits = bitarray(endian="big")
    code.encode_into(bits, stream)
    assert np.array_equal(code.decode(bits, 0, n, "t")[0], stream)


@SETTINGS
@given(symbol_streams(), st.binary(max_size=3))
def test_table_round_trip(stream, trailer):
    lengths = code_lengths(np.bincount(stream, minlength=MAX_Q))
    raw = encode_table(lengths)
    buf = raw + trailer
    cur = Cursor(buf, 0, len(buf), "t")
    got = decode_table(cur, "t")
    used = np.flatnonzero(lengths)
    assert cur.pos == len(raw)                           # consumes exactly its own bytes
    assert len(got) == used[-1] + 1 and np.array_equal(got, lengths[:used[-1] + 1])
    assert encode_table(got) == raw                      # one canonical encoding


def test_canonical_assignment_is_deflates():
    # RFC 1951 3.2.2's example: lengths (3,3,3,3,3,2,4,4) for A..H give 010,011,100,101,110,00,1110,1111
    code = HuffmanCode(np.array([3, 3, 3, 3, 3, 2, 4, 4], dtype=np.uint8))
    book = {s: c.to01() for s, c in code.codebook().items()}
    assert book == {0: "010", 1: "011", 2: "100", 3: "101", 4: "110", 5: "00", 6: "1110", 7: "1111"}


def test_one_symbol_code_is_the_bit_zero():
    code = HuffmanCode.from_counts(np.bincount(np.full(5, 300), minlength=MAX_Q))
    assert {s: c.to01() for s, c in code.codebook().items()} == {300: "0"}


@pytest.mark.parametrize("lengths", [[1, 2], [1, 1, 1], [2], [0, 0], [1, 2, 3, 25, 25]])
def test_check_lengths_rejects(lengths):
    with pytest.raises(AdtCodeTableError):
        check_lengths(np.array(lengths), "t")


# -- Eq. 13 -------------------------------------------------------------------------------------
def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


@st.composite
def quantizers(draw):
    q = draw(st.integers(1, MAX_Q))
    b = _f32(draw(st.floats(1e-3, 1e3)))
    return q, b


@SETTINGS
@given(quantizers(), st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=200))
def test_quantize_properties(qb, values):
    q, b = qb
    v = np.array(values, dtype=np.float64)
    s = quantize(v, q, b)
    assert s.dtype == np.uint16 and s.min() >= 0 and s.max() <= q - 1
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(s[order].astype(np.int64)) >= 0)           # monotone
    assert np.all(s[v >= b] == q - 1) and np.all(s[v <= -b] == 0)    # clipping; w = b -> Q-1
    # the level is within one step below the clipped value (floor), values are within [-b, b)
    w = dequantize(s, q, b).astype(np.float64)
    step = 2 * b / q
    c = np.clip(v, -b, b)
    assert np.all(w >= -b - 1e-6 * b) and np.all(w < b)
    assert np.all(c - w >= -1e-6 * step - 1e-6 * b) and np.all(c - w <= step * (1 + 1e-6) + 1e-6 * b)


@SETTINGS
@given(quantizers(), st.lists(st.integers(0, MAX_Q - 1), min_size=1, max_size=100))
def test_dequantize_is_the_exact_float32_formula(qb, symbols):
    q, b = qb
    symbols = [s % q for s in symbols]
    got = dequantize(np.array(symbols, dtype=np.uint16), q, b)
    # FORMAT.md: float32( (-b) + s * ((2*b) / Q) ), each operation one IEEE double rounding
    want = [_f32(-b + s * ((2.0 * b) / q)) for s in symbols]
    assert got.dtype == np.float32 and got.tolist() == want


@SETTINGS
@given(quantizers(), st.lists(st.integers(0, MAX_Q - 1), min_size=1, max_size=100))
def test_quantize_inverts_dequantize_up_to_rounding(qb, symbols):
    q, b = qb
    s = np.array([x % q for x in symbols], dtype=np.uint16)
    back = quantize(dequantize(s, q, b), q, b).astype(np.int64)
    # float32 rounding of a level can land just below it; never more than one level off
    assert np.all(np.abs(back - s) <= 1)
    assert np.array_equal(fake_quantize(dequantize(s, q, b), q, b), dequantize(back.astype(np.uint16), q, b))


@SETTINGS
@given(quantizers(), st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=200))
def test_nearest_rounding_properties(qb, values):
    """rounding="nearest": same grid and alphabet, the CLOSEST level (never farther than Eq. 13's floor)."""
    q, b = qb
    v = np.array(values, dtype=np.float64)
    s = quantize(v, q, b, "nearest")
    assert s.dtype == np.uint16 and s.min() >= 0 and s.max() <= q - 1
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(s[order].astype(np.int64)) >= 0)
    c = np.clip(v, -b, b)
    step = 2 * b / q
    w = dequantize(s, q, b).astype(np.float64)
    w_floor = dequantize(quantize(v, q, b), q, b).astype(np.float64)
    tol = 1e-6 * (b + step)
    assert np.all(np.abs(c - w) <= np.abs(c - w_floor) + tol)
    below_top = c <= b - step / 2  # the top half-step has no level above it: it lands on level Q-1
    assert np.all(np.abs(c - w)[below_top] <= step / 2 + tol)
    assert np.array_equal(fake_quantize(v, q, b, "nearest"), dequantize(s, q, b))


def test_nearest_rounding_levels():
    # step 6/512: -1e-9 rounds up to level 256 (0.0), 2.99 to 511, w = b clamps to Q-1, half-step ties go up
    s = quantize(np.array([-3.0, -1e-9, 0.0, 2.99, 3.0, 7.0, -3.0 + 3.0 / 512]), 512, 3.0, "nearest")
    assert s.tolist() == [0, 256, 256, 511, 511, 511, 1]
    with pytest.raises(AdtQuantizationError, match="rounding"):
        quantize(np.zeros(3), 512, 3.0, "round")


def test_paper_setting_levels():
    s = quantize(np.array([-3.0, -1e-9, 0.0, 2.99, 3.0, 7.0]), 512, 3.0)
    assert s.tolist() == [0, 255, 256, 511, 511, 511]


@pytest.mark.parametrize("q,b", [(0, 1.0), (MAX_Q + 1, 1.0), (4, 0.0), (4, -1.0), (4, float("nan")),
                                 (4, float("inf")), (4, 1e-50), (2.5, 1.0)])
def test_bad_quantizers(q, b):
    with pytest.raises(AdtQuantizationError):
        quantize(np.zeros(3), q, b)
    with pytest.raises(AdtQuantizationError):
        dequantize(np.zeros(3, dtype=np.uint16), q, b)


def test_quantize_rejects_nan():
    with pytest.raises(AdtQuantizationError):
        quantize(np.array([0.0, np.nan]), 512, 3.0)


@pytest.mark.parametrize("lengths", [{0: 1, 65535: 1}, {65535: 1}, {0: 1}, {7: 1, 8: 2, 60000: 2}])
def test_table_extremes_round_trip(lengths):
    """The longest gap (65534: a 31-bit Exp-Golomb code) and the alphabet's ends."""
    arr = np.zeros(max(lengths) + 1, dtype=np.uint8)
    for s, n in lengths.items():
        arr[s] = n
    raw = encode_table(arr)
    got = decode_table(Cursor(raw, 0, len(raw), "t"), "t")
    assert np.array_equal(got, arr)
