"""Quantization-aware fine-tuning: train through the exact Eq. 13 quantizer the file will use.

The quantizers are resolved once (:func:`adt.exporter.quantplan.make_quant_plan`: Q, and b from the
values at the start), then every stored tensor is fake-quantized in the forward pass with a
straight-through gradient: Tucker cores and factors through ``TuckerWeight.core_quant`` /
``factor_quant``, TT cores through ``TTWeight.quant``, plain parameters (biases, BatchNorm affine)
through a small parametrization. The latent float values keep training; exporting them with the SAME
plan gives exactly the values the forward pass used, so the accuracy after QAT is the accuracy of the file. BatchNorm layers stay in
eval mode (their running statistics are stored, and QAT does not re-estimate them). Rate-aware QAT
(``rate_weight``) adds the estimated payload bits of :mod:`adt.exporter.rate` to the loss.

Device, mixed precision and data-parallel runs follow :func:`adt.exporter.fit.train` (rules in
:mod:`adt.exporter.distributed`); the quantizer stays float32 under autocast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import distributed
from .errors import PlanError
from .factorize import tucker_layers
from .fakequant import PlainFakeQuant, remove_plain_fake_quant
from .fit import DistillLoss, EpochStats, TrainResult, batch_loss, describe_epoch, fit
from .quantplan import QuantPlan, inventory, make_quant_plan, weight_name
from .rate import RateEstimate
from .tensor_train import tt_layers

__all__ = ["QAT_SCHEDULES", "QatResult", "enable_fake_quant", "disable_fake_quant", "qat_finetune"]

#: Learning-rate schedules of :func:`qat_finetune`.
QAT_SCHEDULES = ("constant", "cosine")


def enable_fake_quant(model: nn.Module, plan: QuantPlan) -> None:
    """Turn on Eq. 13 fake quantization of every stored parameter, per ``plan`` (in place)."""
    inv = inventory(model)
    for path, _, tw in tucker_layers(model):
        name = weight_name(path)
        tw.core_quant = plan.core_spec(inv.cores[inv.tucker[name].core].name)
        tw.factor_quant = plan.param_spec(name)
    for path, _, tt in tt_layers(model):
        tt.quant = plan.param_spec(weight_name(path))  # the TT parameter's group, as in the file
    params = dict(model.named_parameters())
    for name in inv.plain:
        if name not in params or name not in plan.param_group:
            continue  # buffers (BN running stats) are quantized at export, not trained
        path, _, attr = name.rpartition(".")
        module = model.get_submodule(path) if path else model
        parametrize.register_parametrization(module, attr, PlainFakeQuant(plan.param_spec(name)), unsafe=True)


def disable_fake_quant(model: nn.Module) -> None:
    """Turn every fake quantizer off (in place); the model computes in float again."""
    for _, _, tw in tucker_layers(model):
        tw.core_quant = tw.factor_quant = None
    for _, _, tt in tt_layers(model):
        tt.quant = None
    remove_plain_fake_quant(model)


@dataclass
class QatResult:
    plan: QuantPlan
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    last_lr: float | None = None  # the learning rate of the last step taken
    images: int = 0               # global images seen
    images_per_second: list[float] = field(default_factory=list)  # per epoch
    rate_bits: list[float] = field(default_factory=list)  # rate-aware QAT: hard-symbol entropy bits, start and per epoch


def qat_finetune(model: nn.Module, train_loader: Iterable, *, plan: QuantPlan | None = None,
                 epochs: int = 2, lr: float = 1e-3, max_steps: int | None = None,
                 progress: bool = True, label_smoothing: float = 0.0, teacher: nn.Module | None = None,
                 distill_alpha: float = 0.9, distill_temperature: float = 4.0, schedule: str = "constant",
                 device: str = "auto", amp: str | bool = "auto", rate_weight: float = 0.0,
                 rate_temperature: float = 0.5, **plan_kwargs: Any) -> QatResult:
    """Fine-tune ``model`` for ``epochs`` with Adam at ``lr`` through the file's quantizers.

    ``schedule``: "constant" (``lr`` throughout) or "cosine" (``lr`` annealed to 0 over all steps, per
    step, so the weights the file stores are a settled point rather than a random one of the last steps).

    ``label_smoothing``: of the cross-entropy (use the training run's, so that fine-tuning keeps
    the objective the model was trained for).

    ``teacher``: fine-tune against its logits too (the training run's distillation loss,
    :class:`adt.exporter.fit.DistillLoss` with ``distill_alpha`` and ``distill_temperature``).

    ``plan``: a resolved quantization plan, else one is made from ``plan_kwargs`` (q, b, groups,
    b_rule, rounding of :func:`make_quant_plan`) on the current values. Export afterwards with
    ``export_adt(model, ..., plan=result.plan)``. The model is left with fake quantization OFF, on the CPU.

    ``rate_weight``: rate-aware QAT: add ``rate_weight`` x the estimated payload bits of the stored
    values (:class:`adt.exporter.rate.RateEstimate`, soft histogram at ``rate_temperature`` steps) to
    every batch's loss, so training trades bits against loss; 0 (default) trains for the loss alone.

    ``device`` / ``amp``: as ``TrainConfig.device`` / ``TrainConfig.amp``. In a data-parallel run
    (torchrun, :func:`adt.exporter.distributed.init`) the model is wrapped in DDP and each rank takes
    its slice of every global batch of ``train_loader``, as in :func:`adt.exporter.fit.train`; only
    rank 0 shows progress.
    """
    if epochs < 0:
        raise PlanError(f"QAT epochs must be >= 0, got {epochs}")
    if not rate_weight >= 0:
        raise PlanError(f"QAT rate weight must be >= 0, got {rate_weight}")
    if schedule not in QAT_SCHEDULES:
        raise PlanError(f"QAT schedule must be one of {QAT_SCHEDULES}, got {schedule!r}")
    env = distributed.current()
    dev = distributed.resolve_device(device, env)
    precision = distributed.resolve_amp(amp, dev)
    if plan is None:
        plan = make_quant_plan(model, **plan_kwargs)  # on the CPU, before any move: the plan's b values
    result = QatResult(plan)
    if epochs == 0:
        return result
    progress = progress and env.rank == 0
    model.to(dev)
    if teacher is not None:
        teacher.to(dev)
    enable_fake_quant(model, plan)
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        params = [p for p in model.parameters() if p.requires_grad and p.numel() > 0]
        opt = torch.optim.Adam(params, lr=lr)
        sched = None
        if schedule == "cosine":
            total = epochs * len(train_loader)  # type: ignore[arg-type]
            if max_steps is not None:
                total = min(total, max_steps)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total))
        loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        distill = None
        if teacher is not None:
            distill = DistillLoss(distill_alpha, distill_temperature, label_smoothing)
            teacher.eval()

        rate = RateEstimate(model, plan, rate_temperature) if rate_weight > 0 else None
        if rate is not None:
            result.rate_bits.append(rate.hard_bits())
        net = distributed.wrap(model, dev, env)

        def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = batch_loss(net, x, y, loss_fn, distill, teacher)
            if rate is not None:
                loss = loss + rate_weight * rate().to(loss.dtype)
            return loss

        def after_epoch(stats: EpochStats) -> None:
            if rate is not None:
                result.rate_bits.append(rate.hard_bits())
            if progress:
                from tqdm.auto import tqdm

                bits = f", symbols' entropy {result.rate_bits[-1] / 8:.0f} B" if rate is not None else ""
                tqdm.write("qat " + describe_epoch(stats, epochs) + bits)

        state = TrainResult()
        result.last_lr = fit(net, train_loader, opt, loss_of, state, epochs=epochs, max_steps=max_steps,
                             after_step=sched.step if sched is not None else None, after_epoch=after_epoch,
                             progress=progress, desc="qat", postfix_every=1, device=dev, precision=precision,
                             env=env, scaler=precision.grad_scaler(dev))
        result.losses, result.steps = state.losses, state.steps
        result.images, result.images_per_second = state.images, state.images_per_second
    finally:
        disable_fake_quant(model)
        model.eval()
        model.to("cpu")  # export runs on the CPU
        if teacher is not None:
            teacher.to("cpu")
    return result
