"""Which reshape should HOOI start from: the planner's balanced one, or one that keeps a conv's
(out, in, kh*kw) structure? (issue 19, item 5)

    .venv/bin/python -m research.benchmarks.mode_groupings [--epochs 1] [--ratios 2 4 8] [--out results/mode_groupings.json]

Trains ``ConvBnNet`` of ``research.benchmarks.bn_mnist`` on MNIST (``--epochs``, Adam lr 0.003, cosine),
then, per target ratio, compresses the four 32x32x3x3 convs of its residual blocks (the stem and the
linear layer stay dense) two ways at the same per-layer budget (the planner's ``plan_layer``):
``balanced`` (the planner's reshape, e.g. 12x12x8x8) and ``structured`` (reshape (32, 32, 9), the largest
near-cubic core whose parameters fit that budget). For each: the mean relative HOOI reconstruction error
of the four weights, test accuracy right after HOOI, and after BatchNorm recalibration (20 batches).
No fine-tuning: this measures the starting point only.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from adt.exporter import apply_ada_tucker, evaluate
from adt.exporter.batchnorm import recalibrate_batchnorm_
from adt.exporter.factorize import reconstruction_errors
from adt.exporter.planner import LayerPlan, plan_layer
from adt.runtime.format import write_atomic
from research.benchmarks.bn_mnist import trained_convbn
from research.paths import RESULTS

__all__ = ["structured_plan", "main"]

LAYERS = ("block1.conv1", "block1.conv2", "block2.conv1", "block2.conv2")


def structured_plan(shape: tuple[int, ...], budget: int) -> LayerPlan:
    """Reshape (out, in, kh*kw) and the largest core (k, k, kk) with k <= out, in and kk <= kh*kw, grown
    evenly, whose core + factor parameters fit ``budget``."""
    dims = (shape[0], shape[1], int(np.prod(shape[2:])))
    best = LayerPlan(dims, (1, 1, 1))
    for k in range(1, min(dims[:2]) + 1):
        for kk in range(1, dims[2] + 1):
            lp = LayerPlan(dims, (k, k, kk))
            if lp.params <= budget and lp.params > best.params:
                best = lp
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.mode_groupings", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1, help="training epochs of the float model (default 1)")
    ap.add_argument("--ratios", type=float, nargs="+", default=[2.0, 4.0, 8.0], help="per-layer ratios (default 2 4 8)")
    ap.add_argument("--data", help="MNIST folder (default $ADT_DATA)")
    ap.add_argument("--out", type=Path, default=RESULTS / "mode_groupings.json", help="results JSON (the .md beside it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    model, train_loader, test_loader = trained_convbn(args.epochs, args.data)
    rows = []
    base = evaluate(model, test_loader)
    shape = tuple(model.get_submodule(LAYERS[0]).weight.shape)
    for ratio in args.ratios:
        budget = int(np.prod(shape) / ratio)
        plans = {"balanced": plan_layer(shape, budget), "structured": structured_plan(shape, budget)}
        for kind, lp in plans.items():
            m = copy.deepcopy(model)
            apply_ada_tucker(m, {name: lp for name in LAYERS}, init="hooi")
            errs = [e for e in reconstruction_errors(m).values() if e is not None]
            row = {"ratio": ratio, "grouping": kind, "reshape": list(lp.reshape), "core": list(lp.core),
                   "params": lp.params, "hooi_rel_error": float(np.mean(errs)), "acc_after_hooi": evaluate(m, test_loader)}
            recalibrate_batchnorm_(m, train_loader, batches=20)
            row["acc_after_bn_recalibration"] = evaluate(m, test_loader)
            rows.append(row)
    res = {"benchmark": "research/benchmarks/mode_groupings.py",
           "command": "python -m research.benchmarks.mode_groupings " + " ".join(argv or []),
           "machine": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                       "cpus": os.cpu_count()},
           "epochs": args.epochs, "float_accuracy": base, "layers": list(LAYERS), "layer_shape": list(shape),
           "rows": rows, "seconds": round(time.time() - t0, 1)}
    write_atomic(args.out, (json.dumps(res, indent=1) + "\n").encode())
    md = ["# Balanced vs (out, in, kh*kw) reshapes as HOOI starting points (issue 19, item 5)", "",
          f"Written by `{res['command'].strip()}`: `ConvBnNet` (research/benchmarks/bn_mnist.py) trained "
          f"{args.epochs} epoch(s) on MNIST, float test accuracy {base:.4f}; its four {'x'.join(map(str, shape))} "
          "block convs compressed at the same per-layer budget, HOOI from the trained weights, no fine-tuning.", "",
          "| ratio | grouping | reshape | core | params | HOOI rel. error | acc. after HOOI | after BN recalibration |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['ratio']:g}x | {r['grouping']} | {'x'.join(map(str, r['reshape']))} | "
                  f"{'x'.join(map(str, r['core']))} | {r['params']} | {r['hooi_rel_error']:.3f} | "
                  f"{r['acc_after_hooi']:.4f} | {r['acc_after_bn_recalibration']:.4f} |")
    write_atomic(args.out.with_suffix(".md"), ("\n".join(md) + "\n").encode())
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
