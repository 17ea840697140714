"""ADMM-Tucker vs direct ADA-Tucker on LeNet-300-100 (MNIST subset), one ratio (issue 21, item 3).

    nice -n 10 .venv/bin/python -m research.benchmarks.admm_mnist [--ratio 10] [--subset 10000] [--epochs 10] [--rho 0.1]

Three runs of ``--epochs`` epochs each, same data and seed, Adam lr 0.003 (fine-tuning after HOOI: 0.001):
``direct``: ADA-Tucker from scratch (``apply_ada_tucker``), trained ``--epochs`` epochs;
``admm``: the dense net trained with ADMM toward the plan's Tucker form (:func:`adt.exporter.admm.admm_train`,
``--rho`` 0.1 doubled per epoch) for half the epochs, then HOOI (``admm_then_tucker``) and fine-tuning the rest;
``dense+hooi``: the same dense net trained without the penalty for half the epochs, HOOI, fine-tuning.
Writes results/admm_mnist.json and .md: test accuracy of the dense net before HOOI, right after HOOI
and after fine-tuning, HOOI errors, wall times. Small subset and few epochs: a smoke-scale comparison, not the paper's setting.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

from adt.exporter import TrainConfig, apply_ada_tucker, build_model, evaluate, mnist_loaders, plan_model, train
from adt.exporter.admm import admm_then_tucker, admm_train
from adt.runtime.format import write_atomic
from research.paths import RESULTS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.admm_mnist", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", type=float, default=10.0)
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--rho", type=float, default=0.1, help="ADMM rho of the first epoch (default 0.1)")
    ap.add_argument("--rho-growth", type=float, default=2.0, help="rho multiplied by this per epoch (default 2)")
    ap.add_argument("--data", help="MNIST folder (default $ADT_DATA)")
    ap.add_argument("--out", type=Path, default=RESULTS / "admm_mnist.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    train_loader, test_loader = mnist_loaders(args.data, batch_size=128, subset=args.subset, seed=0, test_subset=5000)
    half = max(1, args.epochs // 2)
    torch.manual_seed(0)
    base = build_model("lenet300")
    plan = plan_model(base, args.ratio)
    rows = {}

    t0 = time.perf_counter()
    m = copy.deepcopy(base)
    apply_ada_tucker(m, plan, seed=0)
    train(m, train_loader, TrainConfig(epochs=args.epochs, lr=3e-3, device="cpu"), progress=False)
    rows["direct"] = {"dense_before_hooi": None, "after_hooi": None, "final": evaluate(m, test_loader),
                      "hooi_error": None,
                      "seconds": time.perf_counter() - t0}

    for key in ("admm", "dense+hooi"):
        t0 = time.perf_counter()
        m = copy.deepcopy(base)
        if key == "admm":
            res = admm_train(m, train_loader, plan, projection="tucker", epochs=half, lr=3e-3, rho=args.rho,
                             rho_growth=args.rho_growth)
        else:
            res = None
            train(m, train_loader, TrainConfig(epochs=half, lr=3e-3, device="cpu"), progress=False)
        dense_acc = evaluate(m, test_loader)
        out = admm_then_tucker(m, plan)  # no train_loader: HOOI of the weights as they are
        out.admm = res
        after = evaluate(m, test_loader)
        train(m, train_loader, TrainConfig(epochs=args.epochs - half, lr=1e-3, device="cpu"), progress=False)
        rows[key] = {"dense_before_hooi": dense_acc, "after_hooi": after, "final": evaluate(m, test_loader),
                     "hooi_error": {k: round(v, 4) for k, v in out.init_errors.items()},
                     "seconds": time.perf_counter() - t0}
        if out.admm is not None:  # ||W - Proj(W)|| / ||W|| per layer, per ADMM epoch
            rows[key]["admm_distance"] = {k: [round(v, 4) for v in d] for k, d in out.admm.distance.items()}
            rows[key]["admm_rho"] = out.admm.rhos
        print(key, rows[key], flush=True)
    print("direct", rows["direct"], flush=True)

    meta = {"ratio": args.ratio, "subset": args.subset, "epochs": args.epochs, "test_images": 5000,
            "rho": args.rho, "rho_growth": args.rho_growth,
            "plan": {k: v.to_dict() for k, v in plan.items()}, "machine": platform.machine(),
            "command": "nice -n 10 .venv/bin/python -m research.benchmarks.admm_mnist "
            + " ".join(sys.argv[1:] if argv is None else argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps({"meta": meta, "rows": rows}, indent=1).encode())
    lines = ["# ADMM-Tucker vs direct ADA-Tucker, LeNet-300-100, MNIST subset", "",
             f"Ratio {args.ratio}x (planner), {args.subset} training images, {args.epochs} epochs per method, "
             "test on 5000 images, one seed. Re-run: `" + meta["command"].strip() + "`.", "",
             "| method | dense acc. before HOOI | acc. after HOOI | final acc. | HOOI error per layer | seconds |",
             "|---|---|---|---|---|---|"]
    for key, r in rows.items():
        ah = "-" if r["after_hooi"] is None else f"{r['after_hooi']:.4f}"
        db = "-" if r["dense_before_hooi"] is None else f"{r['dense_before_hooi']:.4f}"
        he = "-" if r["hooi_error"] is None else ", ".join(f"{k} {v}" for k, v in r["hooi_error"].items())
        lines.append(f"| {key} | {db} | {ah} | {r['final']:.4f} | {he} | {r['seconds']:.1f} |")
    for key, r in rows.items():
        if "admm_distance" in r:
            lines += ["", f"ADMM ({key}): rho per epoch {r['admm_rho']}; ||W - Proj(W)|| / ||W|| per epoch:"]
            lines += [f"- {k}: {v}" for k, v in r["admm_distance"].items()]
    write_atomic(args.out.with_suffix(".md"), ("\n".join(lines) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
