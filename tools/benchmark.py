"""How fast a .adt file opens and runs, next to the dense float32 ONNX model of the same network run
by ONNX Runtime (the baseline a device would otherwise ship): the measurements behind ``adt bench``,
public for the research benchmarks.

Every number is a median over ``repeats`` runs in this process (module imports are warmed up first
and not counted):

* open+decode: ``read_adt`` (read, CRC-32, parse, Huffman-decode); rebuild: ``rebuild_weights``;
* per engine (numpy, onnxruntime): cold start = ``adt.runtime.load(path)`` + the first batch-1 run
  (open .adt -> first output; also split into its two parts, "load" and "first run"), and steady-state
  batch-1 / batch-64 latency of ``Model.run`` (``max(4 x repeats, 20)`` runs);
* dense baseline: the dense ONNX model (``Model.onnx_bytes()``, rebuilt weights as initializers)
  written to a temporary .onnx file; cold start = ``onnxruntime.InferenceSession(path)`` ("load") +
  the first batch-1 run; steady-state batch-1 / batch-64 latency of ``session.run``;
* the engines and the baseline take turns in blocks of runs (:func:`blocked`), so that load from
  other processes hits them alike and the ratios compare like with like;
* peak resident memory of the load (``adt.runtime.load`` with the numpy engine), measured in a fresh
  subprocess (see :func:`measure_peak` for the method, which the output names).

Public: :func:`bench`, :func:`bench_threads`, :func:`render_bench`, :func:`median_time`, :func:`blocked`,
:func:`measure_peak`, :func:`peak_memory`, :func:`limit_ort_threads`, :data:`THREAD_ENV`.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

import adt.runtime as rt
from adt.runtime.format import AdtError, read_adt
from adt.tools.errors import CommandError
from adt.tools.inspect_report import safe_text
from adt.tools.scoring import concrete_input_shape

__all__ = ["THREAD_ENV", "bench", "bench_threads", "blocked", "limit_ort_threads", "measure_peak",
           "median_time", "peak_memory", "render_bench"]


# -- timing helpers ------------------------------------------------------------------------------
def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


# -- peak memory -------------------------------------------------------------------------------
def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measure_peak(load: Callable[[], object]) -> dict:
    """Peak resident memory added by ``load()`` in THIS process (call it in a fresh subprocess).

    Linux: reset the peak (VmHWM) to the current RSS through /proc/self/clear_refs, then peak minus
    the RSS before. Elsewhere: ru_maxrss after minus before (an under-estimate when imports peaked
    higher than the load). The result says which method it used.
    """
    before = _proc_status("VmRSS")
    reset = False
    if before is not None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            hwm = _proc_status("VmHWM")
            reset = hwm is not None and hwm <= before + (1 << 20)
        except OSError:
            reset = False
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    kept = load()
    if reset:
        peak, method = _proc_status("VmHWM") - before, "Linux VmHWM (reset via /proc/self/clear_refs) minus VmRSS before"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - ru_before
        method = "ru_maxrss delta (under-estimates if imports peaked higher)"
    del kept
    return {"peak_bytes": int(peak), "method": method}


def _child_load(path: str, max_memory: int | None = rt.DEFAULT_MAX_MEMORY) -> None:
    # Import everything the load touches first, so the measurement is the load, not module code.
    import adt.runtime.numpy_engine  # noqa: F401
    import adt.runtime.rebuild  # noqa: F401
    result = measure_peak(lambda: rt.load(path, engine="numpy", max_memory=max_memory))
    print(json.dumps(result))


def peak_memory(path: str | Path, max_memory: int | None = rt.DEFAULT_MAX_MEMORY) -> dict:
    """Peak resident memory of ``adt.runtime.load(path, max_memory=...)`` (numpy engine) in a fresh process."""
    code = f"from adt.tools.benchmark import _child_load; _child_load({str(path)!r}, {max_memory!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise CommandError(f"peak-memory subprocess failed: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the benchmark -------------------------------------------------------------------------------
def _session_options(ort):
    """The same session options the runtime's onnxruntime engine uses, so the baseline is fair."""
    try:
        from adt.runtime.ort_engine import session_options
        return session_options()
    except (ImportError, AttributeError):
        return ort.SessionOptions()


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages: other processes on a small machine move every latency."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _split(load: Callable[[], object], first: Callable[[object], object],
           into: list[tuple[float, float]]) -> Callable[[], object]:
    """A cold start ``first(load())`` that also records the two parts' times into ``into``."""
    def cold():
        t0 = time.perf_counter()
        m = load()
        t1 = time.perf_counter()
        first(m)
        into.append((t1 - t0, time.perf_counter() - t1))
    return cold


def blocked(fns: dict[str, Callable[[], object]], runs: int, rounds: int = 3, warm: int = 2) -> dict[str, float]:
    """Median wall time of each function over ``runs`` timed calls, made in ``rounds`` blocks that take
    turns (A-block, B-block, C-block, A-block, ...), each block starting with ``warm`` untimed calls.

    Blocks, not single calls in turn: with 2 cores, NumPy's OpenBLAS threads and ONNX Runtime's
    thread pool slow each other down for milliseconds after a switch (measured: a LeNet-5 batch-1
    NumPy run right after an ORT run takes ~20x longer), which no single engine on a device would see.
    Taking turns by block still spreads drifting load from other processes over all of them alike."""
    rounds = max(1, min(rounds, runs))
    per = [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]
    times: dict[str, list[float]] = {k: [] for k in fns}
    for n in per:
        for k, fn in fns.items():
            for _ in range(warm):
                fn()
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_ort_threads(n: int) -> None:
    """Give every onnxruntime session made from now on (the runtime's engine, which asks
    ``adt.runtime.ort_engine.session_options`` for its options, and the dense baseline) ``n``
    intra-op threads. Benchmark-only: it rebinds that function in this process."""
    from adt.runtime import ort_engine

    base = ort_engine.session_options

    def limited():
        so = base()
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
        return so
    ort_engine.session_options = limited


def bench(path: str | Path, repeats: int = 5, memory: bool = True, threads: int | None = None,
          max_memory: int | None = rt.DEFAULT_MAX_MEMORY) -> dict:
    """All measurements for one file (see the module doc); seconds, bytes. With ``threads``, call it
    in a process whose BLAS was limited by THREAD_ENV before NumPy was imported (see :func:`bench_threads`).
    ``max_memory``: every load's limit (``adt.runtime.load``)."""
    if threads:
        limit_ort_threads(threads)
    path = Path(path)
    f = read_adt(path)  # warm-up, and the architecture check
    if f.architecture is None:
        raise CommandError(f"{safe_text(path, None)} has no architecture section: nothing to run")
    first = rt.load(path, engine="numpy", max_memory=max_memory)
    shape1 = concrete_input_shape(first)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal(shape1).astype(np.float32)
    x64 = rng.standard_normal((64,) + shape1[1:]).astype(np.float32)
    first.run(x1)

    out: dict = {"file": str(path), "file_bytes": path.stat().st_size, "repeats": repeats,
                 "cpus": os.cpu_count(), "loadavg_before": _loadavg(),
                 "threads": threads or "library defaults",
                 "input_shape": list(shape1[1:]), "dense_float32_bytes": f.original_float32_bytes()}
    out["open_decode_s"], _ = median_time(lambda: read_adt(path), repeats)
    out["rebuild_s"], _ = median_time(lambda: rt.rebuild_weights(f, max_memory), repeats)

    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    missing = {"skipped": "onnxruntime is not installed (pip install 'adt[onnx]')"}
    engines: dict[str, dict] = {"numpy": {}, "onnxruntime": {}, "dense_onnxruntime": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cold: dict[str, Callable[[], object]] = {}
        splits: dict[str, list[tuple[float, float]]] = {}  # (load or session, first run) per cold start
        run1: dict[str, Callable[[], object]] = {}
        run64: dict[str, Callable[[], object]] = {}
        for engine in ("numpy", "onnxruntime"):
            if engine == "onnxruntime" and ort is None:
                engines[engine] = dict(missing)
                continue
            m = rt.load(path, engine=engine, max_memory=max_memory)  # also warms the engine's imports
            m.run(x1)
            cold[engine] = _split(lambda engine=engine: rt.load(path, engine=engine, max_memory=max_memory), lambda m: m.run(x1),
                                  splits.setdefault(engine, []))
            run1[engine] = lambda m=m: m.run(x1)
            run64[engine] = lambda m=m: m.run(x64)
        if ort is None:
            engines["dense_onnxruntime"] = dict(missing)
        else:
            onnx_path = Path(tmp) / "dense.onnx"
            onnx_path.write_bytes(first.onnx_bytes())
            engines["dense_onnxruntime"]["onnx_bytes"] = onnx_path.stat().st_size
            opts = _session_options(ort)

            def session():
                return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
            s = session()
            name = s.get_inputs()[0].name
            s.run(None, {name: x1})
            cold["dense_onnxruntime"] = _split(session, lambda sess: sess.run(None, {name: x1}),
                                               splits.setdefault("dense_onnxruntime", []))
            run1["dense_onnxruntime"] = lambda: s.run(None, {name: x1})
            run64["dense_onnxruntime"] = lambda: s.run(None, {name: x64})
        steady_n = max(4 * repeats, 20)
        for key, fns, n, n_warm in (("cold_start_s", cold, repeats, 1), ("batch1_s", run1, steady_n, 2),
                                    ("batch64_s", run64, steady_n, 2)):
            for engine, t in blocked(fns, n, warm=n_warm).items():
                engines[engine][key] = t
        for engine, pairs in splits.items():  # warm-up calls included: they are cold starts too
            engines[engine]["load_s"] = statistics.median(a for a, _ in pairs)
            engines[engine]["first_run_s"] = statistics.median(b for _, b in pairs)
    out["engines"] = engines

    base = engines["dense_onnxruntime"]
    ratios = {}
    if "skipped" not in base:
        for engine in ("numpy", "onnxruntime"):
            e = engines[engine]
            if "skipped" in e:
                continue
            for key in ("cold_start_s", "batch1_s", "batch64_s"):
                ratios[f"{engine}_{key[:-2]}_vs_dense"] = e[key] / base[key]
    out["ratios_vs_dense"] = ratios
    out["loadavg_after"] = _loadavg()
    out["memory"] = peak_memory(path, max_memory) if memory else None
    if out["memory"]:
        out["memory"]["over_dense_float32"] = out["memory"]["peak_bytes"] / out["dense_float32_bytes"]
    return out


def _ms(s: float) -> str:
    return f"{1e3 * s:9.3f} ms"


def render_bench(result: dict) -> str:
    """The result of :func:`bench` as a plain-text table (file names escaped)."""
    e = result["engines"]
    lines = [f"{safe_text(result['file'], None)}: {result['file_bytes']:,} bytes, input {result['input_shape']}, "
             f"medians of {result['repeats']} runs (latencies: of max(4 x repeats, 20)), threads: {result['threads']}",
             f"  open+decode            {_ms(result['open_decode_s'])}",
             f"  rebuild weights        {_ms(result['rebuild_s'])}",
             "",
             f"  {'':24} {'load':>12} {'first run':>12} {'cold start':>12} {'batch 1':>12} {'batch 64':>12}"]
    labels = {"numpy": ".adt numpy engine", "onnxruntime": ".adt onnxruntime engine",
              "dense_onnxruntime": "dense .onnx + ORT"}
    for key, label in labels.items():
        r = e.get(key, {})
        if "skipped" in r:
            lines.append(f"  {label:24} skipped: {r['skipped']}")
        else:
            lines.append(f"  {label:24} {_ms(r['load_s'])} {_ms(r['first_run_s'])} {_ms(r['cold_start_s'])} "
                         f"{_ms(r['batch1_s'])} {_ms(r['batch64_s'])}")
    if result["ratios_vs_dense"]:
        lines += ["", "  vs the dense baseline (lower is faster):"]
        for engine in ("numpy", "onnxruntime"):
            rr = {k.split("_", 1)[1].rsplit("_vs", 1)[0]: v for k, v in result["ratios_vs_dense"].items()
                  if k.startswith(engine + "_")}
            if rr:
                lines.append(f"  {labels[engine]:24} " + "  ".join(f"{k.replace('_', ' ')} {v:.2f}x" for k, v in rr.items()))
    if result.get("loadavg_before"):
        lines += ["", f"  load average before/after: {result['loadavg_before'][0]:.2f} / {result['loadavg_after'][0]:.2f}"
                      f" on {result['cpus']} CPUs (other processes slow every engine, NumPy's threaded BLAS most)"]
    mem = result["memory"]
    if mem:
        lines += ["", f"  peak memory of the load: {mem['peak_bytes'] / 2**20:.1f} MiB "
                      f"({mem['over_dense_float32']:.2f}x the dense float32 weights; {mem['method']})"]
    return "\n".join(lines) + "\n"


def _child_bench(path: str, repeats: int, memory: bool, threads: int,
                 max_memory: int | None = rt.DEFAULT_MAX_MEMORY) -> None:
    """Entry point of the --threads child: prints the result (or the error) as JSON."""
    try:
        result = bench(path, repeats, memory, threads, max_memory)
    except AdtError as exc:  # CommandError included
        result = {"error": str(exc)}
    print(json.dumps(result))


def bench_threads(path: str | Path, repeats: int, memory: bool, threads: int,
                  max_memory: int | None = rt.DEFAULT_MAX_MEMORY) -> dict:
    """:func:`bench` in a child process whose BLAS and ORT pools have ``threads`` threads."""
    env = dict(os.environ, **{k: str(threads) for k in THREAD_ENV})
    code = (f"from adt.tools.benchmark import _child_bench; "
            f"_child_bench({str(path)!r}, {repeats}, {memory!r}, {threads}, {max_memory!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise CommandError(f"benchmark subprocess failed: {last}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise CommandError(result["error"])
    return result
