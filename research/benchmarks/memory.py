"""Peak memory of loading and running a .adt file with the NumPy engine (issue 18, part 6: large
models on small memory): LeNet-5, a ResNet-18-shaped net and WRN-28-10 (36.5M parameters).

Each file comes from :mod:`research.benchmarks.nets` (runnable graphs with random weights: the
memory does not depend on the values). For each, a fresh Python process (``adt.tools.benchmark``'s
:func:`~adt.tools.benchmark.peak_memory`, the figures ``adt bench`` reports) imports the runtime,
makes the batch-1 input, then

* resets the peak resident set (VmHWM) to the current resident set by writing "5" to
  /proc/self/clear_refs (the JSON says when that was not possible: then it is ru_maxrss deltas),
* ``adt.runtime.load(path)`` (numpy engine, default ``max_memory``): read, decode, rebuild, engine
  preparation with its load-time rewrites -> **load peak** = VmHWM - VmRSS before the load,
* ``model.run(x)`` on one input -> **run peak** = VmHWM - VmRSS before the load: from just before the
  load to just after the first batch-1 output, activations and work space included.

Each figure is the largest of ``--repeats`` fresh processes, over the dense float32 bytes of the
weights (4 x parameters). Issue 18's target: WRN-28-10's run peak <= 1.1x. The rebuild budget
(``check_rebuild_budget``, what ``load(max_memory=...)`` is checked against, computed from the tables
before anything is rebuilt) is listed beside it, with the traced peak of the rebuild alone
(tracemalloc, one more fresh process; the decode before it is not traced) that it bounds.

BLAS threads: 1 by default (``--threads``; 0 keeps the library default): a board-like setting, and
OpenBLAS buffers grow with its thread count.

Run (from the repository root):
    .venv/bin/python -m research.benchmarks.memory [--repeats 3] [--threads 1] [--out results/memory.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from research.benchmarks.threads import limit_blas_threads_from_argv

if __name__ == "__main__" and "--child" not in sys.argv:
    limit_blas_threads_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402

from adt.runtime.format import read_adt, write_atomic  # noqa: E402
from adt.runtime.rebuild import check_rebuild_budget  # noqa: E402
from adt.tools.benchmark import measure_peak, peak_memory  # noqa: E402
from research.benchmarks.nets import NETS  # noqa: E402
from research.paths import REPO, RESULTS  # noqa: E402

__all__ = ["MODELS", "TARGET_WRN_RUN_X", "main", "measure_model", "render_md", "traced_rebuild_peak"]

#: The nets measured, with their labels.
MODELS = {"lenet5": "LeNet-5", "resnet18": "ResNet-18-shaped (3x32x32)", "wrn_28_10": "WRN-28-10"}
TARGET_WRN_RUN_X = 1.1


def traced_rebuild_peak(path: str) -> dict:
    """In THIS (fresh) process: tracemalloc's peak of the rebuild alone (the file decoded first; its
    symbols released as they are used, as ``load`` does), above what was allocated before it: the
    figure the rebuild budget bounds."""
    import tracemalloc

    from adt.runtime.rebuild import _iter_weights
    f = read_adt(path)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    weights = dict(_iter_weights(f, None, release=True))
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return {"traced_rebuild_peak_bytes": peak, "weights_bytes": sum(w.nbytes for w in weights.values())}


def _child(mode: str, path: Path) -> dict:
    """This module run in a fresh interpreter with ``mode`` (--child: traced rebuild; --child-read:
    peak RSS of read_adt alone); its JSON line."""
    out = subprocess.run([sys.executable, "-m", "research.benchmarks.memory", mode, str(path)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_model(name: str, workdir: Path, repeats: int) -> dict:
    build, in_shape = NETS[name]
    path = workdir / f"{name}.adt"
    build(str(path))
    f = read_adt(path)
    dense = f.original_float32_bytes()
    runs = [peak_memory(path, input_shape=(1,) + tuple(in_shape)) for _ in range(max(1, repeats))]
    load_peak = max(r["peak_bytes"] for r in runs)
    run_peak = max(r["run_peak_bytes"] for r in runs)
    traced = _child("--child", path)
    read = max(_child("--child-read", path)["peak_bytes"] for _ in range(max(1, repeats)))
    return {
        "model": name, "label": MODELS[name], "parameters": dense // 4, "dense_float32_bytes": dense,
        "file_bytes": path.stat().st_size, "input_shape": [1] + list(in_shape),
        "load_peak_bytes": load_peak, "run_peak_bytes": run_peak,
        "load_over_dense": load_peak / dense, "run_over_dense": run_peak / dense,
        "load_peaks_all": [r["peak_bytes"] for r in runs], "run_peaks_all": [r["run_peak_bytes"] for r in runs],
        "method": runs[0]["method"], "run_covers": runs[0].get("run_covers"),
        "read_peak_bytes": read, "read_over_dense": read / dense,
        "rebuild_budget_bytes": check_rebuild_budget(f, None).peak,
        "traced_rebuild_peak_bytes": traced["traced_rebuild_peak_bytes"],
    }


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


def render_md(result: dict) -> str:
    """A Markdown summary of the JSON (every number comes from it)."""
    m = result["machine"]
    lines = [
        "# Peak memory: load, and load + first batch-1 run (NumPy engine)",
        "",
        f"Generated by `{result['command']}` with the JSON beside this file (Python {m['python']}, NumPy "
        f"{m['numpy']}, {m['cpus']} CPUs, BLAS threads {m['blas_threads']}; load average "
        f"{result['loadavg_before'][0]:.2f} before, {result['loadavg_after'][0]:.2f} after). Each figure: the "
        f"largest of {result['repeats']} fresh processes. Method: {result['models'][0]['method']}; the run "
        f"figure covers {result['models'][0]['run_covers']}.",
        "",
        "| model | parameters | dense float32 | .adt file | read_adt alone | load peak | load + first run peak "
        "| rebuild budget | traced rebuild peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["models"]:
        lines.append(
            f"| {r['label']} | {r['parameters']:,} | {_mib(r['dense_float32_bytes'])} | {r['file_bytes']:,} B | "
            f"{_mib(r['read_peak_bytes'])} ({r['read_over_dense']:.3f}x) | "
            f"{_mib(r['load_peak_bytes'])} ({r['load_over_dense']:.3f}x) | "
            f"{_mib(r['run_peak_bytes'])} ({r['run_over_dense']:.3f}x) | "
            f"{_mib(r['rebuild_budget_bytes'])} | {_mib(r['traced_rebuild_peak_bytes'])} |")
    lines += ["", "Targets:", ""]
    for t in result["targets"]:
        lines.append(f"- `{t['id']}` ({t['target']}): {t['measured']:.3f}{t['unit']}, "
                     f"{'met' if t['met'] else 'MISSED'} ({t['detail']})")
    lines += ["", "read_adt alone: the peak of decoding the file (fresh process), before any weight is rebuilt; "
                  "where it is above the load's other steps (a file of many plain-stored values, like the "
                  "ResNet-18-shaped one: 11.7M symbols), it sets the model's peak. A small model's figure also "
                  "depends on how much memory the imports freed before the measurement (the load reuses it): "
                  "compare large models. The rebuild budget is an upper bound of the traced rebuild (Python "
                  "objects included)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per model (the largest peak is reported)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--out", default=str(RESULTS / "memory.json"), help="the JSON (the .md goes beside it)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads (0 = the library default; only honoured on this script's command line)")
    ap.add_argument("--child", metavar="PATH", help=argparse.SUPPRESS)
    ap.add_argument("--child-read", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(traced_rebuild_peak(args.child)))
        return 0
    if args.child_read:
        import adt.runtime.format.reader  # noqa: F401  (imports before the measurement)
        print(json.dumps(measure_peak(lambda: read_adt(args.child_read))))
        return 0
    loadavg_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure_model(name, Path(tmp), args.repeats) for name in args.models]
    targets = []
    wrn = next((r for r in rows if r["model"] == "wrn_28_10"), None)
    if wrn:
        targets.append({
            "id": "wrn_28_10_peak_run_b1", "target": f"<= {TARGET_WRN_RUN_X}x dense float32",
            "measured": round(wrn["run_over_dense"], 4), "unit": "x", "limit": TARGET_WRN_RUN_X,
            "met": wrn["run_over_dense"] <= TARGET_WRN_RUN_X,
            "detail": f"peak RSS from before load to after the first batch-1 output {_mib(wrn['run_peak_bytes'])} "
                      f"over {_mib(wrn['dense_float32_bytes'])} of float32 weights (load alone "
                      f"{wrn['load_over_dense']:.3f}x); largest of {args.repeats} fresh processes, "
                      f"NumPy engine, BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}",
        })
    result = {
        "benchmark": "research/benchmarks/memory.py",
        "command": f"python -m research.benchmarks.memory --repeats {args.repeats} --threads {args.threads}",
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "library default")},
        "loadavg_before": loadavg_before, "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "repeats": args.repeats, "targets": targets,
        # one flat row per model, for results/boards.md (research/boards/report.py copies it)
        "table": [{"model": r["label"], "parameters": r["parameters"],
                   "dense float32 MiB": round(r["dense_float32_bytes"] / 2 ** 20, 1),
                   "read_adt alone MiB": round(r["read_peak_bytes"] / 2 ** 20, 1),
                   "load peak MiB": round(r["load_peak_bytes"] / 2 ** 20, 1),
                   "load + first b1 run MiB": round(r["run_peak_bytes"] / 2 ** 20, 1),
                   "load + run / dense": round(r["run_over_dense"], 3)} for r in rows],
        "models": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, (json.dumps(result, indent=1) + "\n").encode())
    write_atomic(out.with_suffix(".md"), render_md(result).encode())
    for r in rows:
        print(f"{r['model']:>10}: dense {_mib(r['dense_float32_bytes'])}, load {_mib(r['load_peak_bytes'])} "
              f"({r['load_over_dense']:.3f}x), load+run {_mib(r['run_peak_bytes'])} ({r['run_over_dense']:.3f}x), "
              f"budget {_mib(r['rebuild_budget_bytes'])}, traced rebuild {_mib(r['traced_rebuild_peak_bytes'])}")
    for t in targets:
        print(f"{t['id']}: {t['measured']} ({'met' if t['met'] else 'MISSED'})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
