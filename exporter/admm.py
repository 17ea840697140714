"""ADMM training toward a low-rank tensor form (Yin et al., "Towards Efficient Tensor
Decomposition-Based DNN Model Compression with Optimization Framework").

The DENSE weights W of the planned layers are trained, not a factorized form. Each planned layer
carries an auxiliary Z (W + U projected onto the target form at the target ranks) and a scaled
dual U, and the objective is

    loss(W) + sum over planned layers of (rho / 2) * ||W - Z + U||_F^2 .

Every ``update_every`` optimizer steps (default: once per epoch, after its last step)

    Z <- Proj(W + U);   U <- U + W - Z

and rho follows a schedule (multiplied by ``rho_growth`` after every epoch, capped at ``rho_max``,
or any ``rho_schedule(epoch)``). The network ends dense but close to the target set, so the
decomposition that follows (:func:`admm_then_tucker`: HOOI; :func:`admm_then_tt`: TT-SVD) loses
little, and fine-tuning the factorized model starts near the dense accuracy.

Projections (:func:`project_tucker`, :func:`project_tt`) are NumPy float64 and delegate the math:
Tucker is :func:`adt.exporter.decompose.tucker_hooi` (HOSVD + HOOI, the same routine as the
``init="hooi"`` of :func:`~adt.exporter.factorize.apply_ada_tucker`), TT is
``tensorly.decomposition.tensor_train`` (TT-SVD) rebuilt by ``tensorly.tt_to_tensor``.

The loop is :func:`adt.exporter.fit.fit` (its ``loss_of`` adds the penalty; its ``after_step`` /
``after_epoch`` hooks run the Z/U updates and the rho schedule), with the optimizer and
learning-rate schedule of :func:`adt.exporter.fit.train`. Single process (no DDP, no AMP: the
penalty is a small difference of large norms and stays float32).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import decompose, distributed
from .errors import ModelError, PlanError, TrainConfigError
from .factorize import SUPPORTED, apply_ada_tucker, reconstruction_errors
from .fit import TrainConfig, TrainResult, _optimizer, _scheduler, describe_epoch, evaluate, fit
from .planner import LayerPlan

__all__ = [
    "PROJECTIONS", "AdmmResult", "AdmmDecomposed", "project_tucker", "project_tt", "tt_target",
    "admm_train", "admm_then_tucker", "admm_then_tt",
]

#: The target forms :func:`admm_train` projects onto.
PROJECTIONS = ("tucker", "tt")


# --------------------------------------------------------------------------------------------------
# Projections onto the target sets
# --------------------------------------------------------------------------------------------------
def project_tucker(w: Tensor | np.ndarray, reshape: Sequence[int], core: Sequence[int]) -> np.ndarray:
    """``w`` reshaped (C order) to ``reshape``, truncated to multilinear ranks ``core`` by HOSVD + HOOI
    (:func:`adt.exporter.decompose.tucker_hooi`), rebuilt, and returned in ``w``'s shape (float64).

    Exact (up to rounding) on a tensor whose multilinear ranks are already <= ``core``, hence
    idempotent. HOOI is a local method: it returns a quasi-optimal, not always the optimal,
    rank-``core`` approximation."""
    import tensorly as tl

    a = _as_array(w)
    _check_reshape(a.shape, reshape)
    t = a.reshape(tuple(int(n) for n in reshape))
    g, factors = decompose.tucker_hooi(t, tuple(int(k) for k in core))
    return np.asarray(tl.tucker_to_tensor((g, factors)), dtype=np.float64).reshape(a.shape)


def tt_target(target: Any, where: str = "target") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(reshape, ranks)`` of a TT target: a ``(reshape, ranks)`` pair or any object with ``.reshape``
    and ``.ranks`` (e.g. a TT plan). ``ranks`` are returned with the boundary ones, length d + 1;
    the d - 1 inner ranks alone are accepted too."""
    if hasattr(target, "reshape") and hasattr(target, "ranks") and not isinstance(target, (tuple, list)):
        reshape, ranks = target.reshape, target.ranks
    elif isinstance(target, Mapping) and "reshape" in target and "ranks" in target:
        reshape, ranks = target["reshape"], target["ranks"]
    elif isinstance(target, (tuple, list)) and len(target) == 2:
        reshape, ranks = target
    else:
        raise PlanError(f"{where}: a TT target is (reshape, ranks) or has .reshape and .ranks, got {target!r}")
    try:
        reshape = tuple(int(n) for n in reshape)
        ranks = tuple(int(r) for r in ranks)
    except (TypeError, ValueError):
        raise PlanError(f"{where}: TT reshape and ranks must be integer sequences, got {target!r}") from None
    d = len(reshape)
    if d < 2 or min(reshape) < 1:
        raise PlanError(f"{where}: TT reshape {reshape} needs at least 2 positive modes")
    if len(ranks) == d - 1:
        ranks = (1,) + ranks + (1,)
    if len(ranks) != d + 1 or ranks[0] != 1 or ranks[-1] != 1 or min(ranks) < 1:
        raise PlanError(f"{where}: TT ranks {ranks} must be d - 1 = {d - 1} positive inner ranks, "
                        f"or d + 1 = {d + 1} with boundary ranks 1")
    return reshape, ranks


def project_tt(w: Tensor | np.ndarray, reshape: Sequence[int], ranks: Sequence[int]) -> np.ndarray:
    """``w`` reshaped (C order) to ``reshape``, truncated by TT-SVD (``tensorly.decomposition.tensor_train``)
    to TT ranks ``ranks`` (d - 1 inner ranks, or d + 1 with the boundary ones; a rank above what a
    mode allows is clamped), rebuilt with ``tensorly.tt_to_tensor`` in ``w``'s shape (float64).

    Exact on a tensor whose TT ranks are already <= ``ranks`` (every sequential unfolding then has
    that rank, and TT-SVD's truncations drop only zero singular values), hence idempotent."""
    import tensorly as tl
    from tensorly.decomposition import tensor_train

    a = _as_array(w)
    reshape, ranks = tt_target((reshape, ranks))
    _check_reshape(a.shape, reshape)
    cores = tensor_train(tl.tensor(a.reshape(reshape)), rank=list(ranks))
    return np.asarray(tl.tt_to_tensor(cores), dtype=np.float64).reshape(a.shape)


def _as_array(w: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(w, Tensor):
        return w.detach().cpu().double().numpy()
    return np.asarray(w, dtype=np.float64)


def _check_reshape(shape: Sequence[int], reshape: Sequence[int]) -> None:
    if math.prod(reshape) != math.prod(shape):
        raise PlanError(f"reshape {tuple(reshape)} has {math.prod(reshape)} elements, "
                        f"the weight {tuple(shape)} has {math.prod(shape)}")


# --------------------------------------------------------------------------------------------------
# ADMM training
# --------------------------------------------------------------------------------------------------
@dataclass
class AdmmResult:
    """What :func:`admm_train` did, per epoch: objective (task loss + penalty) and task loss means,
    rho used, test accuracy (when a test loader was given); per layer (keyed by module path):
    ``penalty`` = ||W - Z|| / ||W|| after the epoch's last Z/U update (ADMM's primal residual),
    ``distance`` = ||W - Proj(W)|| / ||W|| at the epoch's end (how far the dense weight is from the
    target set: the decomposition error the next step will see). ``train`` holds fit's step-level
    record; ``updates`` counts Z/U updates; ``wall_time`` in seconds."""

    projection: str
    epoch_losses: list[float] = field(default_factory=list)
    task_losses: list[float] = field(default_factory=list)
    rhos: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    penalty: dict[str, list[float]] = field(default_factory=dict)
    distance: dict[str, list[float]] = field(default_factory=dict)
    updates: int = 0
    wall_time: float = 0.0
    train: TrainResult = field(default_factory=TrainResult)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    project: Callable[[Tensor], np.ndarray]
    z: Tensor
    u: Tensor


def _planned_layers(model: nn.Module, targets: Mapping[str, Any], projection: str) -> list[_Layer]:
    if projection not in PROJECTIONS:
        raise PlanError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    if not targets:
        raise PlanError("ADMM needs at least one planned layer")
    names = [n for n, _ in model.named_modules()]
    layers = []
    for name in sorted(targets, key=lambda n: names.index(n) if n in names else -1):
        if name not in names:
            raise ModelError(f"ADMM target names layer {name!r}, which the model does not have")
        module = model.get_submodule(name)
        if not isinstance(module, SUPPORTED):
            raise ModelError(f"layer {name!r} is {type(module).__name__}; ADMM trains the dense weight of "
                             + ", ".join(c.__name__ for c in SUPPORTED))
        if parametrize.is_parametrized(module, "weight"):
            raise ModelError(f"layer {name!r} already has a parametrized weight; ADMM trains dense weights")
        shape = tuple(module.weight.shape)
        if projection == "tucker":
            lp = LayerPlan.coerce(targets[name], where=name)
            if lp.cp:
                raise PlanError(f"layer {name!r}: ADMM projects onto Tucker or TT; a CP plan has no projection here")
            lp.validate(shape, where=name)
            project = (lambda w, r=lp.reshape, k=lp.core: project_tucker(w, r, k))
        else:
            reshape, ranks = tt_target(targets[name], where=name)
            _check_reshape(shape, reshape)
            project = (lambda w, r=reshape, k=ranks: project_tt(w, r, k))
        w = module.weight.detach()
        z = torch.from_numpy(project(w)).to(w.dtype).to(w.device)
        layers.append(_Layer(name, module, project, z, torch.zeros_like(w)))
    return layers


def _rel(a: Tensor, b: Tensor) -> float:
    den = float(torch.linalg.vector_norm(b.double()))
    num = float(torch.linalg.vector_norm(a.double()))
    return num / den if den > 0 else num


def admm_train(model: nn.Module, train_loader: Iterable, targets: Mapping[str, Any], *,
               projection: str = "tucker", rho: float = 0.03, rho_growth: float = 2.0,
               rho_max: float = 10.0, rho_schedule: Callable[[int], float] | None = None,
               update_every: int | None = None, epochs: int = 1, lr: float = 3e-3, seed: int = 0,
               weight_decay: float = 0.0, lr_decay: float = 3.0, decay_every: int = 15,
               max_steps: int | None = None, test_loader: Iterable | None = None,
               device: str = "cpu", progress: bool = False) -> AdmmResult:
    """Train ``model``'s dense weights in place with ADMM toward the target form of every layer in
    ``targets``; return an :class:`AdmmResult`.

    ``targets``: for ``projection="tucker"``, module path -> :class:`~adt.exporter.planner.LayerPlan`
    (anything ``LayerPlan.coerce`` accepts; e.g. from :func:`~adt.exporter.planner.plan_model`);
    for ``"tt"``, module path -> ``(reshape, ranks)`` or an object with ``.reshape`` and ``.ranks``.
    Layers not in ``targets`` train as usual, without a penalty.

    ``rho``: the penalty weight of the first epoch; after each epoch it is multiplied by
    ``rho_growth`` up to ``rho_max``, unless ``rho_schedule(epoch)`` (0-based) gives it directly.
    ``update_every``: Z/U update every this many optimizer steps; None = once per epoch, after its
    last step. Between updates the optimizer must get W near Z - U (ADMM's W-subproblem): with too
    few steps per update (under ~30 with Adam at lr 3e-3 in the tests) U piles up residuals and
    ||W - Z|| grows instead of shrinking. The defaults (rho 0.03, doubled per epoch, cap 10) are the
    tests' setting; rho must be large enough against the task loss's gradient to pull W in, and
    when it dominates the dense net's accuracy drops until fine-tuning (results/admm_mnist.md).
    Z starts as Proj(W) and U at 0. Optimizer and learning-rate schedule are
    :func:`adt.exporter.fit.train`'s (Adam, or AdamW with ``weight_decay``; lr divided by ``lr_decay``
    every ``decay_every`` epochs). Seeded (``torch.manual_seed(seed)``, and the loader reshuffled per
    epoch from the seed when it is epoch-seeded, like :func:`~adt.exporter.fit.train`): the same
    call gives the same weights. ``device``: "cpu" (default), "cuda", "auto"; the model comes back on
    the CPU."""
    if not (rho > 0 and math.isfinite(rho)) or rho_growth <= 0 or not rho_max > 0:
        raise TrainConfigError(f"ADMM needs rho > 0, rho_growth > 0 and rho_max > 0 "
                               f"(got {rho}, {rho_growth}, {rho_max})")
    if update_every is not None and update_every < 1:
        raise TrainConfigError(f"update_every must be >= 1 step or None (per epoch), got {update_every}")
    env = distributed.current()
    if env.distributed:
        raise TrainConfigError("ADMM training runs in one process; run it outside torchrun")
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, weight_decay=weight_decay, lr_decay=lr_decay,
                      decay_every=decay_every, max_steps=max_steps, device=device, amp=False)
    dev = distributed.resolve_device(cfg.device, env)
    layers = _planned_layers(model, targets, projection)
    model.to(dev)
    for layer in layers:
        layer.z, layer.u = layer.z.to(dev), layer.u.to(dev)
    try:
        return _admm(model, train_loader, layers, cfg, projection, rho, rho_growth, rho_max, rho_schedule,
                     update_every, test_loader, progress, dev)
    finally:
        model.to("cpu")


def _admm(model: nn.Module, loader: Iterable, layers: list[_Layer], cfg: TrainConfig, projection: str,
          rho0: float, rho_growth: float, rho_max: float, rho_schedule: Callable[[int], float] | None,
          update_every: int | None, test_loader: Iterable | None, progress: bool,
          dev: torch.device) -> AdmmResult:
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    opt = _optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    sched = _scheduler(opt, cfg)
    res = AdmmResult(projection, penalty={ly.name: [] for ly in layers}, distance={ly.name: [] for ly in layers})
    loss_fn = nn.CrossEntropyLoss()
    state = {"rho": _rho_at(0, rho0, rho_growth, rho_max, rho_schedule), "task": 0.0, "count": 0}
    t0 = time.perf_counter()

    def loss_of(x: Tensor, y: Tensor) -> Tensor:
        task = loss_fn(model(x), y)
        penalty = sum(((ly.module.weight - ly.z + ly.u) ** 2).sum() for ly in layers)
        state["task"] += float(task.detach())
        state["count"] += 1
        return task + 0.5 * state["rho"] * penalty

    def update() -> None:
        # the scaled-form ADMM step: Z = Proj(W + U) (the nearest point of the target set), U += W - Z
        with torch.no_grad():
            for ly in layers:
                w = ly.module.weight.detach()
                ly.z = torch.from_numpy(ly.project(w + ly.u)).to(w.dtype).to(dev)
                ly.u = ly.u + w - ly.z
        res.updates += 1

    def after_step() -> None:
        # fit counts this step in res.train.steps only after after_step returns
        if update_every is not None and (res.train.steps + 1) % update_every == 0:
            update()

    def after_epoch(stats: Any) -> None:
        if update_every is None:
            update()
        sched.step()
        res.epoch_losses.append(stats.mean_loss)
        res.task_losses.append(state["task"] / max(state["count"], 1))
        res.rhos.append(state["rho"])
        state["task"], state["count"] = 0.0, 0
        with torch.no_grad():
            for ly in layers:
                w = ly.module.weight.detach()
                res.penalty[ly.name].append(_rel(w - ly.z, w))
                res.distance[ly.name].append(_rel(w - torch.from_numpy(ly.project(w)).to(w.dtype).to(dev), w))
        if test_loader is not None:
            res.test_accuracy.append(evaluate(model, test_loader))
        state["rho"] = _rho_at(stats.epoch + 1, rho0, rho_growth, rho_max, rho_schedule)
        if progress:
            worst = max(d[-1] for d in res.distance.values())
            acc = f", test acc {res.test_accuracy[-1]:.4f}" if test_loader is not None else ""
            tqdm.write(describe_epoch(stats, cfg.epochs) + f", rho {res.rhos[-1]:.3g}, "
                       f"max ||W - Proj W||/||W|| {worst:.4f}" + acc)

    model.train()
    fit(model, loader, opt, loss_of, res.train, epochs=cfg.epochs, max_steps=cfg.max_steps,
        epoch_seed=lambda epoch: cfg.seed * 1_000_003 + epoch, after_step=after_step, after_epoch=after_epoch,
        progress=progress, desc="admm epoch", device=dev)
    res.wall_time = time.perf_counter() - t0
    res.train.wall_time = res.wall_time
    return res


def _rho_at(epoch: int, rho0: float, growth: float, cap: float,
            schedule: Callable[[int], float] | None) -> float:
    rho = float(schedule(epoch)) if schedule is not None else min(rho0 * growth ** epoch, cap)
    if not (rho >= 0 and math.isfinite(rho)):
        raise TrainConfigError(f"rho for epoch {epoch} must be a finite number >= 0, got {rho!r}")
    return rho


# --------------------------------------------------------------------------------------------------
# Decomposing after ADMM
# --------------------------------------------------------------------------------------------------
@dataclass
class AdmmDecomposed:
    """The model after ADMM and the decomposition: the same object, now factorized in place
    (``model``), the ADMM run (``admm``), and each planned layer's relative decomposition error
    ||W - W_decomposed|| / ||W|| (``init_errors``)."""

    model: nn.Module
    admm: AdmmResult | None
    init_errors: dict[str, float]


def admm_then_tucker(model: nn.Module, plan: Mapping[str, LayerPlan], train_loader: Iterable | None = None,
                     **admm_kwargs: Any) -> AdmmDecomposed:
    """ADMM-Tucker: :func:`admm_train` toward ``plan``'s Tucker forms (skipped when ``train_loader`` is
    None, i.e. the model was trained with ADMM already), then
    :func:`~adt.exporter.factorize.apply_ada_tucker` with ``init="hooi"``. The model is then
    ADA-Tucker-parametrized and ready for fine-tuning with :func:`adt.exporter.fit.train` and for
    :func:`~adt.exporter.export.export_adt`."""
    admm = None
    if train_loader is not None:
        admm = admm_train(model, train_loader, plan, projection="tucker", **admm_kwargs)
    apply_ada_tucker(model, dict(plan), init="hooi")
    errors = {k: float(v) for k, v in reconstruction_errors(model).items() if v is not None and k in plan}
    return AdmmDecomposed(model, admm, errors)


def admm_then_tt(model: nn.Module, targets: Mapping[str, Any], train_loader: Iterable | None = None,
                 **admm_kwargs: Any) -> AdmmDecomposed:
    """ADMM-TT: :func:`admm_train` toward ``targets``' TT forms (skipped when ``train_loader`` is None),
    then the TT parametrization ``adt.exporter.tensor_train.apply_tt(model, targets, init="svd")``.

    Raises :class:`~adt.exporter.errors.ModelError` BEFORE training when the TT parametrization
    module (``exporter/tensor_train.py`` with ``apply_tt``) is not part of this installation, and
    :class:`~adt.exporter.errors.PlanError` before training when a target's ranks are not proper
    (``TTPlan``'s rule: r_k <= r_(k-1) n_k and r_(k-1) <= n_k r_k)."""
    try:
        from . import tensor_train as tt_mod  # written alongside this module; may not exist yet
        apply_tt, coerce = tt_mod.apply_tt, tt_mod.TTPlan.coerce
    except (ImportError, AttributeError):
        raise ModelError("ADMM-TT needs the TT layer parametrization (adt.exporter.tensor_train.apply_tt), which "
                         "this installation does not have; admm_train(projection='tt') works without it") from None
    # TTPlan refuses ranks no tensor can use (which project_tt would silently clamp): fail before training
    targets = {name: coerce(tt_target(t, where=name), name) for name, t in targets.items()}
    admm = None
    if train_loader is not None:
        admm = admm_train(model, train_loader, targets, projection="tt", **admm_kwargs)
    dense = {name: model.get_submodule(name).weight.detach().clone() for name in targets}
    apply_tt(model, targets, init="svd")
    errors = {name: _rel(model.get_submodule(name).weight.detach() - w, w) for name, w in dense.items()}
    return AdmmDecomposed(model, admm, errors)
