"""LeNet-5 runtime benchmark: ``adt bench`` on a LeNet-5 .adt file, checked against issue 6's targets.

By default it builds the file itself, torch-free: LeNet-5's ONNX graph (Conv, MaxPool, Conv, MaxPool,
Flatten, Gemm, Relu, Gemm; input [N, 1, 28, 28]) from ``adt.runtime.samples.lenet5_architecture``, and
random ADA-Tucker cores/factors with the planner's paper-matching plan
(:func:`research.benchmarks.wrn_scale.lenet5_spec`). Latency does not depend on the weight values, so this measures what a trained file
would. ``--file`` benchmarks a real exported file instead.

Targets (issue 6): NumPy engine batch-64 latency <= 1.5x ONNX Runtime on the dense float32 model; the
ONNX Runtime engine within 1.1x of it; cold start (open .adt -> first output) no slower than ONNX
Runtime creating a session on the dense .onnx file and running once; payload bits <= 1.01x the
empirical entropy of the symbols.

Threads: ``--threads 1`` (default) limits NumPy's BLAS and ONNX Runtime's intra-op pool to one thread
each (on this shared 2-core machine, multi-threaded pools stall whenever another process holds a core:
a LeNet-5 NumPy batch-1 run went from 0.5 ms to 10-30 ms); ``--threads 0`` keeps the libraries' defaults.

Run (from the repository root):
    .venv/bin/python -m research.benchmarks.bench_lenet [--repeats 10] [--threads 1] [--file model.adt] [--out ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from research.benchmarks.threads import limit_blas_threads_from_argv

if __name__ == "__main__":
    limit_blas_threads_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402

from adt.runtime.format import write_atomic  # noqa: E402
from adt.runtime.samples import lenet5_architecture  # noqa: E402
from adt.tools.benchmark import bench, limit_ort_threads, median_time  # noqa: E402
from adt.tools.inspect_report import build_report  # noqa: E402
from research.benchmarks.profiling import own_time_profile  # noqa: E402
from research.benchmarks.wrn_scale import export, lenet5_spec, random_values  # noqa: E402
from research.paths import RESULTS  # noqa: E402

__all__ = ["build_lenet5", "explain", "main"]


def build_lenet5(path: Path, seed: int = 0) -> None:
    """A LeNet-5 .adt with random values (the wrn_scale quantizers) and the LeNet-5 architecture."""
    export(random_values(lenet5_spec(), seed), path, producer="research/benchmarks/bench_lenet.py (random values)",
           model="LeNet-5", architecture=lenet5_architecture())


def _profile(fn, runs: int, top: int = 6) -> list[dict]:
    """The functions with the most own time over ``runs`` calls of ``fn``, in ms per call."""
    return [{"function": r.function, "own_ms_per_call": round(1e3 * r.own_s / runs, 3)}
            for r in own_time_profile(fn, runs, top)]


def explain(path: Path, repeats: int) -> dict:
    """Where the missed targets' time goes: the NumPy engine's batch-64 run by function, and the
    onnxruntime engine's cold start split into its steps (medians)."""
    import onnxruntime as ort

    import adt.runtime as rt
    from adt.runtime.format import read_adt
    from adt.runtime.ort_engine import session_options
    from adt.runtime.rebuild import rebuild_weights

    m = rt.load(path)
    x64 = np.zeros((64, 1, 28, 28), np.float32)
    m.run(x64)
    f = read_adt(path)
    dense = m.onnx_bytes()
    steps = {
        "read_adt_ms": median_time(lambda: read_adt(path), repeats)[0],
        "rebuild_weights_ms": median_time(lambda: rebuild_weights(f), repeats)[0],
        "onnx_bytes_ms": median_time(m.onnx_bytes, repeats)[0],
        "ort_session_from_bytes_ms": median_time(lambda: ort.InferenceSession(
            dense, sess_options=session_options(), providers=["CPUExecutionProvider"]), repeats)[0],
    }
    return {"numpy_batch64_profile": _profile(lambda: m.run(x64), 5),
            "ort_engine_cold_start_steps": {k: round(1e3 * v, 3) for k, v in steps.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.bench_lenet", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10, help="runs per measurement (medians)")
    ap.add_argument("--file", help="a real LeNet-5 .adt file (default: build one with random values)")
    ap.add_argument("--out", default=None,
                    help="where to write the JSON (default results/bench_lenet.json, or "
                         "results/bench_lenet_threads<N>.json for --threads N other than 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per engine (BLAS and ONNX Runtime intra-op); 0 = each library's default "
                         "(default 1: stable on a small shared machine)")
    args = ap.parse_args(argv)
    if args.threads > 0 and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        ap.error("--threads must be given on the command line of this script (BLAS reads it at import)")
    if args.out is None:
        name = "bench_lenet.json" if args.threads == 1 else f"bench_lenet_threads{args.threads or 'default'}.json"
        args.out = str(RESULTS / name)
    if args.threads > 0:
        limit_ort_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.file) if args.file else Path(tmp) / "lenet5.adt"
        if not args.file:
            build_lenet5(path)
        why = explain(path, args.repeats)
        result = bench(path, args.repeats, threads=args.threads or None)
        report = build_report(path)
    e, r = result["engines"], result["ratios_vs_dense"]
    t = report["totals"]
    targets = {
        "numpy_batch64_le_1.5x_dense": {"value": r["numpy_batch64_vs_dense"], "met": r["numpy_batch64_vs_dense"] <= 1.5},
        "ort_batch64_le_1.1x_dense": {"value": r["onnxruntime_batch64_vs_dense"],
                                      "met": r["onnxruntime_batch64_vs_dense"] <= 1.1},
        "numpy_cold_start_le_dense": {"value": r["numpy_cold_start_vs_dense"], "met": r["numpy_cold_start_vs_dense"] <= 1.0},
        "ort_cold_start_le_dense": {"value": r["onnxruntime_cold_start_vs_dense"],
                                    "met": r["onnxruntime_cold_start_vs_dense"] <= 1.0},
        "payload_le_1.01x_entropy": {"value": t["payload_over_entropy"], "met": t["payload_over_entropy"] <= 1.01},
    }
    out = {
        "benchmark": "research/benchmarks/bench_lenet.py",
        "source": args.file or "built: random values, paper-matching LeNet-5 plan, hand-written ONNX graph",
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "note": "a shared 2-core machine: see bench.loadavg_before/after; NumPy's threaded BLAS and ORT's thread "
                "pool both slow down sharply when other processes hold a core",
        "bench": {k: v for k, v in result.items() if k != "file"},
        "file_bytes": t["file_bytes"], "true_ratio": t["true_ratio"], "paper_qh_ratio": report["paper"]["qh_ratio"],
        "targets": targets,
        "explain": why,
    }
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, (json.dumps(out, indent=1) + "\n").encode())
    for k in ("numpy", "onnxruntime", "dense_onnxruntime"):
        x = e[k]
        print(f"{k:>18}: cold {1e3 * x['cold_start_s']:8.3f} ms  b1 {1e3 * x['batch1_s']:8.3f} ms  "
              f"b64 {1e3 * x['batch64_s']:8.3f} ms")
    for k, v in targets.items():
        print(f"{k:>30}: {v['value']:.3f} {'met' if v['met'] else 'MISSED'}")
    print("numpy batch-64 by function (own ms/call):",
          ", ".join(f"{p['function']} {p['own_ms_per_call']}" for p in why["numpy_batch64_profile"][:4]))
    print("onnxruntime engine cold start steps (ms):", why["ort_engine_cold_start_steps"])
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
