"""What a model stores, and which Eq. 13 quantizer each stored value uses.

:func:`inventory` lists every stored tensor in table order: Tucker cores (a SCADA shared core once),
Tucker factors, tensor-train cores (one TT parameter per TT layer: its cores are that parameter's
values, quantized like factors), and plain tensors (biases, untouched layers, and each BatchNorm as its per-channel
``scale`` and ``shift``: :mod:`adt.exporter.batchnorm` says why).
Nothing is left out, so the file alone runs the model and its size is the honest size.

Quantizer groups (``groups=``):
  * ``"single"``: one (Q, b) for every value;
  * ``"kind"`` (default): one group each for cores, factors and other tensors, and one per BatchNorm
    ``scale`` and per ``shift`` tensor (a channel's scale must not share its step with values hundreds
    of times larger: that is how a BatchNorm collapses);
  * ``"tensor"``: one group per core, per Tucker layer (its factors) and per plain tensor.
``q`` and ``b`` are a number or a dict keyed by kind (``"cores"``, ``"factors"``, ``"other"``, ``"norm"``).
A file holds at most MAX_TABLES (256) code tables, one per group at most: a plan that would need more
groups merges them (``"tensor"`` falls back to ``"kind"``, then the BatchNorm groups to one for all
scales and one for all shifts) and says so in ``QuantPlan.note``.

The rule for b when it is not given (``b_rule``): ``"max"`` (default) takes b = max |w| over the
group's values, so no value is clipped and the levels span exactly the values' range;
``"pXX"`` (e.g. ``"p99.9"``) takes the XX-th percentile of |w|, trading clipped outliers for finer
levels. A group whose values are all zero gets b = 1. The report records the rule and every b.

How a value picks its level (``rounding``): ``"nearest"`` (default) takes the closest level of the
grid (half the worst-case error, no bias); ``"floor"`` is the paper's Eq. 13 exactly, which moves every
value down by half a step on average: a conv-BN net trained on MNIST loses 3.2 points with it and
none with nearest (results/bn_mnist.md), so the paper's rounding is an option, not the default. The
file format and the decoder are the same either way (FORMAT.md section 9: the writer chooses symbols).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from adt.runtime.format import ROUNDINGS, check_quantizer, quantize
from adt.runtime.format.limits import MAX_TABLES

from .batchnorm import SCALE_SUFFIX, SHIFT_SUFFIX, affine_tensors, inference_tensors
from .errors import ModelError, PlanError
from .factorize import TuckerWeight, frozen_copy, tucker_layers
from .fakequant import QuantSpec
from .tensor_train import TTWeight, tt_layers

__all__ = [
    "KINDS", "GROUPINGS", "DEFAULT_Q", "StoredCore", "StoredTucker", "Inventory", "inventory",
    "GroupSpec", "QuantPlan", "choose_b", "make_quant_plan", "Quantized", "quantize_model",
]

#: The kinds of stored values a per-kind ``q``/``b`` dict is keyed by.
KINDS = ("cores", "factors", "other", "norm")
#: How stored values are grouped under quantizers.
GROUPINGS = ("single", "kind", "tensor")
DEFAULT_Q = 512  # the paper's LeNet-5 setting (Sec. 4, Q = 512)


# --------------------------------------------------------------------------------------------------
# What the model stores
# --------------------------------------------------------------------------------------------------
@dataclass
class StoredCore:
    """One core of the file: its tensor (dense, or the diagonal when ``cp``), its layer's order,
    and its key: the weight name of the first layer that uses it (stable across inventories)."""

    tensor: torch.Tensor
    cp: bool
    order: int
    name: str


@dataclass
class StoredTucker:
    """A Tucker-parametrized weight and the index of its core in ``Inventory.cores``."""

    weight: TuckerWeight
    core: int


@dataclass
class Inventory:
    """Every stored tensor of a model, in table order: ``cores``, ``tucker`` (weight name ->
    :class:`StoredTucker`), ``plain`` (name -> float tensor of the frozen model), ``order`` (table
    order of the names), ``shapes`` (name -> dense shape), ``norm`` (the plain tensors that are
    BatchNorm scales and shifts) and ``tt`` (weight name -> :class:`TTWeight`)."""

    cores: list[StoredCore]
    tucker: dict[str, StoredTucker]
    plain: dict[str, torch.Tensor]
    order: list[str]
    shapes: dict[str, tuple[int, ...]]
    norm: set[str] = field(default_factory=set)
    tt: dict[str, TTWeight] = field(default_factory=dict)

    def factored(self, name: str) -> bool:
        """Whether ``name`` is stored as factors (Tucker) or TT cores rather than plain values."""
        return name in self.tucker or name in self.tt

    @property
    def core_names(self) -> list[str]:
        return [c.name for c in self.cores]


def weight_name(path: str) -> str:
    """The state_dict name of the weight of the module at ``path``."""
    return f"{path}.weight" if path else "weight"


def inventory(model: nn.Module, names: Sequence[str] | None = None, ranks: Mapping[str, int] | None = None) -> Inventory:
    """Collect cores, Tucker layers and plain tensors (:func:`adt.exporter.batchnorm.inference_tensors`).
    ``names`` (PyTorch names) restricts the plain tensors to those the architecture references; by
    default every one is kept. ``ranks``: BatchNorm input ranks (the shapes of their scale/shift)."""
    frozen = frozen_copy(model)
    tensors = inference_tensors(frozen, dict(ranks or {}))
    norm_names = set(affine_tensors(frozen))
    keep = set(tensors) if names is None else set(names)
    order = [k for k in tensors if k in keep]
    cores: list[StoredCore] = []
    core_index: dict[int, int] = {}
    tucker: dict[str, StoredTucker] = {}
    for path, _, tw in tucker_layers(model):
        name = weight_name(path)
        if name not in keep:
            continue  # a layer the inference graph never reads is not stored
        key = id(tw.core)
        if key not in core_index:
            core_index[key] = len(cores)
            cores.append(StoredCore(tw.core, tw.cp, tw.order, name))
        tucker[name] = StoredTucker(tw, core_index[key])
    tt = {weight_name(path): tw for path, _, tw in tt_layers(model) if weight_name(path) in keep}
    for name in [*tucker, *tt]:
        if name not in tensors:
            raise ModelError(f"{'Tucker' if name in tucker else 'TT'} layer weight {name!r} is not in the frozen "
                             "model's state_dict")
    plain = {k: tensors[k] for k in order if k not in tucker and k not in tt}
    shapes = {k: tuple(int(d) for d in tensors[k].shape) for k in order}
    return Inventory(cores, tucker, plain, order, shapes, {k for k in plain if k in norm_names}, tt)


# --------------------------------------------------------------------------------------------------
# Quantizer groups
# --------------------------------------------------------------------------------------------------
@dataclass
class GroupSpec:
    """One Eq. 13 quantizer: its label, Q levels, bound b and how b was chosen."""

    label: str
    q: int
    b: float
    rule: str


@dataclass
class QuantPlan:
    """Resolved quantizers: ``groups`` and which group every core / table entry uses. Cores are
    keyed by the weight name of the first layer that uses them (stable across inventories)."""

    grouping: str
    groups: list[GroupSpec]
    core_group: dict[str, int] = field(default_factory=dict)
    param_group: dict[str, int] = field(default_factory=dict)
    rounding: str = "floor"  # how values pick their level: "floor" (Eq. 13) or "nearest"
    note: str = ""  # why the groups differ from the grouping asked for (too many code tables)

    def for_core(self, key: str) -> tuple[int, float]:
        g = self.groups[self.core_group[key]]
        return g.q, g.b

    def for_param(self, name: str) -> tuple[int, float]:
        g = self.groups[self.param_group[name]]
        return g.q, g.b

    def core_spec(self, key: str) -> QuantSpec:
        """The fake quantizer of the core keyed ``key`` (quantization-aware training)."""
        return QuantSpec(*self.for_core(key), self.rounding)

    def param_spec(self, name: str) -> QuantSpec:
        """The fake quantizer of the table entry ``name`` (its factors, or its plain values)."""
        return QuantSpec(*self.for_param(name), self.rounding)

    def missing(self, inv: Inventory) -> list[str]:
        """What of ``inv`` this plan does not cover (empty when it covers everything)."""
        out = [n for n in inv.order if n not in self.param_group]
        return out + [f"the core of {c}" for c in inv.core_names if c not in self.core_group]

    def describe(self) -> str:
        return "; ".join(f"{g.label}: Q={g.q} b={g.b:.6g} ({g.rule})" for g in self.groups) + f"; {self.rounding}"


def choose_b(values: np.ndarray, rule: str = "max") -> float:
    """b from the value distribution: ``"max"`` = max |w|; ``"pXX"`` = XX-th percentile of |w|.
    All-zero values give 1.0 (any b > 0 represents 0 exactly for even Q)."""
    a = np.abs(np.asarray(values, dtype=np.float64).reshape(-1))
    if rule == "max":
        b = float(a.max()) if a.size else 0.0
    elif rule.startswith("p"):
        try:
            pct = float(rule[1:])
        except ValueError:
            raise PlanError(f"b rule must be 'max' or 'pXX' (e.g. 'p99.9'), got {rule!r}") from None
        if not 0 < pct <= 100:
            raise PlanError(f"b rule percentile must be in (0, 100], got {rule!r}")
        b = float(np.percentile(a, pct)) if a.size else 0.0
    else:
        raise PlanError(f"b rule must be 'max' or 'pXX' (e.g. 'p99.9'), got {rule!r}")
    b = float(np.float32(b))
    return b if b > 0 else 1.0


def _per_kind(value: Any, kind: str, what: str) -> Any:
    if isinstance(value, Mapping):
        bad = [k for k in value if k not in KINDS]
        if bad:
            raise PlanError(f"{what} keys must be among {KINDS}, got {bad[0]!r}")
        return value.get(kind)
    return value


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _tensor_values(inv: Inventory) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
    """Float32 values of every core, and of every table entry (Tucker: its factors; TT: its cores;
    plain: [values])."""
    core_vals = [_numpy(c.tensor) for c in inv.cores]

    def values(name: str) -> list[np.ndarray]:
        if name in inv.tucker:
            return [_numpy(m) for m in inv.tucker[name].weight.factors]
        if name in inv.tt:
            return [_numpy(g) for g in inv.tt[name].cores]
        return [_numpy(inv.plain[name])]

    param_vals = {name: values(name) for name in inv.order}
    return core_vals, param_vals


Members = list[tuple[str, str, list[tuple[str, Any]]]]  # (label, kind, [("core", i) | ("param", name)])


def _members(inv: Inventory, groups: str) -> tuple[Members, str]:
    """The quantizer groups of ``groups`` grouping, merged until a file can hold one code table each."""
    cores = [("core", i) for i in range(len(inv.cores))]  # index here, name in the plan
    factors = [("param", n) for n in inv.order if inv.factored(n)]
    others = [("param", n) for n in inv.order if not inv.factored(n) and n not in inv.norm]
    norms = [("param", n) for n in inv.order if n in inv.norm]

    def by_kind(per_norm_tensor: bool) -> Members:
        out: Members = [(kind, kind, items) for kind, items in zip(KINDS, (cores, factors, others)) if items]
        if per_norm_tensor:
            out += [(key, "norm", [(typ, key)]) for typ, key in norms]
        else:
            for label, suffix in (("norm scales", SCALE_SUFFIX), ("norm shifts", SHIFT_SUFFIX)):
                items = [(t, k) for t, k in norms if k.endswith(suffix)]
                if items:
                    out.append((label, "norm", items))
        return out

    if groups == "single":
        return [("all", "other", cores + factors + others + norms)], ""
    if groups == "tensor":
        members: Members = [(f"core of {c.name}", "cores", [("core", i)]) for i, c in enumerate(inv.cores)]
        members += [(n, "factors" if inv.factored(n) else "norm" if n in inv.norm else "other", [("param", n)])
                    for n in inv.order]
        if len(members) <= MAX_TABLES:
            return members, ""
        note = f"groups='tensor' needs {len(members)} groups, a file holds at most {MAX_TABLES} code tables: "
    else:
        note = ""
    members = by_kind(True)
    if len(members) <= MAX_TABLES:
        return members, (note + "grouped by kind") if note else ""
    note = note or f"{len(members)} groups by kind (one per BatchNorm tensor) exceed {MAX_TABLES} code tables: "
    return by_kind(False), note + "BatchNorm scales and shifts grouped in one group each"


def make_quant_plan(model: nn.Module | Inventory, q: int | Mapping[str, int] = DEFAULT_Q,
                    b: float | Mapping[str, float] | None = None, groups: str = "kind",
                    b_rule: str = "max", rounding: str = "nearest") -> QuantPlan:
    """Resolve Q and b for every stored tensor of ``model`` (see the module docstring)."""
    inv = model if isinstance(model, Inventory) else inventory(model)
    if groups not in GROUPINGS:
        raise PlanError(f"groups must be one of {GROUPINGS}, got {groups!r}")
    if rounding not in ROUNDINGS:
        raise PlanError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    core_vals, param_vals = _tensor_values(inv)

    members, note = _members(inv, groups)
    plan = QuantPlan(groups, [], rounding=rounding, note=note)
    for label, kind, items in members:
        qk = _per_kind(q, kind, "q")
        if qk is None and kind == "norm":  # BatchNorm scales/shifts take the "other" Q unless given
            qk = _per_kind(q, "other", "q")
        qk = DEFAULT_Q if qk is None else qk
        bk = _per_kind(b, kind, "b")
        vals = np.concatenate([
            (core_vals[key] if typ == "core" else np.concatenate([v.reshape(-1) for v in param_vals[key]])).reshape(-1)
            for typ, key in items
        ])
        if bk is None:
            bk, rule = choose_b(vals, b_rule), b_rule
        else:
            rule = "given"
        try:
            check_quantizer(int(qk), float(bk))
        except Exception as exc:
            raise PlanError(f"group {label!r}: {exc}") from None
        gi = len(plan.groups)
        plan.groups.append(GroupSpec(label, int(qk), float(np.float32(bk)), rule))
        for typ, key in items:
            if typ == "core":
                plan.core_group[inv.cores[key].name] = gi
            else:
                plan.param_group[key] = gi
    return plan


# --------------------------------------------------------------------------------------------------
# Symbols
# --------------------------------------------------------------------------------------------------
@dataclass
class Quantized:
    """Eq. 13 symbols of everything the file stores (what the writer receives)."""

    cores: list[np.ndarray]                      # core i symbols (CP: the diagonal)
    params: dict[str, list[np.ndarray]]          # Tucker: factor symbols; TT: core symbols; plain: [symbols]


def quantize_model(inv: Inventory, plan: QuantPlan) -> Quantized:
    """The symbols of every stored value of ``inv`` under ``plan``."""
    core_vals, param_vals = _tensor_values(inv)
    r = plan.rounding
    cores = [quantize(core_vals[i], *plan.for_core(c.name), r) for i, c in enumerate(inv.cores)]
    params = {n: [quantize(v, *plan.for_param(n), r) for v in param_vals[n]] for n in inv.order}
    return Quantized(cores, params)
