"""Export one trained reproduction run to a .adt file (optionally after QAT) and score the FILE.

The record written to ``results/runs/ROW-sSEED-VARIANT.json`` holds: stored parameters, the error
of the float model (torch, before quantization), the error of the exporter's own dequantized model
and the error of the .adt file run by the torch-free runtime (the number results report), the
paper's Eq. 14 ratio (32 x raw ratio / mean Huffman code length) and the TRUE ratio (float32 bytes
of the dense model / file bytes), the byte breakdown, seeds, epochs and wall times.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adt.exporter import MODELS, evaluate, export_adt, mnist_loaders, mnist_test_set, qat_finetune
from adt.runtime.format import write_atomic
from adt.tools.scoring import score_file
from research.reproduce.presets import ALL_RUNS, VARIANTS, ExportVariant, paper_variant
from research.reproduce.train import ensure_teacher, load_trained

__all__ = ["resolve_variant", "export_run", "model_from_file"]


def model_from_file(row: str, seed: int, path: Path) -> torch.nn.Module:
    """The run's model carrying the dequantized values of the committed file ``path`` (a file of the
    same row and seed): cores, factors and plain tensors are matched by table order and shape, so
    the model computes what the file computes (checked by the caller's scores)."""
    from adt.exporter.quantplan import inventory
    from adt.runtime.format import read_adt
    from research.reproduce.train import build_run_model

    model = build_run_model(ALL_RUNS[row], seed)
    f = read_adt(path)
    inv = inventory(model)
    if len(f.params) != len(inv.order) or len(f.cores) != len(inv.cores):
        raise SystemExit(f"reproduce: {path} holds {len(f.params)} tensors / {len(f.cores)} cores, the model of "
                         f"{row} stores {len(inv.order)} / {len(inv.cores)}")
    with torch.no_grad():
        for i, core in enumerate(inv.cores):
            core.tensor.copy_(torch.from_numpy(f.core_values(i)).reshape(core.tensor.shape))
        state = model.state_dict()
        for name, p in zip(inv.order, f.params):
            if name in inv.tucker:
                for dst, sym in zip(inv.tucker[name].weight.factors, p.factors):
                    dst.copy_(torch.from_numpy(f.values(sym, p.group)).reshape(dst.shape))
            elif name in inv.tt:
                raise SystemExit("reproduce: warm start from a TT file is not supported")
            else:
                state[name].copy_(torch.from_numpy(f.values(p.symbols, p.group)).reshape(state[name].shape))
    return model.eval()


def resolve_variant(row: str, name: str) -> ExportVariant:
    """The export variant ``name`` for ``row`` ("paper" = the paper's Q/b for the row's network)."""
    if name in ("paper", "paper-rn"):
        var = paper_variant(row if row in ("lenet300-ada", "lenet300-scada") else
                            ("lenet300-ada" if ALL_RUNS[row].model == "lenet300" else "lenet5-ada"))
        if name == "paper-rn":  # the paper's Q and b, nearest-level rounding instead of Eq. 13's floor
            var = replace(var, name="paper-rn", rounding="nearest", note=var.note + ", nearest-level rounding")
        return var
    if name not in VARIANTS:
        raise SystemExit(f"reproduce: unknown export variant {name!r}; known: paper, paper-rn, {', '.join(VARIANTS)}")
    return VARIANTS[name]


def export_run(row: str, seed: int, variant: str, ckpt: Path, out: Path, data_dir: str | None, *,
               subset: int | None = None, test_subset: int | None = None, threads: int | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Export ``row``/``seed`` with ``variant``, score the file, write and return its record."""
    if threads:
        torch.set_num_threads(threads)
    spec = ALL_RUNS[row]
    var = resolve_variant(row, variant)
    teacher_name = var.qat_teacher or spec.teacher
    if var.qat_distill and not teacher_name:
        raise SystemExit(f"reproduce: variant {variant!r} distils during QAT, but run {row!r} has no teacher")
    if var.warm_start:  # the start file's values; the training facts of the run that made it
        start = out / "adt" / f"{row}-s{seed}-{var.warm_start}.adt"
        model = model_from_file(row, seed, start)
        log = json.loads((out / "runs" / f"{row}-s{seed}-{var.warm_start}.json").read_text())
        log.setdefault("threads", log.get("train_threads"))
    else:
        model, log = load_trained(spec, seed, ckpt)
    x_test, y_test = mnist_test_set(data_dir)
    if test_subset:
        x_test, y_test = x_test[:test_subset], y_test[:test_subset]
    acc_trained = evaluate(model, (x_test, y_test))  # the model before any QAT (a warm start: its start file)
    t0 = time.perf_counter()
    plan, qat_steps, rate_bits, qat_teacher_acc = None, 0, [], None
    if var.qat_epochs:
        torch.manual_seed(seed)
        train_loader, _ = mnist_loaders(data_dir, batch_size=spec.batch_size, subset=subset, seed=seed + 1000,
                                        test_subset=10)
        teacher = None
        if var.qat_distill:
            teacher, teacher_log = ensure_teacher(teacher_name, data_dir, ckpt.parent)
            qat_teacher_acc = teacher_log.get("float_test_acc")
        res = qat_finetune(model, train_loader, epochs=var.qat_epochs, lr=var.qat_lr, progress=progress,
                           label_smoothing=var.qat_label_smoothing, teacher=teacher, schedule=var.qat_schedule,
                           distill_alpha=spec.distill_alpha if var.qat_distill_alpha is None else var.qat_distill_alpha,
                           distill_temperature=spec.distill_temperature,
                           q=var.q, b=var.b, groups=var.groups, b_rule=var.b_rule, rounding=var.rounding,
                           rate_weight=var.rate_weight, rate_temperature=var.rate_temperature)
        plan, qat_steps, rate_bits = res.plan, res.steps, res.rate_bits
    qat_seconds = time.perf_counter() - t0
    path = out / "adt" / f"{row}-s{seed}-{variant}.adt"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = export_adt(model, path, input_shape=MODELS[spec.model].input_shape, q=var.q, b=var.b, groups=var.groups,
                        b_rule=var.b_rule, rounding=var.rounding, plan=plan, qat=plan is not None, tables=var.tables, compact_names=var.compact_names,
                        auto_metadata=not var.compact_names, model_name=spec.model,
                        test_data=(x_test, y_test))
    t1 = time.perf_counter()
    scored = score_file(path, x_test, y_test).to_dict()
    rec = {
        "row": row, "seed": seed, "variant": variant, "variant_spec": asdict(var), "model": spec.model,
        "method": spec.method, "preset": spec.preset, "plan": spec.plan, "note": spec.note,
        "epochs": log["epochs"], "decay_every": log["decay_every"], "lr": log["lr"], "batch_size": log["batch_size"],
        "schedule": log.get("schedule", "step"), "weight_decay": log.get("weight_decay", 0.0),
        "label_smoothing": log.get("label_smoothing", 0.0), "teacher": log.get("teacher"), "init_from": log.get("init_from"),
        "teacher_float_test_acc": log.get("teacher_float_test_acc"),  # teachers differ between checkouts
        "distill_alpha": log.get("distill_alpha", 0.0), "distill_temperature": log.get("distill_temperature"),
        "train_seconds": log["train_seconds"], "train_threads": log.get("threads"), "train_subset": log.get("subset"),
        "warm_start_file": f"adt/{row}-s{seed}-{var.warm_start}.adt" if var.warm_start else None,
        "qat_teacher": teacher_name if var.qat_distill else None, "qat_teacher_float_test_acc": qat_teacher_acc,  # the teacher QAT distilled from (qat_distill)
        "rate_bits_per_epoch": [round(b) for b in rate_bits],
        "qat_epochs": var.qat_epochs, "qat_steps": qat_steps, "qat_seconds": round(qat_seconds, 1),
        "stored_params": report.stored_values, "dense_params": report.dense_params,
        # a warm start's float model is the start run's; the start file's own error is err_start_file
        "err_float": log["err_float"] if var.warm_start else 100 * (1 - acc_trained),
        "err_start_file": 100 * (1 - acc_trained) if var.warm_start else None, "err_float_latent_at_export": 100 * (1 - report.acc_float),
        "err_exporter_quant": 100 * (1 - report.acc_quantized),
        "err_file": 100 * (1 - scored["acc"]), "test_images": scored["n"], "evaluator": scored["evaluator"],
        "score_seconds": round(time.perf_counter() - t1, 1),
        "file": str(path.relative_to(out)), "file_bytes": path.stat().st_size,
        "dense_float32_bytes": report.dense_float32_bytes, "true_ratio": report.true_ratio,
        "raw_ratio": report.raw_ratio, "mean_code_bits": report.mean_code_bits,
        "paper_eq14_ratio": report.paper_eq14_ratio, "sections": report.sections,
        "payload_split_bytes": report.payload_split_bytes, "groups": report.groups,
        "table_policy": report.table_policy, "rounding": report.rounding,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), shared 2-core host",
        "torch": torch.__version__, "numpy": np.__version__,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "runs").mkdir(parents=True, exist_ok=True)
    write_atomic(out / "runs" / f"{row}-s{seed}-{variant}.json", json.dumps(rec, indent=1, sort_keys=True).encode())
    return rec
