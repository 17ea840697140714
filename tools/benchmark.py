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
* peak resident memory of the load (``adt.runtime.load`` with the numpy engine) and of the load plus
  the first batch-1 run (activations included), measured in one fresh subprocess from just before
  the load (see :func:`measure_peak` for the method, which the output names).

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
from types import SimpleNamespace
from typing import Callable

import numpy as np

import adt.runtime as rt
from adt.runtime.format import AdtError, read_adt
from adt.runtime.onnx_proto import parse_model
from adt.tools.errors import CommandError
from adt.tools.inspect_report import safe_text
from adt.tools.scoring import concrete_input_shape

__all__ = ["RUN_COVERS", "THREAD_ENV", "bench", "bench_threads", "blocked", "input_shape_of", "limit_ort_threads",
           "measure_peak", "median_time", "peak_memory", "render_bench"]


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


def measure_peak(load: Callable[[], object], then: Callable[[object], object] | None = None) -> dict:
    """Peak resident memory added by ``load()`` in THIS process (call it in a fresh subprocess), and
    with ``then``, by ``load()`` followed by ``then(loaded)`` (the model kept alive meanwhile).

    Linux: reset the peak (VmHWM) to the current RSS through /proc/self/clear_refs, then peak minus
    the RSS before ``load()``. Elsewhere: ru_maxrss after minus before (an under-estimate when imports
    peaked higher than the load). ``peak_bytes``: up to the end of ``load()``; ``run_peak_bytes``
    (with ``then``): from before ``load()`` to the end of ``then`` (so never below ``peak_bytes``).
    The result says which method it used.
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

    def peak() -> int:
        if reset:
            return _proc_status("VmHWM") - before
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - ru_before
    kept = load()
    result = {"peak_bytes": int(peak())}
    if then is not None:
        then(kept)
        result["run_peak_bytes"] = int(peak())
    result["method"] = ("Linux VmHWM (reset via /proc/self/clear_refs) minus VmRSS before" if reset
                        else "ru_maxrss delta (under-estimates if imports peaked higher)")
    del kept
    return result


RUN_COVERS = ("adt.runtime.load(path) (numpy engine: read, decode, rebuild, engine preparation) and then "
              "the first batch-1 run, in one fresh process, the model kept alive: activations and the "
              "engine's work space included; the input array and every import are made before the "
              "measurement starts")


def _child_load(path: str, max_memory: int | None = rt.DEFAULT_MAX_MEMORY,
                input_shape: list[int] | None = None) -> None:
    # Import everything the load and the run touch first, and make the input, so that the
    # measurement is the model, not module code; nothing of the file is read before it (freed
    # memory would be reused by the load and hide part of its peak).
    import adt.runtime.numpy_engine  # noqa: F401
    import adt.runtime.rebuild  # noqa: F401
    if input_shape is None:
        result = measure_peak(lambda: rt.load(path, engine="numpy", max_memory=max_memory))
    else:
        x1 = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
        result = measure_peak(lambda: rt.load(path, engine="numpy", max_memory=max_memory), lambda m: m.run(x1))
        result["run_covers"] = RUN_COVERS
    print(json.dumps(result))


def input_shape_of(path: str | Path) -> tuple[int, ...] | None:
    """The batch-1 input shape of the file's architecture (None without one), read from its graph
    without rebuilding any weight."""
    f = read_adt(path)
    if f.architecture is None:
        return None
    graph = parse_model(f.architecture).graph
    consts = {p.name for p in f.params} | {t.name for t in graph.initializers}
    inputs = [vi for vi in graph.inputs if vi.name not in consts]
    if not inputs:
        return None
    return concrete_input_shape(SimpleNamespace(input_shape=None if inputs[0].shape is None else list(inputs[0].shape)))


def peak_memory(path: str | Path, max_memory: int | None = rt.DEFAULT_MAX_MEMORY,
                input_shape: tuple[int, ...] | None = None) -> dict:
    """Peak resident memory of ``adt.runtime.load(path, max_memory=...)`` (numpy engine) in a fresh
    process (``peak_bytes``) and, for a file with an architecture, of that load plus the first batch-1
    run on ``input_shape`` (default: :func:`input_shape_of`, worked out here, not in the child):
    ``run_peak_bytes``, with what it covers in ``run_covers``. See :func:`measure_peak`."""
    if input_shape is None:
        input_shape = input_shape_of(path)
    shape = None if input_shape is None else [int(d) for d in input_shape]
    code = f"from adt.tools.benchmark import _child_load; _child_load({str(path)!r}, {max_memory!r}, {shape!r})"
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
    """Give every onnxruntime session made from now on in this process (the runtime's engine and
    the dense baseline, which both take ``adt.runtime.ort_engine.session_options``) ``n`` intra-op
    threads and one inter-op thread, through the runtime's public
    :func:`adt.runtime.ort_engine.configure_threads`."""
    from adt.runtime.ort_engine import configure_threads
    configure_threads(intra=n, inter=1)


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
    out["memory"] = peak_memory(path, max_memory, shape1) if memory else None
    if out["memory"]:
        out["memory"]["over_dense_float32"] = out["memory"]["peak_bytes"] / out["dense_float32_bytes"]
        if "run_peak_bytes" in out["memory"]:
            out["memory"]["run_over_dense_float32"] = out["memory"]["run_peak_bytes"] / out["dense_float32_bytes"]
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
        if "run_peak_bytes" in mem:
            lines.append(f"  peak memory of the load + first batch-1 run: {mem['run_peak_bytes'] / 2**20:.1f} MiB "
                         f"({mem['run_over_dense_float32']:.2f}x the dense float32 weights; activations included)")
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
