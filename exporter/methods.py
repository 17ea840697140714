"""The compression methods ADT trains and stores: one class each, the registry behind
``adt compress --method`` and :func:`adt.exporter.size_budget.plan_for_size`.

==============  ==========================  ===============================================================
method          layers in the file          how the layers get their values
==============  ==========================  ===============================================================
``ada``         one Tucker core per layer   ADA-Tucker (Zhong et al.): trained in Tucker form from scratch
                                            (or from a HOOI of trained weights)
``scada``       one core shared by all      SCADA-Tucker: the same, with one shared core
``cp``          one CP (diagonal) core      trained in CP form, each layer at its ADA plan's budget
                per layer
``mtd``         Tucker or CP per layer      Mixed Tensor Decomposition: each layer of the TRAINED dense
                                            model takes the form its proxy scores better at the same budget
                                            (:func:`adt.exporter.mtd.plan_mtd`), decomposed, fine-tuned
``tt``          tensor train per layer      trained in TT form from scratch (or a TT-SVD of trained weights)
``admm-tucker`` one Tucker core per layer   Yin et al.: the dense weights trained with ADMM toward the Tucker
                                            ranks, then HOOI, then fine-tuned (:mod:`adt.exporter.admm`)
``admm-tt``     tensor train per layer      the same toward TT ranks, then TT-SVD, then fine-tuned
==============  ==========================  ===============================================================

A :class:`Method` knows how to plan a model at a stored-value target (:meth:`Method.plan`), its smallest
plan (:meth:`Method.smallest`), how many values a plan stores (:meth:`Method.stored`), what happens to
the dense model between planning and factorizing (:meth:`Method.prepare`: ADMM training, MTD's choice)
and how to parametrize a model with a plan (:meth:`Method.apply`). The API flow, which is what
``adt compress`` runs::

    method = get_method("admm-tt")
    plan = method.plan(model, 50.0)                   # or plan_for_size(model, "20KB", method=method)[0]
    plan, report = method.prepare(model, plan, train_loader, admm_epochs=2, rho=0.3)
    method.apply(model, plan, seed=0)                  # TT-SVD of the ADMM-trained weights
    train(model, train_loader, TrainConfig(epochs=1))  # fine-tune
    export_adt(model, "net.adt", input_shape=(1, 28, 28), method=method.name)
 The plan is what sets the file's size, so the
size search (``--target-size``) works for every method through these four. ``needs_dense``: the method
starts from a trained dense model (``--from-checkpoint`` or ``--dense-epochs``); ``admm``: that dense
model is first trained with ADMM toward the plan. Training recipes (epochs, ADMM's rho) are the
caller's: the CLI's ``compress`` command and ``research/benchmarks/methods.py`` use these classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from torch import nn

from .admm import admm_train
from .errors import PlanError
from .factorize import apply_ada_tucker, apply_scada_tucker
from .mtd import cp_plan_for_budget, plan_mtd
from .planner import (
    MAX_MODE, MIN_NUMEL, LayerPlan, _is_dense, balanced_factorization, candidate_orders, layers_to_plan, model_params,
    plan_layer, plan_model, plan_params,
)
from .tensor_train import TTPlan, apply_tt, plan_model_tt, plan_tt, tt_model_params

__all__ = ["Method", "METHOD_NAMES", "get_method", "tucker_smallest_plan"]


@dataclass(frozen=True)
class Method:
    """One compression method (see the module docstring). ``kind``: what its layers are in the file
    (``tucker``, ``cp``, ``mixed`` or ``tt``)."""

    name: str
    kind: str
    needs_dense: bool
    admm: bool
    summary: str

    @property
    def scada(self) -> bool:
        return self.name == "scada"

    def plan(self, model: nn.Module, target: Any, overrides: Any = None, *, max_mode: int = MAX_MODE,
             min_numel: int = MIN_NUMEL) -> dict[str, Any]:
        """Per-layer plans at ``target`` (int stored values in all, or a float ratio). For ``mtd`` this is
        the ADA-Tucker plan that fixes each layer's budget; :func:`adt.exporter.mtd.plan_mtd` turns it into
        the mixed plan once the dense model is trained."""
        if self.kind == "tt":
            return plan_model_tt(model, target, overrides, max_mode=max_mode, min_numel=min_numel)
        plan = plan_model(model, target, overrides, scada=self.scada, max_mode=max_mode, min_numel=min_numel)
        return _as_cp(plan) if self.kind == "cp" else plan

    def smallest(self, model: nn.Module, overrides: Any = None, *, max_mode: int = MAX_MODE,
                 min_numel: int = MIN_NUMEL) -> dict[str, Any]:
        """The plan :meth:`plan` approaches at the smallest target: rank 1 everywhere (each layer at the
        order with the fewest values); a layer whose rank-1 form is not smaller than its weight stays dense."""
        if self.kind == "tt":
            return _tt_smallest_plan(model, overrides, max_mode, min_numel)
        plan = tucker_smallest_plan(model, overrides, self.scada, max_mode, min_numel)
        return _as_cp(plan) if self.kind == "cp" else plan

    def stored(self, model: nn.Module, plan: Mapping[str, Any]) -> int:
        """Values ``model`` (dense) stores under ``plan``: factored layers plus everything unplanned."""
        if self.kind == "tt":
            return tt_model_params(model, plan)
        return model_params(model, plan, self.scada)

    def factored(self, plan: Mapping[str, Any]) -> int:
        """Values the factored layers of ``plan`` store (a SCADA shared core once)."""
        if self.kind == "tt":
            return sum(TTPlan.coerce(p, n).params for n, p in plan.items())
        return plan_params(plan, self.scada)

    def prepare(self, model: nn.Module, plan: Mapping[str, Any], train_loader: Iterable | None = None, *,
                mtd_proxy: str = "finetune", admm_epochs: int = 3, rho: float = 0.03,
                admm_update_every: int | None = None, lr: float = 0.01, seed: int = 0, device: str = "cpu",
                progress: bool = False) -> tuple[dict[str, Any], Any]:
        """The step between planning and :meth:`apply`, on the dense ``model``: ``admm-*`` trains its dense
        weights in place with ADMM toward ``plan`` (:func:`adt.exporter.admm.admm_train`; ``admm_epochs``,
        ``rho``, ``admm_update_every``, ``lr``, ``seed``, ``device``) and returns ``(plan, AdmmResult)``;
        ``mtd`` chooses Tucker or CP per layer (:func:`adt.exporter.mtd.plan_mtd` with ``mtd_proxy``) and
        returns ``(mixed plan, MtdReport)``; the others return ``(plan, None)``. ``train_loader``: ``(x, y)``
        batches (ADMM and the taylor/finetune proxies need it)."""
        if self.admm:
            if train_loader is None:
                raise PlanError(f"method {self.name} trains with ADMM: it needs training data")
            res = admm_train(model, train_loader, dict(plan), projection="tt" if self.kind == "tt" else "tucker",
                             rho=rho, update_every=admm_update_every, epochs=admm_epochs, lr=lr, seed=seed,
                             device=device, progress=progress)
            return dict(plan), res
        if self.name == "mtd":
            return plan_mtd(model, dict(plan), data=train_loader, proxy=mtd_proxy)
        return dict(plan), None

    def apply(self, model: nn.Module, plan: Mapping[str, Any], init: str = "scratch",
              seed: int | None = None) -> nn.Module:
        """Parametrize ``model`` in place. ``init``: ``scratch`` (random) or ``hooi`` (a decomposition of
        the current weights: HOOI for Tucker, CP-ALS for CP, TT-SVD for TT); the methods that start from a
        trained dense model (``needs_dense``) always decompose."""
        if self.needs_dense:
            init = "hooi"
        if self.kind == "tt":
            return apply_tt(model, dict(plan), init="svd" if init == "hooi" else init, seed=seed)
        apply = apply_scada_tucker if self.scada else apply_ada_tucker
        return apply(model, dict(plan), init=init, seed=seed)


_METHODS = {m.name: m for m in (
    Method("ada", "tucker", False, False, "ADA-Tucker: one Tucker core per layer, trained in Tucker form"),
    Method("scada", "tucker", False, False, "SCADA-Tucker: one core shared by every layer"),
    Method("cp", "cp", False, False, "CP per layer at the ADA plan's per-layer budgets"),
    Method("mtd", "mixed", True, False, "MTD: Tucker or CP per layer, chosen on the trained dense model"),
    Method("tt", "tt", False, False, "tensor train per layer, trained in TT form"),
    Method("admm-tucker", "tucker", True, True, "ADMM toward Tucker ranks on the dense model, HOOI, fine-tune"),
    Method("admm-tt", "tt", True, True, "ADMM toward TT ranks on the dense model, TT-SVD, fine-tune"),
)}
#: Every method's name, in the order of the table above.
METHOD_NAMES = tuple(_METHODS)


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name`` (:data:`METHOD_NAMES`)."""
    try:
        return _METHODS[name]
    except KeyError:
        raise PlanError(f"method must be one of {METHOD_NAMES}, got {name!r}") from None


def _as_cp(plan: Mapping[str, LayerPlan]) -> dict[str, LayerPlan]:
    """CP plans at each Tucker plan's budget (same reshape; the largest rank that fits); a layer whose
    budget cannot hold rank 1 keeps its Tucker plan's order at rank 1 only if that is smaller than dense."""
    out: dict[str, LayerPlan] = {}
    for name, lp in plan.items():
        lp = LayerPlan.coerce(lp, name)
        if lp.cp:
            out[name] = lp
            continue
        cp = cp_plan_for_budget(lp.reshape, lp.params)
        if cp is None and sum(lp.reshape) + 1 < lp.numel:
            cp = LayerPlan(lp.reshape, (1,), cp=True)
        if cp is not None:
            out[name] = cp
    return out


def tucker_smallest_plan(model: nn.Module, overrides: Any = None, scada: bool = False, max_mode: int = MAX_MODE,
                         min_numel: int = MIN_NUMEL) -> dict[str, LayerPlan]:
    """The Tucker plan :func:`plan_model` would approach at the smallest target: every layer it plans gets
    a rank-1 core (ADA: at the order with the fewest parameters; SCADA: one shared 1 x ... x 1 core at
    each layer's first order), overridden layers keep their override, and a layer whose rank-1 form
    is not smaller than its weight stays dense."""
    def rank1(n: int, orders: list[int]) -> LayerPlan:
        if scada:
            return LayerPlan(balanced_factorization(n, orders[0]), (1,) * orders[0])
        return min((LayerPlan(balanced_factorization(n, d), (1,) * d) for d in orders), key=lambda p: p.params)

    plan, over, all_shapes = _rank1_plans(model, overrides, max_mode, min_numel, plan_layer, rank1)
    if scada and plan:  # one shared core: an override of the highest order fixes it, else 1 x ... x 1
        d = max(lp.order for lp in plan.values())
        tops = {lp.core for name, lp in plan.items() if name in over and lp.order == d}
        core = tops.pop() if len(tops) == 1 else (1,) * d
        plan = {name: LayerPlan(lp.reshape, core[: lp.order]) for name, lp in plan.items()}
    return {n: plan[n] for n in all_shapes if n in plan}


def _tt_smallest_plan(model: nn.Module, overrides: Any, max_mode: int, min_numel: int) -> dict[str, TTPlan]:
    def rank1(n: int, orders: list[int]) -> TTPlan:
        return min((TTPlan(balanced_factorization(n, d), (1,) * (d + 1)) for d in orders), key=lambda p: p.params)

    plan, _, all_shapes = _rank1_plans(model, overrides, max_mode, min_numel, plan_tt, rank1)
    return {n: plan[n] for n in all_shapes if n in plan}


def _rank1_plans(model: nn.Module, overrides: Any, max_mode: int, min_numel: int,
                 plan_override: Callable[..., Any], rank1: Callable[[int, list[int]], Any]):
    """Overridden layers planned by ``plan_override`` (``"dense"`` skipped), every other plannable layer
    at ``rank1(numel, candidate orders)`` when that is smaller than its weight. Returns
    ``(plan, overrides, every layer's shape)``."""
    over, shapes, all_shapes = layers_to_plan(model, overrides, min_numel)
    plan: dict[str, Any] = {}
    for name, shape in shapes.items():
        n = math.prod(shape)
        if name in over:
            value = over[name]
            if not _is_dense(value):
                plan[name] = plan_override(shape, value, max_mode, where=name)
            continue
        orders = candidate_orders(n, max_mode)
        if orders:
            lp = rank1(n, orders)
            if lp.params < n:
                plan[name] = lp
    return plan, over, all_shapes
