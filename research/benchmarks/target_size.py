"""Compress LeNet-5 to file-size budgets (issue 20 item 4, ``adt compress --target-size``).

    ADT_DATA=DIR .venv/bin/python -m research.benchmarks.target_size [--budgets 10KB,20KB,50KB,100KB]
        [--q 512 --q cores=128,factors=128,other=64] [--subset 10000] [--epochs 1] [--threads 1]

For every budget and every ``--q``: :func:`adt.exporter.size_budget.plan_for_size` plans LeNet-5
(reshapes and cores, Gaussian proxy values), the planned model is trained from scratch for ``--epochs``
on a seeded ``--subset`` of the MNIST training images, then :func:`fit_to_size` rescales Q until the
file lands in [0.97, 1.00] x budget and writes it with ``export_adt``. Recorded per run: the planned
stored values, the proxy file's bytes (the plan's estimate), the trained model's file bytes at the
asked Q (how far the estimate was off), the Q the fit chose, the written file's size read back from
disk, its ratio to the budget, and the float model's and the file's test accuracy on all 10,000 MNIST
test images (the file's on the weights the runtime rebuilds from its bytes).
Writes results/target_size.json and results/target_size.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adt.exporter import TrainConfig, apply_ada_tucker, build_model, mnist_loaders, mnist_test_set, train
from adt.exporter.size_budget import WINDOW, fit_to_size, parse_size, plan_for_size
from adt.runtime.format import write_atomic
from adt.runtime.mnist import resolve_data_dir
from research.paths import RESULTS

__all__ = ["run_one", "main"]

INPUT = (1, 28, 28)


def _q(text: str):
    """``"512"`` -> 512; ``"cores=128,factors=128,other=64"`` -> dict."""
    if "=" not in text:
        return int(text)
    return {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(","))}


def run_one(budget_text: str, q, train_loader, test, epochs: int, seed: int, out_dir: Path) -> dict:
    """Plan, train, fit and write one file; the record of the run."""
    budget = parse_size(budget_text)
    export = dict(input_shape=INPUT, q=q, model_name="lenet5", test_data=test,
                  metadata={"train": f"epochs={epochs} seed={seed}"})
    torch.manual_seed(seed)
    model = build_model("lenet5")
    t0 = time.perf_counter()
    plan, est = plan_for_size(model, budget, seed=seed, **export)
    t_plan = time.perf_counter() - t0
    apply_ada_tucker(model, plan, seed=seed)
    t0 = time.perf_counter()
    train(model, train_loader, TrainConfig(epochs=epochs, lr=0.01, batch_size=128, seed=seed, schedule="cosine"),
          progress=False)
    t_train = time.perf_counter() - t0
    path = out_dir / f"lenet5-{budget}.adt"
    t0 = time.perf_counter()
    fit = fit_to_size(model, budget, path=path, **export)
    t_fit = time.perf_counter() - t0
    size = os.path.getsize(path)
    return {
        "budget": budget_text, "budget_bytes": budget, "q_asked": q,
        "planned_stored_values": est.stored_values, "planned_tucker_values": est.tucker_values,
        "estimate_bytes": est.estimated_bytes, "estimate_bits_per_value": round(est.bits_per_value, 3),
        "plan_rounds": len(est.rounds) - 1,
        "trained_bytes_at_asked_q": fit.steps[0]["file_bytes"],
        "estimate_error": round(fit.steps[0]["file_bytes"] / est.estimated_bytes - 1, 4),
        "q_scale": round(fit.scale, 4), "q_chosen": fit.q, "fit_encodings": len(fit.steps),
        "file_bytes": size, "ratio_to_budget": round(size / budget, 4),
        "in_window": WINDOW[0] * budget <= size <= WINDOW[1] * budget,
        "acc_float": fit.report.acc_float, "acc_file": fit.report.acc_quantized,
        "true_ratio": round(fit.report.true_ratio, 2), "note": fit.note,
        "seconds": {"plan": round(t_plan, 1), "train": round(t_train, 1), "fit_and_export": round(t_fit, 1)},
    }


def _render(res: dict) -> str:
    lines = [
        "# LeNet-5 compressed to file-size budgets (`adt compress --target-size`)",
        "",
        f"Written by `python -m research.benchmarks.target_size` ({res['date']}). LeNet-5 planned by "
        f"`plan_for_size`, trained from scratch for {res['epochs']} epoch(s) on {res['subset']:,} MNIST training "
        "images (seed 0, Adam lr 0.01, cosine), fitted by `fit_to_size` and written by `export_adt`. File bytes "
        "are the written file's size on disk, everything counted; accuracy on the 10,000 MNIST test images "
        "(the file's: the weights the runtime rebuilds from its bytes). 1 KB = 1,000 bytes.",
        "",
        "| budget | Q asked | planned values | estimate (bytes) | trained at asked Q | estimate off | Q chosen "
        "| file bytes | file / budget | in [0.97, 1.00] | acc float | acc file | true ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        qa, qc = (q if not isinstance(q, dict) else ",".join(f"{k}={v}" for k, v in q.items())
                  for q in (r["q_asked"], r["q_chosen"]))
        lines.append(
            f"| {r['budget']} ({r['budget_bytes']:,}) | {qa} | {r['planned_stored_values']:,} "
            f"| {r['estimate_bytes']:,} "
            f"| {r['trained_bytes_at_asked_q']:,} | {100 * r['estimate_error']:+.1f}% | {qc} | {r['file_bytes']:,} "
            f"| {r['ratio_to_budget']:.4f} | {'yes' if r['in_window'] else 'NO'} | {r['acc_float']:.4f} "
            f"| {r['acc_file']:.4f} | {r['true_ratio']:.1f}x |")
    inside = sum(r["in_window"] for r in res["runs"])
    lines += [
        "",
        f"{inside} of {len(res['runs'])} files land in [0.97, 1.00] x budget. \"Estimate off\": the trained "
        "model's file at the asked Q against the plan's estimate (a file of the plan with Gaussian proxy values); "
        "`fit_to_size` closes that gap by rescaling Q (\"Q chosen\").",
    ]
    notes = [f"- {r['budget']}, Q {r['q_asked']}: {r['note']}" for r in res["runs"] if r["note"]]
    if notes:
        lines += ["", "Notes:", *notes]
    mach = res["machine"]
    lines += ["", f"Machine: {mach['cpu']}, {mach['threads']} torch thread(s); Python {mach['python']}, "
                  f"NumPy {mach['numpy']}, torch {mach['torch']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="MNIST IDX folder (default $ADT_DATA)")
    ap.add_argument("--budgets", default="10KB,20KB,50KB,100KB",
                    help="comma-separated budgets (default 10KB,20KB,50KB,100KB)")
    ap.add_argument("--q", action="append", help="Eq. 13 Q asked: a number or kind=value pairs; repeat for a grid "
                                                 "(default: 512 and cores=128,factors=128,other=64)")
    ap.add_argument("--subset", type=int, default=10000, help="training images (seeded subset; default 10000)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", type=Path, default=RESULTS / "target_size.json", help="JSON record (the .md beside it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = resolve_data_dir(args.data)
    train_loader, _ = mnist_loaders(data, batch_size=128, subset=args.subset, seed=args.seed)
    test = mnist_test_set(data)
    qs = [_q(t) for t in (args.q or ["512", "cores=128,factors=128,other=64"])]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for q in qs:
            for b in args.budgets.split(","):
                r = run_one(b.strip(), q, train_loader, test, args.epochs, args.seed, Path(tmp))
                print(json.dumps(r), flush=True)
                runs.append(r)
    res = {"date": time.strftime("%Y-%m-%d"), "epochs": args.epochs, "subset": args.subset, "seed": args.seed,
           "window": list(WINDOW), "runs": runs,
           "machine": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                       "threads": args.threads, "cpu": platform.processor() or platform.machine()}}
    write_atomic(args.out, (json.dumps(res, indent=1) + "\n").encode())
    write_atomic(args.out.with_suffix(".md"), _render(res).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
