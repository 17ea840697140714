"""Quantization-aware fine-tuning: train through the exact Eq. 13 quantizer the file will use.

The quantizers are resolved once (:func:`adt.exporter.export.make_quant_plan`: Q, and b from the
values at the start), then every stored tensor is fake-quantized in the forward pass with a
straight-through gradient: Tucker cores and factors through ``TuckerWeight.core_quant`` /
``factor_quant``, plain parameters (biases, BatchNorm affine) through a small parametrization. The
latent float values keep training; exporting them with the SAME plan gives exactly the values the
forward pass used, so the accuracy after QAT is the accuracy of the file. BatchNorm layers stay in
eval mode (their running statistics are stored, and QAT does not re-estimate them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from .errors import PlanError
from .export import QuantPlan, inventory, make_quant_plan
from .tucker import fake_quant_ste, tucker_layers


class PlainFakeQuant(nn.Module):
    """Parametrization ``x -> fake_quant_ste(x, q, b)`` for a plain (non-Tucker) parameter."""

    def __init__(self, q: int, b: float, rounding: str = "floor") -> None:
        super().__init__()
        self.q, self.b, self.rounding = int(q), float(b), rounding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quant_ste(x, self.q, self.b, self.rounding)


def enable_fake_quant(model: nn.Module, plan: QuantPlan) -> None:
    """Turn on Eq. 13 fake quantization of every stored parameter, per ``plan`` (in place)."""
    inv = inventory(model)
    for path, _, tw in tucker_layers(model):
        name = f"{path}.weight" if path else "weight"
        _, ci = inv.tucker[name]
        tw.core_quant = (*plan.for_core(inv.core_names[ci]), plan.rounding)
        tw.factor_quant = (*plan.for_param(name), plan.rounding)
    params = dict(model.named_parameters())
    for name in inv.plain:
        if name not in params or name not in plan.param_group:
            continue  # buffers (BN running stats) are quantized at export, not trained
        path, _, attr = name.rpartition(".")
        module = model.get_submodule(path) if path else model
        parametrize.register_parametrization(module, attr, PlainFakeQuant(*plan.for_param(name), plan.rounding), unsafe=True)


def remove_plain_fake_quant(model: nn.Module) -> None:
    """Remove the plain-parameter fake quantizers, restoring the latent float values (in place)."""
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for attr in list(module.parametrizations.keys()):
            plist = module.parametrizations[attr]
            if len(plist) == 1 and isinstance(plist[0], PlainFakeQuant):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=False)


def disable_fake_quant(model: nn.Module) -> None:
    """Turn every fake quantizer off (in place); the model computes in float again."""
    for _, _, tw in tucker_layers(model):
        tw.core_quant = tw.factor_quant = None
    remove_plain_fake_quant(model)


#: Learning-rate schedules of :func:`qat_finetune`.
QAT_SCHEDULES = ("constant", "cosine")


@dataclass
class QatResult:
    plan: QuantPlan
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    last_lr: float | None = None  # the learning rate of the last step taken


def qat_finetune(model: nn.Module, train_loader: Iterable, *, plan: QuantPlan | None = None,
                 epochs: int = 2, lr: float = 1e-3, max_steps: int | None = None,
                 progress: bool = True, label_smoothing: float = 0.0, teacher: nn.Module | None = None,
                 distill_alpha: float = 0.9, distill_temperature: float = 4.0, schedule: str = "constant",
                 **plan_kwargs: Any) -> QatResult:
    """Fine-tune ``model`` for ``epochs`` with Adam at ``lr`` through the file's quantizers.

    ``schedule``: "constant" (``lr`` throughout) or "cosine" (``lr`` annealed to 0 over all steps, per
    step, so the weights the file stores are a settled point rather than a random one of the last steps).

    ``label_smoothing``: of the cross-entropy (use the training run's, so that fine-tuning keeps
    the objective the model was trained for).

    ``teacher``: fine-tune against its logits too (the training run's distillation loss,
    :class:`adt.exporter.train.DistillLoss` with ``distill_alpha`` and ``distill_temperature``).

    ``plan``: a resolved quantization plan, else one is made from ``plan_kwargs`` (q, b, groups,
    b_rule, rounding of :func:`make_quant_plan`) on the current values. Export afterwards with
    ``export_adt(model, ..., plan=result.plan)``. The model is left with fake quantization OFF.
    """
    if epochs < 0:
        raise PlanError(f"QAT epochs must be >= 0, got {epochs}")
    if schedule not in QAT_SCHEDULES:
        raise PlanError(f"QAT schedule must be one of {QAT_SCHEDULES}, got {schedule!r}")
    if plan is None:
        plan = make_quant_plan(model, **plan_kwargs)
    result = QatResult(plan)
    if epochs == 0:
        return result
    enable_fake_quant(model, plan)
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        params = [p for p in model.parameters() if p.requires_grad and p.numel() > 0]
        device = params[0].device if params else torch.device("cpu")
        opt = torch.optim.Adam(params, lr=lr)
        sched = None
        if schedule == "cosine":
            total = epochs * len(train_loader)  # type: ignore[arg-type]
            if max_steps is not None:
                total = min(total, max_steps)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total))
        loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        from .train import DistillLoss, batch_loss
        distill = None
        if teacher is not None:
            distill = DistillLoss(distill_alpha, distill_temperature, label_smoothing)
            teacher.eval()
        done = False
        for epoch in range(epochs):
            bar = tqdm(train_loader, desc=f"qat {epoch + 1}/{epochs}", disable=not progress, leave=False)
            for x, y in bar:
                opt.zero_grad(set_to_none=True)
                x, y = x.to(device), y.to(device)
                loss = batch_loss(model, x, y, loss_fn, distill, teacher)
                loss.backward()
                opt.step()
                result.last_lr = float(opt.param_groups[0]["lr"])
                if sched is not None:
                    sched.step()
                result.losses.append(float(loss.detach()))
                result.steps += 1
                bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
                if max_steps is not None and result.steps >= max_steps:
                    done = True
                    break
            if done:
                break
    finally:
        disable_fake_quant(model)
        model.eval()
    return result
