"""The adaptive dimension adjustment planner: which reshape and which core for each layer.

The paper (Sec. 2.2, "summary" after Algorithm 1) chose shapes by hand and left the rule of thumb
as future work. Its findings: reshaping is a factorization of the layer's element count; balanced
factors work best; factors must not be too big (FC1 as 800x500 with a 10x10 core is poor); and for a
balanced reshape the hypercube core is best (Fig. 6). ADT turns that into this rule:

1. **Reshape (order d and dims n_1..n_d).** For each order d = 2, 3, ... take the *most balanced*
   factorization of the element count N into d integer factors >= 2 (smallest max/min ratio, then
   smallest sum), sorted in decreasing order like the paper's shapes (it may ignore the original mode
   boundaries: 500x10 can become 25x20x10). The order is the SMALLEST d whose balanced modes are
   all <= ``max_mode`` (default 50, so that factor matrices stay small). This reproduces the
   paper's LeNet-5 orders (Conv1 500 -> 25x20, Conv2 25000 -> 40x25x25, FC1 400000 -> 32x25x25x20,
   FC2 5000 -> 25x20x10: the same orders and near-identical dims as its 25x20, 50x25x20,
   40x25x20x20 and 25x20x10).
2. **Core (k).** The largest near-hypercube core (dims differ by at most 1, k_i capped at n_i)
   whose parameter count (prod k_i + sum n_i k_i) fits the layer's budget: grown from 1 x ... x 1
   one mode at a time, always a mode at the lowest level, the cheapest one (smallest n_i) first.
   If the budget cannot afford k >= 2 at that order, the next higher orders are tried (higher
   orders have cheaper factors); a budget too small even for that raises :class:`PlanError`.
   With the paper's LeNet-5 per-layer budgets (250, 600, 1150, 400) this yields exactly its
   cores 5x5, 5x5x5, 5^4, 5x5x5. A weight whose element count is prime stays dense.
3. **Targets.** A layer target is an ``int`` parameter budget (core + factors), a ``float``
   compression ratio (budget = N / ratio) or an explicit :class:`LayerPlan`. A model target
   (:func:`plan_model`) is an ``int`` total of stored parameters (biases, BatchNorm and unplanned
   layers included, as the paper's #(Param.) counts them) or a ``float`` ratio of original to
   stored parameters. The budget left after fixed parameters is split over the planned layers in
   proportion to N_i ** ``alloc_power``, scaled by bisection to the largest split that still
   fits, then topped up one core-growth step at a time. The default 0.25 follows the paper's
   LeNet-5 allocation: it splits that 2400-parameter budget as 223/593/1187/397 against the
   paper's hand-picked 250/600/1150/400 (N = 500/25000/400000/5000): big layers get more
   parameters but far higher compression.
4. **SCADA** (``scada=True``): every layer keeps its own order from rule 1, the shared core has
   order d = max order, lower-order layers get trailing modes of size 1 (1 x k factors, paper
   Sec. 2.4), and the core is the largest near-hypercube (grown as in rule 2, a mode costing
   prod(k)/k_j + the sum of that mode's sizes over all layers) whose total fits.
5. **Overrides** (dict, or a JSON/TOML file) fix single layers: an explicit plan
   ``{"reshape": [...], "core": [...], "cp": false}``, a per-layer int budget or float ratio, or
   ``"dense"`` / ``false`` to leave the layer uncompressed. Overridden layers are planned first and
   their cost is taken out of the model budget.

:data:`PRESETS` holds the paper's settings (appendix Tables 4-9, 12) and ADT's choices that hit the
paper's Table 1 parameter counts (the paper does not list the exact Table 1 settings).
"""
from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from .errors import PlanError

__all__ = [
    "MAX_MODE", "ALLOC_POWER", "MAX_ORDER", "MIN_NUMEL", "Target", "LayerPlan", "balanced_factorization",
    "candidate_orders", "hypercube_plan", "plan_layer", "load_overrides", "plannable_layers", "layers_to_plan",
    "largest_fitting", "plan_model",
    "count_stored", "plan_params", "model_params", "plan_table", "left_dense", "PRESETS", "PRESET_INFO", "preset",
    "DEFAULT_RATIOS", "default_target",
]

MAX_MODE = 50
ALLOC_POWER = 0.25
MAX_ORDER = 8
# Layers smaller than this stay dense by default in plan_model (a Tucker form cannot save much).
MIN_NUMEL = 256


@dataclass(frozen=True)
class LayerPlan:
    """Reshape dims n_1..n_d and core dims k_1..k_d of one layer (CP: all k_i = the rank r)."""

    reshape: tuple[int, ...]
    core: tuple[int, ...]
    cp: bool = False

    def __post_init__(self) -> None:
        reshape = tuple(int(n) for n in self.reshape)
        core = tuple(int(k) for k in self.core)
        if self.cp and len(core) == 1 and len(reshape) > 1:
            core = core * len(reshape)
        object.__setattr__(self, "reshape", reshape)
        object.__setattr__(self, "core", core)
        if not reshape or min(reshape) < 1:
            raise PlanError(f"reshape {reshape} must be a non-empty tuple of positive dims")
        if len(core) != len(reshape):
            raise PlanError(f"core {core} and reshape {reshape} must have the same order")
        if min(core) < 1:
            raise PlanError(f"core {core} must have positive dims")
        if self.cp and len(set(core)) != 1:
            raise PlanError(f"a CP plan has one rank for every mode, got core {core}")

    @property
    def order(self) -> int:
        return len(self.reshape)

    @property
    def numel(self) -> int:
        return math.prod(self.reshape)

    @property
    def core_params(self) -> int:
        return self.core[0] if self.cp else math.prod(self.core)

    @property
    def factor_params(self) -> int:
        return sum(n * k for n, k in zip(self.reshape, self.core))

    @property
    def params(self) -> int:
        """Core plus factor element count (paper Eq. 11 denominator for one layer)."""
        return self.core_params + self.factor_params

    def validate(self, shape: tuple[int, ...], where: str = "layer") -> None:
        """Raise :class:`PlanError` unless the plan reshapes a weight of ``shape``."""
        if self.numel != math.prod(shape):
            raise PlanError(f"{where}: reshape {self.reshape} has {self.numel} elements, "
                            f"its weight {tuple(shape)} has {math.prod(shape)}")

    def to_dict(self) -> dict[str, Any]:
        return {"reshape": list(self.reshape), "core": list(self.core), "cp": self.cp}

    @classmethod
    def coerce(cls, value: Any, where: str = "plan") -> "LayerPlan":
        """A LayerPlan from a LayerPlan, a mapping with reshape/core[/cp] or a (reshape, core) pair."""
        if isinstance(value, LayerPlan):
            return value
        if isinstance(value, Mapping):
            extra = set(value) - {"reshape", "core", "cp"}
            if extra or "reshape" not in value or "core" not in value:
                raise PlanError(f"{where}: a layer plan needs keys reshape and core (and optional cp), "
                                f"got {sorted(value)}")
            return cls(tuple(value["reshape"]), tuple(value["core"]), bool(value.get("cp", False)))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(tuple(value[0]), tuple(value[1]))
        raise PlanError(f"{where}: cannot read a layer plan from {value!r}")


Target = Union[int, float, LayerPlan]


# --------------------------------------------------------------------------------------------------
# Rule 1: balanced factorizations
# --------------------------------------------------------------------------------------------------
def _divisors(n: int) -> list[int]:
    small, large = [], []
    i = 1
    while i * i <= n:
        if n % i == 0:
            small.append(i)
            if i * i != n:
                large.append(n // i)
        i += 1
    return small + large[::-1]


@lru_cache(maxsize=4096)
def balanced_factorization(n: int, d: int) -> tuple[int, ...] | None:
    """The most balanced way to write ``n`` as a product of ``d`` integers >= 2 (smallest max/min,
    then smallest sum), in decreasing order; None if ``n`` has fewer than ``d`` prime factors."""
    if d == 1:
        return (n,) if n >= 2 else None
    best: tuple[tuple[float, int], tuple[int, ...]] | None = None

    def rec(rest: int, parts: list[int], left: int) -> None:
        nonlocal best
        if left == 1:
            if rest >= parts[-1]:
                cand = parts + [rest]
                key = (cand[-1] / cand[0], sum(cand))
                if best is None or key < best[0]:
                    best = (key, tuple(sorted(cand, reverse=True)))
            return
        lo = parts[-1] if parts else 2
        for f in _divisors(rest):
            if f < lo:
                continue
            if f ** left > rest:  # parts are non-decreasing: f^left <= rest
                break
            rec(rest // f, parts + [f], left - 1)

    rec(n, [], d)
    return best[1] if best else None


def candidate_orders(n: int, max_mode: int = MAX_MODE) -> list[int]:
    """Orders d to try for ``n`` elements: from the smallest whose balanced modes are all
    <= ``max_mode`` upward (ending where ``n`` runs out of prime factors or at MAX_ORDER)."""
    orders = [d for d in range(2, MAX_ORDER + 1) if balanced_factorization(n, d) is not None]
    if not orders:
        return []
    first = next((d for d in orders if max(balanced_factorization(n, d)) <= max_mode), orders[-1])
    return [d for d in orders if d >= first]


# --------------------------------------------------------------------------------------------------
# Rule 2: the core for a budget
# --------------------------------------------------------------------------------------------------
def next_core(core: tuple[int, ...], mode_sums: tuple[int, ...], caps: tuple[int, ...]) -> tuple[int, ...] | None:
    """One growth step of a near-hypercube core: raise by one the cheapest mode among those at the
    lowest level that are not yet capped. Growing mode i adds prod(k)/k_i core entries and
    ``mode_sums[i]`` factor entries (n_i for one layer; the sum over layers for a shared core)."""
    free = [i for i in range(len(core)) if core[i] < caps[i]]
    if not free:
        return None
    level = min(core[i] for i in free)
    pick = min((i for i in free if core[i] == level),
               key=lambda i: (math.prod(core) // core[i] + mode_sums[i], i))
    return core[:pick] + (core[pick] + 1,) + core[pick + 1:]


def hypercube_plan(reshape: tuple[int, ...], budget: int) -> LayerPlan | None:
    """Largest near-hypercube core (dims differ by at most 1, k_i <= n_i) whose params fit
    ``budget``, grown from 1 x ... x 1 one cheapest mode at a time; None if not even rank 1 fits."""
    return _hypercube_plan(tuple(int(n) for n in reshape), int(budget))


# plan_model's budget split calls this thousands of times with repeated arguments (identical layers,
# the repeated plans of adt.exporter.size_budget); the result is an immutable LayerPlan
@lru_cache(maxsize=1 << 16)
def _hypercube_plan(reshape: tuple[int, ...], budget: int) -> LayerPlan | None:
    lp = LayerPlan(reshape, (1,) * len(reshape))
    if lp.params > budget:
        return None
    while True:
        core = next_core(lp.core, reshape, reshape)
        if core is None:
            return lp
        nxt = LayerPlan(reshape, core)
        if nxt.params > budget:
            return lp
        lp = nxt


def _shape_numel(shape: Any) -> int:
    return math.prod(int(s) for s in shape)


def plan_layer(shape: tuple[int, ...], target: Target, max_mode: int = MAX_MODE,
               where: str = "layer") -> LayerPlan:
    """Plan one weight of ``shape`` for ``target`` (int budget, float ratio or explicit plan)."""
    n = _shape_numel(shape)
    if isinstance(target, (LayerPlan, Mapping, list, tuple)):
        lp = LayerPlan.coerce(target, where)
        lp.validate(tuple(shape), where)
        return lp
    if isinstance(target, bool) or not isinstance(target, (int, float)):
        raise PlanError(f"{where}: target must be an int budget, a float ratio or a LayerPlan, got {target!r}")
    if isinstance(target, float):
        if not (math.isfinite(target) and target > 0):
            raise PlanError(f"{where}: compression ratio must be a positive number, got {target}")
        budget = int(n / target)
    else:
        budget = int(target)
    if budget < 1:
        raise PlanError(f"{where}: parameter budget must be >= 1, got {budget}")
    if not candidate_orders(n, max_mode):
        raise PlanError(f"{where}: a weight of {n} elements has no reshape of order >= 2 (prime count)")
    fallback = None
    for d in candidate_orders(n, max_mode):
        lp = hypercube_plan(balanced_factorization(n, d), budget)
        if lp is None:
            continue
        if min(lp.core) >= 2 or lp.core == lp.reshape:
            return lp
        if fallback is None or lp.params < fallback.params:
            fallback = lp
    if fallback is not None:
        return fallback
    orders = candidate_orders(n, max_mode)
    need = min((LayerPlan(balanced_factorization(n, d), (1,) * d).params for d in orders), default=n)
    raise PlanError(f"{where}: budget {budget} is too small for a weight of {n} elements "
                    f"(the smallest Tucker form needs {need})")


# --------------------------------------------------------------------------------------------------
# Rules 3-5: whole models
# --------------------------------------------------------------------------------------------------
def load_overrides(source: Any) -> dict[str, Any]:
    """Overrides from a dict, or a .json / .toml file path (layer path -> plan | budget | ratio | "dense")."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(os.fspath(source))
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise PlanError(f"cannot read overrides file {str(path)!r}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text.decode("utf-8"))
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise PlanError(f"overrides file {str(path)!r} must end in .json or .toml")
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlanError(f"overrides file {str(path)!r} is not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise PlanError(f"overrides file {str(path)!r} must map layer paths to plans")
    return data


def plannable_layers(model: Any, min_numel: int = MIN_NUMEL) -> dict[str, tuple[int, ...]]:
    """Module path -> weight shape of every Linear/Conv layer with at least ``min_numel`` weights."""
    from torch import nn  # the planner's rules themselves need no torch

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.weight.numel() >= min_numel:
            out[name] = tuple(m.weight.shape)
    return out


def _is_dense(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str) and value.lower() == "dense")


def layers_to_plan(model: Any, overrides: Any = None, min_numel: int = MIN_NUMEL,
                   layers: list[str] | None = None) -> tuple[dict[str, Any], dict[str, tuple[int, ...]],
                                                             dict[str, tuple[int, ...]]]:
    """``(overrides, shapes, all_shapes)``: the loaded overrides; the weight shapes of the layers to plan
    (those of at least ``min_numel`` values, or exactly ``layers``, plus every overridden one); the
    shapes of every Linear/Conv layer. An override or a ``layers`` entry that names no such layer
    raises :class:`PlanError`."""
    over = load_overrides(overrides)
    shapes = plannable_layers(model, min_numel)
    all_shapes = plannable_layers(model, 1)
    for name in over:
        if name not in all_shapes:
            raise PlanError(f"override names layer {name!r}, which is not a Linear/Conv layer of the model")
    if layers is not None:
        missing = [n for n in layers if n not in all_shapes]
        if missing:
            raise PlanError(f"layer {missing[0]!r} is not a Linear/Conv layer of the model")
        shapes = {n: all_shapes[n] for n in layers}
    for name in over:
        shapes.setdefault(name, all_shapes[name])
    return over, shapes, all_shapes


def largest_fitting(plans_for: Callable[[float], Any], cost: Callable[[Any], float], budget: int) -> Any:
    """The plans ``plans_for(scale)`` at the largest scale whose ``cost`` fits ``budget`` (bisection over
    60 steps after doubling the upper end until it no longer fits), or None when none fits. Shared by
    the Tucker and TT planners: both split a model budget over layers by one common scale."""
    lo, hi = 0.0, float(max(budget, 1))
    while cost(plans_for(hi)) <= budget and hi < 1e12:  # grow until it no longer fits
        hi *= 2.0
    best = None
    for _ in range(60):
        mid = (lo + hi) / 2.0
        p = plans_for(mid)
        if cost(p) <= budget:
            best, lo = p, mid
        else:
            hi = mid
    return best


def plan_model(model: Any, target: Target | None, overrides: Any = None, *, scada: bool = False,
               max_mode: int = MAX_MODE, alloc_power: float = ALLOC_POWER,
               min_numel: int = MIN_NUMEL, layers: list[str] | None = None) -> dict[str, LayerPlan]:
    """Plan every Linear/Conv layer of ``model`` (or only ``layers``), keyed by module path.

    ``target``: int total of stored parameters, float overall compression ratio, or None (then
    every planned layer must be covered by ``overrides``). See the module docstring for the rule.
    """
    over, shapes, all_shapes = layers_to_plan(model, overrides, min_numel, layers)

    plan: dict[str, LayerPlan] = {}
    auto: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes.items():
        if name in over:
            if _is_dense(over[name]):
                continue
            plan[name] = plan_layer(shape, over[name], max_mode, where=name)
        elif candidate_orders(_shape_numel(shape), max_mode):
            auto[name] = shape  # (a prime element count has no reshape: that layer stays dense)
    if not auto:
        return _in_model_order(plan, shapes)
    if target is None:
        raise PlanError(f"no target given and no override for layer {next(iter(auto))!r}")
    if isinstance(target, (LayerPlan, Mapping)):
        raise PlanError("a model target is an int parameter total or a float ratio; give per-layer plans as overrides")

    total_orig = count_stored(model)
    if isinstance(target, bool) or not isinstance(target, (int, float)):
        raise PlanError(f"model target must be an int parameter total or a float ratio, got {target!r}")
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
        planned_orig = sum(_shape_numel(s) for s in list(auto.values()) + [shapes[n] for n in plan])
        fixed = total_orig - planned_orig  # biases, BN, unplanned layers: stored as they are
        if fixed >= total:
            raise PlanError(_too_small(model, total, fixed, {**plan, **dict.fromkeys(auto)}))
        if scada:
            return _in_model_order({**plan, **_plan_scada(auto, plan, total - fixed, max_mode)}, shapes)
        budget = total - fixed - sum(lp.params for lp in plan.values())
        if budget < 1:
            raise PlanError(_too_small(model, total, fixed, {**plan, **dict.fromkeys(auto)}))
        split = _split_budget(auto, budget, max_mode, alloc_power, total, fixed)
        # The planner never makes a layer bigger: one whose plan stores as many values as its weight
        # stays dense, and the others are planned again with the budget that leaves.
        bigger = [n for n, lp in split.items() if lp.params >= lp.numel]
        if not bigger:
            return _in_model_order({**plan, **split}, shapes)
        for n in bigger:
            del auto[n]
        if not auto:
            return _in_model_order(plan, shapes)


#: The ratios :func:`default_target` tries, in order: 10x first, then ever milder ones.
DEFAULT_RATIOS: tuple[float, ...] = (10.0, 5.0, 3.0, 2.0, 1.5, 1.2)


def default_target(model: Any, *, scada: bool = False, ratios: tuple[float, ...] = DEFAULT_RATIOS) -> float:
    """The model target to use when none is given: the first ratio of ``ratios`` (default
    :data:`DEFAULT_RATIOS`: 10, 5, 3, 2, 1.5, 1.2) that :func:`plan_model` meets for ``model``, i.e. it
    plans at least one layer and the stored total (:func:`model_params`) is at most
    ``count_stored(model) / ratio``. A milder ratio is tried when a stronger one cannot be met (most
    values in layers that stay dense: BatchNorm, embeddings, small or prime-sized layers). Raises
    :class:`PlanError` when none can be met, naming the biggest layers that stay dense and why."""
    total_orig = count_stored(model)
    for ratio in ratios:
        try:
            plan = plan_model(model, float(ratio), scada=scada)
        except PlanError:
            continue
        if plan and model_params(model, plan, scada) <= int(total_orig / float(ratio)):
            return float(ratio)
    dense = sorted(left_dense(model, {}), key=lambda r: -r["values"])
    listed = ", ".join(f"{r['layer']} ({r['type']}, {r['values']}: {r['reason']})" for r in dense[:3])
    why = f"; biggest dense layers: {listed}" if listed else ""
    raise PlanError(f"no default target fits this model: the planner meets none of the ratios "
                    f"{', '.join(f'{r:g}' for r in ratios)} (of {total_orig} stored values){why}; "
                    "give an explicit target or per-layer plan")


def _too_small(model: Any, total: int, fixed: int, planned: Mapping[str, Any]) -> str:
    dense = left_dense(model, planned)
    top = sorted(dense, key=lambda r: -r["values"])[:3]
    listed = ", ".join(f"{r['layer']} ({r['type']}, {r['values']}: {r['reason']})" for r in top)
    more = f" and {len(dense) - len(top)} more" if len(dense) > len(top) else ""
    return (f"target of {total} parameters is too small: {fixed} values stay dense "
            f"({listed}{more}), leaving nothing for the planned layers")


def left_dense(model: Any, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every module that stores values of its own and is not in ``plan``, with why it stays dense:
    ``not Linear/Conv`` (LSTM, Embedding, BatchNorm, ...), ``under MIN_NUMEL weights``, ``prime element
    count`` (no reshape of order >= 2), or ``not planned`` (a dense override, or no Tucker form smaller
    than the weight: :func:`plan_model` never makes a layer bigger)."""
    from torch import nn

    rows = []
    for name, m in model.named_modules():
        own = [t for k, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
               if not k.endswith("num_batches_tracked")]
        values = sum(int(t.numel()) for t in own)
        if not values or name in plan:
            continue
        is_layer = isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
        if not is_layer:
            reason = "not Linear/Conv"
        elif m.weight.numel() < MIN_NUMEL:
            reason = f"under {MIN_NUMEL} weights"
        elif not candidate_orders(m.weight.numel()):
            reason = "prime element count"
        else:
            reason = "not planned (a dense override, or no Tucker form smaller than the weight)"
        rows.append({"layer": name, "type": type(m).__name__, "values": values, "reason": reason})
    return rows


def _in_model_order(plan: dict[str, LayerPlan], shapes: dict[str, tuple[int, ...]]) -> dict[str, LayerPlan]:
    return {n: plan[n] for n in shapes if n in plan}


def count_stored(model: Any) -> int:
    """Elements of every distinct parameter and buffer (a shared SCADA core once), without
    BatchNorm's ``num_batches_tracked``."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    for name, b in model.named_buffers():
        if not name.endswith("num_batches_tracked") and id(b) not in seen:
            seen.add(id(b))
            total += b.numel()
    return total


def _split_budget(auto: dict[str, tuple[int, ...]], budget: int, max_mode: int, power: float,
                  total: int, fixed: int) -> dict[str, LayerPlan]:
    weights = {n: _shape_numel(s) ** power for n, s in auto.items()}

    def plans_for(scale: float) -> dict[str, LayerPlan] | None:
        out = {}
        for n, s in auto.items():
            b = max(1, min(_shape_numel(s), int(scale * weights[n])))
            try:
                out[n] = plan_layer(s, b, max_mode, where=n)
            except PlanError:
                return None
        return out

    def cost(p: dict[str, LayerPlan] | None) -> float:
        return math.inf if p is None else sum(lp.params for lp in p.values())

    best = largest_fitting(plans_for, cost, budget)
    if best is None:
        raise PlanError(f"target of {total} parameters is too small: {fixed} are fixed (biases, "
                        f"unplanned layers) and the planned layers need more than the {budget} left")
    # The proportional split moves all layers at once, so one layer's next core step can block the
    # others; spend what is left greedily, one core-growth step at a time, on the layer furthest
    # below its proportional share.
    while True:
        left = budget - cost(best)
        ups = []
        for n, lp in best.items():
            core = None if lp.cp else next_core(lp.core, lp.reshape, lp.reshape)
            if core is not None:
                nxt = LayerPlan(lp.reshape, core)
                if nxt.params - lp.params <= left:
                    ups.append((lp.params / weights[n], n, nxt))
        if not ups:
            return best
        _, n, nxt = min(ups)
        best[n] = nxt


def _plan_scada(auto: dict[str, tuple[int, ...]], fixed_plans: dict[str, LayerPlan], budget: int,
                max_mode: int) -> dict[str, LayerPlan]:
    reshapes = {}
    for n, s in auto.items():
        orders = candidate_orders(_shape_numel(s), max_mode)
        if not orders:
            raise PlanError(f"{n}: weight {s} cannot be reshaped to order >= 2")
        reshapes[n] = balanced_factorization(_shape_numel(s), orders[0])
    d = max([len(r) for r in reshapes.values()] + [lp.order for lp in fixed_plans.values()])
    given = {lp.core for lp in fixed_plans.values() if lp.order == d}
    if len(given) > 1:
        raise PlanError(f"SCADA overrides of order {d} disagree on the shared core: {sorted(given)}")
    padded = [r + (1,) * (d - len(r)) for r in reshapes.values()]
    padded += [lp.reshape + (1,) * (d - lp.order) for lp in fixed_plans.values()]
    mode_sums = tuple(sum(r[j] for r in padded) for j in range(d))

    def cost(core: tuple[int, ...]) -> int:
        return math.prod(core) + sum(k * s for k, s in zip(core, mode_sums))

    if given:
        core = given.pop()  # an explicit shared core is the user's choice
    else:
        core = (1,) * d
        if cost(core) > budget:
            raise PlanError(f"SCADA budget {budget} is too small (rank 1 already needs {cost(core)})")
        # near-hypercube growth; a padded 1 x k factor still lets k grow past the layer's modes
        caps = (1 << 30,) * d
        while True:
            nxt = next_core(core, mode_sums, caps)
            if nxt is None or cost(nxt) > budget:
                break
            core = nxt
    return {n: LayerPlan(r, core[: len(r)]) for n, r in reshapes.items()}


def plan_params(plan: Mapping[str, LayerPlan], scada: bool = False) -> int:
    """Core + factor parameters of a plan; with ``scada`` the shared core counts once."""
    plans = [LayerPlan.coerce(p) for p in plan.values()]
    if not scada:
        return sum(p.params for p in plans)
    d = max(p.order for p in plans)
    top = next(p for p in plans if p.order == d)
    shared = math.prod(top.core)
    factors = sum(p.factor_params + sum(top.core[p.order:]) for p in plans)  # padded 1 x k factors
    return shared + factors


def model_params(model: Any, plan: Mapping[str, LayerPlan], scada: bool = False) -> int:
    """Stored parameters of ``model`` compressed with ``plan``: Tucker parameters plus everything
    unplanned (biases, BN, dense layers), counted the way the paper's #(Param.) counts them."""
    shapes = plannable_layers(model, 1)
    planned = 0
    for name, p in plan.items():
        if name not in shapes:
            raise PlanError(f"plan names layer {name!r}, which is not a Linear/Conv layer of the model")
        lp = LayerPlan.coerce(p, name)
        lp.validate(shapes[name], name)
        planned += lp.numel
    return count_stored(model) - planned + plan_params(plan, scada)


def plan_table(model: Any, plan: Mapping[str, LayerPlan], scada: bool = False,
               dense: bool = False) -> list[dict[str, Any]]:
    """One row per planned layer: path, weight shape, reshape, core, cp, method ("tucker" or "cp",
    as :func:`adt.exporter.mtd.plan_mtd` chose; "dense" for ``dense`` rows; the SCADA shared-core
    row has none), stored params, ratio.

    With ``scada`` the shared core is listed once, as its own row named "(shared core)", and the
    layer rows count factors only. With ``dense`` every module left dense follows as a row with
    ``"dense"`` (why: :func:`left_dense`), its values as ``params`` and ratio 1."""
    shapes = plannable_layers(model, 1)
    rows = []
    for name, p in plan.items():
        lp = LayerPlan.coerce(p, name)
        if name not in shapes:
            raise PlanError(f"plan names layer {name!r}, which is not a Linear/Conv layer of the model")
        lp.validate(shapes[name], name)
        params = lp.factor_params if scada else lp.params
        rows.append({"layer": name, "shape": list(shapes[name]), "reshape": list(lp.reshape),
                     "core": list(lp.core), "cp": lp.cp, "method": "cp" if lp.cp else "tucker", "params": params,
                     "ratio": round(lp.numel / params, 2)})
    if scada and rows:
        d = max(LayerPlan.coerce(p).order for p in plan.values())
        top = next(LayerPlan.coerce(p) for p in plan.values() if LayerPlan.coerce(p).order == d)
        for row in rows:  # padded 1 x k factors
            extra = sum(top.core[len(row["reshape"]):])
            row["params"] += extra
            row["ratio"] = round(math.prod(row["shape"]) / row["params"], 2)
        rows.append({"layer": "(shared core)", "shape": None, "reshape": None, "core": list(top.core),
                     "cp": False, "params": math.prod(top.core), "ratio": None})
    if dense:
        rows += [{"layer": r["layer"], "shape": None, "reshape": None, "core": None, "cp": False,
                  "method": "dense", "params": r["values"], "ratio": 1.0, "dense": f"{r['type']}: {r['reason']}"}
                 for r in left_dense(model, plan)]
    return rows


# --------------------------------------------------------------------------------------------------
# Presets from the paper
# --------------------------------------------------------------------------------------------------
def _lp(reshape: tuple[int, ...], core: tuple[int, ...]) -> LayerPlan:
    return LayerPlan(reshape, core)


def _table9(c: int) -> dict[str, LayerPlan]:
    # Table 9: every LeNet-5 layer as a 4th-order tensor, core c x c x c x c (ADA: one per layer;
    # SCADA: one shared). Totals 4c^4 + 268c + 580 (ADA) and c^4 + 268c + 580 (SCADA).
    k = (c,) * 4
    return {"conv1": _lp((20, 1, 5, 5), k), "conv2": _lp((50, 20, 5, 5), k),
            "fc1": _lp((40, 25, 20, 20), k), "fc2": _lp((25, 20, 5, 2), k)}


def _resnet20_table12() -> dict[str, LayerPlan]:
    small = _lp((16, 16, 9), (12, 12, 6))          # 16x16x3x3 -> 1302 params
    mid = _lp((12, 12, 8, 8), (8, 8, 6, 6))        # 32x32x3x3 -> 2592
    big = _lp((9, 8, 8, 8, 8), (6, 6, 6, 6, 6))    # 64x64x3x3 -> 8022
    plan = {}
    for b in range(9):
        plan[f"layers.{b}.conv1"] = small if b < 3 else mid if b < 6 else big
        plan[f"layers.{b}.conv2"] = small if b < 3 else mid if b < 6 else big
    plan["layers.3.conv1"] = _lp((18, 16, 16), (12, 10, 10))  # 32x16x3x3 -> 1736
    plan["layers.6.conv1"] = _lp((32, 24, 24), (24, 16, 16))  # 64x32x3x3 -> 7680
    return plan


#: Named plans. "-paper" presets are settings the paper lists; "-ada" / "-scada" presets reproduce
#: its Table 1 #(Param.) and compression ratio with settings the paper does not list (see
#: PRESET_INFO for where each comes from and which method it is meant for).
PRESETS: dict[str, dict[str, LayerPlan]] = {
    # Tables 4-7, the fixed layers (and Table 4, column "2d"): 2980 params
    "lenet5-paper": {"conv1": _lp((25, 20), (5, 5)), "conv2": _lp((50, 25, 20), (5, 5, 5)),
                     "fc1": _lp((40, 25, 20, 20), (5, 5, 5, 5)), "fc2": _lp((25, 20, 10), (5, 5, 5))},
    # Table 1 ADA-Tucker, 2.6K / CR 166, from appendix settings only: Conv1 Table 4 "4d", Conv2
    # Table 5 "5d", FC1 Table 6 "4d" and FC2 Table 7 "5d" (the best orders of Fig. 5): 2594 params,
    # CR 166.2
    "lenet5-ada": {"conv1": _lp((20, 1, 5, 5), (3, 3, 3, 3)),
                   "conv2": _lp((10, 10, 10, 5, 5), (3, 3, 3, 3, 3)),
                   "fc1": _lp((40, 25, 20, 20), (5, 5, 5, 5)), "fc2": _lp((8, 5, 5, 5, 5), (3, 3, 3, 3, 3))},
    # Table 1 SCADA-Tucker, 2.3K / CR 185: the best orders of Figs. 4-5 for Conv1 (Table 4 "5d"),
    # Conv2 (Table 5 "3d") and FC1 (Table 6 "4d"), FC2 as in Table 9; one shared near-hypercube
    # 3x4x4x4x4 core, lower orders padded with 1 x k factors: 2328 params, CR 185.2
    "lenet5-scada": {"conv1": _lp((5, 5, 5, 2, 2), (3, 4, 4, 4, 4)), "conv2": _lp((50, 25, 20), (3, 4, 4)),
                     "fc1": _lp((40, 25, 20, 20), (3, 4, 4, 4)), "fc2": _lp((25, 20, 5, 2), (3, 4, 4, 4))},
    # Table 1 ADA-Tucker on LeNet-300-100, 4.1K / CR 65 (no appendix table): ADT's planner for a
    # total of 4101 params: 4096 params, CR 65.1
    "lenet300-ada": {"fc1": _lp((28, 21, 20, 20), (6, 6, 6, 6)), "fc2": _lp((40, 30, 25), (8, 8, 8)),
                     "fc3": _lp((40, 25), (8, 8))},
    # Table 1 SCADA-Tucker on LeNet-300-100, 3.4K / CR 78: balanced 3rd-order reshapes, shared 8x8x8
    # core: 3410 params, CR 78.2
    "lenet300-scada": {"fc1": _lp((70, 60, 56), (8, 8, 8)), "fc2": _lp((40, 30, 25), (8, 8, 8)),
                       "fc3": _lp((10, 10, 10), (8, 8, 8))},
    # Table 12: ResNet-20 (ADT's ResNet-20 has 1x1 conv shortcuts, which stay dense)
    "resnet20-paper": _resnet20_table12(),
}
for _c in range(3, 8):
    PRESETS[f"lenet5-table9-c{_c}"] = _table9(_c)

#: Per preset: the method it is meant for, the model, and the paper's source.
PRESET_INFO: dict[str, dict[str, str]] = {
    "lenet5-paper": {"method": "ada", "model": "lenet5", "source": "appendix Tables 4-7 (fixed layers), 2980 params"},
    "lenet5-ada": {"method": "ada", "model": "lenet5", "source": "Table 1 ADA-Tucker (2.6K, CR 166) from appendix settings"},
    "lenet5-scada": {"method": "scada", "model": "lenet5", "source": "Table 1 SCADA-Tucker (2.3K, CR 185)"},
    "lenet300-ada": {"method": "ada", "model": "lenet300", "source": "Table 1 ADA-Tucker (4.1K, CR 65), ADT planner"},
    "lenet300-scada": {"method": "scada", "model": "lenet300", "source": "Table 1 SCADA-Tucker (3.4K, CR 78)"},
    "resnet20-paper": {"method": "ada", "model": "resnet20", "source": "appendix Table 12"},
}
for _c in range(3, 8):
    PRESET_INFO[f"lenet5-table9-c{_c}"] = {"method": "ada or scada", "model": "lenet5",
                                           "source": f"appendix Table 9, c={_c}"}


def preset(name: str) -> dict[str, LayerPlan]:
    """A copy of ``PRESETS[name]``; :class:`PlanError` naming the known presets otherwise."""
    if name not in PRESETS:
        raise PlanError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
