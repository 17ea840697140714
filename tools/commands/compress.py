"""``adt compress``: plan -> (dense training, ADMM, MTD choice) -> factorize (ADA/SCADA-Tucker, CP, TT)
-> train -> (QAT) -> quantize -> one .adt file. The methods are :mod:`adt.exporter.methods`.

torch is imported at module level on purpose: in an install without the [export] extra the CLI
catches the ModuleNotFoundError and names the extra to install.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch  # at module level on purpose: see the module docstring

from adt.exporter import (
    GROUPINGS, INITS, KINDS, PRESET_INFO, PRESETS, QAT_SCHEDULES, SCHEDULES, LayerPlan, TrainConfig, choose_b,
    count_params, evaluate, export_adt, load_overrides, qat_finetune, train,
)
from adt.exporter import distributed
from adt.exporter.batchnorm import batchnorm_layers, recalibrate_batchnorm_
from adt.exporter.datasets import Dataset, load_dataset
from adt.exporter.export import DEFAULT_CHECK_TOLERANCE, ExportOptions
from adt.exporter.methods import METHOD_NAMES, Method, get_method
from adt.exporter.models import MODELS
from adt.exporter.mtd import MTD_PROXIES
from adt.exporter.onnx_graph import check_exportable
from adt.exporter.planner import default_target, left_dense
from adt.exporter.size_budget import fit_to_size, parse_size, plan_for_size
from adt.exporter.user_model import load_checkpoint, resolve_model
from adt.runtime.format import ROUNDINGS, TABLE_POLICIES, AdtError, check_quantizer
from adt.runtime.mnist import resolve_data_dir
from adt.runtime.preprocess import check_labels
from adt.tools.errors import CommandError

__all__ = ["add_arguments", "build_plan", "parse_per_kind", "parse_shape", "parse_target", "run"]


def parse_per_kind(text: str, cast, what: str) -> Any:
    """``"512"`` -> 512; ``"cores=512,factors=256,other=64"`` -> dict (missing kinds use defaults)."""
    try:
        if "=" not in text:
            return cast(text)
        out = {}
        for part in text.split(","):
            k, _, v = part.partition("=")
            k = k.strip()
            if k not in KINDS:
                raise ValueError(f"unknown kind {k!r} (use {', '.join(KINDS)})")
            out[k] = cast(v)
        return out
    except ValueError as exc:
        raise CommandError(f"--{what} {text!r}: expected a number or kind=value pairs like "
                           f"'cores=512,factors=512,other=64' ({exc})") from None


def parse_target(text: str | None) -> int | float | None:
    """An int (total stored parameters) or a float with a dot (compression ratio)."""
    if text is None:
        return None
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise CommandError(f"--target {text!r}: expected an int parameter budget (e.g. 2600) or a float "
                           "ratio (e.g. 166.0)") from None
    if value <= 0:
        raise CommandError(f"--target must be positive, got {text}")
    return value


def parse_shape(text: str | None, what: str = "--input-shape") -> tuple[int, ...] | None:
    """``"3,32,32"`` (or ``3x32x32``) -> (3, 32, 32); every size >= 1."""
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.lower().replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise CommandError(f"{what} {text!r}: expected sizes >= 1 separated by commas, e.g. 3,32,32")
    return shape


def add_arguments(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model and plan")
    m.add_argument("--model", default="lenet5", metavar="SPEC",
                   help="the model: a built-in name (lenet5, lenet5-relu, lenet300, resnet20), path/to/file.py:NAME "
                        "or package.module:NAME (NAME an nn.Module class or a function returning one), or a saved "
                        "model: a torch.export .pt2 file or TorchScript (default lenet5)")
    m.add_argument("--model-args", metavar="K=V,...",
                   help="keyword arguments for --model's class or function, Python literals: num_classes=10,width=0.5")
    m.add_argument("--input-shape", metavar="C,H,W",
                   help="one input sample's shape, when neither the model nor --data tells it (e.g. --epochs 0)")
    m.add_argument("--method", choices=METHOD_NAMES,
                   help="ada: one Tucker core per layer, trained in Tucker form (ADA-Tucker); scada: one core shared "
                        "by all layers (SCADA-Tucker); cp: CP per layer at the same budgets; mtd: Tucker or CP per "
                        "layer, chosen on the trained dense model (--mtd-proxy), then fine-tuned; tt: tensor train per "
                        "layer; admm-tucker / admm-tt: the dense model trained with ADMM toward the Tucker / TT ranks "
                        "(--admm-epochs, --rho), decomposed, then fine-tuned. mtd and admm-* start from a trained "
                        "dense model: --from-checkpoint or --dense-epochs (default: the preset's method, else ada)")
    m.add_argument("--preset", help=f"a named plan of adt.exporter.PRESETS (the paper's settings): {', '.join(PRESETS)}")
    m.add_argument("--target", help="model target: an int total of stored parameters, or a float compression "
                                    "ratio of stored values (e.g. 166.0); the planner chooses reshapes and cores")
    m.add_argument("--target-size", metavar="SIZE",
                   help="a file-size budget: 50KB (1 KB = 1,000 bytes), 48KiB (1,024), 2MB, or bytes; reshapes, "
                        "cores and Q are chosen so that the written file, every byte counted, lands within "
                        "0.97-1.00 of it")
    m.add_argument("--plan", metavar="FILE", help="per-layer plan overrides, a .json or .toml file "
                                                  "(layer -> {reshape, core, cp} | budget | ratio | \"dense\")")
    m.add_argument("--init", choices=INITS, default="scratch",
                   help="scratch (Kaiming, the paper's setting) or hooi (a decomposition of the current dense weights: "
                        "HOSVD+HOOI for Tucker, CP-ALS for CP, TT-SVD for TT; mtd and admm-* always decompose) "
                        "(default scratch)")
    m.add_argument("--from-checkpoint", metavar="DENSE.pt",
                   help="load a trained dense state_dict into --model first (torch.load with weights_only=True: "
                        "a file that would run code is refused; use with --init hooi)")
    m.add_argument("--non-strict", action="store_true",
                   help="with --from-checkpoint: allow missing and unexpected keys (shapes must still match)")
    m.add_argument("--dense-epochs", type=int, default=0,
                   help="train the dense model this many epochs before compressing it (what mtd and admm-* decompose, "
                        "when there is no --from-checkpoint) (default 0)")
    m.add_argument("--mtd-proxy", choices=MTD_PROXIES, default="finetune",
                   help="mtd: how a layer's Tucker and CP forms are compared at the same budget: reconstruction (weight "
                        "error), taylor (first-order loss change) or finetune (loss after a short fine-tune of that layer "
                        "alone) (default finetune)")
    m.add_argument("--admm-epochs", type=int, default=3,
                   help="admm-*: epochs of ADMM training of the dense model toward the plan's ranks (default 3)")
    m.add_argument("--rho", type=float, default=0.03,
                   help="admm-*: ADMM penalty of the first epoch, doubled every epoch up to 10 (default 0.03)")
    m.add_argument("--finetune-lr", type=float, metavar="LR",
                   help="mtd and admm-*: the learning rate of the --epochs after decomposing the trained model "
                        "(default --lr / 10: at a from-scratch learning rate a decomposition of trained weights "
                        "trains away from the function it holds)")
    m.add_argument("--admm-update-every", type=int, metavar="STEPS",
                   help="admm-*: update the auxiliary Z (the projection of W + U) and the dual U every this many "
                        "optimizer steps (default: once per epoch)")
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="SPEC",
                   help="training and test data: an MNIST-style IDX folder, an .npz with x_train, y_train, x_test, "
                        "y_test (uint8 or float; NCHW or NHWC), an image folder (train/ and test/ sub-folders of "
                        "one folder per class, or class folders alone: 20%% held out), or module:factory returning "
                        "(train_dataset, test_dataset) (default for the MNIST built-ins: $ADT_DATA)")
    d.add_argument("--layout", choices=("NCHW", "NHWC", "NHW", "NC"),
                   help="the raw samples' layout when it cannot be inferred")
    d.add_argument("--image-size", metavar="H,W", help="bring image files to this size (one number: square)")
    d.add_argument("--resize", choices=("stretch", "center-crop"),
                   help="how image files reach --image-size: stretch, or scale the shorter side and crop the centre")
    d.add_argument("--color", choices=("L", "RGB"), help="decode image files as grayscale (L) or RGB")
    d.add_argument("--mean", metavar="M[,M,...]",
                   help="per-channel mean subtracted after dividing by --divisor (default: measured on the training data)")
    d.add_argument("--std", metavar="S[,S,...]", help="per-channel standard deviation (default: measured)")
    d.add_argument("--divisor", type=float, help="raw values are divided by this first (default 255 for uint8, else 1)")
    d.add_argument("--labels", metavar="FILE",
                   help="class names, one per line, stored in the file (default: the data's class folder names or "
                        "an .npz 'classes' array)")
    d = p.add_argument_group("training")
    d.add_argument("--subset", type=int, help="train on a seeded random subset of this many training images")
    d.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    d.add_argument("--max-steps", type=int, help="stop training after this many optimizer steps")
    d.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01, the paper's MNIST value)")
    d.add_argument("--lr-decay", type=float, default=3.0, help="divide the learning rate by this ... (default 3)")
    d.add_argument("--decay-every", type=int, default=15, help="... every this many epochs (default 15)")
    d.add_argument("--schedule", choices=SCHEDULES, default="step",
                   help="learning-rate schedule: step (the paper's: --lr-decay every --decay-every epochs) or "
                        "cosine (from --lr to 0 over --epochs; ADT's LeNet-5 reproduction uses it)")
    d.add_argument("--weight-decay", type=float, default=0.0,
                   help="AdamW decoupled weight decay (default 0: plain Adam, the paper's; ADT's LeNet-300 uses 0.05)")
    d.add_argument("--label-smoothing", type=float, default=0.0,
                   help="cross-entropy label smoothing in [0, 1) (default 0; ADT's LeNet-300 uses 0.1); QAT uses it too")
    d.add_argument("--distill", type=float, default=0.0, metavar="ALPHA",
                   help="knowledge distillation weight in (0, 1]: the dense model of --from-checkpoint is the teacher, "
                        "loss = (1-ALPHA) CE + ALPHA T^2 KL(teacher || student) (default 0: off; ADT's LeNet-5 "
                        "reproduction uses 0.9); QAT (--qat-epochs) distils from the same teacher")
    d.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T (default 4)")
    d.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    d.add_argument("--seed", type=int, default=0, help="seed for init, data order and subset (default 0)")
    d.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (CUDA when available), cpu, cuda or cuda:N (default auto); under torchrun each process "
                        "takes its local rank's GPU")
    d.add_argument("--amp", default="auto", choices=distributed.AMP_MODES,
                   help="mixed precision: auto (on for CUDA, off on the CPU), on, off, bf16 or fp16 (default auto)")
    d.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: LeNet-sized layers run faster on one thread than on two contended ones; raise it for big models)")
    d.add_argument("--checkpoint", metavar="FILE", help="save training state here after every epoch (rank 0 only "
                                                       "under torchrun; a run resumes on any number of processes)")
    d.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    e = p.add_argument_group("quantization and export")
    e.add_argument("--q", default="512", help="Eq. 13 levels Q: a number, or per kind 'cores=512,factors=512,other=64' "
                                              "(default 512, the paper's LeNet-5 value)")
    e.add_argument("--b", help="Eq. 13 bound b: a number or per kind like --q (default: chosen by --b-rule)")
    e.add_argument("--b-rule", default="max", help="how b is chosen when not given: max (max |w|, nothing "
                                                   "clipped) or pXX, a percentile of |w| such as p99.9 (default max)")
    e.add_argument("--groups", choices=GROUPINGS, default="kind",
                   help="quantizer groups: single, kind (cores/factors/other) or tensor (one per tensor) (default kind)")
    e.add_argument("--rounding", choices=ROUNDINGS, default="nearest",
                   help="how a value picks its Eq. 13 level: nearest (the closest level of the grid: half the "
                        "error and no bias; same file format and decoder) or floor (the paper's Eq. 13 exactly, "
                        "which moves every value down by half a step on average) (default nearest)")
    e.add_argument("--qat-epochs", type=int, default=0, help="quantization-aware fine-tuning epochs after training (default 0)")
    e.add_argument("--qat-lr", type=float, default=1e-3, help="learning rate of quantization-aware fine-tuning (default 0.001)")
    e.add_argument("--qat-schedule", choices=QAT_SCHEDULES, default="constant",
                   help="QAT learning rate: constant, or cosine (annealed to 0 over the QAT steps) (default constant)")
    e.add_argument("--qat-rate-weight", type=float, default=0.0, metavar="W",
                   help="rate-aware QAT: add W x the estimated payload bits of the stored values (a soft histogram "
                        "of each quantizer group's symbols) to the QAT loss, so fine-tuning trades bits for loss; "
                        "try 1e-5..1e-4 (default 0: off). With --distill, QAT distils from the same teacher")
    e.add_argument("--tables", choices=TABLE_POLICIES, default="auto",
                   help="Huffman tables: shared, per_group or auto (the smaller file) (default auto)")
    e.add_argument("--compact-names", action="store_true",
                   help="one-letter tensor names, no metadata, no default ONNX attributes: the smallest file")
    e.add_argument("--check-tolerance", type=float, default=DEFAULT_CHECK_TOLERANCE, metavar="X",
                   help="refuse to write the file when its outputs, run by the runtime on a calibration batch (the "
                        "first 64 test samples, else 16 seeded random inputs), differ from the model's by more than "
                        f"X times the outputs' scale (max |file - torch| / max |torch|) (default {DEFAULT_CHECK_TOLERANCE:g})")
    e.add_argument("--force", action="store_true",
                   help="write the file even when that check fails (the report says so)")
    e.add_argument("--selfcheck", action="store_true",
                   help="store a probe recipe and the outputs on it (about 100 bytes) so that `adt verify` on the "
                        "device proves decode + rebuild + engine reproduce them")
    e.add_argument("-o", "--output", required=True, metavar="OUT.adt", help="the .adt file to write")
    e.add_argument("--json", action="store_true", help="print the export report as JSON")
    e.add_argument("--quiet", action="store_true", help="no progress bars")


def _check(args: argparse.Namespace) -> None:
    """Fail before any work on option values that argparse's ``choices`` cannot check."""
    if args.method is None:
        info = PRESET_INFO.get(args.preset or "", {}).get("method", "ada")
        args.method = info if info in METHOD_NAMES else "ada"
    method = get_method(args.method)
    if method.needs_dense and not args.from_checkpoint and not args.dense_epochs:
        raise CommandError(f"--method {method.name} decomposes a trained dense model: give --from-checkpoint "
                           "DENSE.pt or --dense-epochs N")
    if args.preset is not None and method.kind != "tucker":
        raise CommandError(f"--preset plans are Tucker plans; --method {args.method} plans its own layers "
                           "(give --target or --target-size)")
    if sum(x is not None for x in (args.preset, args.target, args.target_size)) > 1:
        raise CommandError("give one of --preset, --target and --target-size")
    if args.target_size is not None:
        try:
            args.target_size_bytes = parse_size(args.target_size)
        except AdtError as exc:
            raise CommandError(f"--target-size: {exc}") from None
    args.input_shape_parsed = parse_shape(args.input_shape)
    if args.non_strict and not args.from_checkpoint:
        raise CommandError("--non-strict goes with --from-checkpoint")
    for name in ("epochs", "qat_epochs", "dense_epochs", "admm_epochs"):
        if getattr(args, name) < 0:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("batch_size", "decay_every", "subset", "threads", "max_steps", "admm_update_every"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.finetune_lr is not None and not args.finetune_lr > 0:
        raise CommandError(f"--finetune-lr must be positive, got {args.finetune_lr}")
    if not args.rho > 0:
        raise CommandError(f"--rho must be positive, got {args.rho}")
    if args.lr <= 0 or args.qat_lr <= 0 or args.lr_decay <= 0:
        raise CommandError("--lr, --qat-lr and --lr-decay must be positive")
    if not args.qat_rate_weight >= 0:
        raise CommandError(f"--qat-rate-weight must be >= 0, got {args.qat_rate_weight}")
    if args.qat_rate_weight and not args.qat_epochs:
        raise CommandError("--qat-rate-weight acts during QAT: give --qat-epochs N too")
    if args.weight_decay < 0:
        raise CommandError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if not 0 <= args.label_smoothing < 1:
        raise CommandError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if not 0 <= args.distill <= 1 or args.temperature <= 0:
        raise CommandError(f"--distill must be in [0, 1] and --temperature > 0, got {args.distill} and {args.temperature}")
    if args.distill and not args.from_checkpoint:
        raise CommandError("--distill needs a teacher: --from-checkpoint DENSE.pt (the trained dense model)")
    for name in ("plan", "from_checkpoint", "labels"):
        v = getattr(args, name)
        if v is not None and not Path(v).is_file():
            raise CommandError(f"--{name.replace('_', '-')} {v!r}: no such file")
    if not args.check_tolerance > 0:
        raise CommandError(f"--check-tolerance must be positive, got {args.check_tolerance}")
    if args.resume and not args.checkpoint:
        raise CommandError("--resume needs --checkpoint FILE")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise CommandError(f"-o {args.output!r}: folder {str(out.parent)!r} does not exist")


def _check_quant(q, b, rule: str) -> None:
    """Fail before any work on a bad Q, b or b rule."""
    qs = q.values() if isinstance(q, dict) else [q]
    bs = [v for v in (b.values() if isinstance(b, dict) else [b]) if v is not None]
    try:
        for qq in qs:
            check_quantizer(qq, 1.0)
    except AdtError as exc:
        raise CommandError(f"--q: {exc}") from None
    try:
        for bb in bs:
            check_quantizer(2, bb)
    except AdtError as exc:
        raise CommandError(f"--b: {exc}") from None
    try:
        choose_b(np.ones(1), rule)
    except AdtError as exc:
        raise CommandError(f"--b-rule: {exc}") from None


def build_plan(args: argparse.Namespace, model, size_options: ExportOptions | None = None,
               warn=lambda s: None) -> dict:
    """The per-layer plan: --preset, or --target / --target-size (+ --plan overrides), or --plan alone,
    or, when none is given, :func:`adt.exporter.planner.default_target` (announced through ``warn``)."""
    overrides = load_overrides(args.plan) if args.plan else None
    if args.preset is not None:
        if args.preset not in PRESETS:
            names = ", ".join(sorted(PRESETS)) or "none defined"
            raise CommandError(f"--preset {args.preset!r} is unknown; presets: {names}")
        made_for = PRESET_INFO.get(args.preset, {}).get("model")
        if made_for and made_for != args.model:
            raise CommandError(f"--preset {args.preset!r} is a {made_for} plan, but --model is {args.model}")
        plan = dict(PRESETS[args.preset])
        for name, value in (overrides or {}).items():  # explicit per-layer plans or "dense" on top
            if isinstance(value, str) and value.lower() == "dense" or value is False:
                plan.pop(name, None)
            else:
                plan[name] = LayerPlan.coerce(value, where=f"--plan {name}")
        return plan
    method = get_method(args.method)
    if args.target_size is not None:
        plan, estimate = plan_for_size(model, args.target_size_bytes, size_options, method=method, overrides=overrides,
                                       seed=args.seed)
        warn(f"  --target-size {args.target_size}: {estimate.summary()}")
        return plan
    target = parse_target(args.target)
    if target is None and args.plan is None:
        target = default_target(model, scada=method.scada)
        warn(f"no --preset, --target, --target-size or --plan: using the default target {target:g}x stored values "
             "(adt.exporter.planner.default_target; pass --target or --target-size to choose)")
    return method.plan(model, target, overrides)


CHANCE_MARGIN = 0.05  # accuracy within 5 points of 1 / classes counts as "near chance"


def _apply(args: argparse.Namespace, method: Method, model, plan: dict, data: Dataset | None, env, log,
           warn) -> dict | None:
    """Factorize the model with ``method``. After a decomposition of trained weights (``--init hooi``; always
    for mtd and admm-*) with data, re-estimate BatchNorm statistics on 20 training batches (the old ones
    describe the uncompressed activations) and report test accuracy before and after; warn when it is still
    near chance."""
    init = "hooi" if method.needs_dense else args.init
    if init != "hooi" or data is None:
        method.apply(model, plan, init=init, seed=args.seed)
        return None
    out = {"dense": evaluate(model, data.test_loader)}
    method.apply(model, plan, init=init, seed=args.seed)
    out["hooi"] = evaluate(model, data.test_loader)
    if any(True for _ in batchnorm_layers(model)):
        out["recalibrated_batches"] = recalibrate_batchnorm_(model, data.train_loader, batches=20)
        out["hooi_bn_recalibrated"] = evaluate(model, data.test_loader)
    final = out.get("hooi_bn_recalibrated", out["hooi"])
    how = {"tucker": "HOOI", "cp": "CP-ALS", "mixed": "HOOI/CP-ALS", "tt": "TT-SVD"}[method.kind]
    log(f"  {how} init: test accuracy dense {out['dense']:.4f} -> {how} {out['hooi']:.4f}"
        + (f" -> BatchNorm recalibrated {final:.4f}" if "hooi_bn_recalibrated" in out else ""))
    classes = data.num_classes
    if final < 1 / classes + CHANCE_MARGIN:
        out["near_chance"] = True
        warn(f"warning: after {how} the model is near chance ({final:.4f} for {classes} classes): train it "
             "(--epochs), ideally with the dense model as teacher (--distill 0.9 --from-checkpoint)")
    return out


def _layer_kind(lp) -> str:
    return "tt" if hasattr(lp, "ranks") else "cp" if getattr(lp, "cp", False) else "tucker"


def _dense_training(args: argparse.Namespace, method: Method, model, data: Dataset | None, progress: bool,
                    log) -> dict | None:
    """--dense-epochs: train the dense model first (what mtd and admm-* decompose without --from-checkpoint;
    _check refuses them with neither)."""
    if not args.dense_epochs:
        return None
    if data is None:
        raise CommandError("--dense-epochs needs training data (--data)")
    cfg = TrainConfig(epochs=args.dense_epochs, lr=args.lr, batch_size=args.batch_size, lr_decay=args.lr_decay,
                      decay_every=args.decay_every, seed=args.seed, threads=args.threads, schedule=args.schedule,
                      weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, device=args.device,
                      amp=args.amp)
    res = train(model, data.train_loader, cfg, test_loader=None, progress=progress)
    acc = evaluate(model, data.test_loader)
    log(f"  dense model: {args.dense_epochs} epochs, test accuracy {acc:.4f}")
    return {"epochs": args.dense_epochs, "steps": res.steps, "test_accuracy": acc}


def _before_factorizing(args: argparse.Namespace, method: Method, model, plan: dict, data: Dataset | None,
                        progress: bool, log) -> tuple[dict, dict | None]:
    """:meth:`Method.prepare` (admm-*: ADMM training of the dense weights toward ``plan``; mtd: the per-layer
    Tucker/CP choice), logged; returns the plan to apply and the report."""
    loader = data.train_loader if data is not None else None
    if loader is None and (method.admm or method.name == "mtd" and args.mtd_proxy != "reconstruction"):
        raise CommandError(f"--method {method.name}" + ("" if method.admm else f" --mtd-proxy {args.mtd_proxy}")
                           + " needs training data (--data)")
    plan, res = method.prepare(model, plan, loader, mtd_proxy=args.mtd_proxy, admm_epochs=args.admm_epochs,
                               rho=args.rho, admm_update_every=args.admm_update_every, lr=args.lr, seed=args.seed,
                               device=args.device, progress=progress)
    if method.admm:
        acc = evaluate(model, data.test_loader)
        gaps = ", ".join(f"{k} {v[-1]:.3f}" for k, v in res.distance.items() if v)
        log(f"  ADMM: {args.admm_epochs} epochs toward the {method.kind.upper()} ranks; dense test accuracy {acc:.4f}; "
            f"||W - Proj(W)|| / ||W||: {gaps}")
        return plan, {"admm_epochs": args.admm_epochs, "rho": res.rhos, "distance": res.distance,
                      "dense_test_accuracy": acc}
    if method.name == "mtd":
        for name, kind in res.choices.items():
            lp = plan[name]
            log(f"  MTD ({args.mtd_proxy}): {name} -> {kind} "
                + (f"rank {lp.core[0]}" if lp.cp else "core " + "x".join(map(str, lp.core))))
        return plan, {"proxy": args.mtd_proxy, "choices": res.choices, "report": res.to_dict()}
    return plan, None


def _labels(args: argparse.Namespace, data: Dataset | None) -> list[str] | None:
    """--labels FILE (one name per line), else the data's class names."""
    if args.labels:
        try:
            names = [ln.strip() for ln in Path(args.labels).read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"--labels {args.labels!r}: cannot read ({exc})") from None
        try:
            names = check_labels(names)
        except AdtError as exc:
            raise CommandError(f"--labels {args.labels!r}: {exc}") from None
        if data is not None and len(names) != data.num_classes:
            raise CommandError(f"--labels {args.labels!r} has {len(names)} names, the data has {data.num_classes} classes")
        return names
    return list(data.classes) if data is not None and data.classes else None


def _load_data(args: argparse.Namespace, builtin_dataset: str | None, progress: bool, warn) -> Dataset | None:
    """The --data set (the MNIST built-ins default to $ADT_DATA)."""
    spec = args.data
    if spec is None and builtin_dataset == "mnist":
        spec = str(resolve_data_dir(None))  # $ADT_DATA, else a one-line error naming --data and the variable
    if spec is None:
        return None
    data = load_dataset(spec, layout=args.layout, image_size=args.image_size, color=args.color, resize=args.resize,
                        mean=args.mean, std=args.std, divisor=args.divisor, subset=args.subset, seed=args.seed,
                        batch_size=args.batch_size, progress=progress)
    for note in data.notes:
        warn(f"  data: {note}")
    if data.convention is None:
        warn("  warning: --data is a module:factory whose samples arrive preprocessed: the file records no input "
             "convention (give --mean/--std/--divisor to record one), so devices must feed model-ready inputs")
    return data


def run(args: argparse.Namespace) -> int:
    _check(args)
    q = parse_per_kind(args.q, int, "q")
    b = parse_per_kind(args.b, float, "b") if args.b is not None else None
    _check_quant(q, b, args.b_rule)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Under torchrun every process runs this command; they join one process group here and leave it at the end.
    with distributed.session(args.device) as env:
        return _run(args, q, b, env)


def _run(args: argparse.Namespace, q, b, env) -> int:
    main = distributed.is_main()
    progress = not args.quiet and not args.json and main
    log = print if main and not args.json else (lambda s: None)
    warn = (lambda s: print(s, file=sys.stderr)) if main else (lambda s: None)

    builtin = MODELS.get(args.model)
    data = _load_data(args, builtin.dataset if builtin else None, progress, warn)
    torch.manual_seed(args.seed)
    # a TorchScript file keeps no example input: the sample shape comes from --input-shape or the data
    um = resolve_model(args.model, args.model_args, input_shape=args.input_shape_parsed
                       or (data.input_shape if data is not None else None))
    model = um.module
    if data is None and (args.epochs or args.qat_epochs or args.init == "hooi" and args.from_checkpoint):
        raise CommandError(f"--model {args.model} has no built-in dataset: give --data (an IDX folder, .npz, image "
                           "folder or module:factory), or --epochs 0 --qat-epochs 0 to export the architecture")
    input_shape = args.input_shape_parsed or (data.input_shape if data is not None else None) or um.input_shape
    if input_shape is None:
        raise CommandError(f"--model {args.model}: one input sample's shape is unknown: give --input-shape C,H,W "
                           "or --data")
    labels = _labels(args, data)
    teacher = None
    if args.from_checkpoint:
        load_checkpoint(model, args.from_checkpoint, strict=not args.non_strict)
        if args.distill:  # the dense model, before its layers become Tucker forms, teaches the student
            import copy
            teacher = copy.deepcopy(model).requires_grad_(False)
    check_exportable(model, input_shape)  # an op the runtime cannot run: refused before any work

    if args.compact_names and data is not None and data.convention is not None:
        warn("  warning: --compact-names stores no metadata, so no input convention: devices must preprocess inputs "
             f"themselves ({data.convention.describe()}) or name it with `adt run --assume-convention`")
    method = get_method(args.method)
    options = ExportOptions(
        input_shape=tuple(input_shape), q=q, b=b, groups=args.groups, b_rule=args.b_rule, rounding=args.rounding,
        tables=args.tables, compact_names=args.compact_names, auto_metadata=not args.compact_names,
        model_name=um.name, check_tolerance=args.check_tolerance, force=args.force, selfcheck=args.selfcheck,
        input_convention=None if args.compact_names or data is None else data.convention,
        labels=None if args.compact_names else labels,
        metadata=None if args.compact_names else {"train": f"epochs={args.epochs} lr={args.lr} seed={args.seed}"
                                                           + (f" qat={args.qat_epochs}" if args.qat_epochs else "")
                                                           + (f" dense={args.dense_epochs}" if args.dense_epochs else "")
                                                           + (f" admm={args.admm_epochs} rho={args.rho}"
                                                              if method.admm else "")
                                                           + (f" finetune_lr={args.finetune_lr or args.lr / 10:g}"
                                                              if method.needs_dense else "")},
        method=args.method,
    )
    t0 = time.perf_counter()
    dense_res = _dense_training(args, method, model, data, progress, log)
    plan = build_plan(args, model, options, warn)
    plan, method_report = _before_factorizing(args, method, model, plan, data, progress, log)
    dense = left_dense(model, plan)
    for row in dense:
        if not row["type"].startswith("BatchNorm"):  # those are one line below
            log(f"  left dense: {row['layer']} ({row['type']}, {row['values']} values: {row['reason']})")
    norms = sum(row["type"].startswith("BatchNorm") for row in dense)
    if norms:
        log(f"  left dense: {norms} BatchNorm layers (stored as per-channel scale and shift)")
    init_report = _apply(args, method, model, plan, data, env, log, warn)
    log(f"{um.name} {args.method}: {len(plan)} layers, {count_params(model)} stored parameters")

    train_res = qat_res = None
    if data is not None and args.epochs:
        lr = args.lr
        if method.needs_dense:  # fine-tuning a decomposition of trained weights
            lr = args.finetune_lr if args.finetune_lr is not None else args.lr / 10
        cfg = TrainConfig(epochs=args.epochs, lr=lr, batch_size=args.batch_size, lr_decay=args.lr_decay,
                          decay_every=args.decay_every, seed=args.seed, max_steps=args.max_steps,
                          checkpoint=args.checkpoint, resume=args.resume, threads=args.threads,
                          schedule=args.schedule, weight_decay=args.weight_decay,
                          label_smoothing=args.label_smoothing,
                          distill_alpha=args.distill if teacher is not None else 0.0,
                          distill_temperature=args.temperature, device=args.device, amp=args.amp)
        train_res = train(model, data.train_loader, cfg, test_loader=None, progress=progress, teacher=teacher)
    if data is not None and args.qat_epochs:
        qat_q = q
        if args.target_size is not None:  # QAT trains with the levels the file will use
            qat_q = fit_to_size(model, args.target_size_bytes, replace(options, test_data=None)).q or q
        qat_res = qat_finetune(model, data.train_loader, epochs=args.qat_epochs, lr=args.qat_lr, progress=progress,
                               schedule=args.qat_schedule, label_smoothing=args.label_smoothing, q=qat_q, b=b,
                               groups=args.groups, b_rule=args.b_rule, rounding=args.rounding, device=args.device,
                               amp=args.amp, teacher=teacher, distill_alpha=args.distill if teacher is not None else 0.9,
                               distill_temperature=args.temperature, rate_weight=args.qat_rate_weight)
    train_time = time.perf_counter() - t0

    options = replace(options, test_data=data.test_loader if data is not None else None,
                      plan=qat_res.plan if qat_res else None, qat=qat_res is not None)
    fit = None
    if args.target_size is not None:
        fit = fit_to_size(model, args.target_size_bytes, options)
        options = fit.options
    report = None
    if main:  # one writer: rank 0
        report = export_adt(model, args.output, options)
    distributed.barrier()
    if not main:
        return 0
    out = report.to_dict()
    out.update(model=um.name, model_spec=args.model, method=args.method,
               plan={k: v.to_dict() for k, v in plan.items()},
               layer_kinds={k: _layer_kind(v) for k, v in plan.items()},
               dense_training=dense_res, method_report=method_report,
               train_seconds=round(train_time, 2), train_steps=train_res.steps if train_res else 0,
               final_loss=(train_res.epoch_losses[-1] if train_res and train_res.epoch_losses else None),
               images_per_second=(train_res.images_per_second[-1] if train_res and train_res.images_per_second
                                  else None),
               qat_steps=qat_res.steps if qat_res else 0,
               qat_rate_bits=qat_res.rate_bits if qat_res else [], init_report=init_report, world_size=env.world_size,
               data=None if data is None else {"kind": data.kind, "source": str(data.source),
                                               "classes": data.num_classes, "input_shape": list(data.input_shape)},
               target_size=None if fit is None else {"budget_bytes": fit.budget_bytes, "file_bytes": report.file_bytes,
                                                     "ratio": report.file_bytes / fit.budget_bytes,
                                                     "in_window": fit.in_window, "q": fit.describe_q(),
                                                     "note": fit.note})
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True, default=str))
        return 0
    print(f"wrote {args.output}: {report.file_bytes} bytes, true ratio {report.true_ratio:.1f}x "
          f"({report.dense_float32_bytes} float32 bytes / file bytes)")
    if fit is not None:
        print(f"  target size {fit.budget_bytes:,} bytes: the file is {report.file_bytes / fit.budget_bytes:.4f} of it"
              f" ({'inside' if fit.in_window else 'OUTSIDE'} 0.97-1.00; Q {fit.describe_q()})"
              + (f"; {fit.note}" if fit.note else ""))
    print(f"  stored values {report.stored_values} (raw ratio {report.raw_ratio:.1f}), mean code "
          f"{report.mean_code_bits:.2f} bits, paper Eq. 14 formula ratio {report.paper_eq14_ratio:.1f}x")
    shown = "; ".join(f"{g['label']} Q={g['q']} b={g['b']:.4g}" for g in report.groups[:4])
    more = f"; ... {len(report.groups) - 4} more (see --json)" if len(report.groups) > 4 else ""
    print(f"  quantizers ({report.grouping}, b rule {report.b_rule}, {report.rounding} rounding): {shown}{more}")
    check = report.check
    print(f"  check {'passed' if check.passed else 'FAILED (written with --force)'}: {check.summary()}")
    if options.input_convention is not None:
        print(f"  input convention: {options.input_convention.describe()}"
              + (f"; {len(labels)} class names" if labels else ""))
    if report.acc_float is not None:
        print(f"  test accuracy: float {report.acc_float:.4f}, quantized {report.acc_quantized:.4f} "
              f"(error {100 * (1 - report.acc_quantized):.2f}%)")
    print(f"  training {train_time:.1f} s (dense training, ADMM and the MTD choice included)" + (f", {train_res.steps} steps" if train_res else "")
          + (f", {env.world_size} processes" if env.world_size > 1 else ""))
    return 0
