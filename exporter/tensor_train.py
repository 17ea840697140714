"""Tensor-train (TT) weights as ``torch.nn.utils.parametrize`` parametrizations, and their planner.

A TT-parametrized ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` keeps its class and its
``forward``; ``module.weight`` is rebuilt each step from d cores (Oseledets 2011, Yin et al.)

    W[i_1, ..., i_d] = G_1[:, i_1, :] G_2[:, i_2, :] ... G_d[:, i_d, :],   G_k: (r_{k-1}, n_k, r_k),

with r_0 = r_d = 1, over the same C-order reshape n_1..n_d of the weight the Tucker planner uses
(:func:`adt.exporter.planner.balanced_factorization`). A TT form stores sum_k r_{k-1} n_k r_k values.
As with :class:`adt.exporter.factorize.TuckerWeight`, the dense weight is not kept: the registered
``original`` is a 0-element tensor, and the cores are the only trainable tensors.

Ranks (:class:`TTPlan`, ``ranks`` = (r_0, ..., r_d)) are *proper*: r_k <= r_{k-1} n_k and
r_{k-1} <= n_k r_k. A larger bond can never be used by the tensor (the unfolding has no higher
rank), so it would only waste stored values; the planner never makes one and TTPlan refuses one.

Planning (:func:`plan_tt`, :func:`plan_model_tt`) follows the Tucker planner's rules 1-5
(:mod:`adt.exporter.planner`) with a TT growth step in place of the core growth: bonds start at 1
and grow one at a time, always a bond at the lowest level, the cheapest (fewest added values) first,
capped by the proper-rank limits; the order d is the smallest of the candidate orders that affords
every bond >= 2 (or full ranks). A model budget is split over layers in proportion to N_i ** 0.25,
scaled by bisection, then topped up one bond step at a time; a layer whose TT form would store as
many values as its dense weight stays dense.

:func:`adt.exporter.export_adt` stores every TT layer as a TT parameter (FORMAT.md version 2.0,
parameter encoding 2): its quantized cores, rebuilt by the runtime in the cheapest contraction order.
A file with a TT layer is written as version 2.0; a file without one stays 1.0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .errors import ModelError, PlanError
from .fakequant import QuantSpec
from .factorize import SCHEMES, SUPPORTED, _ordered_plan, _register, target_variance
from .planner import (
    ALLOC_POWER, MAX_MODE, MIN_NUMEL, _is_dense, _too_small, balanced_factorization, candidate_orders,
    count_stored, largest_fitting, layers_to_plan, plannable_layers,
)

__all__ = [
    "TT_INITS", "TTPlan", "TTTarget", "TTWeight", "tt_to_tensor", "tt_contraction_cost", "tt_params", "tt_max_ranks",
    "plan_tt", "plan_model_tt", "tt_model_params", "tt_plan_table", "apply_tt", "tt_layers",
]

#: How TT cores start: random (``scratch``, Kaiming/Glorot variance of the rebuilt weight) or the
#: TT-SVD of the layer's current dense weight (``svd``).
TT_INITS = ("scratch", "svd")


# --------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------
def tt_params(reshape: Sequence[int], ranks: Sequence[int]) -> int:
    """Stored values of a TT form: sum_k r_{k-1} n_k r_k (``ranks`` = r_0..r_d)."""
    return sum(int(ranks[k]) * int(n) * int(ranks[k + 1]) for k, n in enumerate(reshape))


def tt_max_ranks(reshape: Sequence[int]) -> tuple[int, ...]:
    """The full TT ranks (r_0..r_d): r_k = min(n_1...n_k, n_{k+1}...n_d), the ranks of the unfoldings
    of a generic tensor, which TT-SVD reproduces exactly."""
    n = [int(x) for x in reshape]
    return tuple(min(math.prod(n[:k]), math.prod(n[k:])) for k in range(len(n) + 1))


def _proper(reshape: Sequence[int], ranks: Sequence[int]) -> tuple[int, ...]:
    """Lower every bond to what its neighbours can use: r_k <= r_{k-1} n_k and r_{k-1} <= n_k r_k."""
    r = list(ranks)
    for k in range(1, len(r)):
        r[k] = min(r[k], r[k - 1] * reshape[k - 1])
    for k in range(len(r) - 2, -1, -1):
        r[k] = min(r[k], r[k + 1] * reshape[k])
    return tuple(r)


@dataclass(frozen=True)
class TTPlan:
    """Reshape n_1..n_d and TT ranks r_0..r_d (r_0 = r_d = 1) of one layer. ``ranks`` may be given
    as the d-1 inner bonds only; it is stored with its two 1s."""

    reshape: tuple[int, ...]
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        reshape = tuple(int(n) for n in self.reshape)
        ranks = tuple(int(r) for r in self.ranks)
        if not reshape or min(reshape) < 1:
            raise PlanError(f"TT reshape {reshape} must be a non-empty tuple of positive dims")
        if len(ranks) == len(reshape) - 1:
            ranks = (1, *ranks, 1)
        if len(ranks) != len(reshape) + 1:
            raise PlanError(f"TT ranks {ranks} must be the {len(reshape) - 1} inner bonds or the "
                            f"{len(reshape) + 1} ranks r_0..r_d of reshape {reshape}")
        if ranks[0] != 1 or ranks[-1] != 1:
            raise PlanError(f"TT ranks {ranks} must start and end with 1 (r_0 = r_d = 1)")
        if min(ranks) < 1:
            raise PlanError(f"TT ranks {ranks} must be positive")
        if _proper(reshape, ranks) != ranks:
            raise PlanError(f"TT ranks {ranks} exceed what reshape {reshape} can use (need r_k <= r_(k-1) n_k "
                            f"and r_(k-1) <= n_k r_k; largest usable: {_proper(reshape, ranks)})")
        object.__setattr__(self, "reshape", reshape)
        object.__setattr__(self, "ranks", ranks)

    @property
    def order(self) -> int:
        return len(self.reshape)

    @property
    def numel(self) -> int:
        return math.prod(self.reshape)

    @property
    def bonds(self) -> tuple[int, ...]:
        """The inner ranks r_1..r_{d-1}."""
        return self.ranks[1:-1]

    @property
    def core_shapes(self) -> list[tuple[int, int, int]]:
        return [(self.ranks[k], n, self.ranks[k + 1]) for k, n in enumerate(self.reshape)]

    @property
    def params(self) -> int:
        """Stored values: sum_k r_{k-1} n_k r_k."""
        return tt_params(self.reshape, self.ranks)

    def validate(self, shape: Sequence[int], where: str = "layer") -> None:
        """Raise :class:`PlanError` unless the plan reshapes a weight of ``shape``."""
        if self.numel != math.prod(int(s) for s in shape):
            raise PlanError(f"{where}: TT reshape {self.reshape} has {self.numel} elements, its weight "
                            f"{tuple(shape)} has {math.prod(int(s) for s in shape)}")

    def to_dict(self) -> dict[str, Any]:
        return {"reshape": list(self.reshape), "ranks": list(self.ranks)}

    @classmethod
    def coerce(cls, value: Any, where: str = "plan") -> "TTPlan":
        """A TTPlan from a TTPlan, a mapping with reshape/ranks or a (reshape, ranks) pair."""
        if isinstance(value, TTPlan):
            return value
        if isinstance(value, Mapping):
            if set(value) != {"reshape", "ranks"}:
                raise PlanError(f"{where}: a TT layer plan needs exactly the keys reshape and ranks, got {sorted(value)}")
            return cls(tuple(value["reshape"]), tuple(value["ranks"]))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(tuple(value[0]), tuple(value[1]))
        raise PlanError(f"{where}: cannot read a TT layer plan from {value!r}")


TTTarget = Union[int, float, TTPlan]


def _next_ranks(reshape: tuple[int, ...], ranks: tuple[int, ...], caps: tuple[int, ...]) -> tuple[int, ...] | None:
    """One growth step: raise by one the cheapest bond among the uncapped ones at the lowest level.
    Raising bond k adds n_k r_{k-1} + n_{k+1} r_{k+1} values."""
    free = [k for k in range(1, len(ranks) - 1) if ranks[k] < caps[k]]
    if not free:
        return None
    level = min(ranks[k] for k in free)
    pick = min((k for k in free if ranks[k] == level),
               key=lambda k: (reshape[k - 1] * ranks[k - 1] + reshape[k] * ranks[k + 1], k))
    return ranks[:pick] + (ranks[pick] + 1,) + ranks[pick + 1:]


def _grow(reshape: tuple[int, ...], ranks: tuple[int, ...], budget: int) -> tuple[int, ...]:
    caps = tt_max_ranks(reshape)
    while True:
        nxt = _next_ranks(reshape, ranks, caps)
        if nxt is None or tt_params(reshape, nxt) > budget:
            return ranks
        ranks = nxt


def _budget_plan(reshape: tuple[int, ...], budget: int) -> TTPlan | None:
    """Largest near-uniform proper ranks for ``reshape`` within ``budget``; None if rank 1 does not fit."""
    ones = (1,) * (len(reshape) + 1)
    if tt_params(reshape, ones) > budget:
        return None
    return TTPlan(reshape, _proper(reshape, _grow(reshape, ones, budget)))


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def plan_tt(shape: Sequence[int], target: TTTarget | Mapping | Sequence, max_mode: int = MAX_MODE,
            where: str = "layer") -> TTPlan:
    """Plan a TT form of one weight of ``shape``: ``target`` an int budget of stored values, a float
    ratio > 1 (budget = N / ratio) or an explicit plan. An automatic plan stores fewer values than the
    weight (the budget is capped at N - 1); :class:`PlanError` when even rank 1 does not fit."""
    n = _numel(shape)
    if isinstance(target, (TTPlan, Mapping, list, tuple)):
        tp = TTPlan.coerce(target, where)
        tp.validate(shape, where)
        return tp
    if isinstance(target, bool) or not isinstance(target, (int, float)):
        raise PlanError(f"{where}: TT target must be an int budget, a float ratio or a TTPlan, got {target!r}")
    if isinstance(target, float):
        if not (math.isfinite(target) and target > 1):
            raise PlanError(f"{where}: compression ratio must be a number > 1, got {target}")
        budget = int(n / target)
    else:
        budget = int(target)
        if budget < 1:
            raise PlanError(f"{where}: parameter budget must be >= 1, got {budget}")
    budget = min(budget, n - 1)  # a TT form as big as the weight saves nothing
    orders = candidate_orders(n, max_mode)
    if not orders:
        raise PlanError(f"{where}: a weight of {n} elements has no reshape of order >= 2 (prime count)")
    fallback = None
    for d in orders:
        tp = _budget_plan(balanced_factorization(n, d), budget)
        if tp is None:
            continue
        if min(tp.bonds) >= 2 or tp.ranks == tt_max_ranks(tp.reshape):
            return tp
        if fallback is None or tp.params < fallback.params:
            fallback = tp
    if fallback is not None:
        return fallback
    need = min(sum(balanced_factorization(n, d)) for d in orders)
    raise PlanError(f"{where}: budget {budget} is too small for a TT form of a weight of {n} elements "
                    f"(rank 1 needs {need})")


def _tt_split(auto: dict[str, tuple[int, ...]], budget: int, max_mode: int, power: float, total: int,
              fixed: int) -> dict[str, TTPlan]:
    """The budget over ``auto`` layers: proportional to N ** power, scaled by bisection to the largest
    split that fits, then topped up one bond step at a time (the layer furthest below its share first)."""
    weights = {n: _numel(s) ** power for n, s in auto.items()}

    def plans_for(scale: float) -> dict[str, TTPlan] | None:
        out = {}
        for n, s in auto.items():
            try:
                out[n] = plan_tt(s, max(1, int(scale * weights[n])), max_mode, where=n)
            except PlanError:
                return None
        return out

    def cost(p: dict[str, TTPlan] | None) -> float:
        return math.inf if p is None else sum(tp.params for tp in p.values())

    best = largest_fitting(plans_for, cost, budget)
    if best is None:
        raise PlanError(f"target of {total} parameters is too small: {fixed} are fixed (biases, "
                        f"unplanned layers) and the TT layers need more than the {budget} left")
    while True:
        left = budget - cost(best)
        ups = []
        for n, tp in best.items():
            nxt = _next_ranks(tp.reshape, tp.ranks, tt_max_ranks(tp.reshape))
            if nxt is None:
                continue
            nxt_plan = TTPlan(tp.reshape, _proper(tp.reshape, nxt))
            if 0 < nxt_plan.params - tp.params <= left and nxt_plan.params < nxt_plan.numel:
                ups.append((tp.params / weights[n], n, nxt_plan))
        if not ups:
            return best
        _, n, nxt_plan = min(ups)
        best[n] = nxt_plan


def plan_model_tt(model: nn.Module, target: int | float | None, overrides: Any = None, *,
                  max_mode: int = MAX_MODE, alloc_power: float = ALLOC_POWER, min_numel: int = MIN_NUMEL,
                  layers: list[str] | None = None) -> dict[str, TTPlan]:
    """TT plans for the Linear/Conv layers of ``model`` (or only ``layers``), keyed by module path.

    ``target``: int total of stored values (everything unplanned included, as in
    :func:`adt.exporter.planner.plan_model`) below the model's, or a float ratio > 1; None when
    ``overrides`` cover every layer. ``overrides`` (dict or .json/.toml path): layer path -> TT plan
    ``{"reshape": [...], "ranks": [...]}``, int budget, float ratio, or "dense"."""
    over, shapes, _ = layers_to_plan(model, overrides, min_numel, layers)
    plan: dict[str, TTPlan] = {}
    auto: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes.items():
        if name in over:
            if not _is_dense(over[name]):
                plan[name] = plan_tt(shape, over[name], max_mode, where=name)
        elif candidate_orders(_numel(shape), max_mode):
            auto[name] = shape

    def ordered(p: dict[str, TTPlan]) -> dict[str, TTPlan]:
        return {n: p[n] for n in shapes if n in p}

    if not auto:
        return ordered(plan)
    if target is None:
        raise PlanError(f"no target given and no override for layer {next(iter(auto))!r}")
    if isinstance(target, bool) or not isinstance(target, (int, float)):
        raise PlanError(f"model target must be an int parameter total or a float ratio, got {target!r}")
    total_orig = count_stored(model)
    if isinstance(target, float):
        if not (math.isfinite(target) and target > 1):
            raise PlanError(f"compression ratio must be a number > 1 (original / stored values), got {target}")
        total = int(total_orig / target)
    else:
        total = int(target)
        if total >= total_orig:
            raise PlanError(f"a target of {total} parameters does not compress a model of {total_orig}; "
                            "give fewer parameters (or a ratio > 1)")
    while True:
        planned_orig = sum(_numel(s) for s in list(auto.values()) + [shapes[n] for n in plan])
        fixed = total_orig - planned_orig
        budget = total - fixed - sum(tp.params for tp in plan.values())
        if fixed >= total or budget < 1:
            raise PlanError(_too_small(model, total, fixed, {**plan, **dict.fromkeys(auto)}))
        split = _tt_split(auto, budget, max_mode, alloc_power, total, fixed)
        bigger = [n for n, tp in split.items() if tp.params >= tp.numel]
        if not bigger:
            return ordered({**plan, **split})
        for n in bigger:  # never bigger than dense: that layer stays dense, the rest are replanned
            del auto[n]
        if not auto:
            return ordered(plan)


def tt_model_params(model: nn.Module, plan: Mapping[str, Any]) -> int:
    """Stored values of ``model`` (dense, not yet parametrized) under the TT ``plan``: TT cores plus
    everything unplanned (biases, BatchNorm, dense layers)."""
    shapes = plannable_layers(model, 1)
    planned = stored = 0
    for name, p in plan.items():
        if name not in shapes:
            raise PlanError(f"plan names layer {name!r}, which is not a Linear/Conv layer of the model")
        tp = TTPlan.coerce(p, name)
        tp.validate(shapes[name], name)
        planned += tp.numel
        stored += tp.params
    return count_stored(model) - planned + stored


def tt_plan_table(model: nn.Module, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per TT layer: path, weight shape, reshape, ranks, stored values, ratio."""
    shapes = plannable_layers(model, 1)
    rows = []
    for name, p in plan.items():
        tp = TTPlan.coerce(p, name)
        if name not in shapes:
            raise PlanError(f"plan names layer {name!r}, which is not a Linear/Conv layer of the model")
        tp.validate(shapes[name], name)
        rows.append({"layer": name, "shape": list(shapes[name]), "reshape": list(tp.reshape),
                     "ranks": list(tp.ranks), "params": tp.params, "ratio": round(tp.numel / tp.params, 2)})
    return rows


# --------------------------------------------------------------------------------------------------
# The parametrization
# --------------------------------------------------------------------------------------------------
def tt_contraction_cost(reshape: Sequence[int], ranks: Sequence[int], from_left: bool = True) -> int:
    """Multiply-adds of a sweep rebuilding the tensor: from the left, step k multiplies
    (n_1..n_{k-1}, r_{k-1}) by (r_{k-1}, n_k r_k); from the right, mirrored."""
    n, r = [int(x) for x in reshape], [int(x) for x in ranks]
    if not from_left:
        n, r = n[::-1], r[::-1]
    return sum(math.prod(n[:k]) * r[k] * n[k] * r[k + 1] for k in range(1, len(n)))


def tt_to_tensor(cores: Sequence[Tensor], from_left: bool | None = None) -> Tensor:
    """The tensor (n_1, ..., n_d) of TT ``cores`` (core k: (r_{k-1}, n_k, r_k), r_0 = r_d = 1), as a
    sweep of 2-D products: from the left (n_1..n_{k-1}, r_{k-1}) @ (r_{k-1}, n_k r_k), or mirrored from
    the right. ``from_left=None`` takes the cheaper sweep (:func:`tt_contraction_cost`; the last
    product alone costs N * r_{d-1} from the left and N * r_1 from the right), the left on a tie."""
    if not cores:
        raise PlanError("a TT tensor needs at least one core")
    dims = []
    for k, g in enumerate(cores):
        if g.dim() != 3:
            raise PlanError(f"TT core {k} has shape {tuple(g.shape)}, expected (r_(k-1), n_k, r_k)")
        if k and g.shape[0] != cores[k - 1].shape[2]:
            raise PlanError(f"TT core {k} starts with rank {g.shape[0]}, core {k - 1} ends with {cores[k - 1].shape[2]}")
        dims.append(int(g.shape[1]))
    if cores[0].shape[0] != 1 or cores[-1].shape[2] != 1:
        raise PlanError("TT cores must start and end with rank 1")
    if from_left is None:
        ranks = [1] + [int(g.shape[2]) for g in cores]
        from_left = tt_contraction_cost(dims, ranks, True) <= tt_contraction_cost(dims, ranks, False)
    if from_left:
        t = cores[0].reshape(dims[0], -1)  # (n_1, r_1)
        for g in cores[1:]:
            r_prev, n, r = g.shape
            t = (t @ g.reshape(r_prev, n * r)).reshape(-1, r)  # C order: rows (i_1..i_k), columns a_k
    else:
        t = cores[-1].reshape(-1, dims[-1])  # (r_{d-1}, n_d)
        for g in reversed(cores[:-1]):
            r_prev, n, r = g.shape
            t = (g.reshape(r_prev * n, r) @ t).reshape(r_prev, -1)  # rows a_{k-1}, columns (i_k..i_d)
    return t.reshape(dims)


class TTWeight(nn.Module):
    """Parametrization ``weight = reshape(TT(G_1, ..., G_d), shape)`` of one layer.

    Attributes: ``cores`` (core k: (r_{k-1}, n_k, r_k)), ``reshape`` (n_1..n_d), ``ranks`` (r_0..r_d),
    ``shape`` (the layer's weight shape), ``order`` and ``init_error`` (relative error of the TT-SVD
    init; None for a random init)."""

    def __init__(self, shape: Sequence[int], reshape: Sequence[int], cores: Sequence[nn.Parameter]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.reshape = tuple(int(n) for n in reshape)
        self.order = len(self.reshape)
        self.cores = nn.ParameterList(list(cores))
        self.init_error: float | None = None
        # quantization-aware training: every core through this Eq. 13 fake quantizer (they share the
        # parameter's group in the file); None computes in float
        self.quant: QuantSpec | None = None
        if math.prod(self.reshape) != math.prod(self.shape):
            raise PlanError(f"TT reshape {self.reshape} has {math.prod(self.reshape)} elements, "
                            f"weight {self.shape} has {math.prod(self.shape)}")
        if len(self.cores) != self.order:
            raise PlanError(f"{len(self.cores)} TT cores for a reshape of order {self.order}")
        ranks = [1] + [int(g.shape[2]) for g in self.cores]
        for k, (g, n) in enumerate(zip(self.cores, self.reshape)):
            if tuple(g.shape) != (ranks[k], n, ranks[k + 1]):
                raise PlanError(f"TT core {k} has shape {tuple(g.shape)}, expected ({ranks[k]}, {n}, {ranks[k + 1]})")
        if ranks[-1] != 1:
            raise PlanError(f"the last TT core must end with rank 1, got {ranks[-1]}")
        self.ranks = tuple(ranks)

    @property
    def plan(self) -> TTPlan:
        return TTPlan(self.reshape, self.ranks)

    def num_params(self) -> int:
        """Stored values: sum_k r_{k-1} n_k r_k."""
        return sum(g.numel() for g in self.cores)

    @classmethod
    def new(cls, shape: Sequence[int], reshape: Sequence[int], ranks: Sequence[int], scheme: str = "kaiming",
            generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
            device: torch.device | str | None = None) -> "TTWeight":
        """Random cores (uniform, zero mean) scaled so the REBUILT weight has the ``scheme`` variance
        (kaiming 2/fan_in, glorot 2/(fan_in+fan_out)). A rebuilt element sums prod(r_1..r_{d-1})
        products of one entry per core, so Var(W) = prod(bonds) * prod_k Var(G_k); every core gets the
        same entry variance (balanced magnitudes suit Adam)."""
        tp = TTPlan(tuple(reshape), tuple(ranks))
        if scheme not in SCHEMES:
            raise PlanError(f"scratch init scheme must be one of {SCHEMES}, got {scheme!r}")
        var = (target_variance(tuple(int(s) for s in shape), scheme) / math.prod(tp.bonds)) ** (1.0 / tp.order)
        bound = math.sqrt(3.0 * var)
        cores = [nn.Parameter(((torch.rand(cs, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
                              .to(dtype=dtype, device=device)) for cs in tp.core_shapes]
        return cls(shape, tp.reshape, cores)

    @classmethod
    def from_tensor(cls, weight: Tensor, reshape: Sequence[int], ranks: Sequence[int]) -> "TTWeight":
        """TT-SVD (:func:`tensorly.decomposition.tensor_train`, in float64) of ``weight`` reshaped to
        ``reshape``, truncated to ``ranks``; the relative error ||W - W_tt|| / ||W|| lands in
        ``init_error``. A bond the tensor's own rank leaves smaller is zero-padded to the plan's rank
        (exact; the padding only starts training at zero)."""
        from tensorly.decomposition import tensor_train

        tp = TTPlan(tuple(reshape), tuple(ranks))
        tp.validate(tuple(weight.shape), "from_tensor")
        w64 = weight.detach().cpu().double()
        tt = tensor_train(w64.numpy().reshape(tp.reshape), rank=list(tp.ranks))
        cores = []
        for cs, f in zip(tp.core_shapes, tt.factors):
            g = np.zeros(cs)
            g[: f.shape[0], :, : f.shape[2]] = f
            cores.append(nn.Parameter(torch.from_numpy(g).to(dtype=weight.dtype, device=weight.device)))
        tw = cls(tuple(weight.shape), tp.reshape, cores)
        with torch.no_grad():
            rebuilt = tt_to_tensor([torch.from_numpy(np.asarray(f)) for f in tt.factors]).reshape(w64.shape)
            denom = torch.linalg.vector_norm(w64)
            num = torch.linalg.vector_norm(rebuilt - w64)
        tw.init_error = float(num / denom) if denom > 0 else float(num)
        return tw

    def to_tensor(self) -> Tensor:
        """The rebuilt weight in the layer's shape (the cheaper sweep, :func:`tt_to_tensor`), from
        fake-quantized cores when ``quant`` is set."""
        cores = list(self.cores)
        if self.quant is not None:
            cores = [self.quant(g) for g in cores]
        return tt_to_tensor(cores).reshape(self.shape)

    def forward(self, original: Tensor) -> Tensor:  # noqa: ARG002 - the empty placeholder
        return self.to_tensor()

    def right_inverse(self, weight: Tensor) -> Tensor:
        # Keep no dense copy: the registered `original` becomes a 0-element tensor.
        return torch.empty(0, dtype=weight.dtype, device=weight.device)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, reshape={self.reshape}, ranks={self.ranks}"


# --------------------------------------------------------------------------------------------------
# Applying plans to a model
# --------------------------------------------------------------------------------------------------
def _tt_layer(model: nn.Module, name: str) -> nn.Module:
    module = model.get_submodule(name)  # _ordered_plan has checked the path
    if not isinstance(module, SUPPORTED):
        raise ModelError(f"layer {name!r} is {type(module).__name__}; TT supports "
                         + ", ".join(c.__name__ for c in SUPPORTED))
    if parametrize.is_parametrized(module, "weight"):
        raise ModelError(f"layer {name!r} already has a parametrized weight")
    return module


def apply_tt(model: nn.Module, plan: Mapping[str, Any], init: str = "scratch", scheme: str = "kaiming",
             seed: int | None = None) -> nn.Module:
    """Parametrize every layer named in ``plan`` (layer path -> :class:`TTPlan`) with TT cores, in
    place. ``init``: "scratch" (random, rebuilt weight at the ``scheme`` variance; ``seed`` makes it
    reproducible) or "svd" (TT-SVD of the layer's current dense weight; error in ``init_error``).
    Returns ``model``."""
    if init not in TT_INITS:
        raise PlanError(f"TT init must be one of {TT_INITS}, got {init!r}")
    gen = None
    if seed is not None:
        gen = torch.Generator()
        gen.manual_seed(int(seed))
    items = [(name, TTPlan.coerce(p, name)) for name, p in _ordered_plan(model, dict(plan))]
    modules = {name: _tt_layer(model, name) for name, _ in items}  # all checked before any change
    for name, tp in items:
        tp.validate(tuple(modules[name].weight.shape), name)
    for name, tp in items:
        module = modules[name]
        w = module.weight.detach()
        if init == "svd":
            tw = TTWeight.from_tensor(w, tp.reshape, tp.ranks)
        else:
            tw = TTWeight.new(w.shape, tp.reshape, tp.ranks, scheme, gen, dtype=w.dtype, device=w.device)
        _register(module, tw)
    return model


def tt_layers(model: nn.Module) -> list[tuple[str, nn.Module, TTWeight]]:
    """``(module path, module, TTWeight)`` of every TT-parametrized layer, in model order."""
    out = []
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            out += [(name, module, p) for p in module.parametrizations.weight if isinstance(p, TTWeight)]
    return out
