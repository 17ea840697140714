"""Mixed Tensor Decomposition (MTD): Tucker or CP for each layer, at the same parameter budget.

The MTD paper (Tucker/CP mixing for VGG-11/16) observes that layers differ in how much accuracy
they lose under each decomposition at a given compression ratio, so it measures that sensitivity
per layer and picks, per layer, the decomposition that loses least, then fine-tunes the mixed
model. Its own sweep (accuracy vs. ratio curves per layer, with fine-tuning) is too expensive for
these machines; ADT keeps the idea and replaces the measurement with a cheap proxy:

1. **Budgets.** :func:`plan_mtd` starts from :func:`adt.exporter.planner.plan_model` (the
   ADA-Tucker reshape and per-layer budget of every layer). For each planned layer the CP
   candidate uses the SAME reshape and the largest rank r whose value count
   ``sum(n_i) * r + r`` (factors plus the CP weights, as :class:`LayerPlan` counts a CP plan) is
   at most that layer's Tucker count; so a mixed plan never stores more than the ADA-Tucker one.
2. **Sensitivity proxy** (``proxy=``), computed from the model's current (trained) dense weights:

   * ``"reconstruction"``: the relative error ||W - W_hat|| / ||W|| of HOOI (Tucker) and of CP-ALS
     (:mod:`adt.exporter.decompose`) of the reshaped weight. With ``data``, both errors are
     multiplied by the layer's share of the loss sensitivity, s_l = mean_b ||g_l,b||^2 ||W_l||^2
     normalised over layers (g: the loss gradient w.r.t. the dense weight on a few batches), so that
     scores compare across layers; the share is the same for both candidates of a layer, so it
     does not change that layer's choice.
   * ``"taylor"``: a first-order Taylor / empirical-Fisher estimate of the loss increase of
     swapping in each decomposition, ``0.5 * mean_b (g_l,b . (W_hat - W))^2`` over ``batches``
     batches of ``data`` (the squared form: at a trained optimum the mean gradient is ~0 but the
     per-batch ones are not, and mean (g.d)^2 = d^T F d is the Fisher quadratic form).
   * ``"finetune"``: closest to the paper's measurement: for each layer and candidate, a copy of the
     model with ONLY that layer decomposed (HOOI / CP-ALS init) is fine-tuned for ``steps`` Adam
     steps (lr ``lr``) on ``data``; the score is its mean loss over the first ``batches`` batches.
     It costs 2 x layers short trainings, but it sees what the two reconstruction-based proxies
     miss: how well each form RECOVERS under fine-tuning (on LeNet-5 at 50x, CP has the lower
     reconstruction error in every layer yet recovers worse; results/mtd_mnist.md).

3. **Choice.** Per layer the candidate with the lower score wins; a tie (within ``rtol``) keeps
   Tucker, ADT's default. A layer whose CP budget cannot afford rank 1 keeps Tucker.

:func:`apply_mtd` then parametrizes the model with the mixed plan (:func:`apply_ada_tucker` reads
``LayerPlan.cp``), ready for :func:`adt.exporter.train` and :func:`adt.exporter.export_adt` (CP
cores are stored as diagonals, already part of format 1.0).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from . import decompose
from .errors import ModelError, PlanError
from .factorize import apply_ada_tucker
from .planner import LayerPlan, hypercube_plan, plan_model

__all__ = ["MTD_PROXIES", "MtdLayer", "MtdReport", "cp_plan_for_budget", "plan_mtd", "apply_mtd"]

#: The sensitivity proxies :func:`plan_mtd` knows.
MTD_PROXIES = ("reconstruction", "taylor", "finetune")


@dataclass
class MtdLayer:
    """One layer's MTD decision: both candidate plans, their value counts, scores, and the choice."""

    layer: str
    tucker: LayerPlan
    cp: LayerPlan | None
    tucker_params: int
    cp_params: int | None
    tucker_error: float
    cp_error: float | None
    tucker_score: float
    cp_score: float | None
    sensitivity: float | None  # the layer's share of the loss sensitivity (None: no data)
    choice: str  # "tucker" or "cp"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tucker"] = self.tucker.to_dict()
        d["cp"] = None if self.cp is None else self.cp.to_dict()
        return d


@dataclass
class MtdReport:
    """What :func:`plan_mtd` measured: the proxy and one :class:`MtdLayer` per planned layer."""

    proxy: str
    layers: dict[str, MtdLayer] = field(default_factory=dict)

    @property
    def choices(self) -> dict[str, str]:
        return {n: r.choice for n, r in self.layers.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"proxy": self.proxy, "layers": [r.to_dict() for r in self.layers.values()]}

    def summary(self) -> str:
        lines = [f"MTD ({self.proxy} proxy): layer, tucker core/params/score, cp rank/params/score, choice"]
        for r in self.layers.values():
            cp = "-" if r.cp is None else f"r={r.cp.core[0]}/{r.cp_params}/{r.cp_score:.4g}"
            lines.append(f"  {r.layer}: {'x'.join(map(str, r.tucker.core))}/{r.tucker_params}/"
                         f"{r.tucker_score:.4g}  {cp}  -> {r.choice}")
        return "\n".join(lines)


def cp_plan_for_budget(reshape: tuple[int, ...], budget: int) -> LayerPlan | None:
    """CP plan of ``reshape`` with the largest rank r such that ``(sum(n_i) + 1) * r <= budget``, capped at
    the largest rank any tensor of that shape has (min over modes of the product of the other sizes: a
    matrix's rank is at most its smaller side), beyond which terms only repeat; None when not even rank 1
    fits."""
    reshape = tuple(int(n) for n in reshape)
    cap = min(math.prod(reshape) // n for n in reshape)
    r = min(int(budget) // (sum(reshape) + 1), cap)
    return LayerPlan(reshape, (r,), cp=True) if r >= 1 else None


# --------------------------------------------------------------------------------------------------
# Reconstructions
# --------------------------------------------------------------------------------------------------
def _tucker_rebuild(t: np.ndarray, core_dims: tuple[int, ...]) -> np.ndarray:
    import tensorly as tl

    core, factors = decompose.tucker_hooi(t, core_dims)
    return np.asarray(tl.tucker_to_tensor((core, factors)), dtype=np.float64)


def _cp_rebuild(t: np.ndarray, rank: int) -> np.ndarray:
    import tensorly as tl

    weights, factors = decompose.cp_als(t, rank)
    return np.asarray(tl.cp_to_tensor((weights, factors)), dtype=np.float64)


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    den = float(np.linalg.norm(ref))
    num = float(np.linalg.norm(a - ref))
    return num / den if den > 0 else num


# --------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------
def _batch_grads(model: nn.Module, names: list[str], data: Iterable, batches: int,
                 loss_fn: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Per-batch loss gradients w.r.t. each named layer's dense weight (model left unchanged)."""
    modules = {n: model.get_submodule(n) for n in names}
    was_training = model.training
    model.eval()  # dropout/BN noise would add variance the proxy does not care about
    params = list(model.parameters())
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    for m in modules.values():
        m.weight.requires_grad_(True)
    device = next(iter(modules.values())).weight.device
    grads: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    try:
        for i, batch in enumerate(data):
            if i >= batches:
                break
            x, y = batch[0].to(device), batch[1].to(device)
            loss = loss_fn(model(x), y)
            gs = torch.autograd.grad(loss, [m.weight for m in modules.values()], allow_unused=True)
            for n, g, m in zip(names, gs, modules.values()):
                grads[n].append(torch.zeros_like(m.weight) if g is None else g.detach())
    finally:
        for p, s in zip(params, saved):
            p.requires_grad_(s)
        model.train(was_training)
    if not grads[names[0]]:
        raise PlanError("plan_mtd: data gave no batches")
    return grads


def _finetune_loss(model: nn.Module, name: str, lp: LayerPlan, data: Iterable, steps: int, lr: float,
                   batches: int, loss_fn: nn.Module) -> float:
    """Mean loss on the first ``batches`` batches of ``data`` after decomposing only layer ``name``
    of a copy of ``model`` as ``lp`` (HOOI / CP-ALS init) and ``steps`` Adam steps on ``data``."""
    m = copy.deepcopy(model)
    apply_ada_tucker(m, {name: lp}, init="hooi")
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    device = params[0].device
    m.train()
    done = 0
    while done < steps:
        seen = False
        for x, y, *_ in data:
            if done >= steps:
                break
            seen = True
            opt.zero_grad()
            loss_fn(m(x.to(device)), y.to(device)).backward()
            opt.step()
            done += 1
        if not seen:
            raise PlanError("plan_mtd: data gave no batches")
    m.eval()
    losses = []
    with torch.no_grad():
        for i, (x, y, *_) in enumerate(data):
            if i >= batches:
                break
            losses.append(float(loss_fn(m(x.to(device)), y.to(device))))
    return float(np.mean(losses))


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------
def plan_mtd(model: nn.Module, target: int | float | Mapping[str, Any] | None, *, data: Iterable | None = None,
             proxy: str = "reconstruction", batches: int = 4, loss_fn: nn.Module | None = None,
             rtol: float = 1e-9, steps: int = 30, lr: float = 1e-3, **plan_kwargs: Any) -> tuple[dict[str, LayerPlan], MtdReport]:
    """Choose Tucker or CP per layer (see the module docstring); returns ``(plan, report)``.

    ``target``: as :func:`plan_model` (int total, float ratio; ``plan_kwargs`` such as ``overrides``
    go to it), or a mapping layer -> Tucker :class:`LayerPlan` used as the ADA-Tucker plan itself.
    ``data``: an iterable of ``(x, y)`` batches (needed by ``"taylor"`` and ``"finetune"``; optional
    weighting for ``"reconstruction"``), of which ``batches`` are used with ``loss_fn`` (default
    cross-entropy); ``"finetune"`` trains ``steps`` Adam steps at ``lr`` per layer and candidate. ``model`` must still be dense: its trained weights are what is decomposed."""
    if proxy not in MTD_PROXIES:
        raise PlanError(f"proxy must be one of {MTD_PROXIES}, got {proxy!r}")
    if proxy in ("taylor", "finetune") and data is None:
        raise PlanError(f"the {proxy} proxy needs data (an iterable of (x, y) batches)")
    if isinstance(target, Mapping):
        base = {n: LayerPlan.coerce(p, n) for n, p in target.items()}
    else:
        base = plan_model(model, target, **plan_kwargs)
    names = list(base)
    for n in names:
        m = model.get_submodule(n)
        if parametrize.is_parametrized(m, "weight"):
            raise ModelError(f"plan_mtd needs the dense model; layer {n!r} is already factorized")
    grads = None
    if data is not None and names:
        grads = _batch_grads(model, names, data, batches, loss_fn or nn.CrossEntropyLoss())

    shares: dict[str, float] = {}
    if grads is not None:
        raw = {n: float(np.mean([float(g.double().pow(2).sum()) for g in grads[n]]))
               * float(model.get_submodule(n).weight.detach().double().pow(2).sum()) for n in names}
        tot = sum(raw.values())
        shares = {n: (v / tot if tot > 0 else 1.0 / len(names)) for n, v in raw.items()}

    report = MtdReport(proxy)
    plan: dict[str, LayerPlan] = {}
    for n in names:
        tk = base[n]
        w = model.get_submodule(n).weight.detach()
        tk.validate(tuple(w.shape), n)
        budget = tk.params
        cp = tk if tk.cp else cp_plan_for_budget(tk.reshape, budget)
        if tk.cp:  # an explicit CP override: its Tucker rival is the planner's core for that budget
            tk = hypercube_plan(tk.reshape, budget) or tk
        t = w.cpu().double().numpy().reshape(tk.reshape)
        w_tk = _tucker_rebuild(t, tk.core)
        e_tk = _rel(w_tk, t)
        w_cp = _cp_rebuild(t, cp.core[0]) if cp is not None else None
        e_cp = _rel(w_cp, t) if w_cp is not None else None
        if proxy == "reconstruction":
            s = shares.get(n, 1.0)
            s_tk, s_cp = e_tk * s, (None if e_cp is None else e_cp * s)
        elif proxy == "finetune":
            s_tk = _finetune_loss(model, n, tk, data, steps, lr, batches, loss_fn or nn.CrossEntropyLoss())
            s_cp = (None if cp is None else
                    _finetune_loss(model, n, cp, data, steps, lr, batches, loss_fn or nn.CrossEntropyLoss()))
        else:
            def taylor(w_hat: np.ndarray) -> float:
                d = torch.from_numpy(w_hat - t).reshape(w.shape)
                return 0.5 * float(np.mean([float((g.cpu().double() * d).sum()) ** 2 for g in grads[n]]))
            s_tk = taylor(w_tk)
            s_cp = None if w_cp is None else taylor(w_cp)
        choose_cp = s_cp is not None and s_cp < s_tk * (1 - rtol) and math.isfinite(s_cp)
        plan[n] = cp if choose_cp else tk
        report.layers[n] = MtdLayer(n, tk, cp, tk.params, None if cp is None else cp.params, e_tk, e_cp,
                                    s_tk, s_cp, shares.get(n), "cp" if choose_cp else "tucker")
    return plan, report


def apply_mtd(model: nn.Module, plan: Mapping[str, LayerPlan], init: str = "hooi", scheme: str = "kaiming",
              seed: int | None = None) -> nn.Module:
    """Parametrize ``model`` in place with the mixed plan of :func:`plan_mtd` (Tucker layers get a
    dense core, CP layers a diagonal one); ``init`` "hooi" (HOOI / CP-ALS of the trained weights,
    MTD's decompose-then-fine-tune) or "scratch". Returns ``model``."""
    return apply_ada_tucker(model, {n: LayerPlan.coerce(p, n) for n, p in plan.items()},
                            init=init, scheme=scheme, seed=seed)
