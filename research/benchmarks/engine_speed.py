"""NumPy engine vs ONNX Runtime on the dense model, side by side (issue 18, part 4: <= 2x ORT).

For each net of :mod:`research.benchmarks.nets` (LeNet-5, ResNet-20, ResNet-18-shaped on 3x32x32,
MobileNetV2 on 3x128x128), batch 1 and 64, and two thread settings:

  threads=1        OPENBLAS/OMP/MKL_NUM_THREADS=1 set before NumPy is imported; ORT intra_op=1, inter_op=1
  threads=default  no thread variables; ORT's default session options (the runtime's, as ``adt bench``)

the NumPy engine (``adt.runtime.load(file)``, load-time rewrites included) and an ONNX Runtime session
on the same model made dense the way ``adt to-onnx`` does (``Model.onnx_bytes()``) run the same random
batch; the times are medians of interleaved blocks (``adt.tools.benchmark.blocked``). Each thread
setting runs in its own child process (thread variables are read at import). The outputs of the two
engines are compared too (max abs difference over max abs value).

Writes results/engine_speed.json ("table": one row per net/batch/threads; "targets": one per row,
limit 2.0x) and results/engine_speed.md.

    .venv/bin/python -m research.benchmarks.engine_speed [--nets lenet5,resnet20] [--out results/engine_speed.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["BATCHES", "LIMIT", "NETS_BENCHED", "NOTE_DEFAULT_THREADS", "THREADS", "child", "main", "op_profile",
           "render_md", "runs_for"]

NETS_BENCHED = ("lenet5", "resnet20", "resnet18", "mobilenetv2")
BATCHES = (1, 64)
THREADS = ("1", "default")
LIMIT = 2.0
_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
NOTE_DEFAULT_THREADS = (
    "Default threads: NumPy's OpenBLAS splits every matrix product above its size threshold over all "
    "cores and hands the work to its threads on each call, while the engine's elementwise work stays on "
    "one thread. The engine makes many cache-sized products per run, so on a shared machine (see the "
    "load averages) each handoff can wait for a scheduler slice; ONNX Runtime's own pool does not pay "
    "that per product, so the default-thread ratios are worse than the one-thread ones and the NumPy "
    "engine can even be slower with its default threads than with OPENBLAS_NUM_THREADS=1.")


def runs_for(seconds_per_run: float, budget_s: float = 4.0, lo: int = 5, hi: int = 60) -> int:
    """Timed runs per engine: as many as fit ``budget_s`` (at least ``lo``, at most ``hi``)."""
    return int(max(lo, min(hi, budget_s / max(seconds_per_run, 1e-6))))


def child(threads: str, nets: list[str], workdir: str, budget_s: float = 4.0) -> list[dict]:
    """Run in a fresh process whose thread variables are already set: every net and batch
    (``budget_s``: about how long each engine is timed per row)."""
    import numpy as np
    import onnxruntime as ort

    import adt.runtime as rt
    from adt.runtime.numpy_engine import NumpyEngine
    from adt.tools.benchmark import blocked, median_time
    from research.benchmarks.nets import NETS

    rows = []
    for name in nets:
        builder, shape = NETS[name]
        path = Path(workdir) / f"{name}.adt"
        if not path.exists():
            builder(path)
        model = rt.load(path)
        stored = rt.load(path, engine=None)
        plain = NumpyEngine(stored.architecture, stored.weights, rewrites=False)
        so = ort.SessionOptions()
        if threads == "1":
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.onnx_bytes(), so, providers=["CPUExecutionProvider"])
        iname = sess.get_inputs()[0].name
        for batch in BATCHES:
            x = np.random.default_rng(batch).standard_normal((batch,) + shape).astype(np.float32)
            y_np = model.run(x)
            y_ort = sess.run(None, {iname: x})[0]
            err = float(np.abs(y_np - y_ort).max() / max(float(np.abs(y_ort).max()), 1e-30))
            t0 = time.perf_counter()
            sess.run(None, {iname: x})
            model.run(x)
            n = runs_for((time.perf_counter() - t0) / 2, budget_s)
            med = blocked({"numpy": lambda: model.run(x), "ort": lambda: sess.run(None, {iname: x})}, n, rounds=3)
            # the graph as stored (no load-time rewrites: the engine's kernels before issue 18), fewer runs
            plain_s, _ = median_time(lambda: plain.run({iname: x}), max(3, min(n, 15)))
            rows.append({"net": name, "input": list(shape), "batch": batch, "threads": threads,
                         "numpy_ms": round(med["numpy"] * 1e3, 3), "ort_ms": round(med["ort"] * 1e3, 3),
                         "ratio": round(med["numpy"] / med["ort"], 3), "runs": n, "rel_err": err,
                         "unrewritten_ms": round(plain_s * 1e3, 3),
                         "unrewritten_ratio": round(plain_s / med["ort"], 3)})
            if threads == "1":
                rows[-1]["profile_ms"] = op_profile(model, x, max(2, min(n, 20)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def op_profile(model, x, runs: int) -> dict[str, float]:
    """Milliseconds per run spent in each op type of the NumPy engine (its fused ops included),
    largest first: where the time goes."""
    import time as _time
    from collections import Counter
    eng = model._runner
    tot: Counter = Counter()
    saved = eng._steps

    def timed(fn, op):
        def f(*a):
            t0 = _time.perf_counter()
            r = fn(*a)
            tot[op] += _time.perf_counter() - t0
            return r
        return f
    eng._steps = [(timed(fn, node.op_type + ("/depthwise" if node.attrs.get("packing") is not None
                                             and node.attrs["packing"].value == 1 else "")), node, ins, free)
                  for fn, node, ins, free in saved]
    try:
        t0 = _time.perf_counter()
        for _ in range(runs):
            model.run(x)
        total = _time.perf_counter() - t0
    finally:
        eng._steps = saved
    out = {op: round(v / runs * 1e3, 3) for op, v in tot.most_common()}
    out["(engine overhead)"] = round((total - sum(tot.values())) / runs * 1e3, 3)
    return out


def _run_child(threads: str, nets: list[str], workdir: str, budget_s: float) -> list[dict]:
    env = dict(os.environ)
    for k in _ENV:
        env.pop(k, None)
    if threads == "1":
        env.update({k: "1" for k in _ENV})
    out = subprocess.run([sys.executable, "-m", "research.benchmarks.engine_speed", "--child", threads,
                          "--nets", ",".join(nets), "--workdir", workdir, "--budget", str(budget_s)],
                         env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout)


def render_md(result: dict) -> str:
    lines = ["# NumPy engine vs ONNX Runtime (dense model)", "",
             f"Command: `{result['command']}`. Machine: {result['machine']['cpus']} CPUs, "
             f"{result['machine']['platform']}, Python {result['machine']['python']}, numpy "
             f"{result['machine']['numpy']}, onnxruntime {result['machine']['onnxruntime']}. "
             f"Load average before/after: {result['loadavg_before']} / {result['loadavg_after']}.", "",
             "Medians of interleaved blocks in one run; threads=1: BLAS and ORT limited to one thread, "
             "default: each library's default. Target: ratio <= 2.0.", "",
             "| net | input | batch | threads | NumPy ms | ORT ms | ratio | met | unrewritten ms (ratio) | runs "
             "| rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["table"]:
        lines.append(f"| {r['net']} | {'x'.join(map(str, r['input']))} | {r['batch']} | {r['threads']} | "
                     f"{r['numpy_ms']:.2f} | {r['ort_ms']:.2f} | {r['ratio']:.2f}x | "
                     f"{'yes' if r['ratio'] <= LIMIT else 'no'} | {r['unrewritten_ms']:.2f} "
                     f"({r['unrewritten_ratio']:.2f}x) | {r['runs']} | {r['rel_err']:.1e} |")
    met = sum(t["met"] for t in result["targets"])
    lines += ["", f"{met} of {len(result['targets'])} targets met. \"unrewritten\": the same engine on the graph "
              "as stored (`NumpyEngine(..., rewrites=False)`: no BatchNorm folding or fused kernels, the conv "
              "kernel of before issue 18), median of fewer runs; rel. diff: max |NumPy - ORT| / max |ORT|.", "",
              NOTE_DEFAULT_THREADS, "",
              "## Where the NumPy engine's time goes (threads=1, ms per run by op type)", ""]
    for r in result["table"]:
        prof = r.get("profile_ms")
        if prof:
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(prof.items())[:6])
            lines.append(f"- {r['net']} batch {r['batch']}: {top}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.engine_speed", description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default=",".join(NETS_BENCHED))
    ap.add_argument("--threads", default=",".join(THREADS), help="thread settings: 1, default")
    ap.add_argument("--out", default=None, help="results JSON (default results/engine_speed.json; .md beside it)")
    ap.add_argument("--budget", type=float, default=4.0, help="seconds each engine is timed per row (about)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    nets = [n for n in a.nets.split(",") if n]
    if a.child is not None:
        json.dump(child(a.child, nets, a.workdir, a.budget), sys.stdout)
        return {}
    import numpy as np
    import onnxruntime as ort
    from research.paths import RESULTS

    before = [round(v, 2) for v in os.getloadavg()]
    table = []
    with tempfile.TemporaryDirectory() as work:
        for threads in a.threads.split(","):
            table += _run_child(threads, nets, work, a.budget)
    after = [round(v, 2) for v in os.getloadavg()]
    targets = [{"id": f"engine_{r['net']}_b{r['batch']}_{'1thread' if r['threads'] == '1' else 'default_threads'}",
                "target": "<= 2.0x ONNX Runtime", "measured": r["ratio"], "unit": "x", "limit": LIMIT,
                "met": r["ratio"] <= LIMIT,
                "detail": f"numpy {r['numpy_ms']:.2f} ms vs ORT {r['ort_ms']:.2f} ms, batch {r['batch']}, "
                          f"threads {r['threads']}, median of {r['runs']}"} for r in table]
    result = {"table": table, "targets": targets,
              "machine": {"python": platform.python_version(), "numpy": np.__version__,
                          "onnxruntime": ort.__version__, "cpus": os.cpu_count(), "platform": platform.platform()},
              "loadavg_before": before, "loadavg_after": after, "note_default_threads": NOTE_DEFAULT_THREADS,
              "command": ".venv/bin/python -m research.benchmarks.engine_speed"}
    out = Path(a.out) if a.out else RESULTS / "engine_speed.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(render_md(result))
    print(render_md(result))
    return result


if __name__ == "__main__":
    main()
