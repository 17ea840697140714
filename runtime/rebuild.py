"""Rebuild dense float32 weights from a decoded .adt file (dequantize, then Tucker mode products).

``W = reshape(G x_1 M_1 x_2 ... x_d M_d, shape)`` with core ``G`` of dims ``(k_1..k_d)`` and factors
``M_i`` of shape ``(n_i, k_i)``. Every product is computed in float64 and rounded once to float32,
exactly what the exporter does, so the result does not depend on the contraction order or the BLAS
(up to float64 rounding, far below one float32 ulp). The order of the mode products is the cheapest
one (a sort by a closed-form key per mode, :func:`contraction_order`), which matters for big layers:
a mode with ``n_i < k_i`` shrinks the intermediate and goes first. Per-parameter work that does not
grow with the parameter's size is kept small (results/many_params.md: a file of 65,535 order-8
parameters rebuilds in linear time).

Memory budget: before anything is rebuilt, :func:`rebuild_plan` works out from the validated tensor
table alone (shapes, core dims, factor shapes) what the rebuild will hold at its peak: every float32
weight already rebuilt (the caller keeps them), every dequantized core (cached for the parameters
that share it) and the temporaries of the parameter being rebuilt (its float64 mode-product
intermediates in the chosen contraction order, the float64 result and its float32 copy).
:func:`iter_weights` refuses with :class:`~adt.runtime.errors.AdtBudgetError` when that peak exceeds
``max_memory`` (:data:`DEFAULT_MAX_MEMORY`, 256 MiB, sized for a 512 MiB board); a MemoryError
during the rebuild is raised as an AdtBudgetError naming the parameter too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from math import prod
from typing import Iterator, Sequence

import numpy as np

from .errors import AdtBudgetError
from .format import CORE_CP, ENC_PLAIN, AdtError, AdtFile, AdtTableError, read_adt

__all__ = [
    "DEFAULT_MAX_MEMORY", "ParamCost", "RebuildPlan", "check_rebuild_budget", "contraction_order", "cp_to_tensor",
    "format_bytes", "iter_weights", "rebuild_plan", "rebuild_weights", "tucker_to_tensor",
]

DEFAULT_MAX_MEMORY = 256 << 20
"""Default ``max_memory`` of a load (bytes): the rebuild's peak, weights kept included, may not exceed
256 MiB, half the RAM of a 512 MiB board. A ResNet-18-sized file stays under half of it
(tests/runtime/test_rebuild_budget.py), Wide-ResNet-28-10 (36.5M weights) needs 173 MiB
(results/wrn_scale.md); a caller with more memory raises the limit (``None``: no limit)."""


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


def _mode_product(t: np.ndarray, m: np.ndarray, i: int) -> np.ndarray:
    """``t x_i m`` keeping every axis in place (C-contiguous in, C-contiguous out): viewing ``t`` as
    (A, k_i, B), the product is ``m @ t[a]`` for each ``a``; one GEMM when A or B is 1. No transposes,
    so the final float32 cast is a single contiguous pass (2-3x faster than np.tensordot + transpose)."""
    n, k = m.shape
    sh = t.shape
    a, b = prod(sh[:i]), prod(sh[i + 1:])
    if b == 1:
        out = t.reshape(a, k) @ m.T
    elif a == 1:
        out = m @ t.reshape(k, b)
    else:
        out = np.matmul(m, t.reshape(a, k, b))
    return out.reshape(sh[:i] + (n,) + sh[i + 1:])


def cp_to_tensor(diag: np.ndarray, factors: Sequence[np.ndarray]) -> np.ndarray:
    """The CP form of a superdiagonal core: ``W[i_1..i_d] = sum_r g_r prod_j M_j[i_j, r]`` (float64),
    without ever building the ``r^d`` core."""
    g = np.asarray(diag, dtype=np.float64)
    d = len(factors)
    letters = "abcdefgh"[:d]
    spec = "z," + ",".join(f"{c}z" for c in letters) + "->" + letters
    return np.einsum(spec, g, *(np.asarray(m, dtype=np.float64) for m in factors), optimize="greedy")


# -- memory budget ----------------------------------------------------------------------------------
_F32, _F64 = 4, 8
_DEQUANT_TEMP = 2 * _F64   # dequantize(): a float64 copy of the symbols and one float64 temporary


@dataclass(frozen=True)
class ParamCost:
    """What rebuilding one parameter costs (bytes). ``peak``: everything the parameter's rebuild holds
    at once, its own float32 result included; ``output``: the float32 weight kept afterwards;
    ``cached``: a dequantized core first used here and kept for the rest of the rebuild;
    ``intermediate``: the largest float64 intermediate (0 for a plain parameter); ``order``: the
    Tucker contraction order the figures are for (the rebuild uses it: computed once); ``held``: the
    weights and cores earlier parameters left behind when this one's rebuild starts."""

    name: str
    output: int
    peak: int
    cached: int = 0
    intermediate: int = 0
    order: tuple[int, ...] | None = None
    held: int = 0

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


def _tucker_peak(core_dims: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
    """(peak float64 bytes of :func:`tucker_to_tensor` plus the float32 cast, largest intermediate,
    contraction order)."""
    dims = list(core_dims)
    cur = prod(dims)
    peak = largest = cur * _F64
    order = contraction_order(tuple(core_dims), tuple(sizes))
    for i in order:
        new = cur // dims[i] * sizes[i] if dims[i] else 0
        dims[i] = sizes[i]
        # during one mode product: its input, its output and the float64 factor
        peak = max(peak, (cur + new + sizes[i] * core_dims[i]) * _F64)
        largest = max(largest, new * _F64)
        cur = new
    numel = prod(sizes)
    return max(peak, numel * (_F64 + _F32)), largest, order   # float64 result + its float32 copy


def _cp_peak(rank: int, sizes: tuple[int, ...]) -> tuple[int, int]:
    """(peak bytes of :func:`cp_to_tensor` plus the float32 cast, largest intermediate). np.einsum's
    greedy path never makes an intermediate larger than its largest operand or output ("memory_limit
    None"); at most two of them and the result are alive at once."""
    numel = prod(sizes)
    biggest = max([numel, rank] + [n * rank for n in sizes])
    operands = (rank + sum(n * rank for n in sizes)) * _F64
    return operands + max(numel * _F64 + 2 * biggest * _F64, numel * (_F64 + _F32)), biggest * _F64


def rebuild_plan(f: AdtFile) -> RebuildPlan:
    """The memory :func:`iter_weights` will need for ``f`` when the caller keeps every weight (as
    ``load`` does), computed from the tensor table alone: nothing is dequantized or rebuilt."""
    costs: list[ParamCost] = []
    cached: set[int] = set()
    kept = cores = 0
    for p in f.params:
        out = p.numel * _F32
        if p.encoding == ENC_PLAIN:
            cost = ParamCost(p.name, out, out + p.numel * _DEQUANT_TEMP, held=kept + cores)
        else:
            c = f.cores[p.core]
            new_core = 0 if p.core in cached else c.stored_count * _F32
            cached.add(p.core)
            sizes = tuple(int(m.shape[0]) for m in p.factors)
            factors = sum(int(m.size) for m in p.factors)
            order = None
            if c.kind == CORE_CP:
                work, largest = _cp_peak(c.dims[0], sizes)
            else:
                work, largest, order = _tucker_peak(tuple(c.dims), sizes)
            dequant = max(c.stored_count if new_core else 0, max((int(m.size) for m in p.factors), default=0))
            cost = ParamCost(p.name, out, new_core + factors * _F32 + max(work, dequant * _DEQUANT_TEMP),
                             new_core, largest, order, held=kept + cores)
        kept += cost.output
        cores += cost.cached
        costs.append(cost)
    top = max(costs, key=lambda c: c.total, default=None)
    peak = max(top.total if top else 0, kept + cores)
    return RebuildPlan(tuple(costs), peak, top.name if top else None, kept)


def check_rebuild_budget(f: AdtFile, max_memory: int | None = DEFAULT_MAX_MEMORY) -> RebuildPlan:
    """:func:`rebuild_plan` of ``f``; raises AdtBudgetError, naming the parameter, the figure and the
    limit, when the rebuild would need more than ``max_memory`` bytes (``None``: no limit)."""
    limit = _check_limit(max_memory)
    plan = rebuild_plan(f)
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


def _as_file(source: AdtFile | bytes | bytearray | memoryview | str | os.PathLike) -> AdtFile:
    return source if isinstance(source, AdtFile) else read_adt(source)


def iter_weights(source: AdtFile | bytes | str | os.PathLike,
                 max_memory: int | None = DEFAULT_MAX_MEMORY) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, float32 array of the original shape)`` in table order, one layer at a time:
    only the current layer's float64 temporaries exist besides what the caller keeps. Each core is
    dequantized once and shared by every parameter that uses it (SCADA-Tucker). A 0-d parameter is a
    0-d array (never a NumPy scalar).

    Before the first weight is rebuilt, the whole rebuild's peak memory (every weight kept, as by
    :func:`rebuild_weights` or ``load``) is checked against ``max_memory`` bytes (:func:`check_rebuild_budget`;
    ``None``: no limit): AdtBudgetError names the parameter, the figure and the limit."""
    f = _as_file(source)
    plan = check_rebuild_budget(f, max_memory)
    core_cache: dict[int, np.ndarray] = {}
    for p, cost in zip(f.params, plan.params):
        try:
            w = _rebuild(f, p, core_cache, cost.order)
        except AdtError:
            raise
        except MemoryError:
            raise AdtBudgetError(f"parameter {p.name!r}: out of memory while rebuilding it "
                                 f"(shape {list(p.shape)}, {format_bytes(p.numel * _F32)} as float32)") from None
        except (ValueError, IndexError, TypeError, KeyError, OverflowError) as exc:
            raise AdtTableError(f"parameter {p.name!r}: cannot rebuild it: {exc}") from None
        yield p.name, w


def _rebuild(f: AdtFile, p, core_cache: dict[int, np.ndarray], order: tuple[int, ...] | None) -> np.ndarray:
    if p.encoding == ENC_PLAIN:
        # np.asarray: dequantizing 0-d symbols gives a NumPy scalar; keep a (0-d) array
        return np.asarray(f.values(p.symbols, p.group), dtype=np.float32).reshape(p.shape)
    c = f.cores[p.core]
    if p.core not in core_cache:
        core_cache[p.core] = np.asarray(f.values(c.symbols, c.group), dtype=np.float32)  # CP: only the diagonal
    factors = _dequantize_factors(f, p)
    if c.kind == CORE_CP:
        dense = cp_to_tensor(core_cache[p.core], factors)
    else:
        dense = tucker_to_tensor(core_cache[p.core], factors, order)
    # C-order reshape of the (n_1..n_d) tensor to the parameter's shape, rounded once.
    return np.asarray(dense.astype(np.float32)).reshape(p.shape)


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
