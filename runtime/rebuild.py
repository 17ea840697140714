"""Rebuild dense float32 weights from a decoded .adt file (dequantize, then Tucker mode products or
tensor-train matrix products).

``W = reshape(G x_1 M_1 x_2 ... x_d M_d, shape)`` with core ``G`` of dims ``(k_1..k_d)`` and factors
``M_i`` of shape ``(n_i, k_i)``. Every product is computed in float64 and rounded once to float32,
exactly what the exporter does, so the result does not depend on the contraction order or the BLAS
(up to float64 rounding, far below one float32 ulp). The order of the mode products is the cheapest
one (a sort by a closed-form key per mode, :func:`contraction_order`), which matters for big layers:
a mode with ``n_i < k_i`` shrinks the intermediate and goes first. Per-parameter work that does not
grow with the parameter's size is kept small (results/many_params.md: a file of 65,535 order-8
parameters rebuilds in linear time).

Memory: each weight is rebuilt straight into its final float32 array. A large Tucker parameter runs
its mode products chunk by chunk (:func:`tucker_schedule`): from one step of the contraction order on,
over blocks of rows of that step's factor, the block's products written into one or two float64
buffers reused by every block and its result cast into its slice of the float32 weight, so that no
float64 copy of the whole weight exists (the same float64 dot products, rounded once: bit-identical
to :func:`tucker_to_tensor` cast to float32; a small parameter chunks only its last product, which
keeps the block in cache and spares re-faulting a large temporary at every load). Plain parameters are
dequantized in blocks into their float32 array. A dequantized core is dropped after the last
parameter that uses it, and when the rebuild read the file itself (a path or bytes: the caller holds
no :class:`AdtFile`) it also drops the decoded symbols of each plain parameter and core once rebuilt
(``Param.symbols`` / ``Core.symbols`` become None), so that no value is held twice.

Tensor train (format 2.0, encoding 2): ``T[j_1..j_d] = G_1[0,j_1,:] G_2[:,j_2,:] ... G_d[:,j_d,0]`` with
cores ``G_k`` of shape ``(r_{k-1}, n_k, r_k)``. The cores are multiplied as a matrix chain in the
cheapest order (:func:`tt_contraction_order`, a DP over the d <= 8 cores), every product in float64 on
row-major views (no transposes), the last one in row blocks cast straight into the float32 weight
(:func:`tt_into`), so a TT weight, too, never exists as a whole float64 array.

Memory budget: before anything is rebuilt, :func:`rebuild_plan` works out from the validated tensor
table alone (shapes, core dims, factor shapes) what the rebuild will hold at its peak: every float32
weight already rebuilt (the caller keeps them), every dequantized core still needed by a later
parameter and the temporaries of the parameter being rebuilt (its float32 weight, its factors and
the float64 intermediates of its chunked schedule). The decoded symbols are not counted (they are
the file's). :func:`iter_weights` refuses with :class:`~adt.runtime.errors.AdtBudgetError` when that
peak exceeds ``max_memory`` (:data:`DEFAULT_MAX_MEMORY`, 256 MiB, sized for a 512 MiB board); a
MemoryError during the rebuild is raised as an AdtBudgetError naming the parameter too.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from math import prod
from typing import Container, Iterator, Sequence

import numpy as np

from .errors import AdtBudgetError
from .format import CORE_CP, ENC_PLAIN, ENC_TT, ENC_TUCKER, AdtError, AdtFile, AdtTableError, read_adt

__all__ = [
    "CHUNK_BYTES", "DEFAULT_MAX_MEMORY", "MAX_ARRAY_BYTES", "WHOLE_BYTES", "ParamCost", "RebuildPlan", "TTOrder",
    "TuckerSchedule", "check_rebuild_budget", "contraction_order", "cp_to_tensor", "format_bytes", "iter_weights",
    "rebuild_plan", "rebuild_weights", "tt_contraction_order", "tt_into", "tt_to_tensor", "tucker_into",
    "tucker_schedule", "tucker_to_tensor",
]

DEFAULT_MAX_MEMORY = 256 << 20
"""Default ``max_memory`` of a load (bytes): the rebuild's peak, weights kept included, may not exceed
256 MiB, half the RAM of a 512 MiB board. A ResNet-18-sized file stays under half of it
(tests/runtime/test_rebuild_budget.py), Wide-ResNet-28-10 (36.5M weights, 139.2 MiB as float32) needs
143 MiB (results/memory.md); a caller with more memory raises the limit (``None``: no limit)."""


@lru_cache(maxsize=4096)
def contraction_order(core_dims: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The order of mode products ``core x_i M_i`` with the fewest multiply-adds, in O(d log d).

    Contracting mode ``i`` when the modes in ``done`` are already expanded costs
    ``prod(n_j for j in done) * prod(k_j for j not in done) * n_i``. Swapping two adjacent modes
    ``i, j`` of an order changes only their own two terms, from ``P*S*k_j*n_i*(k_i + n_j)`` to
    ``P*S*k_i*n_j*(k_j + n_i)`` (``P``, ``S``: products of the modes before and after, the same for
    both), so ``i`` before ``j`` is no worse exactly when ``1/k_i - 1/n_i <= 1/k_j - 1/n_j``: a key
    of the mode alone. An order with an adjacent pair against that key is strictly improved by the
    swap, so every optimal order is sorted by the key, and orders sorted by it differ only among
    equal keys, whose swaps cost nothing: sorting (exact fractions, ties by mode index) is optimal.
    It returns the same order as the subset DP it replaced (:func:`_contraction_order_dp`, kept as
    the tests' reference), ties included, so rebuilt weights are bit-identical."""
    d = len(core_dims)
    if len(sizes) != d:
        raise AdtTableError(f"contraction order: core of order {d} but {len(sizes)} factor sizes")
    # 1/k - 1/n = (n - k) / (n k), exactly: every key scaled by the product of all n_i k_i (Python ints)
    scale = prod(core_dims) * prod(sizes)
    return tuple(sorted(range(d), key=lambda i: ((sizes[i] - core_dims[i]) * (scale // (sizes[i] * core_dims[i])), i)))


def _contraction_order_dp(core_dims: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The reference :func:`contraction_order`: a DP over the set of contracted modes (2^d * d steps;
    the intermediate size only depends on that set). Kept for the tests, which check that both give
    the same order."""
    d = len(core_dims)
    full = (1 << d) - 1
    best: dict[int, tuple[int, tuple[int, ...]]] = {0: (0, ())}
    for mask in range(full + 1):  # masks in increasing order: every subset comes before its supersets
        if mask not in best:
            continue
        cost, order = best[mask]
        size = prod(sizes[j] if mask >> j & 1 else core_dims[j] for j in range(d))
        for i in range(d):
            if mask >> i & 1:
                continue
            new = mask | 1 << i
            c = cost + size * sizes[i]
            if new not in best or c < best[new][0]:
                best[new] = (c, order + (i,))
    return best[full][1]


def tucker_to_tensor(core: np.ndarray, factors: Sequence[np.ndarray],
                     order: Sequence[int] | None = None) -> np.ndarray:
    """``core x_1 M_1 ... x_d M_d`` (float64) in the cheapest order (or ``order``, the one
    :func:`contraction_order` gave for these dims); result dims ``(n_1, ..., n_d)``."""
    t = np.asarray(core, dtype=np.float64)
    if t.ndim != len(factors):
        raise AdtTableError(f"Tucker core has order {t.ndim} but {len(factors)} factors were given")
    for i, m in enumerate(factors):
        if m.ndim != 2 or m.shape[1] != t.shape[i]:
            raise AdtTableError(f"factor {i} has shape {m.shape}, expected (n, {t.shape[i]})")
    if order is None:
        order = contraction_order(tuple(t.shape), tuple(int(m.shape[0]) for m in factors))
    for i in order:
        t = _mode_product(t, np.asarray(factors[i], dtype=np.float64), i)
    return t


def _mode_product(t: np.ndarray, m: np.ndarray, i: int, out: np.ndarray | None = None) -> np.ndarray:
    """``t x_i m`` keeping every axis in place (C-contiguous in, C-contiguous out): viewing ``t`` as
    (A, k_i, B), the product is ``m @ t[a]`` for each ``a``; one GEMM when A or B is 1. No transposes,
    so the final float32 cast is a single contiguous pass (2-3x faster than np.tensordot + transpose).
    ``out``: a float64 buffer of at least the result's size to write it into (the same GEMMs)."""
    n, k = m.shape
    sh = t.shape
    a, b = prod(sh[:i]), prod(sh[i + 1:])
    if out is None:   # the common path of many small parameters: as few calls as possible
        if b == 1:
            res = t.reshape(a, k) @ m.T
        elif a == 1:
            res = m @ t.reshape(k, b)
        else:
            res = np.matmul(m, t.reshape(a, k, b))
    elif b == 1:
        res = np.matmul(t.reshape(a, k), m.T, out=out[:a * n].reshape(a, n))
    elif a == 1:
        res = np.matmul(m, t.reshape(k, b), out=out[:n * b].reshape(n, b))
    else:
        res = np.matmul(m, t.reshape(a, k, b), out=out[:a * n * b].reshape(a, n, b))
    return res.reshape(sh[:i] + (n,) + sh[i + 1:])


CHUNK_BYTES = 1 << 20
"""The float64 intermediates of one chunk of a chunked Tucker rebuild stay near this size (bytes)."""
WHOLE_BYTES = 4 << 20
"""A Tucker parameter whose float64 temporaries, unchunked, stay under this runs its mode products on
whole tensors, only the last one in blocks of about ``2 * CHUNK_BYTES``: fewer, larger products are
faster for small layers (LeNet-5's fc1: 3.2 MB), and a few MiB more at the peak do not matter there."""


@dataclass(frozen=True)
class TuckerSchedule:
    """How a Tucker parameter is rebuilt (:func:`tucker_schedule`): the mode products in ``order``;
    steps before ``split`` run on whole tensors, the steps from ``split`` on run once per chunk of
    rows of the factor of mode ``order[split]`` (``chunks`` blocks of near-equal size, each at least
    2 rows, so that no product becomes a matrix-vector one). ``work``: peak bytes of the float64
    temporaries (the float64 core included); ``largest``: the largest float64 intermediate."""

    order: tuple[int, ...]
    split: int
    chunks: int
    work: int
    largest: int

    def bounds(self, rows: int) -> list[int]:
        """Row boundaries ``[0, ..., rows]`` of the chunks."""
        return [rows * c // self.chunks for c in range(self.chunks + 1)]


@lru_cache(maxsize=4096)
def tucker_schedule(core_dims: tuple[int, ...], sizes: tuple[int, ...], chunk_bytes: int = CHUNK_BYTES,
                    whole_bytes: int = WHOLE_BYTES) -> TuckerSchedule:
    """The chunked schedule of the mode products with the smallest float64 peak (ties: the earliest
    split; a split factor is chunked only when its whole product does not fit in ``chunk_bytes``). A
    parameter whose unchunked temporaries fit in ``whole_bytes`` runs every product whole but the
    last, which goes in blocks of about ``2 * chunk_bytes`` (one block: :func:`tucker_to_tensor`'s
    computation). The contraction order is
    :func:`contraction_order`'s, so every output element is the same float64 dot products as in
    :func:`tucker_to_tensor`: a chunk only has fewer rows in one GEMM dimension."""
    order = contraction_order(core_dims, sizes)
    d = len(order)
    dims = list(core_dims)
    elems = [prod(dims)]                       # elems[j]: elements of the input of step j (elems[d]: the result)
    for i in order:
        dims[i] = sizes[i]
        elems.append(prod(dims))
    full = [elems[j] + elems[j + 1] for j in range(d)]   # a whole step: its input and output alive

    def cost(s: int, chunks: int) -> tuple[int, int]:
        """(peak elements alive, largest array) when the steps from ``s`` on run in ``chunks``: the
        whole steps before ``s``, then the split's whole input and the chunk buffers (one, or two
        that the chunk's products take turns to write, each the size of the largest product it takes)."""
        n = sizes[order[s]]
        r = -(-n // chunks) if n else 0
        part = [-(-elems[j] * r // n) if n else 0 for j in range(s + 1, d + 1)]   # chunk j-1's output
        after = elems[s] + max(part[0::2]) + max(part[1::2], default=0)
        return max(max(full[:s], default=0), after), max(elems[1:s + 1] + [elems[s]] + part)

    if d and max(full) * _F64 <= whole_bytes:
        # whole products, but the last one in blocks of about chunk_bytes / 2 written into one reused
        # buffer: each float64 block is cast while it is still in cache, and no large temporary is
        # mapped and faulted in again at every call (LeNet-5's fc1: 220 us instead of 315 us)
        n = sizes[order[-1]]
        chunks = max(1, min(n // 2, -(-elems[d] * _F64 // (chunk_bytes // 2)))) if n >= 4 else 1
        work, largest = cost(d - 1, chunks)
        return TuckerSchedule(order, d - 1, chunks, work * _F64, largest * _F64)
    best = None
    for s in range(d):
        n = sizes[order[s]]
        # per row of the split factor: the chunk steps' alive elements (the split step's input is whole)
        per_row = max([elems[s + 1]] + full[s + 1:]) / n if n else 0
        chunks = 1
        if n >= 4 and per_row * n * _F64 > chunk_bytes:
            rows = max(2, int(chunk_bytes // (per_row * _F64)))
            chunks = max(1, n // rows)
        work, largest = cost(s, chunks)
        key = (work, s)
        if best is None or key < best[0]:
            best = (key, TuckerSchedule(order, s, chunks, work * _F64, largest * _F64))
    if best is None:   # order 0: a scalar core
        return TuckerSchedule(order, 0, 1, elems[0] * _F64, elems[0] * _F64)
    return best[1]


def tucker_into(core: np.ndarray, factors: Sequence[np.ndarray], out: np.ndarray,
                schedule: TuckerSchedule | None = None) -> np.ndarray:
    """``core x_1 M_1 ... x_d M_d`` rounded to float32 into ``out`` (float32, dims ``(n_1..n_d)``),
    following ``schedule`` (default :func:`tucker_schedule`'s): the same values as
    ``tucker_to_tensor(core, factors).astype(np.float32)`` without a whole float64 copy."""
    t = np.asarray(core, dtype=np.float64)
    sizes = tuple(int(m.shape[0]) for m in factors)
    if t.ndim != len(factors):
        raise AdtTableError(f"Tucker core has order {t.ndim} but {len(factors)} factors were given")
    for i, m in enumerate(factors):
        if m.ndim != 2 or m.shape[1] != t.shape[i]:
            raise AdtTableError(f"factor {i} has shape {m.shape}, expected (n, {t.shape[i]})")
    if out.shape != sizes or out.dtype != np.float32:
        raise AdtTableError(f"output of shape {out.shape} ({out.dtype}), expected {sizes} (float32)")
    if schedule is None:
        schedule = tucker_schedule(tuple(t.shape), sizes)
    order, s = schedule.order, schedule.split
    if schedule.chunks == 1:   # one piece (every small parameter): tucker_to_tensor's products, no buffers
        for i in order:
            t = _mode_product(t, np.asarray(factors[i], dtype=np.float64), i)
        out[...] = t
        return out
    for i in order[:s]:
        t = _mode_product(t, np.asarray(factors[i], dtype=np.float64), i)
    p = order[s]
    mp = np.asarray(factors[p], dtype=np.float64)
    rest = [(i, np.asarray(factors[i], dtype=np.float64)) for i in order[s + 1:]]
    bounds = schedule.bounds(sizes[p])
    # the chunk products write into one or two buffers reused by every chunk (allocated once: no
    # temporary is mapped and faulted in again per chunk), taking turns: each the size of the
    # largest product written into it
    rows = max(hi - lo for lo, hi in zip(bounds, bounds[1:]))
    dims, need = list(t.shape), [0, 0]
    for j, i in enumerate(order[s:]):
        dims[i] = rows if i == p else sizes[i]
        need[j % 2] = max(need[j % 2], prod(dims))
    bufs = [np.empty(n, np.float64) for n in need[:min(2, len(order) - s)]]
    for lo, hi in zip(bounds, bounds[1:]):
        c = _mode_product(t, mp[lo:hi], p, bufs[0])
        for j, (i, m) in enumerate(rest, start=1):
            c = _mode_product(c, m, i, bufs[j % 2])
        out[(slice(None),) * p + (slice(lo, hi),)] = c   # rounded once to float32, as astype does
    return out


def cp_to_tensor(diag: np.ndarray, factors: Sequence[np.ndarray]) -> np.ndarray:
    """The CP form of a superdiagonal core: ``W[i_1..i_d] = sum_r g_r prod_j M_j[i_j, r]`` (float64),
    without ever building the ``r^d`` core."""
    g = np.asarray(diag, dtype=np.float64)
    d = len(factors)
    letters = "abcdefgh"[:d]
    spec = "z," + ",".join(f"{c}z" for c in letters) + "->" + letters
    return np.einsum(spec, g, *(np.asarray(m, dtype=np.float64) for m in factors), optimize="greedy")


# -- tensor train -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TTOrder:
    """How the cores of a tensor train are multiplied (:func:`tt_contraction_order`). ``merges``: in
    execution order, ``(a, b, c)`` merges the contracted segments ``[a..b]`` and ``[b+1..c]`` (0-based
    core indices, inclusive); the last merge is the whole train. ``cost``: multiply-adds of all merges.
    ``largest``: elements of the largest intermediate other than the result; ``peak``: elements of the
    intermediates (not the cores, not the result) alive at once when the merges run in this order
    and the last one is written block by block into the result (``block``: its elements)."""

    merges: tuple[tuple[int, int, int], ...]
    cost: int
    largest: int
    peak: int
    block: int


def _tt_dims(reshape: Sequence[int], ranks: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n = tuple(int(x) for x in reshape)
    if not n or len(ranks) != len(n) - 1:
        raise AdtTableError(f"tensor train: {len(n)} reshape dims need {max(len(n) - 1, 0)} ranks, got {len(ranks)}")
    return n, (1,) + tuple(int(r) for r in ranks) + (1,)


@lru_cache(maxsize=4096)
def tt_contraction_order(reshape: tuple[int, ...], ranks: tuple[int, ...],
                         chunk_bytes: int = CHUNK_BYTES) -> TTOrder:
    """The cheapest order of the matrix products of a tensor train (FORMAT.md §10): a matrix-chain DP
    over the d <= 8 cores, where merging segments ``[a..b]`` (an ``(r_{a-1}, N_ab, r_b)`` tensor) and
    ``[b+1..c]`` costs ``r_{a-1} N_ab r_b N_(b+1)c r_c`` multiply-adds and gives an ``(r_{a-1},
    N_ac, r_c)`` tensor (``N``: the product of the segment's ``n_k``). Ties go to the smallest split,
    so the order, hence the float64 sums, are fixed. ``ranks``: ``(r_1..r_{d-1})``."""
    n, r = _tt_dims(reshape, ranks)
    d = len(n)
    npre = [1]
    for x in n:
        npre.append(npre[-1] * x)

    def size(a: int, c: int) -> int:      # elements of the contracted segment [a..c]
        return r[a] * (npre[c + 1] // npre[a]) * r[c + 1]

    cost = {(a, a): 0 for a in range(d)}
    split: dict[tuple[int, int], int] = {}
    for span in range(1, d):
        for a in range(d - span):
            c = a + span
            best = None
            for b in range(a, c):
                v = cost[a, b] + cost[b + 1, c] + r[a] * (npre[b + 1] // npre[a]) * r[b + 1] * (npre[c + 1] // npre[b + 1]) * r[c + 1]
                if best is None or v < best[0]:
                    best = (v, b)
            cost[a, c], split[a, c] = best
    merges: list[tuple[int, int, int]] = []
    largest = 0

    def walk(a: int, c: int) -> tuple[int, int]:
        """Post-order over the merge tree, left operand first: (peak of intermediates while the
        segment is made, its own elements if it is an intermediate, else 0 for a core)."""
        nonlocal largest
        if a == c:
            return 0, 0
        b = split[a, c]
        pl, sl = walk(a, b)
        pr, sr = walk(b + 1, c)
        merges.append((a, b, c))
        own = size(a, c)
        if (a, c) == (0, d - 1):   # the result: written block by block into the float32 weight
            return max(pl, sl + pr, sl + sr + _tt_block(n, r, b, chunk_bytes)), 0
        largest = max(largest, own)
        return max(pl, sl + pr, sl + sr + own), own

    peak, _ = walk(0, d - 1)
    block = _tt_block(n, r, split[0, d - 1], chunk_bytes) if d > 1 else 0
    return TTOrder(tuple(merges), cost[0, d - 1], largest, peak, block)


def _tt_block(n: tuple[int, ...], r: tuple[int, ...], b: int, chunk_bytes: int) -> int:
    """Elements of one float64 block of the last merge: rows of the left operand ``(N_left, r_b)``
    times the ``N_right`` columns, about ``chunk_bytes`` (at least one row)."""
    left, right = prod(n[:b + 1]), prod(n[b + 1:])
    return _tt_rows(left, right, chunk_bytes) * right


def _tt_rows(left: int, right: int, chunk_bytes: int) -> int:
    return max(1, min(left, chunk_bytes // (_F64 * right))) if right else 1


def _tt_check(cores: Sequence[np.ndarray]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(reshape, inner ranks) of a list of TT cores; AdtTableError if they do not chain."""
    if not cores:
        raise AdtTableError("tensor train: no cores")
    prev = 1
    for k, g in enumerate(cores):
        if g.ndim != 3 or g.shape[0] != prev:
            raise AdtTableError(f"tensor train: core {k} has shape {g.shape}, expected ({prev}, n, r)")
        prev = g.shape[2]
    if prev != 1:
        raise AdtTableError(f"tensor train: the last core has shape {cores[-1].shape}, expected (r, n, 1)")
    return tuple(int(g.shape[1]) for g in cores), tuple(int(g.shape[2]) for g in cores[:-1])


def tt_into(cores: Sequence[np.ndarray], out: np.ndarray, order: TTOrder | None = None) -> np.ndarray:
    """The tensor train of ``cores`` rounded to float32 into ``out`` (float32, dims ``(n_1..n_d)``):
    every product in float64, in ``order`` (default :func:`tt_contraction_order`'s); the last merge
    runs in row blocks written straight into ``out``, so no float64 copy of the whole weight exists
    (each element is the same float64 dot product as in one whole product: bit-identical)."""
    reshape, ranks = _tt_check(cores)
    if out.shape != reshape or out.dtype != np.float32:
        raise AdtTableError(f"output of shape {out.shape} ({out.dtype}), expected {reshape} (float32)")
    if order is None:
        order = tt_contraction_order(reshape, ranks)
    g64 = [np.asarray(g, dtype=np.float64) for g in cores]
    if len(g64) == 1:
        out[...] = g64[0].reshape(reshape)
        return out
    *inner, (a, b, c) = order.merges
    seg = _tt_merge(g64, inner)
    rb = seg[a, b].shape[2]
    left, right = seg.pop((a, b)).reshape(-1, rb), seg.pop((b + 1, c)).reshape(rb, -1)
    flat = out.reshape(left.shape[0], right.shape[1])
    rows = max(1, order.block // right.shape[1])   # the block rebuild_plan counted
    buf = np.empty((min(rows, left.shape[0]), right.shape[1]), np.float64)
    for lo in range(0, left.shape[0], rows):
        hi = min(lo + rows, left.shape[0])
        flat[lo:hi] = np.matmul(left[lo:hi], right, out=buf[:hi - lo])   # rounded once to float32
    return out


def tt_to_tensor(cores: Sequence[np.ndarray]) -> np.ndarray:
    """The tensor train ``T[j_1..j_d] = G_1[0, j_1, :] G_2[:, j_2, :] ... G_d[:, j_d, 0]`` (float64,
    dims ``(n_1..n_d)``) of cores ``G_k`` of shape ``(r_{k-1}, n_k, r_k)``, ``r_0 = r_d = 1``, in the
    cheapest order (:func:`tt_contraction_order`)."""
    g64 = [np.asarray(g, dtype=np.float64) for g in cores]
    reshape, ranks = _tt_check(g64)
    seg = _tt_merge(g64, tt_contraction_order(reshape, ranks).merges)
    return seg[0, len(g64) - 1].reshape(reshape)


def _tt_merge(g64: Sequence[np.ndarray], merges: Sequence[tuple[int, int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """The contracted segments left after running ``merges`` over the float64 cores (segment ``[a..c]``
    keyed ``(a, c)``); each merged operand is dropped as soon as it is used."""
    seg: dict[tuple[int, int], np.ndarray] = {(k, k): g for k, g in enumerate(g64)}
    for a, b, c in merges:
        left, right = seg.pop((a, b)), seg.pop((b + 1, c))
        ra, rb = left.shape[0], left.shape[2]
        # (r_a N_left, r_b) @ (r_b, N_right r_c) is already the (r_a, N_left N_right, r_c) layout: no transposes
        seg[a, c] = (left.reshape(-1, rb) @ right.reshape(rb, -1)).reshape(ra, -1, right.shape[2])
        del left, right
    return seg


# -- memory budget ----------------------------------------------------------------------------------
_F32, _F64 = 4, 8
# dequantize(): a float64 copy of the symbols and up to two float64 temporaries (numpy elides the
# second one only for large arrays), then the float32 result
_DEQUANT_TEMP = 3 * _F64 + _F32
_PLAIN_CHUNK = CHUNK_BYTES // _DEQUANT_TEMP   # symbols of a plain parameter dequantized at once (~1 MiB of temporaries)
# Python objects, measured with tracemalloc and rounded up: a parameter's rebuild makes a few KiB of
# them (array headers, tuples, lists; at most ~4 KiB for WRN-28-10's layers), and every weight kept
# costs its array objects and the caller's dict entry (~0.5 KiB). A Tucker parameter adds objects per mode
# (each factor's float64 copy, the contraction's views and chunk slices: up to ~0.6 KiB per mode at order 8)
_PY_TEMP = 8 << 10
_PY_PER_MODE = 1 << 10
_PY_KEPT = 1 << 10


@dataclass(frozen=True)
class ParamCost:
    """What rebuilding one parameter costs (bytes). ``peak``: everything the parameter's rebuild holds
    at once, its own float32 result included; ``output``: the float32 weight kept afterwards;
    ``cached``: a dequantized core first used here and kept until its last parameter is rebuilt;
    ``intermediate``: the largest float64 intermediate (0 for a plain parameter); ``order``: the
    Tucker contraction order the figures are for and ``schedule`` its chunked schedule, ``tt`` a
    tensor train's merge order (the rebuild uses them: computed once); ``held``: the weights and cores earlier parameters left behind when
    this one's rebuild starts."""

    name: str
    output: int
    peak: int
    cached: int = 0
    intermediate: int = 0
    order: tuple[int, ...] | None = None
    held: int = 0
    schedule: TuckerSchedule | None = None
    tt: TTOrder | None = None

    @property
    def total(self) -> int:
        """Everything alive at this parameter's peak: what earlier ones left plus its own peak."""
        return self.held + self.peak


@dataclass(frozen=True)
class RebuildPlan:
    """The per-parameter costs in table order and the peak of the whole rebuild (weights kept included):
    ``peak_param`` is the parameter at whose rebuild the peak is reached."""

    params: tuple[ParamCost, ...]
    peak: int
    peak_param: str | None
    kept: int          # every float32 weight together (what ``rebuild_weights`` returns)


def format_bytes(n: int) -> str:
    """``n`` bytes in words: "1.10 GiB (1,179,648,076 bytes)"."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def _cp_peak(rank: int, sizes: tuple[int, ...]) -> tuple[int, int]:
    """(peak bytes of :func:`cp_to_tensor` plus the float32 cast, largest intermediate). np.einsum's
    greedy path never makes an intermediate larger than its largest operand or output ("memory_limit
    None"); at most two of them and the result are alive at once."""
    numel = prod(sizes)
    biggest = max([numel, rank] + [n * rank for n in sizes])
    operands = (rank + sum(n * rank for n in sizes)) * _F64
    return operands + max(numel * _F64 + 2 * biggest * _F64, numel * (_F64 + _F32)), biggest * _F64


def _dequant_temp(c, new_core: bool, factor_sizes: list[int]) -> int:
    """Symbols dequantized at once while a Tucker parameter's core (if new) and factors are read."""
    total = sum(factor_sizes)
    batched = total if len(factor_sizes) > 1 and total <= _BATCH_DEQUANT else 0
    return max(c.stored_count if new_core else 0, batched, max(factor_sizes, default=0))


def rebuild_plan(f: AdtFile) -> RebuildPlan:
    """The memory :func:`iter_weights` will need for ``f`` when the caller keeps every weight (as
    ``load`` does), computed from the tensor table alone: nothing is dequantized or rebuilt."""
    costs: list[ParamCost] = []
    last_use = {p.core: i for i, p in enumerate(f.params) if p.encoding == ENC_TUCKER}
    live: set[int] = set()
    kept = cores = 0
    for idx, p in enumerate(f.params):
        out = p.numel * _F32
        held = kept + cores + idx * _PY_KEPT
        if p.encoding == ENC_PLAIN:
            cost = ParamCost(p.name, out, out + min(p.numel, _PLAIN_CHUNK) * _DEQUANT_TEMP + _PY_TEMP, held=held)
        elif p.encoding == ENC_TT:
            cost = _tt_cost(p, out, held)
        else:
            c = f.cores[p.core]
            new_core = 0 if p.core in live else c.stored_count * _F32
            sizes = tuple([int(m.shape[0]) for m in p.factors])
            factor_sizes = [int(m.size) for m in p.factors]
            factors = sum(factor_sizes)
            schedule = None
            if c.kind == CORE_CP:
                work, largest = _cp_peak(c.dims[0], sizes)   # its float32 result included
            else:
                schedule = tucker_schedule(tuple(c.dims), sizes)
                # the float32 weight written chunk by chunk, the float64 factors, the schedule's temporaries
                work, largest = out + factors * _F64 + schedule.work, schedule.largest
            dequant = _dequant_temp(c, bool(new_core), factor_sizes) * _DEQUANT_TEMP
            py = _PY_TEMP + _PY_PER_MODE * len(sizes)
            cost = ParamCost(p.name, out, new_core + factors * _F32 + max(work, dequant) + py, new_core, largest,
                             schedule.order if schedule else None, held=held, schedule=schedule)
            live.add(p.core)
            cores += new_core
            if last_use[p.core] == idx:   # dropped after its last parameter
                live.discard(p.core)
                cores -= c.stored_count * _F32
        kept += cost.output
        costs.append(cost)
    top = max(costs, key=lambda c: c.total, default=None)
    peak = max(top.total if top else 0, kept + cores + len(costs) * _PY_KEPT)
    return RebuildPlan(tuple(costs), peak, top.name if top else None, kept)


def _tt_cost(p, out: int, held: int) -> ParamCost:
    """A TT parameter's rebuild: its float32 cores (dequantized), their float64 copies, the
    intermediates of :func:`tt_contraction_order`'s order and the block of its last merge, and the
    float32 weight; or the dequantization's temporaries, whichever is more."""
    reshape, ranks = p.reshape, p.ranks
    order = tt_contraction_order(reshape, ranks)
    sizes = [int(m.size) for m in p.factors]
    stored = sum(sizes)
    work = out + stored * _F64 + order.peak * _F64
    batched = stored if len(sizes) > 1 and stored <= _BATCH_DEQUANT else 0
    dequant = max(batched, max(sizes)) * _DEQUANT_TEMP
    py = _PY_TEMP + _PY_PER_MODE * len(sizes)
    largest = max(order.largest, order.block) * _F64
    return ParamCost(p.name, out, stored * _F32 + max(work, dequant) + py, 0, largest, held=held, tt=order)


MAX_ARRAY_BYTES = sys.maxsize
"""The largest array this platform's NumPy can allocate (bytes): ``sys.maxsize``, 2 GiB - 1 on a
32-bit build. A rebuild that needs a bigger one is refused before it starts, whatever ``max_memory``."""


def check_rebuild_budget(f: AdtFile, max_memory: int | None = DEFAULT_MAX_MEMORY) -> RebuildPlan:
    """:func:`rebuild_plan` of ``f``; raises AdtBudgetError, naming the parameter, the figure and the
    limit, when the rebuild would need more than ``max_memory`` bytes (``None``: no limit), or a single
    array (a float32 weight, a float64 intermediate) over :data:`MAX_ARRAY_BYTES`."""
    limit = _check_limit(max_memory)
    plan = rebuild_plan(f)
    for cost in plan.params:
        if max(cost.output, cost.intermediate) > MAX_ARRAY_BYTES:
            what, n = (("its float32 weight", cost.output) if cost.output >= cost.intermediate
                       else ("its largest float64 intermediate", cost.intermediate))
            build = ", a 32-bit build" if MAX_ARRAY_BYTES < 1 << 32 else ""
            raise AdtBudgetError(
                f"parameter {cost.name!r}: {what} needs {format_bytes(n)}, more than the largest array this "
                f"platform can hold ({format_bytes(MAX_ARRAY_BYTES)}: sys.maxsize{build})")
    if limit is None or plan.peak <= limit:
        return plan
    # the first parameter at which the limit is crossed (the peak is always some parameter's total)
    cost = next(c for c in plan.params if c.total > limit)
    detail = f"{format_bytes(cost.peak)} for this parameter"
    if cost.intermediate:
        detail += f" (largest float64 intermediate {format_bytes(cost.intermediate)})"
    if cost.held:
        detail += f" + {format_bytes(cost.held)} of weights and cores already rebuilt"
    raise AdtBudgetError(
        f"parameter {cost.name!r}: rebuilding the weights would need {format_bytes(cost.total)} at this "
        f"parameter, over the limit max_memory={format_bytes(limit)}: {detail}; pass a larger max_memory to load it")


def _check_limit(max_memory) -> int | None:
    if max_memory is None:
        return None
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, np.integer)) or max_memory <= 0:
        raise ValueError(f"max_memory must be a positive number of bytes or None, got {max_memory!r}")
    return int(max_memory)


def iter_weights(source: AdtFile | bytes | str | os.PathLike,
                 max_memory: int | None = DEFAULT_MAX_MEMORY) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, float32 array of the original shape)`` in table order, one layer at a time:
    only the current layer's temporaries exist besides what the caller keeps. Each core is
    dequantized once, shared by every parameter that uses it (SCADA-Tucker) and dropped after the
    last one. A 0-d parameter is a 0-d array (never a NumPy scalar). Given a path or bytes, the
    decoded symbols are dropped as their weights are rebuilt (an :class:`AdtFile` passed in is left
    as it is).

    Before the first weight is rebuilt, the whole rebuild's peak memory (every weight kept, as by
    :func:`rebuild_weights` or ``load``) is checked against ``max_memory`` bytes (:func:`check_rebuild_budget`;
    ``None``: no limit): AdtBudgetError names the parameter, the figure and the limit."""
    if isinstance(source, AdtFile):
        yield from _iter_weights(source, max_memory, release=False)
    else:
        yield from _iter_weights(read_adt(source), max_memory, release=True)


def _iter_weights(f: AdtFile, max_memory: int | None, release: bool,
                  only: Container[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """:func:`iter_weights` of a decoded file; ``release``: set each plain parameter's and core's
    symbols to None once no later weight needs them (for a file nobody else holds); ``only``: rebuild
    just these parameters (the budget checked is the whole file's, an upper bound)."""
    plan = check_rebuild_budget(f, max_memory)
    last_use = {p.core: i for i, p in enumerate(f.params)
                if p.encoding == ENC_TUCKER and (only is None or p.name in only)}
    core_cache: dict[int, np.ndarray] = {}
    for idx, (p, cost) in enumerate(zip(f.params, plan.params)):
        if only is not None and p.name not in only:
            continue
        try:
            w = (_rebuild_tt(f, p, cost.tt) if p.encoding == ENC_TT
                 else _rebuild(f, p, core_cache, cost.schedule))
        except AdtError:
            raise
        except MemoryError:
            raise AdtBudgetError(f"parameter {p.name!r}: out of memory while rebuilding it "
                                 f"(shape {list(p.shape)}, {format_bytes(p.numel * _F32)} as float32)") from None
        except (ValueError, IndexError, TypeError, KeyError, OverflowError) as exc:
            raise AdtTableError(f"parameter {p.name!r}: cannot rebuild it: {exc}") from None
        if p.encoding == ENC_PLAIN:
            if release:
                p.symbols = None
        elif p.encoding == ENC_TUCKER and last_use[p.core] == idx:
            del core_cache[p.core]
            if release:
                f.cores[p.core].symbols = None
        yield p.name, w
        del w  # the caller holds the weight; a generator frame must not keep one alive


def _rebuild(f: AdtFile, p, core_cache: dict[int, np.ndarray], schedule: TuckerSchedule | None) -> np.ndarray:
    if p.encoding == ENC_PLAIN:
        # block by block into the float32 weight: dequantize() is element-wise, so the values are
        # those of one call, without its float64 temporaries of the whole parameter
        sym = np.asarray(p.symbols).reshape(-1)
        out = np.empty(sym.size, dtype=np.float32)
        for lo in range(0, sym.size, _PLAIN_CHUNK):
            out[lo:lo + _PLAIN_CHUNK] = f.values(sym[lo:lo + _PLAIN_CHUNK], p.group)
        return out.reshape(p.shape)   # a 0-d parameter stays a (0-d) array
    c = f.cores[p.core]
    if p.core not in core_cache:
        core_cache[p.core] = np.asarray(f.values(c.symbols, c.group), dtype=np.float32)  # CP: only the diagonal
    factors = _dequantize_factors(f, p)
    if c.kind == CORE_CP:
        dense = cp_to_tensor(core_cache[p.core], factors)
        # C-order reshape of the (n_1..n_d) tensor to the parameter's shape, rounded once.
        return np.asarray(dense.astype(np.float32)).reshape(p.shape)
    if schedule is not None and schedule.chunks == 1:
        # one piece (every small parameter): the whole products, rounded once (the fewest calls)
        return tucker_to_tensor(core_cache[p.core], factors, schedule.order).astype(np.float32).reshape(p.shape)
    out = np.empty(tuple(int(m.shape[0]) for m in factors), dtype=np.float32)
    tucker_into(core_cache[p.core], factors, out, schedule)
    return out.reshape(p.shape)


def _rebuild_tt(f: AdtFile, p, order: TTOrder | None) -> np.ndarray:
    """A TT parameter: its cores dequantized (float32), multiplied in float64 in ``order`` and
    rounded once into the float32 weight (:func:`tt_into`)."""
    cores = _dequantize_factors(f, p)
    out = np.empty(p.reshape, dtype=np.float32)
    tt_into(cores, out, order)
    return out.reshape(p.shape)


_BATCH_DEQUANT = 1 << 12   # factor symbols of one parameter dequantized together at most (64 KiB of temporaries)


def _dequantize_factors(f: AdtFile, p) -> list[np.ndarray]:
    """The factors of ``p`` as float32, dequantized in one call (they share the parameter's group):
    the same values as one :meth:`AdtFile.values` call per factor, without its per-call overhead,
    which dominated files of many small parameters."""
    mats = p.factors
    if len(mats) == 1 or sum(m.size for m in mats) > _BATCH_DEQUANT:
        # large factors one at a time: the temporaries stay those of the largest factor, as
        # rebuild_plan counts them
        return [f.values(m, p.group) for m in mats]
    flat = f.values(np.concatenate([m.reshape(-1) for m in mats]), p.group)
    out, at = [], 0
    for m in mats:
        out.append(flat[at:at + m.size].reshape(m.shape))
        at += m.size
    return out


def rebuild_weights(source: AdtFile | bytes | str | os.PathLike,
                    max_memory: int | None = DEFAULT_MAX_MEMORY) -> dict[str, np.ndarray]:
    """Every parameter of the file as a float32 array of its original shape, by tensor-table name
    (``max_memory``: see :func:`iter_weights`)."""
    return dict(iter_weights(source, max_memory))
