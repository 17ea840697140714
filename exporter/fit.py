"""Training: the one loop (:func:`fit`) that training and quantization-aware fine-tuning share,
with the paper's schedule (Sec. 4): Adam, lr 0.01 for MNIST, divided by 3 every 10-20 epochs,
batch 256; tqdm progress, seeds, checkpoint and resume; top-1 accuracy (:func:`evaluate`).

Works for any ``nn.Module`` (Tucker-parametrized or not): the optimizer sees each distinct
trainable parameter once, so a SCADA shared core is one Adam state that sums every layer's gradient
(paper Eq. 9).
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from adt.runtime.format import write_atomic

from .errors import CheckpointError, TrainConfigError

__all__ = [
    "SCHEDULES", "TrainConfig", "TrainResult", "EpochSeeded", "evaluate", "DistillLoss", "batch_loss", "fit",
    "train",
]

#: Learning-rate schedules of :func:`train`: the paper's step decay, or cosine to 0.
SCHEDULES = ("step", "cosine")


@runtime_checkable
class EpochSeeded(Protocol):
    """A loader whose shuffle order is set per epoch (like ``DistributedSampler.set_epoch``):
    :func:`train` calls ``set_epoch(seed)`` before every epoch, so a resumed run sees the same
    batches as an uninterrupted one."""

    def set_epoch(self, seed: int) -> None: ...


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (defaults: the paper's MNIST setting)."""

    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 256
    lr_decay: float = 3.0        # the learning rate is divided by this ...
    decay_every: int = 15        # ... every this many epochs
    seed: int = 0
    max_steps: int | None = None  # stop early after this many optimizer steps in total
    checkpoint: str | os.PathLike | None = None  # saved at the end of every epoch
    resume: bool = False         # continue from ``checkpoint`` if it exists
    threads: int | None = None   # torch.set_num_threads
    # Recipe knobs beyond the paper (defaults = the paper's plain Adam + step decay):
    schedule: str = "step"       # "step" (divide by lr_decay every decay_every epochs) | "cosine" (to 0)
    weight_decay: float = 0.0    # decoupled (AdamW) weight decay on every trainable parameter
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    # Knowledge distillation (Hinton et al. 2015; not in the paper): with a ``teacher`` passed to
    # :func:`train`, loss = (1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T).
    distill_alpha: float = 0.0
    distill_temperature: float = 4.0

    def __post_init__(self) -> None:
        checks = [("epochs", self.epochs >= 0), ("lr", self.lr > 0), ("batch_size", self.batch_size >= 1),
                  ("lr_decay", self.lr_decay > 0), ("decay_every", self.decay_every >= 1),
                  ("max_steps", self.max_steps is None or self.max_steps >= 1),
                  ("threads", self.threads is None or self.threads >= 1),
                  ("schedule", self.schedule in SCHEDULES),
                  ("weight_decay", self.weight_decay >= 0),
                  ("label_smoothing", 0 <= self.label_smoothing < 1),
                  ("distill_alpha", 0 <= self.distill_alpha <= 1),
                  ("distill_temperature", self.distill_temperature > 0)]
        for name, ok in checks:
            if not ok:
                raise TrainConfigError(f"TrainConfig.{name} is out of range: {getattr(self, name)!r}")
        if self.resume and not self.checkpoint:
            raise TrainConfigError("TrainConfig.resume needs a checkpoint path")


@dataclass
class TrainResult:
    """What a run did: loss of every step, mean loss and test accuracy of every epoch, wall time."""

    losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    steps: int = 0
    epochs_done: int = 0
    wall_time: float = 0.0


def evaluate(model: nn.Module, data: Any, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``data``: an iterable of (x, y) batches, or an (x, y) pair of
    arrays/tensors cut into batches of ``batch_size`` (eval mode, no grad, Tucker weights rebuilt
    once)."""
    if isinstance(data, tuple) and len(data) == 2:
        x_all, y_all = (torch.as_tensor(np.asarray(a)) for a in data)
        batches: Iterable = ((x_all[i:i + batch_size], y_all[i:i + batch_size])
                             for i in range(0, len(x_all), batch_size))
    else:
        batches = data
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad(), parametrize.cached():
        for x, y in batches:
            correct += int((model(x.float()).argmax(dim=1) == y.long()).sum())
            total += int(y.numel())
    model.train(was_training)
    return correct / max(total, 1)


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]  # parameters() yields shared ones once


def _config_key(cfg: TrainConfig) -> dict[str, Any]:
    # what must match for a resume to be the same run (epochs may grow, paths may move)
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if k in ("lr", "batch_size", "lr_decay", "decay_every", "seed", "schedule", "weight_decay",
                     "label_smoothing", "distill_alpha", "distill_temperature")}


def _optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.weight_decay > 0:  # decoupled decay: Adam's per-parameter scaling does not weaken it
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: the paper's step decay, or a cosine from lr to 0 over ``cfg.epochs``."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.decay_every), gamma=1.0 / cfg.lr_decay)


class DistillLoss(nn.Module):
    """``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))``.

    The T^2 factor keeps the soft term's gradient scale independent of T (Hinton et al. 2015)."""

    def __init__(self, alpha: float, temperature: float, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.alpha, self.t = float(alpha), float(temperature)
        self.ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        soft = nn.functional.kl_div(nn.functional.log_softmax(student / self.t, dim=1),
                                    nn.functional.log_softmax(teacher / self.t, dim=1),
                                    reduction="batchmean", log_target=True)
        return (1 - self.alpha) * self.ce(student, labels) + self.alpha * self.t ** 2 * soft


def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module,
               distill: DistillLoss | None = None, teacher: nn.Module | None = None) -> torch.Tensor:
    """The loss of one batch: ``distill`` against ``teacher``'s logits when given, else ``loss_fn``."""
    if distill is None or teacher is None:
        return loss_fn(model(x), y)
    with torch.no_grad():
        soft_targets = teacher(x)
    return distill(model(x), soft_targets, y)


def _save(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(path, buf.getvalue())  # a crash never leaves a half-written checkpoint


def fit(model: nn.Module, loader: Iterable, opt: torch.optim.Optimizer,
        loss_of: Callable[[Any, Any], torch.Tensor], result: TrainResult, *, epochs: int, start_epoch: int = 0,
        max_steps: int | None = None, epoch_seed: Callable[[int], int] | None = None,
        after_step: Callable[[], None] | None = None,
        after_epoch: Callable[[int, float, float], None] | None = None,
        progress: bool = True, desc: str = "epoch", postfix_every: int = 10) -> float | None:
    """The training loop: for each epoch from ``start_epoch`` to ``epochs``, one optimizer step per
    batch on ``loss_of(x, y)``, until ``max_steps`` steps in all (``result.steps`` counts them and
    ``result.losses`` keeps every step's loss).

    ``epoch_seed(epoch)``: the seed handed to an :class:`EpochSeeded` loader before the epoch.
    ``after_step()``: called after every optimizer step (a per-step scheduler).
    ``after_epoch(epoch, mean loss, lr at the epoch's start)``: called after every epoch.
    Returns the learning rate of the last step taken (None if no step was taken)."""
    from tqdm.auto import tqdm

    last_lr = None
    for epoch in range(start_epoch, epochs):
        if max_steps is not None and result.steps >= max_steps:
            break
        if epoch_seed is not None and isinstance(loader, EpochSeeded):
            loader.set_epoch(epoch_seed(epoch))
        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        bar = tqdm(loader, total=total, desc=f"{desc} {epoch + 1}/{epochs}", disable=not progress,
                   leave=False, dynamic_ncols=True)
        lr = opt.param_groups[0]["lr"]
        running, count = 0.0, 0
        for x, y in bar:
            opt.zero_grad(set_to_none=True)
            loss = loss_of(x, y)
            loss.backward()
            opt.step()
            last_lr = float(opt.param_groups[0]["lr"])
            if after_step is not None:
                after_step()
            value = float(loss.detach())
            result.losses.append(value)
            result.steps += 1
            running += value
            count += 1
            if count % postfix_every == 0:
                bar.set_postfix(loss=f"{running / count:.4f}", lr=f"{last_lr:.2g}")
            if max_steps is not None and result.steps >= max_steps:
                break
        bar.close()
        if after_epoch is not None:
            after_epoch(epoch, running / max(count, 1), lr)
    return last_lr


def train(model: nn.Module, train_loader: Iterable, cfg: TrainConfig, test_loader: Iterable | None = None,
          progress: bool = True, teacher: nn.Module | None = None) -> TrainResult:
    """Train ``model`` in place with cross-entropy and return a :class:`TrainResult`.

    ``teacher``: a trained model whose logits the student also matches (``cfg.distill_alpha`` > 0);
    it is run in eval mode without gradients and never updated."""
    from tqdm.auto import tqdm

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    params = _trainable(model)
    opt = _optimizer(params, cfg)
    sched = _scheduler(opt, cfg)
    result = TrainResult()
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    start_epoch = 0
    if cfg.resume and ckpt is not None and ckpt.exists():
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            if state.get("config") != _config_key(cfg):
                raise CheckpointError(f"checkpoint {str(ckpt)!r} was made with {state.get('config')}, "
                                      f"this run uses {_config_key(cfg)}")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            result = TrainResult(**state["result"])
            torch.set_rng_state(state["rng"])
        except CheckpointError:
            raise
        except (OSError, RuntimeError, KeyError, TypeError, EOFError, ValueError, AttributeError,
                pickle.UnpicklingError) as exc:
            raise CheckpointError(f"cannot resume from {str(ckpt)!r}: {str(exc).splitlines()[0]}") from None
        start_epoch = result.epochs_done
    if (teacher is None) != (cfg.distill_alpha == 0):
        raise TrainConfigError("TrainConfig.distill_alpha > 0 needs a teacher model, and a teacher needs "
                               f"distill_alpha > 0 (got alpha {cfg.distill_alpha}, teacher "
                               f"{'given' if teacher is not None else 'none'})")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    distill = (DistillLoss(cfg.distill_alpha, cfg.distill_temperature, cfg.label_smoothing)
               if teacher is not None else None)
    if teacher is not None:
        teacher.eval()
    t0 = time.perf_counter() - result.wall_time

    def after_epoch(epoch: int, mean_loss: float, lr: float) -> None:
        sched.step()
        result.epoch_losses.append(mean_loss)
        result.lrs.append(lr)
        if test_loader is not None:
            result.test_accuracy.append(evaluate(model, test_loader))
        result.epochs_done = epoch + 1
        result.wall_time = time.perf_counter() - t0
        if progress:
            acc = f", test acc {result.test_accuracy[-1]:.4f}" if test_loader is not None else ""
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: loss {mean_loss:.4f}, lr {lr:.3g}{acc}")
        if ckpt is not None:
            _save(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "result": dataclasses.asdict(result),
                         "rng": torch.get_rng_state(), "config": _config_key(cfg)})

    model.train()
    fit(model, train_loader, opt, lambda x, y: batch_loss(model, x, y, loss_fn, distill, teacher), result,
        epochs=cfg.epochs, start_epoch=start_epoch, max_steps=cfg.max_steps,
        epoch_seed=lambda epoch: cfg.seed * 1_000_003 + epoch, after_epoch=after_epoch, progress=progress)
    result.wall_time = time.perf_counter() - t0
    return result
