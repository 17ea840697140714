"""Canonical Huffman codes: length-limited construction, the stored code-length table, and
encode/decode through bitarray's C coder.

FORMAT.md ("Code tables", "Payload") is normative; in short:

* A code is given by one length per symbol (0 = unused). Codes are assigned canonically as in
  DEFLATE (RFC 1951 3.2.2): shorter codes first, equal lengths by increasing symbol.
* Code bits are written most significant bit first; bytes are filled from their most significant bit.
* A code is complete (Kraft sum exactly 1), except a code of one symbol, which has length 1 ("0").
* A table is stored as ``smin`` and ``nused`` (varints) then, bit-packed and zero-padded to a byte,
  Exp-Golomb codes (order 0): the zig-zag delta of the first used symbol's length to 0, then for each
  further used symbol the gap to the previous one (unused symbols between) and the zig-zag delta of
  its length to the previous used symbol's length.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode, int2ba

from .binary import Cursor, encode_varint
from .errors import AdtCodeTableError, AdtPayloadError
from .limits import MAX_CODE_LENGTH, MAX_EG_LEADING_ZEROS, MAX_Q

__all__ = ["CANONICAL_MAX_LENGTH", "EG_MAX_BITS", "HuffmanCode", "check_lengths", "code_lengths", "decode_table",
           "encode_table", "read_code"]

_CHUNK = 1 << 18   # symbols per step of HuffmanCode.bit_count


# ---------------------------------------------------------------------------------------------
# Building code lengths from symbol counts
# ---------------------------------------------------------------------------------------------

def _huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Plain Huffman code lengths for the symbols with count > 0 (deterministic tie-breaking)."""
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = np.flatnonzero(counts)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    # Nodes 0..m-1 are leaves (in symbol order), internal nodes follow. Ties break on node id,
    # so the same counts always give the same lengths.
    m = len(used)
    parent = np.full(2 * m - 1, -1, dtype=np.int64)
    heap = [(int(counts[s]), i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    nxt = m
    while len(heap) > 1:
        w1, a = heapq.heappop(heap)
        w2, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (w1 + w2, nxt))
        nxt += 1
    depth = np.zeros(2 * m - 1, dtype=np.int64)
    for node in range(2 * m - 3, -1, -1):  # parents have larger ids than children
        depth[node] = depth[parent[node]] + 1
    lengths[used] = depth[:m]
    return lengths


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code lengths (uint8, one per symbol) limited to ``max_length`` bits.

    When plain Huffman exceeds the limit, counts are halved (keeping every used symbol >= 1) and the
    code rebuilt; this flattens the tail until it fits. It only triggers for extreme distributions
    (more than ~2**24 symbols with a Fibonacci-like spread), where the loss is negligible.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if np.any(counts < 0):
        raise ValueError("symbol counts must be non-negative")
    work = counts.copy()
    while True:
        lengths = _huffman_lengths(work)
        if lengths.max(initial=0) <= max_length:
            return lengths.astype(np.uint8)
        work = np.where(work > 0, np.maximum(1, work >> 1), 0)


def check_lengths(lengths: np.ndarray, where: str) -> None:
    """Raise :class:`AdtCodeTableError` unless the lengths form a valid code (see module doc)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    used = lengths[lengths > 0]
    if len(used) == 0:
        raise AdtCodeTableError(f"{where}: the code has no symbols")
    _check_used(used, where)


def _check_used(used: np.ndarray, where: str, longest: int | None = None) -> None:
    """check_lengths on the lengths of the used symbols only (int64, all > 0, at least one);
    ``longest``: their maximum, when the caller has it already."""
    longest = int(used.max()) if longest is None else longest
    if longest > MAX_CODE_LENGTH:
        raise AdtCodeTableError(f"{where}: code length {longest} exceeds the maximum {MAX_CODE_LENGTH}")
    if len(used) == 1:
        if used[0] != 1:
            raise AdtCodeTableError(f"{where}: a one-symbol code must have length 1, got {int(used[0])}")
        return
    # Kraft sum in integer units of 2**-MAX_CODE_LENGTH.
    kraft = int(np.sum(np.left_shift(1, MAX_CODE_LENGTH - used)))
    full = 1 << MAX_CODE_LENGTH
    if kraft != full:
        state = "oversubscribed" if kraft > full else "incomplete"
        raise AdtCodeTableError(
            f"{where}: code is {state}: Kraft sum {kraft}/{full}, expected exactly {full}/{full}"
        )


# ---------------------------------------------------------------------------------------------
# A code, ready to encode and decode
# ---------------------------------------------------------------------------------------------

@dataclass
class HuffmanCode:
    """A canonical prefix code over symbols ``0 .. len(lengths)-1`` (length 0 = symbol unused)."""

    lengths: np.ndarray                      # uint8 per symbol
    count: list[int] = field(init=False)     # count[L] = number of codes of length L
    symbol: list[int] = field(init=False)    # symbols in canonical order
    _book: dict | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.lengths = np.asarray(self.lengths, dtype=np.uint8)
        used = np.flatnonzero(self.lengths)
        order = used[np.lexsort((used, self.lengths[used]))]
        self.symbol = order.tolist()
        self.count = np.bincount(self.lengths[used], minlength=int(self.lengths.max(initial=0)) + 1).tolist()

    @classmethod
    def _from_table(cls, lengths: np.ndarray, symbols: np.ndarray, lens: np.ndarray, longest: int) -> "HuffmanCode":
        """The code of a decoded table: ``symbols`` (increasing) with lengths ``lens``; the same fields
        as ``HuffmanCode(lengths)``, computed without its sort (a stable sort by length suffices)."""
        code = cls.__new__(cls)
        code.lengths = lengths
        code._book = None
        code.symbol = symbols[np.argsort(lens, kind="stable")].tolist()
        # uint8: bincount casts its input to intp "safely", which int64 is not on a 32-bit build
        code.count = np.bincount(lens.astype(np.uint8), minlength=longest + 1).tolist()
        return code

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> "HuffmanCode":
        return cls(code_lengths(counts))

    @property
    def max_length(self) -> int:
        return len(self.count) - 1

    def codebook(self) -> dict[int, bitarray]:
        """Canonical code words (DEFLATE's assignment), MSB first."""
        book: dict[int, bitarray] = {}
        code = 0
        prev_len = 0
        for s in self.symbol:
            n = int(self.lengths[s])
            code <<= n - prev_len
            book[s] = int2ba(code, length=n, endian="big")
            code += 1
            prev_len = n
        return book

    def bit_count(self, symbols: np.ndarray) -> int:
        """Bits that ``symbols`` take when coded (no padding)."""
        if len(symbols) == 0:
            return 0
        # in chunks: indexing makes an intp copy of the symbols, 8 bytes each (ResNet-18's largest
        # tensor would need 36 MiB of temporaries at once, a 512 MiB board's budget is tight)
        lengths, symbols = self.lengths.astype(np.int64), np.asarray(symbols)
        return sum(int(lengths[symbols[i:i + _CHUNK]].sum()) for i in range(0, len(symbols), _CHUNK))

    def encode_into(self, out: bitarray, symbols: np.ndarray) -> None:
        """Append the codes of ``symbols`` to ``out`` (bitarray's C encoder)."""
        if len(symbols) == 0:
            return
        if self._book is None:      # built once: the writer encodes many streams with one code
            self._book = self.codebook()
        out.encode(self._book, np.asarray(symbols).tolist())

    def decode(self, bits: bitarray, start: int, n: int, where: str) -> tuple[np.ndarray, int]:
        """Decode ``n`` symbols from ``bits`` starting at bit ``start``; return them and the end bit."""
        out = self.decode_symbols(bits, start, n, where)
        return out, start + self.bit_count(out)

    def decode_symbols(self, bits: bitarray, start: int, n: int, where: str) -> np.ndarray:
        """The ``n`` symbols from bit ``start`` (uint16), without counting their bits (the caller does,
        e.g. per stream of a run with one cumulative sum)."""
        if n == 0:
            return np.zeros(0, dtype=np.uint16)
        if self.max_length > CANONICAL_MAX_LENGTH:
            # Unreachable with the format's limits (MAX_CODE_LENGTH = 24, every bitarray build takes
            # >= 30); kept so that a future limit fails as a typed error, not a ValueError inside.
            raise AdtPayloadError(
                f"{where}: code length {self.max_length} exceeds what this platform's bitarray decodes "
                f"({CANONICAL_MAX_LENGTH})"
            )
        # Only the bits these n symbols can possibly use are copied out of the stream.
        stop = min(len(bits), start + n * self.max_length)
        try:
            it = canonical_decode(bits[start:stop], self.count, self.symbol)
            return np.fromiter(it, dtype=np.uint16, count=n)
        except (ValueError, StopIteration) as exc:
            raise AdtPayloadError(
                f"{where}: the bitstream from bit {start} does not hold {n} valid codes ({exc})"
            ) from None


# ---------------------------------------------------------------------------------------------
# The stored table: Exp-Golomb coded symbol gaps and length deltas
# ---------------------------------------------------------------------------------------------
#
# A table lists only the used symbols (length > 0), in increasing order: ``smin`` and ``nused``
# (varints), then one bit string of 2*nused-1 Exp-Golomb (order 0) codes: the zig-zag delta of the
# first length to 0, then for each further used symbol the gap (unused symbols skipped) and the
# zig-zag delta of its length to the previous used symbol's length. On LeNet-5-like tables this is
# ~35% smaller than coding every length of the span (results/table_policy_lenet5.json), because
# the sparse tails of a Laplacian histogram cost a short gap instead of two long jumps to 0.

EG_MAX_BITS = 2 * MAX_EG_LEADING_ZEROS + 1   # longest Exp-Golomb code a table may hold


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _eg_append(bits: bitarray, v: int) -> None:
    """Exp-Golomb order 0 of ``v >= 0``: ``u = v + 1`` in binary, preceded by bit_length(u)-1 zeros."""
    u = v + 1
    n = u.bit_length()
    if n - 1 > MAX_EG_LEADING_ZEROS:
        raise AdtCodeTableError(f"Exp-Golomb value {v} needs more than {MAX_EG_LEADING_ZEROS} leading zeros")
    bits.extend([False] * (n - 1))
    bits.extend(int2ba(u, length=n, endian="big"))


def _eg_code() -> tuple[list[int], list[int]]:
    """Exp-Golomb order 0 (at most MAX_EG_LEADING_ZEROS leading zeros) as a canonical code over the
    INVERTED bits: "1" -> "0", "010"/"011" -> "101"/"100", ... Canonical order within a length runs
    opposite to the value, so each length's values are listed descending. This lets bitarray's C
    ``canonical_decode`` read a whole table instead of a per-bit Python loop."""
    count = [0] * (EG_MAX_BITS + 1)
    symbol: list[int] = []
    for z in range(MAX_EG_LEADING_ZEROS + 1):
        count[2 * z + 1] = 1 << z
        symbol.extend(range((1 << (z + 1)) - 2, (1 << z) - 2, -1))
    return count, symbol


_EG_COUNT, _EG_SYMBOL = _eg_code()


def _canonical_max_length() -> int:
    """The longest code bitarray's ``canonical_decode`` accepts on this build, probed once: its
    ``count`` list may hold at most 8*sizeof(Py_ssize_t) entries in current releases, so 31-bit codes
    on 64-bit builds but only 30-bit codes on 32-bit ones (armv7l), too short for a table's longest
    Exp-Golomb code (EG_MAX_BITS = 31)."""
    for n in range(EG_MAX_BITS, 0, -1):
        try:
            if list(canonical_decode(bitarray("0"), [0, 2] + [0] * (n - 1), [0, 1])) == [0]:
                return n
        except ValueError:
            continue
    return 0


CANONICAL_MAX_LENGTH = _canonical_max_length()
# decode_table's path: bitarray's C decoder where it takes 31-bit codes, else the scan below. A module
# switch, so that tests run both paths on any machine.
EG_CANONICAL = CANONICAL_MAX_LENGTH >= EG_MAX_BITS


def _eg_scan(bits: bitarray, ncodes: int) -> np.ndarray:
    """``ncodes`` Exp-Golomb values from the start of ``bits`` without the canonical decoder (for
    builds where it cannot take 31-bit codes): each code's first 1 is found by bitarray's C search,
    bounded to MAX_EG_LEADING_ZEROS zeros, then every value is read at once from the bytes as a
    fixed-width field. Raises ValueError when the bits are not ``ncodes`` codes."""
    n = len(bits)
    ones = np.empty(ncodes, dtype=np.int64)
    zeros = np.empty(ncodes, dtype=np.int64)
    index = bits.index
    p = 0
    for k in range(ncodes):
        try:
            q = index(1, p, min(n, p + MAX_EG_LEADING_ZEROS + 1))
        except ValueError:
            raise ValueError(f"code {k} at bit {p}: more than {MAX_EG_LEADING_ZEROS} leading zeros "
                             "or the bits end") from None
        z = q - p
        p = q + z + 1
        if p > n:
            raise ValueError(f"code {k}: the bits end inside it")
        ones[k] = q
        zeros[k] = z
    # value + 1 = the z+1 bits from the leading 1: a window of 3 bytes holds them (offset <= 7, width <= 16)
    raw = np.frombuffer(bits.tobytes() + b"\0\0", dtype=np.uint8).astype(np.int64)
    b = ones >> 3
    word = (raw[b] << 16) | (raw[b + 1] << 8) | raw[b + 2]
    width = zeros + 1
    return ((word >> (24 - (ones & 7) - width)) & ((1 << width) - 1)) - 1


def encode_table(lengths: np.ndarray) -> bytes:
    """Serialize a code's lengths (FORMAT.md "Code tables")."""
    lengths = np.asarray(lengths, dtype=np.int64)
    used = np.flatnonzero(lengths)
    if len(used) == 0:
        raise AdtCodeTableError("cannot store an empty code")
    if int(used[-1]) >= MAX_Q or int(lengths.max()) > MAX_CODE_LENGTH:
        raise AdtCodeTableError(f"code uses symbol {int(used[-1])} or length {int(lengths.max())}: beyond the format's limits")
    bits = bitarray(endian="big")
    prev_len, prev_sym = 0, None
    for sym in used.tolist():
        if prev_sym is not None:
            _eg_append(bits, sym - prev_sym - 1)
        length = int(lengths[sym])
        _eg_append(bits, _zigzag(length - prev_len))
        prev_len, prev_sym = length, sym
    bits.fill()  # zero-pad to a whole byte
    return encode_varint(int(used[0])) + encode_varint(len(used)) + bits.tobytes()


def decode_table(cur: Cursor, where: str) -> np.ndarray:
    """Read one stored table at ``cur`` and return the lengths of symbols ``0 .. last used``."""
    return _read_table(cur, where)[0]


def read_code(cur: Cursor, where: str) -> HuffmanCode:
    """Read one stored table at ``cur`` as a ready :class:`HuffmanCode` (what :func:`decode_table`
    returns, without sorting the symbols again: the table lists them in increasing order already)."""
    lengths, symbols, lens, longest = _read_table(cur, where)
    return HuffmanCode._from_table(lengths, symbols, lens, longest)


def _read_table(cur: Cursor, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The table at ``cur``: (lengths of symbols 0..last used, the used symbols in increasing order,
    their lengths, the longest). Few NumPy calls per table: opening a small file is mostly per-call
    overhead."""
    smin = cur.varint(f"{where} smin", limit=MAX_Q - 1)
    nused = cur.varint(f"{where} nused", limit=MAX_Q - smin, minimum=1)
    ncodes = 2 * nused - 1
    # Each Exp-Golomb code takes at least 1 bit: never decode more than the section can hold, and
    # copy only the bytes these codes can occupy, not the rest of the section.
    if ncodes > 8 * cur.remaining():
        raise AdtCodeTableError(
            f"{where}: {nused} used symbols need at least {ncodes} bits, only {8 * cur.remaining()} left in the section"
        )
    span_bytes = min(cur.remaining(), (ncodes * EG_MAX_BITS + 7) // 8)
    bits = bitarray(endian="big")
    bits.frombytes(bytes(cur.buf[cur.pos:cur.pos + span_bytes]))
    try:
        if EG_CANONICAL:
            it = canonical_decode(~bits, _EG_COUNT, _EG_SYMBOL)
            vals = np.fromiter(islice(it, ncodes), dtype=np.int64, count=ncodes)
        else:
            vals = _eg_scan(bits, ncodes)
    except ValueError as exc:
        raise AdtCodeTableError(
            f"{where}: the bits after offset {cur.pos} are not {ncodes} Exp-Golomb codes of at most "
            f"{MAX_EG_LEADING_ZEROS} leading zeros ({exc})"
        ) from None
    # Exp-Golomb of v has 2*bit_length(v+1)-1 bits; frexp's exponent of v+1 (< 2**16, exact in a
    # float64) is its bit length.
    nbits = 2 * int(np.frexp(vals + 1)[1].sum()) - ncodes
    zz = vals[0::2]
    lens = ((zz >> 1) ^ -(zz & 1)).cumsum()           # zig-zag deltas -> lengths
    symbols = np.empty(nused, dtype=np.int64)        # smin, then smin + cumulated gaps
    symbols[0] = smin
    symbols[1:] = vals[1::2] + 1
    symbols.cumsum(out=symbols)
    longest = int(lens.max())
    if int(lens.min()) < 1 or longest > MAX_CODE_LENGTH:
        i = int(np.flatnonzero((lens < 1) | (lens > MAX_CODE_LENGTH))[0])
        raise AdtCodeTableError(
            f"{where}: used symbol #{i} has code length {int(lens[i])}, expected 1..{MAX_CODE_LENGTH}"
        )
    last = int(symbols[-1])
    if last >= MAX_Q:
        raise AdtCodeTableError(f"{where}: symbol gaps reach symbol {last}, beyond {MAX_Q - 1}")
    nbytes = (nbits + 7) // 8
    if bits[nbits:8 * nbytes].any():
        raise AdtCodeTableError(f"{where}: padding bits after the code lengths are not zero")
    cur.pos += nbytes
    lengths = np.zeros(last + 1, dtype=np.uint8)
    lengths[symbols] = lens
    _check_used(lens, where, longest)
    return lengths, symbols, lens, longest
