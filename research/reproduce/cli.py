"""Reproduce the paper's MNIST table (ADA-Tucker, arXiv 1906.07671, Table 1) with real .adt files.

    python -m research.reproduce mnist --data DIR [--rows lenet5-ada,...] [--seeds 0,1] [--epochs N]
                                      [--variants paper,kind-qat] [--stage train|export|report|all|rescore]

Run it from the repository root (``research`` is not installed). Stages (``all`` = train -> export -> report):
  * train:  trains each (row, seed) with the exporter's loop; the trained Tucker state goes to
            ``results/ckpt/ROW-sSEED.ckpt`` (git-ignored) and is reused by later stages.
  * export: for each export variant, optional quantization-aware fine-tuning, then the exporter writes
            ``results/adt/ROW-sSEED-VARIANT.adt``; the file is scored by the torch-free runtime
            (``adt.runtime.load``; see ``adt.tools.scoring.score_file``) and one JSON record per file goes
            to ``results/runs/``.
  * report: every record in ``results/runs/`` -> ``results/mnist.json`` and ``results/mnist.md``.
  * rescore (only when asked): score every recorded file again and refresh its size facts, then report.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from adt.runtime.format import write_atomic
from research.paths import RESULTS

__all__ = ["main", "stage_train", "stage_export", "stage_rescore"]


def _machine() -> str:
    import os
    return f"{platform.machine()} {os.cpu_count()} cpu, {platform.processor() or platform.system()}"


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _run_names(args) -> list[str]:
    from research.reproduce.presets import ABLATIONS, ALL_RUNS, DEFAULT_ROWS, ROWS
    names = _csv(args.rows) or list(DEFAULT_ROWS)
    if names == ["table1-all"]:
        names = list(ROWS)
    if names == ["ablations"]:
        names = list(ABLATIONS)
    bad = [n for n in names if n not in ALL_RUNS]
    if bad:
        raise SystemExit(f"reproduce: unknown row {bad[0]!r}; known: {', '.join(ALL_RUNS)}")
    return names


def stage_train(args, names: list[str], seeds: list[int]) -> None:
    from research.reproduce.presets import ALL_RUNS
    from research.reproduce.train import train_run

    for name in names:
        for seed in seeds:
            ckpt = args.out / "ckpt" / f"{name}-s{seed}.ckpt"
            if ckpt.exists() and not args.retrain:
                print(f"[train] {name} seed {seed}: cached {ckpt.name}", flush=True)
                continue
            src = ALL_RUNS[name].resume_from
            if src and not (args.out / "ckpt" / f"{src}-s{seed}.ckpt").exists():
                print(f"[train] {name} seed {seed}: skipped, {src} seed {seed} is not trained yet", flush=True)
                continue
            print(f"[train] {name} seed {seed} ...", flush=True)
            log = train_run(ALL_RUNS[name], seed, args.data, ckpt, epochs=args.epochs, subset=args.subset,
                            test_subset=args.test_subset, threads=args.threads, progress=args.progress)
            log["machine"] = _machine()
            log["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            (args.out / "logs").mkdir(parents=True, exist_ok=True)
            write_atomic(args.out / "logs" / f"train-{name}-s{seed}.json", json.dumps(log, indent=1).encode())
            print(f"[train] {name} seed {seed}: {log['stored_params']} params, float acc "
                  f"{log['float_test_acc']:.4f}, {log['train_seconds']} s", flush=True)


def stage_export(args, names: list[str], seeds: list[int], variants: list[str] | None) -> None:
    from research.reproduce.export import export_run, resolve_variant
    from research.reproduce.presets import default_variants

    for name in names:
        for seed in seeds:
            ckpt = args.out / "ckpt" / f"{name}-s{seed}.ckpt"
            for var in variants or default_variants(name):
                start = resolve_variant(name, var).warm_start
                if start is None and not ckpt.exists():
                    print(f"[export] {name} seed {seed} {var}: no checkpoint yet, skipped", flush=True)
                    continue
                if start is not None and not (args.out / "adt" / f"{name}-s{seed}-{start}.adt").exists():
                    print(f"[export] {name} seed {seed} {var}: no {start} file to start from, skipped", flush=True)
                    continue
                rec = export_run(name, seed, var, ckpt, args.out, args.data, subset=args.subset,
                                 test_subset=args.test_subset, threads=args.threads, progress=args.progress)
                print(f"[export] {name} s{seed} {var}: {rec['file_bytes']} B, true ratio {rec['true_ratio']:.1f}x,"
                      f" error float {rec['err_float']:.2f}% -> file {rec['err_file']:.2f}%", flush=True)


def _file_facts(path: Path, raw_ratio: float, dense_bytes: int) -> dict:
    """Size facts read from the file itself, so a record stays true if the file is re-encoded."""
    from adt.runtime.format import byte_breakdown, read_adt

    f = read_adt(path)
    stored = sum(c.stored_count for c in f.cores) + sum(p.stored_count for p in f.params)
    mean_bits = f.payload_bits / stored
    return {"file_bytes": f.file_size, "true_ratio": dense_bytes / f.file_size, "mean_code_bits": mean_bits,
            "paper_eq14_ratio": 32 * raw_ratio / mean_bits,
            "table_policy": "shared" if len(f.tables) == 1 else "per_group", **byte_breakdown(f).legacy_dict()}


def stage_rescore(args) -> None:
    """Score every recorded .adt file again with the current evaluator (e.g. once adt.runtime lands)."""
    from adt.exporter import mnist_test_set

    from adt.tools.scoring import score_file
    x, y = mnist_test_set(args.data)
    if args.test_subset:
        x, y = x[:args.test_subset], y[:args.test_subset]
    for rec_path in sorted((args.out / "runs").glob("*.json")):
        rec = json.loads(rec_path.read_text())
        t0 = time.perf_counter()
        scored = score_file(args.out / rec["file"], x, y).to_dict()
        rec.update(err_file=100 * (1 - scored["acc"]), test_images=scored["n"], evaluator=scored["evaluator"],
                   score_seconds=round(time.perf_counter() - t0, 1))
        rec.update(_file_facts(args.out / rec["file"], rec["raw_ratio"], rec["dense_float32_bytes"]))
        write_atomic(rec_path, json.dumps(rec, indent=1, sort_keys=True).encode())
        print(f"[rescore] {rec['file']}: error {rec['err_file']:.2f}% ({scored['evaluator']})", flush=True)


def main(argv: list[str] | None = None) -> int:
    from research.reproduce.presets import DEFAULT_ROWS  # torch-free, cheap: names only

    p = argparse.ArgumentParser(prog="python -m research.reproduce", description=__doc__.split("\n")[0])
    p.add_argument("task", choices=["mnist"], help="the benchmark to reproduce (mnist: the paper's Table 1)")
    p.add_argument("--data", help="MNIST IDX folder (default: $ADT_DATA)")
    p.add_argument("--rows", help="comma list of runs (default: the four Table 1 rows at their shorter "
                                  "schedules, " + ",".join(DEFAULT_ROWS) + " (distilled where that helped; the "
                                  "longer lenet5-ada-kd80, lenet5-scada-kd80 and lenet300-ada-kd120 are better and "
                                  "take twice the time); 'table1-all' = "
                                  "every recipe of every Table 1 row; 'ablations' = all "
                                  "ablation runs; see research.reproduce.presets.ALL_RUNS)")
    p.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    p.add_argument("--epochs", type=int, help="override the preset's training epochs (shorter runs)")
    p.add_argument("--variants", help="comma list of export variants (default: paper + the row's best ADT variant, "
                                      "research.reproduce.presets.BEST_VARIANT, else kind-qat); paper-rn = the "
                                      "paper's Q and b with nearest-level rounding")
    p.add_argument("--stage", default="all", choices=["train", "export", "report", "all", "rescore"],
                   help="which stage(s) to run (default all; rescore: score every recorded file again with the "
                        "current evaluator, then report)")
    p.add_argument("--retrain", action="store_true", help="train again even if a checkpoint exists")
    p.add_argument("--subset", type=int, help="train on this many training images (smoke tests)")
    p.add_argument("--test-subset", type=int, help="score on this many test images (smoke tests)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: the repo's results/)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    args = p.parse_args(argv)
    from adt.runtime.format import AdtError
    from adt.runtime.mnist import resolve_data_dir
    if args.stage != "report":
        try:
            args.data = str(resolve_data_dir(args.data))
        except AdtError as exc:  # one line, no traceback
            print(f"reproduce: {exc}", file=sys.stderr)
            return 1
    names = _run_names(args)
    seeds = [int(s) for s in _csv(args.seeds)]
    variants = _csv(args.variants) or None
    if args.stage in ("train", "all"):
        stage_train(args, names, seeds)
    if args.stage in ("export", "all"):
        stage_export(args, names, seeds, variants)
    if args.stage == "rescore":
        stage_rescore(args)
    if args.stage in ("report", "all", "rescore"):
        from research.reproduce.report import write_report
        write_report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
