"""Mixed Tensor Decomposition vs ADA-Tucker vs CP-only on LeNet-5 / MNIST at one ratio (issue 21 item 1).

    ADT_DATA=../shared/data/mnist nice -n 10 .venv/bin/python -m research.benchmarks.mtd_mnist \
        [--ratio 50] [--subset 6000] [--dense-epochs 3] [--epochs 2] [--seeds 0]

1. Trains dense LeNet-5 on a seeded ``--subset`` of the MNIST training images (Adam, lr 1e-3,
   ``--dense-epochs``).
2. Plans ADA-Tucker at ``--ratio`` (:func:`plan_model`); ``cp``: every planned layer as CP of the same
   reshape at the largest rank within that layer's Tucker budget; ``mtd-recon``, ``mtd-taylor`` and
   ``mtd-finetune``: :func:`plan_mtd` with the reconstruction (weighted by 4 batches), Taylor and
   short per-layer fine-tune (``--proxy-steps`` Adam steps) proxies.
3. Each plan: HOOI / CP-ALS init from the trained dense weights, ``--epochs`` of fine-tuning (Adam,
   lr 1e-3), export (Q = 512), and the test accuracy of the FILE scored by the torch-free runtime
   (numpy engine) on ``--test-subset`` test images; also the accuracy right after init (no fine-tune).
Writes results/mtd_mnist.json and .md. A short, small-subset run: it compares methods under the same
budget and recipe, it does not reproduce the paper's accuracies.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import adt.runtime as rt
from adt.exporter import (TrainConfig, apply_ada_tucker, build_model, evaluate, export_adt, mnist_loaders,
                          model_params, plan_model, train)
from adt.exporter.mtd import cp_plan_for_budget, plan_mtd
from adt.exporter.planner import count_stored
from research.paths import RESULTS

METHODS = ("ada-tucker", "cp", "mtd-recon", "mtd-taylor", "mtd-finetune")


def _file_accuracy(path: Path, test) -> float:
    f = rt.load(path, engine="numpy")
    right = total = 0
    for x, y in test:
        out = f.run(x.numpy())
        right += int((out.argmax(1) == y.numpy()).sum())
        total += len(y)
    return right / total


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        train_loader, test_loader = mnist_loaders(None, batch_size=128, subset=args.subset, seed=seed,
                                                  test_subset=args.test_subset)
        torch.manual_seed(seed)
        dense = build_model("lenet5")
        t0 = time.time()
        train(dense, train_loader, TrainConfig(epochs=args.dense_epochs, lr=1e-3, seed=seed, threads=args.threads))
        dense_acc = evaluate(dense, test_loader)
        print(f"seed {seed}: dense {dense_acc:.4f} ({time.time() - t0:.0f} s)", flush=True)
        base = plan_model(dense, float(args.ratio))
        plans = {"ada-tucker": (base, None)}
        plans["cp"] = ({n: cp_plan_for_budget(lp.reshape, lp.params) for n, lp in base.items()}, None)
        t0 = time.time()
        plans["mtd-recon"] = plan_mtd(dense, base, data=train_loader, proxy="reconstruction", batches=4)
        t_recon = time.time() - t0
        t0 = time.time()
        plans["mtd-taylor"] = plan_mtd(dense, base, data=train_loader, proxy="taylor", batches=4)
        t_taylor = time.time() - t0
        t0 = time.time()
        plans["mtd-finetune"] = plan_mtd(dense, base, data=train_loader, proxy="finetune", batches=4,
                                         steps=args.proxy_steps)
        t_ft = time.time() - t0
        for method in METHODS:
            plan, report = plans[method]
            m = copy.deepcopy(dense)
            t0 = time.time()
            apply_ada_tucker(m, plan, init="hooi")
            init_acc = evaluate(m, test_loader)
            train(m, train_loader, TrainConfig(epochs=args.epochs, lr=1e-3, seed=seed, threads=args.threads))
            torch_acc = evaluate(m, test_loader)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "m.adt"
                rep = export_adt(m.eval(), path, input_shape=(1, 28, 28), q=512)
                file_acc = _file_accuracy(path, test_loader)
            row = {"seed": seed, "method": method, "dense_accuracy": dense_acc,
                   "params": model_params(dense, plan), "original_params": count_stored(dense),
                   "file_bytes": rep.file_bytes, "true_ratio": rep.true_ratio,
                   "init_accuracy": init_acc, "torch_accuracy": torch_acc, "file_accuracy": file_acc,
                   "train_seconds": round(time.time() - t0, 1),
                   "layers": {n: ("cp" if lp.cp else "tucker") + f" {list(lp.core) if not lp.cp else lp.core[0]}"
                              for n, lp in plan.items()}}
            if report is not None:
                row["proxy_seconds"] = round({"mtd-recon": t_recon, "mtd-taylor": t_taylor}.get(method, t_ft), 2)
                row["report"] = report.to_dict()
            rows.append(row)
            print(f"  {method}: params {row['params']}, bytes {rep.file_bytes}, init {init_acc:.4f}, "
                  f"torch {torch_acc:.4f}, file {file_acc:.4f} ({row['train_seconds']} s) {row['layers']}", flush=True)
    return {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "platform": platform.platform(), "torch": torch.__version__, "rows": rows}


def write_md(res: dict, path: Path) -> None:
    a = res["args"]
    lines = [
        "# MTD vs ADA-Tucker vs CP-only: LeNet-5 on MNIST",
        "",
        f"Written by `research/benchmarks/mtd_mnist.py` (re-run: `ADT_DATA=../shared/data/mnist nice -n 10 "
        f".venv/bin/python -m research.benchmarks.mtd_mnist --ratio {a['ratio']} --subset {a['subset']} "
        f"--test-subset {a['test_subset']} --dense-epochs {a['dense_epochs']} --epochs {a['epochs']} "
        f"--proxy-steps {a['proxy_steps']} --seeds {' '.join(map(str, a['seeds']))}`).",
        "",
        f"Dense LeNet-5 trained {a['dense_epochs']} epochs on {a['subset']} training images; every method "
        f"uses the same per-layer budgets (ADA-Tucker planner at ratio {a['ratio']}), HOOI / CP-ALS init from "
        f"the dense weights and {a['epochs']} epochs of fine-tuning; accuracies on {a['test_subset']} test "
        "images, `file` = the exported .adt (Q = 512) scored by the torch-free runtime. Short, small-subset "
        "runs: a comparison under one budget and recipe, not the paper's accuracies.",
        "",
        "| seed | method | params | file bytes | true ratio | init acc | fine-tuned acc | file acc | time (s) | per-layer choice |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        ch = ", ".join(f"{n}: {v}" for n, v in r["layers"].items())
        lines.append(f"| {r['seed']} | {r['method']} | {r['params']} | {r['file_bytes']} | {r['true_ratio']:.1f} | "
                     f"{r['init_accuracy']:.4f} | {r['torch_accuracy']:.4f} | {r['file_accuracy']:.4f} | "
                     f"{r['train_seconds']} | {ch} |")
    lines += ["", "Median file accuracy over seeds:", ""]
    for method in METHODS:
        accs = [r["file_accuracy"] for r in res["rows"] if r["method"] == method]
        lines.append(f"- {method}: {statistics.median(accs):.4f} ({len(accs)} seed(s))")
    lines += ["", "Proxy scores (first seed), Tucker vs CP per layer:", ""]
    for r in res["rows"]:
        if "report" in r and r["seed"] == res["rows"][0]["seed"]:
            lines.append(f"- {r['method']} ({r['proxy_seconds']} s): " + "; ".join(
                f"{L['layer']} tucker {L['tucker_score']:.3g} (err {L['tucker_error']:.3f}) / "
                f"cp {L['cp_score'] if L['cp_score'] is None else format(L['cp_score'], '.3g')} "
                f"(err {L['cp_error'] if L['cp_error'] is None else format(L['cp_error'], '.3f')}) -> {L['choice']}"
                for L in r["report"]["layers"]))
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=50.0)
    p.add_argument("--subset", type=int, default=6000)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--dense-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--proxy-steps", type=int, default=30, help="Adam steps per layer and candidate (finetune proxy)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "mtd_mnist.json")
    args = p.parse_args(argv)
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    write_md(res, args.out.with_suffix(".md"))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
