"""Which compression method for which network: every method of ``adt compress --method`` at matched
file sizes, in real file bytes (issue 21 item 4).

    ADT_DATA=../shared/data/mnist nice -n 10 .venv/bin/python -m research.benchmarks.methods \
        [--nets lenet5 lenet300 vgg] [--methods ada scada cp mtd tt admm-tucker admm-tt] [--seeds 0 1 2] \
        [--subset 10000] [--epochs 4] [--dense-epochs 1] [--admm-epochs 2] [--jobs 2]

For each network, size, method and seed, one ``adt compress --method M --target-size S`` run (a
subprocess, one torch thread) writes a ``.adt`` file; the file is then scored by the torch-free
runtime (``adt.runtime.load``, numpy engine) on all 10,000 MNIST test images. Every method gets the
same number of training epochs (``--epochs``) over the same seeded training subset:

* ada, scada, cp, tt: ``--epochs`` epochs in factorized form from a random init;
* mtd: ``--dense-epochs`` of dense training (one dense model per network and seed, shared with the
  ADMM methods), the per-layer Tucker/CP choice (``--mtd-proxy``), then the rest as fine-tuning;
* admm-tucker, admm-tt: the same dense model, ``--admm-epochs`` of ADMM toward the ranks, then the
  rest as fine-tuning.

``time`` is the run's training wall time (dense training included for the methods that need it).
Results accumulate in results/methods.json (a run already there is skipped: re-run to fill gaps) and
results/methods.md is rendered from all of them. Short, small-subset training: the table compares
the methods under one recipe and budget; it does not reproduce any paper's accuracies.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from research.paths import REPO, RESULTS

METHODS = ("ada", "scada", "cp", "mtd", "tt", "admm-tucker", "admm-tt")
NETS = {
    # name: (--model spec, file budgets in bytes, what it is)
    "lenet5": ("lenet5", (8_600, 34_500), "LeNet-5 (431k weights, 1,724,320 float32 bytes)"),
    "lenet300": ("lenet300", (10_700, 42_700), "LeNet-300-100 (266k weights, 1,066,440 float32 bytes)"),
    "vgg": ("research/benchmarks/small_vgg.py:SmallVGG", (5_600, 22_400),
            "small VGG-style CNN, 5 conv + 2 fc (28k weights, 111,752 float32 bytes)"),
}
DENSE_METHODS = ("mtd", "admm-tucker", "admm-tt")
ADMM_METHODS = ("admm-tucker", "admm-tt")


def _key(r: dict) -> tuple:
    return (r["net"], r["budget"], r["method"], r["seed"])


def _dense_checkpoint(net: str, seed: int, args: argparse.Namespace, work: Path) -> tuple[Path, float, float]:
    """Train the dense network once per seed (the same seeded subset the CLI loads); returns the state_dict
    path, training seconds and dense test accuracy (torch, on the test set)."""
    import torch

    from adt.exporter import TrainConfig, evaluate, train
    from adt.exporter.datasets import load_dataset
    from adt.exporter.user_model import resolve_model

    path = work / f"dense-{net}-{seed}.pt"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        m = json.loads(meta.read_text())
        return path, m["seconds"], m["accuracy"]
    torch.set_num_threads(1)
    data = load_dataset(args.data, subset=args.subset, seed=seed, progress=False)
    torch.manual_seed(seed)
    model = resolve_model(NETS[net][0], None, input_shape=data.input_shape).module
    t0 = time.perf_counter()
    train(model, data.train_loader, TrainConfig(epochs=args.dense_epochs, lr=args.lr, seed=seed, threads=1),
          progress=False)
    seconds = time.perf_counter() - t0
    acc = evaluate(model, data.test_loader)
    torch.save(model.state_dict(), path)
    meta.write_text(json.dumps({"seconds": seconds, "accuracy": acc}))
    return path, seconds, acc


def _score(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Test accuracy of the file alone: torch-free runtime, numpy engine, the file's input convention."""
    import adt.runtime as rt
    from adt.tools.scoring import count_correct, predict

    model = rt.load(str(path), engine="numpy")
    return count_correct(predict(model, model.preprocess(images)), labels) / len(images)


def _run_one(net: str, budget: int, method: str, seed: int, args: argparse.Namespace, work: Path,
             dense: dict, images: np.ndarray, labels: np.ndarray) -> dict:
    out = work / f"{net}-{budget}-{method}-{seed}.adt"
    cmd = [sys.executable, "-m", "adt.tools.cli", "compress", "--model", NETS[net][0], "--method", method,
           "--target-size", str(budget), "--data", str(args.data), "--subset", str(args.subset),
           "--seed", str(seed), "--lr", str(args.lr), "--threads", "1", "--device", "cpu", "--quiet", "--json",
           "-o", str(out)]
    epochs = args.epochs
    dense_seconds = 0.0
    if method in DENSE_METHODS:
        ckpt, dense_seconds, _ = dense[(net, seed)]
        cmd += ["--from-checkpoint", str(ckpt)]
        epochs -= args.dense_epochs
        if method == "mtd":
            cmd += ["--mtd-proxy", args.mtd_proxy]
        else:
            cmd += ["--admm-epochs", str(args.admm_epochs), "--rho", str(args.rho),
                    "--admm-update-every", str(args.admm_update_every)]
            epochs -= args.admm_epochs
    cmd += ["--epochs", str(epochs)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"net": net, "budget": budget, "method": method, "seed": seed, "epochs": epochs,
           "command": " ".join(cmd[1:]).replace(str(work), "WORK")}
    if proc.returncode != 0:
        row.update(ok=False, error=(proc.stderr.strip().splitlines() or ["?"])[-1][:400], wall_seconds=round(wall, 1))
        return row
    rep = json.loads(proc.stdout)
    acc = _score(out, images, labels)
    kinds = rep.get("layer_kinds") or {}
    row.update(
        ok=True, file_bytes=rep["file_bytes"], true_ratio=rep["true_ratio"], size_ratio=rep["file_bytes"] / budget,
        in_window=(rep.get("target_size") or {}).get("in_window"), q=(rep.get("target_size") or {}).get("q"),
        stored_values=rep["stored_values"], file_accuracy=acc, error=1 - acc,
        train_seconds=round(rep["train_seconds"] + dense_seconds, 1), dense_seconds=round(dense_seconds, 1),
        wall_seconds=round(wall, 1), layer_kinds=kinds,
        plan={k: v for k, v in (rep.get("plan") or {}).items()},
        check_passed=rep["check"]["passed"],
    )
    out.unlink()
    return row


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _summary(rows: list[dict]) -> list[str]:
    """Each method's rank by median error at every (network, budget), and how often it was first or within
    the winner's seed range."""
    cells = sorted({(r["net"], r["budget"]) for r in rows}, key=lambda c: (list(NETS).index(c[0]), c[1]))
    if not cells:
        return []
    med = {(r["net"], r["budget"], r["method"]): _median([100 * x["error"] for x in rows
                                                          if (x["net"], x["budget"], x["method"]) ==
                                                          (r["net"], r["budget"], r["method"])]) for r in rows}
    lines = ["## Summary: rank by median error at each network and budget (1 = lowest)", "",
             "| method | " + " | ".join(f"{n} {b:,} B" for n, b in cells) + " | first | mean rank |",
             "|---|" + "---|" * (len(cells) + 2)]
    ranks: dict[str, list[int]] = {m: [] for m in METHODS}
    for n, b in cells:
        order = sorted((m for m in METHODS if (n, b, m) in med), key=lambda m: med[(n, b, m)])
        for i, m in enumerate(order):
            ranks[m].append(i + 1)
    for m in METHODS:
        if not ranks[m]:
            continue
        cols = []
        for n, b in cells:
            order = sorted((x for x in METHODS if (n, b, x) in med), key=lambda x: med[(n, b, x)])
            cols.append(f"{order.index(m) + 1} ({med[(n, b, m)]:.2f}%)" if m in order else "-")
        lines.append(f"| {m} | " + " | ".join(cols) + f" | {sum(r == 1 for r in ranks[m])} | "
                     f"{statistics.mean(ranks[m]):.1f} |")
    return lines + [""]


def render(doc: dict) -> str:
    rows = [r for r in doc["runs"] if r.get("ok")]
    failed = [r for r in doc["runs"] if not r.get("ok")]
    cfg = doc["config"]
    lines = [
        "# Which method for which network: seven methods at matched file sizes (MNIST)", "",
        f"Written by `research/benchmarks/methods.py` (re-run: `{cfg['command']}`; runs already in "
        "results/methods.json are kept, so the same command fills gaps).", "",
        f"Every run is one `adt compress --method M --target-size S` on a seeded subset of {cfg['subset']:,} MNIST "
        f"training images with {cfg['epochs']} training epochs in all (ada, scada, cp, tt: all in factorized form "
        f"from a random init; mtd: {cfg['dense_epochs']} dense + the rest fine-tuning after the per-layer choice "
        f"(proxy `{cfg['mtd_proxy']}`; fine-tuning at lr {cfg['lr'] / 10:g}, `adt compress`'s default for a decomposed "
        f"trained model); admm-*: {cfg['dense_epochs']} dense + {cfg['admm_epochs']} ADMM "
        f"(rho {cfg['rho']}, doubled per epoch, Z/U updated every {cfg['admm_update_every']} steps) + the rest "
        f"fine-tuning at lr {cfg['lr'] / 10:g}), Q and reshapes chosen by the size search. "
        "`error` is the file's top-1 error on all 10,000 test images, run by the torch-free runtime (numpy engine) "
        "from the file alone; `ratio` is dense float32 bytes / file bytes, every byte counted; `size` is file bytes / "
        "budget (the window is 0.97-1.00); `time` is training wall time on one CPU thread (two runs at once on the "
        "2-core machine), dense training and ADMM included where a method needs them. Medians over seeds; `error range` "
        "is the seeds' lowest to highest. Short training (about 160 optimizer steps): these compare the methods under "
        "one recipe and budget; they are not any paper's accuracies, and every error here is far above what the same "
        "networks reach with full training (results/mnist.md).", "",
        f"Machine: {cfg['machine']}.", "",
    ]
    for net, (_, budgets, what) in NETS.items():
        net_rows = [r for r in rows if r["net"] == net]
        if not net_rows:
            continue
        lines += [f"## {net}: {what}", ""]
        for budget in budgets:
            b_rows = [r for r in net_rows if r["budget"] == budget]
            if not b_rows:
                continue
            lines += [f"### budget {budget:,} bytes", "",
                      "| method | seeds | file bytes | size | ratio | error % (median) | error range | time (s) | layers |",
                      "|---|---|---|---|---|---|---|---|---|"]
            best = None
            for method in METHODS:
                m_rows = [r for r in b_rows if r["method"] == method]
                if not m_rows:
                    continue
                errs = [100 * r["error"] for r in m_rows]
                kinds = sorted({"+".join(sorted(set(r["layer_kinds"].values()))) or "dense" for r in m_rows})
                med = _median(errs)
                if best is None or med < best[1]:
                    best = (method, med)
                lines.append(
                    f"| {method} | {len(m_rows)} | {_median([r['file_bytes'] for r in m_rows]):,.0f} | "
                    f"{min(r['size_ratio'] for r in m_rows):.3f}-{max(r['size_ratio'] for r in m_rows):.3f} | "
                    f"{_median([r['true_ratio'] for r in m_rows]):.1f} | {med:.2f} | {min(errs):.2f}-{max(errs):.2f} | "
                    f"{_median([r['train_seconds'] for r in m_rows]):.0f} | {', '.join(kinds)} |")
            lines += ["", f"Lowest median error: **{best[0]}** ({best[1]:.2f}%).", ""]
            mtd = [r for r in b_rows if r["method"] == "mtd"]
            if mtd:
                lines.append("MTD's choices: " + "; ".join(
                    f"seed {r['seed']}: " + ", ".join(f"{k} {v}" for k, v in r["layer_kinds"].items()) for r in mtd))
                lines.append("")
    lines += _summary(rows)
    if failed:
        lines += ["## Runs that failed", ""]
        lines += [f"- {r['net']} {r['budget']:,} B {r['method']} seed {r['seed']}: {r['error']}" for r in failed]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", choices=tuple(NETS), default=list(NETS), help="networks (default all)")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods (default all)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default 0 1 2)")
    ap.add_argument("--subset", type=int, default=10000, help="training images (default 10000)")
    ap.add_argument("--epochs", type=int, default=4, help="training epochs per run, all phases (default 4)")
    ap.add_argument("--dense-epochs", type=int, default=1, help="dense epochs of mtd and admm-* (default 1)")
    ap.add_argument("--admm-epochs", type=int, default=2, help="ADMM epochs of admm-* (default 2)")
    ap.add_argument("--rho", type=float, default=0.3, help="ADMM's first rho (default 0.3)")
    ap.add_argument("--admm-update-every", type=int, default=10,
                    help="ADMM's Z/U update every this many steps (default 10)")
    ap.add_argument("--mtd-proxy", default="finetune", help="mtd's proxy (default finetune)")
    ap.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default 2)")
    ap.add_argument("--data", default=os.environ.get("ADT_DATA"), help="MNIST IDX folder (default $ADT_DATA)")
    ap.add_argument("--work", default=None, help="folder for dense checkpoints and files (default a temp folder)")
    ap.add_argument("--out", default=str(RESULTS / "methods.json"), help="results JSON (default results/methods.json)")
    args = ap.parse_args(argv)
    if not args.data:
        ap.error("give --data or set ADT_DATA")
    if args.epochs <= args.dense_epochs + args.admm_epochs:
        ap.error("--epochs must exceed --dense-epochs + --admm-epochs (the fine-tuning needs one epoch)")
    from adt.runtime.mnist import load_mnist

    images, labels = load_mnist(args.data, "test")
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {"runs": []}
    done = {_key(r) for r in doc["runs"] if r.get("ok")}
    doc["runs"] = [r for r in doc["runs"] if r.get("ok")]  # failed runs are retried
    doc["config"] = {
        "subset": args.subset, "epochs": args.epochs, "dense_epochs": args.dense_epochs,
        "admm_epochs": args.admm_epochs, "rho": args.rho, "admm_update_every": args.admm_update_every,
        "mtd_proxy": args.mtd_proxy, "lr": args.lr,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "ADT_DATA=../shared/data/mnist nice -n 10 .venv/bin/python -m research.benchmarks.methods "
                   f"--subset {args.subset} --epochs {args.epochs} --dense-epochs {args.dense_epochs} "
                   f"--admm-epochs {args.admm_epochs} --rho {args.rho} --admm-update-every {args.admm_update_every} "
                   f"--mtd-proxy {args.mtd_proxy} --lr {args.lr}",
    }
    # seed-major: an interrupted run leaves every network and method with the same seeds done
    todo = [(net, budget, method, seed) for seed in args.seeds for net in args.nets for budget in NETS[net][1]
            for method in args.methods if (net, budget, method, seed) not in done]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="adt-methods-"))
    work.mkdir(parents=True, exist_ok=True)
    dense = {}
    for net, seed in sorted({(n, s) for n, _, m, s in todo if m in DENSE_METHODS}):
        dense[(net, seed)] = _dense_checkpoint(net, seed, args, work)
        print(f"dense {net} seed {seed}: {dense[(net, seed)][1]:.0f} s, accuracy {dense[(net, seed)][2]:.4f}", flush=True)
    lock = threading.Lock()

    def job(item: tuple) -> None:
        row = _run_one(*item, args, work, dense, images, labels)
        with lock:
            doc["runs"].append(row)
            doc["runs"].sort(key=lambda r: (list(NETS).index(r["net"]), r["budget"], METHODS.index(r["method"]), r["seed"]))
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(out)
            out.with_suffix(".md").write_text(render(doc))
            status = (f"error {100 * row['error']:.2f}% size {row['size_ratio']:.3f} {row['train_seconds']} s"
                      if row["ok"] else f"FAILED: {row['error']}")
            print(f"{item}: {status}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(job, todo))
    out.with_suffix(".md").write_text(render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
