"""Train one reproduction run with the exporter's API and cache the trained (Tucker-form) state.

The checkpoint (``.ckpt``, git-ignored) lets every export variant start from the same trained model
without re-training: :func:`load_trained` rebuilds the parametrized model and loads the state.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from adt.exporter import (
    PRESETS, LayerPlan, TrainConfig, TrainConfigError, apply_ada_tucker, apply_scada_tucker, build_model, count_params,
    evaluate, mnist_loaders, train,
)
from adt.runtime.format import write_atomic

from research.reproduce.presets import RunSpec

__all__ = ["run_plan", "build_run_model", "train_run", "ensure_teacher", "load_trained"]


def run_plan(spec: RunSpec) -> dict[str, LayerPlan]:
    """The per-layer plan of ``spec`` (an exporter preset or the spec's explicit plan)."""
    if spec.preset is not None:
        return dict(PRESETS[spec.preset])
    return {k: LayerPlan.coerce(v, where=f"{spec.name} {k}") for k, v in (spec.plan or {}).items()}


def build_run_model(spec: RunSpec, seed: int, dense: torch.nn.Module | None = None) -> torch.nn.Module:
    """The model of ``spec`` with its Tucker parametrization applied: scratch init (seeded), or with
    ``dense`` (a trained dense model of the same architecture) HOSVD + HOOI of its weights."""
    torch.manual_seed(seed)
    model = build_model(spec.model)
    if spec.method == "dense":  # a distillation teacher keeps its dense weights
        return model
    if dense is not None:
        model.load_state_dict(dense.state_dict())
    apply = apply_scada_tucker if spec.method == "scada" else apply_ada_tucker
    apply(model, run_plan(spec), init="hooi" if dense is not None else "scratch", seed=seed)
    return model


def train_run(spec: RunSpec, seed: int, data_dir: str | None, ckpt: Path, *, epochs: int | None = None,
              subset: int | None = None, test_subset: int | None = None, threads: int | None = None,
              progress: bool = False, augment: int | None = None, eval_every_epoch: bool = False) -> dict[str, Any]:
    """Train ``spec`` with ``seed``; save ``{"model": state_dict, "log": ...}`` to ``ckpt``; return the log."""
    if threads:
        torch.set_num_threads(threads)
    prev: dict[str, Any] = {}
    if spec.resume_from:
        from research.reproduce.presets import ALL_RUNS
        model, prev = load_trained(ALL_RUNS[spec.resume_from], seed,
                                   ckpt.parent / f"{spec.resume_from}-s{seed}.ckpt")
        model.train()
    else:
        dense = None
        if spec.init_from:  # the teacher's trained weights, decomposed, are the starting point
            dense, _ = ensure_teacher(spec.init_from, data_dir, ckpt.parent, subset=subset, test_subset=test_subset,
                                      threads=threads, progress=progress)
        model = build_run_model(spec, seed, dense)
    teacher, teacher_log = None, {}
    if spec.distill_alpha and not spec.teacher:
        raise TrainConfigError(f"{spec.name}: distill_alpha {spec.distill_alpha} needs a teacher run")
    if spec.teacher:
        teacher, teacher_log = ensure_teacher(spec.teacher, data_dir, ckpt.parent, subset=subset,
                                              test_subset=test_subset, threads=threads, progress=progress)
    train_loader, test_loader = mnist_loaders(data_dir, batch_size=spec.batch_size, subset=subset, seed=seed,
                                              test_subset=test_subset)
    shift = spec.augment if augment is None else augment
    if shift:
        from research.reproduce.aug import ShiftLoader
        train_loader = ShiftLoader(train_loader, shift, seed)
    n_epochs = spec.epochs if epochs is None else epochs
    # a resumed run uses another data order than its first part (seed offset)
    cfg = TrainConfig(epochs=n_epochs, lr=spec.lr, batch_size=spec.batch_size, decay_every=spec.decay_every,
                      seed=seed + (100 if spec.resume_from else 0), threads=threads, schedule=spec.schedule,
                      weight_decay=spec.weight_decay, label_smoothing=spec.label_smoothing,
                      distill_alpha=spec.distill_alpha if teacher is not None else 0.0,
                      distill_temperature=spec.distill_temperature)
    t0 = time.perf_counter()
    res = train(model, train_loader, cfg, test_loader=test_loader if eval_every_epoch else None, progress=progress,
                teacher=teacher)
    wall = time.perf_counter() - t0
    acc = evaluate(model, test_loader)
    log = {"run": spec.name, "seed": seed, "epochs": n_epochs + prev.get("epochs", 0), "decay_every": spec.decay_every,
           "lr": spec.lr, "schedule": spec.schedule, "weight_decay": spec.weight_decay,
           "label_smoothing": spec.label_smoothing,
           "teacher": spec.teacher, "distill_alpha": spec.distill_alpha if spec.teacher else 0.0,
           "distill_temperature": spec.distill_temperature if spec.teacher else None, "init_from": spec.init_from,
           # teachers are retrained per checkout (training is not bit-reproducible): record which one taught
           "teacher_float_test_acc": teacher_log.get("float_test_acc"),
           "model": spec.model, "resumed_from": spec.resume_from, "previous": prev or None,
           "batch_size": spec.batch_size, "stored_params": count_params(model),
           "train_seconds": round(wall + prev.get("train_seconds", 0.0), 1),
           "steps": res.steps, "epoch_losses": [round(v, 5) for v in res.epoch_losses],
           "float_test_acc": acc, "subset": subset, "augment": shift,
           "test_acc_per_epoch": [round(a, 4) for a in res.test_accuracy], "threads": threads or torch.get_num_threads()}
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    torch.save({"model": model.state_dict(), "log": log}, tmp)
    tmp.replace(ckpt)
    return log


def ensure_teacher(name: str, data_dir: str | None, ckpt_dir: Path,
                   **kw: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained dense teacher ``name`` (seed TEACHER_SEED) and its log: loaded from ``ckpt_dir`` or
    trained now.

    Its training log goes to ``ckpt_dir/../logs/train-NAME-sSEED.json`` like any run's."""
    import json

    from research.reproduce.presets import TEACHER_SEED, TEACHERS
    spec = TEACHERS[name]
    ckpt = ckpt_dir / f"{name}-s{TEACHER_SEED}.ckpt"
    if not ckpt.exists():
        log = train_run(spec, TEACHER_SEED, data_dir, ckpt, **kw)
        logs = ckpt_dir.parent / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        write_atomic(logs / f"train-{name}-s{TEACHER_SEED}.json", (json.dumps(log, indent=1) + "\n").encode())
    model, log = load_trained(spec, TEACHER_SEED, ckpt)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, log


def load_trained(spec: RunSpec, seed: int, ckpt: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of ``spec``/``seed`` from ``ckpt`` and its training log."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model = build_run_model(spec, seed)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state["log"]
