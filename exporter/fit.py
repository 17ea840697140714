"""Training: the one loop (:func:`fit`) that training and quantization-aware fine-tuning share,
with the paper's schedule (Sec. 4): Adam, lr 0.01 for MNIST, divided by 3 every 10-20 epochs,
batch 256; tqdm progress with throughput and ETA, seeds, checkpoint and resume; top-1 accuracy
(:func:`evaluate`). It runs on the CPU or a GPU, with optional mixed precision, and data-parallel
under torchrun (:mod:`adt.exporter.distributed`: device, AMP and DDP rules).

Works for any ``nn.Module`` (Tucker-parametrized or not): the optimizer sees each distinct
trainable parameter once, so a SCADA shared core is one Adam state that sums every layer's gradient
(paper Eq. 9).
"""
from __future__ import annotations

import contextlib
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

from . import distributed
from .distributed import DistEnv, Precision
from .errors import CheckpointError, TrainConfigError

__all__ = [
    "SCHEDULES", "TrainConfig", "TrainResult", "EpochStats", "EpochSeeded", "evaluate", "DistillLoss",
    "batch_loss", "fit", "train", "describe_epoch", "format_seconds",
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
    # Where it runs (adt.exporter.distributed): "auto" = CUDA when available | "cpu" | "cuda" | "cuda:N";
    # amp: "auto" (bf16/fp16 autocast on CUDA, off on the CPU) | "on"/True | "off"/False | "bf16" | "fp16".
    # Neither is part of the resume key: a run may continue on another device or precision.
    device: str = "auto"
    amp: str | bool = "auto"

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
        if not isinstance(self.device, str) or not distributed._DEVICE.match(self.device):
            raise TrainConfigError(f"TrainConfig.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        self.amp = distributed.normalize_amp(self.amp)


@dataclass
class TrainResult:
    """What a run did: loss of every step (the global batch's mean loss, whatever the world size),
    mean loss, learning rate, throughput (images/s) and test accuracy of every epoch, global
    optimizer steps and images, wall time."""

    losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    steps: int = 0
    epochs_done: int = 0
    wall_time: float = 0.0
    images: int = 0
    images_per_second: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class EpochStats:
    """One epoch as :func:`fit` hands it to ``after_epoch``: mean loss, the learning rate at its start,
    its steps and (global) images, its seconds, and the estimated seconds left in the run (None when
    the loader has no length)."""

    epoch: int
    mean_loss: float
    lr: float
    steps: int
    images: int
    seconds: float
    eta_seconds: float | None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def format_seconds(seconds: float | None) -> str:
    """``H:MM:SS`` (or ``M:SS`` under an hour); "?" when unknown."""
    if seconds is None or not np.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def _model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def evaluate(model: nn.Module, data: Any, batch_size: int = 1000, *, env: DistEnv | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``data``: an iterable of (x, y) batches, or an (x, y) pair of
    arrays/tensors cut into batches of ``batch_size`` (eval mode, no grad, Tucker weights rebuilt
    once, batches moved to the model's device).

    ``env``: in a data-parallel run, each rank scores its slice of every batch and the counts are
    summed over the ranks (every rank returns the same accuracy)."""
    if isinstance(data, tuple) and len(data) == 2:
        x_all, y_all = (torch.as_tensor(np.asarray(a)) for a in data)
        batches: Iterable = ((x_all[i:i + batch_size], y_all[i:i + batch_size])
                             for i in range(0, len(x_all), batch_size))
    else:
        batches = data
    env = env or DistEnv()
    device = _model_device(model)
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad(), parametrize.cached():
        for x, y in batches:
            start, stop, _ = distributed.shard(len(y), env)
            x, y = x[start:stop].to(device), y[start:stop].to(device)
            if len(y):
                correct += int((model(x.float()).argmax(dim=1) == y.long()).sum())
                total += int(y.numel())
    model.train(was_training)
    if env.distributed:
        correct, total = (int(v) for v in distributed.all_sum(torch.tensor([correct, total], device=device)))
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


def _read_checkpoint(ckpt: Path, cfg: TrainConfig, env: DistEnv) -> dict[str, Any] | None:
    """The checkpoint's state (None when there is no file yet), read by rank 0 only and broadcast, so
    in a run across machines only rank 0's machine needs the file; every rank raises the same
    :class:`CheckpointError` for a bad or foreign one."""
    state, error = None, None
    if env.rank == 0 and ckpt.exists():
        try:
            # weights_only: a checkpoint is tensors, numbers and strings, never code to run
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise TypeError(f"expected a dict, found {type(state).__name__}")
            if state.get("config") != _config_key(cfg):
                state, error = None, (f"checkpoint {str(ckpt)!r} was made with {state.get('config')}, "
                                      f"this run uses {_config_key(cfg)}")
        except (OSError, RuntimeError, KeyError, TypeError, EOFError, ValueError, AttributeError,
                pickle.UnpicklingError) as exc:
            state, error = None, f"cannot resume from {str(ckpt)!r}: {str(exc).splitlines()[0]}"
    if env.distributed:
        state, error = distributed.broadcast_object((state, error))  # type: ignore[misc]
    if error is not None:
        raise CheckpointError(error)
    return state


def _save(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(path, buf.getvalue())  # a crash never leaves a half-written checkpoint


def fit(model: nn.Module, loader: Iterable, opt: torch.optim.Optimizer,
        loss_of: Callable[[Any, Any], torch.Tensor], result: TrainResult, *, epochs: int, start_epoch: int = 0,
        max_steps: int | None = None, epoch_seed: Callable[[int], int] | None = None,
        after_step: Callable[[], None] | None = None,
        after_epoch: Callable[[EpochStats], None] | None = None,
        progress: bool = True, desc: str = "epoch", postfix_every: int = 10,
        device: torch.device | None = None, precision: Precision | None = None, env: DistEnv | None = None,
        scaler: torch.amp.GradScaler | None = None) -> float | None:
    """The training loop: for each epoch from ``start_epoch`` to ``epochs``, one optimizer step per
    (global) batch on ``loss_of(x, y)``, until ``max_steps`` steps in all (``result.steps`` counts them,
    ``result.losses`` keeps every step's loss, ``result.images`` the images seen).

    ``loss_of(x, y)`` returns the MEAN loss over the samples it is given; it is called inside the
    ``precision`` autocast with the batch moved to ``device`` (None: left where it is).
    ``env``: in a data-parallel run (``loss_of`` calling a DDP-wrapped model), this rank's slice of every
    global batch (:func:`adt.exporter.distributed.shard`) is what ``loss_of`` sees; its loss is weighted
    by its share so DDP's gradient average is the global batch's mean gradient, and the loss recorded
    is the global batch's (summed over the ranks). ``scaler``: a ``GradScaler`` (fp16 autocast).
    ``epoch_seed(epoch)``: the seed handed to an :class:`EpochSeeded` loader before the epoch.
    ``after_step()``: called after every optimizer step (a per-step scheduler).
    ``after_epoch(stats)``: called after every epoch with its :class:`EpochStats`.
    The progress bar's postfix shows the running loss, learning rate, images/s and the run's ETA.
    Returns the learning rate of the last step taken (None if no step was taken)."""
    from tqdm.auto import tqdm

    env = env or DistEnv()
    precision = precision or Precision()
    per_epoch = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    run_t0, run_steps = time.perf_counter(), 0
    last_lr = None

    def steps_left(done_in_epoch: int, epoch: int) -> int | None:
        if per_epoch is None:
            return None
        left = per_epoch - done_in_epoch + (epochs - epoch - 1) * per_epoch
        return max(0, min(left, max_steps - result.steps)) if max_steps is not None else left

    def eta(done_in_epoch: int, epoch: int) -> float | None:
        left = steps_left(done_in_epoch, epoch)
        if left is None or run_steps == 0:
            return None
        return left * (time.perf_counter() - run_t0) / run_steps

    with contextlib.ExitStack() as stack:
        if precision.enabled:  # the Tucker rebuild and fake quantizers stay float32 under autocast
            stack.enter_context(distributed.float32_parametrizations(model, device or torch.device("cpu")))
        for epoch in range(start_epoch, epochs):
            if max_steps is not None and result.steps >= max_steps:
                break
            if epoch_seed is not None and isinstance(loader, EpochSeeded):
                loader.set_epoch(epoch_seed(epoch))
            bar = tqdm(loader, total=per_epoch, desc=f"{desc} {epoch + 1}/{epochs}", disable=not progress,
                       leave=False, dynamic_ncols=True)
            lr = opt.param_groups[0]["lr"]
            running, count, images = 0.0, 0, 0
            t_epoch = time.perf_counter()
            for x, y in bar:
                n = len(y)
                start, stop, weight = distributed.shard(n, env)
                if stop > start:
                    x, y = x[start:stop], y[start:stop]
                else:  # fewer samples than ranks: a zero-weight pass keeps this rank in DDP's all-reduce
                    weight = 0.0
                if device is not None:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                with precision.autocast(device or torch.device("cpu")):
                    loss = loss_of(x, y)
                if weight != 1.0:  # world size 1: untouched, bit for bit the single-process loss
                    loss = loss * weight
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                last_lr = float(opt.param_groups[0]["lr"])
                if after_step is not None:
                    after_step()
                value_t = loss.detach().float()
                if env.distributed:  # the ranks' weighted losses sum to W x the global batch's mean loss
                    value_t = distributed.all_sum(value_t) / env.world_size
                value = float(value_t)
                result.losses.append(value)
                result.steps += 1
                run_steps += 1
                running += value
                count += 1
                images += n
                if count % postfix_every == 0:
                    rate = images / max(time.perf_counter() - t_epoch, 1e-9)
                    bar.set_postfix(loss=f"{running / count:.4f}", lr=f"{last_lr:.2g}", img_s=f"{rate:.0f}",
                                    eta=format_seconds(eta(count, epoch)))
                if max_steps is not None and result.steps >= max_steps:
                    break
            bar.close()
            seconds = time.perf_counter() - t_epoch
            result.images += images
            stats = EpochStats(epoch, running / max(count, 1), lr, count, images, seconds, eta(count, epoch))
            result.images_per_second.append(stats.images_per_second)
            if after_epoch is not None:
                after_epoch(stats)
    return last_lr


def describe_epoch(stats: EpochStats, epochs: int) -> str:
    """The per-epoch log line's common part: loss, lr, throughput and ETA."""
    return (f"epoch {stats.epoch + 1}/{epochs}: loss {stats.mean_loss:.4f}, lr {stats.lr:.3g}, "
            f"{stats.images_per_second:.0f} img/s, ETA {format_seconds(stats.eta_seconds)}")


def train(model: nn.Module, train_loader: Iterable, cfg: TrainConfig, test_loader: Iterable | None = None,
          progress: bool = True, teacher: nn.Module | None = None) -> TrainResult:
    """Train ``model`` in place with cross-entropy and return a :class:`TrainResult`.

    Runs on ``cfg.device`` with ``cfg.amp`` and hands ``model`` back on the CPU. In a data-parallel
    run (after :func:`adt.exporter.distributed.init` under torchrun) every rank calls it with the same
    seeded model and the same loader of GLOBAL batches of ``cfg.batch_size`` (divisible by the world
    size): the model is wrapped in DDP, each rank trains on its slice, only rank 0 prints and writes
    the checkpoint, and every rank returns the same model and result. A checkpoint resumes on any
    world size, device or precision.

    ``teacher``: a trained model whose logits the student also matches (``cfg.distill_alpha`` > 0);
    it is run in eval mode without gradients and never updated."""
    from tqdm.auto import tqdm

    if (teacher is None) != (cfg.distill_alpha == 0):
        raise TrainConfigError("TrainConfig.distill_alpha > 0 needs a teacher model, and a teacher needs "
                               f"distill_alpha > 0 (got alpha {cfg.distill_alpha}, teacher "
                               f"{'given' if teacher is not None else 'none'})")
    env = distributed.current()
    if env.distributed and cfg.batch_size % env.world_size:
        raise TrainConfigError(f"TrainConfig.batch_size (the global batch) must divide by the world size: "
                               f"{cfg.batch_size} samples over {env.world_size} processes")
    device = distributed.resolve_device(cfg.device, env)
    precision = distributed.resolve_amp(cfg.amp, device)
    progress = progress and env.rank == 0
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    try:
        return _train(model, train_loader, cfg, test_loader, progress, teacher, env, device, precision, tqdm)
    finally:
        model.to("cpu")  # export (and the runtime check) run on the CPU
        if teacher is not None:
            teacher.to("cpu")


def _train(model: nn.Module, train_loader: Iterable, cfg: TrainConfig, test_loader: Iterable | None,
           progress: bool, teacher: nn.Module | None, env: DistEnv, device: torch.device, precision: Precision,
           tqdm: Any) -> TrainResult:
    torch.manual_seed(cfg.seed)
    params = _trainable(model)
    opt = _optimizer(params, cfg)
    sched = _scheduler(opt, cfg)
    scaler = precision.grad_scaler(device)
    result = TrainResult()
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    start_epoch = 0
    state = _read_checkpoint(ckpt, cfg, env) if cfg.resume and ckpt is not None else None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])  # moves the Adam moments to the parameters' device
            sched.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            result = TrainResult(**state["result"])
            torch.set_rng_state(state["rng"])
        except (OSError, RuntimeError, KeyError, TypeError, EOFError, ValueError, AttributeError,
                pickle.UnpicklingError) as exc:
            raise CheckpointError(f"cannot resume from {str(ckpt)!r}: {str(exc).splitlines()[0]}") from None
        start_epoch = result.epochs_done
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    distill = (DistillLoss(cfg.distill_alpha, cfg.distill_temperature, cfg.label_smoothing)
               if teacher is not None else None)
    if teacher is not None:
        teacher.eval()
    t0 = time.perf_counter() - result.wall_time
    if progress and (device.type != "cpu" or precision.enabled or env.distributed):
        tqdm.write(f"training on {device}" + (f" x {env.world_size} processes" if env.distributed else "")
                   + f", {precision}")

    def after_epoch(stats: EpochStats) -> None:
        sched.step()
        distributed.broadcast_buffers(model)  # every rank ends the epoch with rank 0's BN statistics
        result.epoch_losses.append(stats.mean_loss)
        result.lrs.append(stats.lr)
        if test_loader is not None:
            result.test_accuracy.append(evaluate(model, test_loader, env=env))
        result.epochs_done = stats.epoch + 1
        result.wall_time = time.perf_counter() - t0
        if progress:
            acc = f", test acc {result.test_accuracy[-1]:.4f}" if test_loader is not None else ""
            tqdm.write(describe_epoch(stats, cfg.epochs) + acc)
        if ckpt is not None and env.rank == 0:  # the ranks hold the same model: one writer
            _save(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "result": dataclasses.asdict(result),
                         "rng": torch.get_rng_state(), "config": _config_key(cfg),
                         "scaler": scaler.state_dict() if scaler is not None else None})

    net = distributed.wrap(model, device, env)
    model.train()
    fit(net, train_loader, opt, lambda x, y: batch_loss(net, x, y, loss_fn, distill, teacher), result,
        epochs=cfg.epochs, start_epoch=start_epoch, max_steps=cfg.max_steps,
        epoch_seed=lambda epoch: cfg.seed * 1_000_003 + epoch, after_epoch=after_epoch, progress=progress,
        device=device, precision=precision, env=env, scaler=scaler)
    distributed.broadcast_buffers(model)  # also after a max_steps stop inside an epoch
    result.wall_time = time.perf_counter() - t0
    return result
