"""LeNet-5 runtime benchmark: ``adt bench`` on a LeNet-5 .adt file, checked against issue 6's targets.

By default it builds the file itself, torch-free: LeNet-5's ONNX graph (Conv, MaxPool, Conv, MaxPool,
Flatten, Gemm, Relu, Gemm; input [N, 1, 28, 28]) from ``adt.runtime.samples.lenet5_architecture``, and
random ADA-Tucker cores/factors with the planner's paper-matching plan
(:func:`research.benchmarks.wrn_scale.lenet5_spec`). Latency does not depend on the weight values, so this measures what a trained file
would. ``--file`` benchmarks a real exported file instead.

Targets ("targets" in the JSON, one entry each): issue 6's NumPy engine batch-64 latency <= 1.5x ONNX
Runtime on the dense float32 model, the ONNX Runtime engine within 1.1x of it, payload bits <= 1.01x
the empirical entropy of the symbols; issue 18's cold start (open .adt -> first batch-1 output) <= 1.0x
ONNX Runtime creating a session on the dense .onnx file and running once with the NumPy engine, and
<= 1.5x with the onnxruntime engine. The dense baseline uses the engine's session options (ORT's
defaults, quiet logging, the same threads).

Threads: ``--threads 1`` (default) limits NumPy's BLAS and ONNX Runtime's intra-op pool to one thread
each (on this shared 2-core machine, multi-threaded pools stall whenever another process holds a core:
a LeNet-5 NumPy batch-1 run went from 0.5 ms to 10-30 ms); ``--threads 0`` keeps the libraries' defaults.

Run (from the repository root):
    .venv/bin/python -m research.benchmarks.bench_lenet [--repeats 30] [--threads 1] [--file model.adt] [--out ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from research.benchmarks.threads import limit_blas_threads_from_argv

if __name__ == "__main__":
    limit_blas_threads_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402

from adt.runtime.format import write_atomic  # noqa: E402
from adt.runtime.samples import lenet5_architecture  # noqa: E402
from adt.tools.benchmark import bench, limit_ort_threads  # noqa: E402
from adt.tools.inspect_report import build_report  # noqa: E402
from research.benchmarks.profiling import own_time_profile  # noqa: E402
from research.benchmarks.wrn_scale import export, lenet5_spec, random_values  # noqa: E402
from research.paths import RESULTS  # noqa: E402

__all__ = ["build_lenet5", "explain", "main", "render_md"]


def build_lenet5(path: Path, seed: int = 0) -> None:
    """A LeNet-5 .adt with random values (the wrn_scale quantizers) and the LeNet-5 architecture."""
    export(random_values(lenet5_spec(), seed), path, producer="research/benchmarks/bench_lenet.py (random values)",
           model="LeNet-5", architecture=lenet5_architecture())


def _profile(fn, runs: int, top: int = 6) -> list[dict]:
    """The functions with the most own time over ``runs`` calls of ``fn``, in ms per call."""
    return [{"function": r.function, "own_ms_per_call": round(1e3 * r.own_s / runs, 3)}
            for r in own_time_profile(fn, runs, top)]


def _cpu_and_wall(fns: dict, runs: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Median CPU time of this thread (time.thread_time: what the step costs, without the time other
    processes held the core) and wall time of each step in ms, blocks taking turns as in ``blocked``.
    With one ORT/BLAS thread every step runs on this thread."""
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            fn()
            for _ in range(max(1, runs // rounds)):
                c0, w0 = time.thread_time(), time.perf_counter()
                fn()
                cpu[k].append(time.thread_time() - c0)
                wall[k].append(time.perf_counter() - w0)
    return {k: {"cpu_ms": round(1e3 * statistics.median(cpu[k]), 3),
                "wall_ms": round(1e3 * statistics.median(wall[k]), 3)} for k in fns}


def explain(path: Path, repeats: int) -> dict:
    """Where the time goes: the NumPy engine's batch-64 run by function, and both engines' cold
    starts split into their steps next to the dense baseline's (CPU and wall medians, ms)."""
    import onnxruntime as ort

    import adt.runtime as rt
    from adt.runtime import ort_engine
    from adt.runtime.format import read_adt
    from adt.runtime.numpy_engine import NumpyEngine

    m = rt.load(path)
    x1 = np.zeros((1, 1, 28, 28), np.float32)
    x64 = np.zeros((64, 1, 28, 28), np.float32)
    m.run(x64)
    f = read_adt(path)
    w = rt.load(f, engine=None)          # weights + parsed graph: the inputs of each engine's own step
    weights = dict(w.weights.items())
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "dense.onnx"
        onnx.write_bytes(m.onnx_bytes())

        def numpy_engine():
            return NumpyEngine(w.architecture, dict(weights), order=w._order, own_weights=True)

        def ort_engine_init():
            return ort_engine.OrtEngine(w.architecture, weights, w.output_names, order=w._order)

        def dense_session():
            return ort.InferenceSession(str(onnx), sess_options=ort_engine.session_options(),
                                        providers=["CPUExecutionProvider"])
        e_np, e_ort, s_dense = numpy_engine(), ort_engine_init(), dense_session()
        steps = _cpu_and_wall({
            "read_adt (path)": lambda: read_adt(path),
            "Model(file, engine=None): parse + validate graph + rebuild": lambda: rt.Model(f, engine=None),
            "NumpyEngine(...) (rewrites, plan of constants)": numpy_engine,
            "NumpyEngine first run (shape plan + run)": lambda: numpy_engine().run({"input": x1}),
            "OrtEngine(...) (op check, encode, OrtValues, session)": ort_engine_init,
            "OrtEngine first run": lambda: ort_engine_init().run({"input": x1}),
            "dense: InferenceSession(path)": dense_session,
            "dense: session + first run": lambda: dense_session().run(None, {"input": x1}),
            "steady batch-1 run: numpy engine": lambda: e_np.run({"input": x1}),
            "steady batch-1 run: onnxruntime engine": lambda: e_ort.run({"input": x1}),
            "steady batch-1 run: dense session": lambda: s_dense.run(None, {"input": x1}),
        }, 3 * repeats)
    return {"numpy_batch64_profile": _profile(lambda: m.run(x64), 5), "cold_start_steps": steps,
            "note": "first-run steps include their engine's creation; subtract it for the run alone"}


def render_md(out: dict) -> str:
    """A Markdown summary of the JSON (every number comes from it)."""
    b, m = out["bench"], out["machine"]
    e = b["engines"]
    lines = [
        "# LeNet-5: cold start and latency, .adt engines vs ONNX Runtime on the dense model", "",
        f"Generated by `{out['command']}` with the JSON beside this file (Python {m['python']}, NumPy {m['numpy']}, "
        f"{m['cpus']} CPUs; threads: {b['threads']}; load average {out['loadavg_before'][0]:.2f} before, "
        f"{out['loadavg_after'][0]:.2f} after: a shared machine, see the CPU-time split below). Source: "
        f"{out['source']}. Medians; engines take turns in blocks.", "",
        "| | load | first run | cold start (open -> first output) | batch 1 | batch 64 |", "|---|---:|---:|---:|---:|---:|"]
    for key, label in (("numpy", ".adt, NumPy engine"), ("onnxruntime", ".adt, onnxruntime engine"),
                       ("dense_onnxruntime", "dense .onnx, ONNX Runtime")):
        x = e[key]
        lines.append(f"| {label} | {1e3 * x['load_s']:.3f} ms | {1e3 * x['first_run_s']:.3f} ms | "
                     f"{1e3 * x['cold_start_s']:.3f} ms | {1e3 * x['batch1_s']:.3f} ms | {1e3 * x['batch64_s']:.3f} ms |")
    lines += ["", "Targets:", ""]
    for t in out["targets"]:
        lines.append(f"- `{t['id']}` ({t['target']}): {t['measured']:.3f}{t['unit']}, "
                     f"{'met' if t['met'] else 'MISSED'} ({t['detail']})")
    lines += ["", "Cold start by step (CPU time of this thread, which excludes the time other processes held the "
                  "core, and wall time; first-run steps include their engine's creation):", "",
              "| step | CPU | wall |", "|---|---:|---:|"]
    for k, v in out["explain"]["cold_start_steps"].items():
        lines.append(f"| {k} | {v['cpu_ms']:.3f} ms | {v['wall_ms']:.3f} ms |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.bench_lenet", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30,
                    help="runs per measurement (medians; cold starts: this many, latencies: 4x)")
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
    thr = f"{args.threads} thread(s) each" if args.threads else "each library's default threads"
    n_cold = args.repeats

    def target(tid: str, text: str, value: float, limit: float, detail: str) -> dict:
        return {"id": tid, "target": text, "measured": round(value, 4), "unit": "x", "limit": limit,
                "met": value <= limit, "detail": detail}

    def ms(engine: str, key: str) -> str:
        return f"{1e3 * e[engine][key]:.3f} ms"
    suffix = "" if args.threads == 1 else f"_threads{args.threads or 'default'}"
    targets = [
        target(f"lenet5_cold_start_numpy{suffix}", "<= 1.0x ONNX Runtime session creation + first run (dense)",
               r["numpy_cold_start_vs_dense"], 1.0,
               f"open .adt -> first batch-1 output {ms('numpy', 'cold_start_s')} (load {ms('numpy', 'load_s')} + "
               f"first run {ms('numpy', 'first_run_s')}) vs ORT {ms('dense_onnxruntime', 'cold_start_s')}; "
               f"medians of {n_cold}, {thr}, issue 18 part 5"),
        target(f"lenet5_cold_start_ort_engine{suffix}", "<= 1.5x ONNX Runtime session creation + first run (dense)",
               r["onnxruntime_cold_start_vs_dense"], 1.5,
               f"open .adt -> first batch-1 output {ms('onnxruntime', 'cold_start_s')} (load "
               f"{ms('onnxruntime', 'load_s')} + first run {ms('onnxruntime', 'first_run_s')}) vs ORT "
               f"{ms('dense_onnxruntime', 'cold_start_s')}; medians of {n_cold}, {thr}, issue 18 part 5"),
        target(f"lenet5_numpy_batch64{suffix}", "<= 1.5x ONNX Runtime (dense), issue 6",
               r["numpy_batch64_vs_dense"], 1.5, f"{ms('numpy', 'batch64_s')} vs {ms('dense_onnxruntime', 'batch64_s')}, {thr}"),
        target(f"lenet5_ort_engine_batch64{suffix}", "<= 1.1x ONNX Runtime (dense), issue 6",
               r["onnxruntime_batch64_vs_dense"], 1.1,
               f"{ms('onnxruntime', 'batch64_s')} vs {ms('dense_onnxruntime', 'batch64_s')}, {thr}"),
        target(f"lenet5_payload_vs_entropy{suffix}", "<= 1.01x the symbols' empirical entropy, issue 6",
               t["payload_over_entropy"], 1.01, "payload bits over the empirical entropy of the symbols"),
    ]
    out = {
        "benchmark": "research/benchmarks/bench_lenet.py",
        "command": "python -m research.benchmarks.bench_lenet " + " ".join(sys.argv[1:] if argv is None else argv),
        "loadavg_before": result["loadavg_before"], "loadavg_after": result["loadavg_after"],
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
    write_atomic(dest.with_suffix(".md"), render_md(out).encode())
    for k in ("numpy", "onnxruntime", "dense_onnxruntime"):
        x = e[k]
        print(f"{k:>18}: cold {1e3 * x['cold_start_s']:8.3f} ms  b1 {1e3 * x['batch1_s']:8.3f} ms  "
              f"b64 {1e3 * x['batch64_s']:8.3f} ms")
    for v in targets:
        print(f"{v['id']:>36}: {v['measured']:.3f} {'met' if v['met'] else 'MISSED'}")
    print("numpy batch-64 by function (own ms/call):",
          ", ".join(f"{p['function']} {p['own_ms_per_call']}" for p in why["numpy_batch64_profile"][:4]))
    for k, v in why["cold_start_steps"].items():
        print(f"  {k:58} cpu {v['cpu_ms']:7.3f} ms  wall {v['wall_ms']:7.3f} ms")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
