"""Scale benchmark: what exporting and loading a .adt file costs, from LeNet-5 to Wide-ResNet-28-10.

The WRN-28-10 file uses the paper's layer shapes and ADA-Tucker settings (appendix Table 13: the 24
3x3 block convolutions, each reshaped and given its own Tucker core); the stem conv, the three 1x1
shortcut convs, every BatchNorm (weight, bias, running mean and variance) and the classifier are
stored plain, since Table 13 does not decompose them. 36.5M dense parameters. The LeNet-5 file uses
the exporter planner's paper-matching plan (cores 5x5, 5x5x5, 5^4, 5x5x5). Values are random
(Laplace, no training), quantized with Eq. 13 (Q=512, b=3 for Tucker arrays; Q=256, b=1 for plain
ones); torch is not needed: the files are built with AdtWriter directly, with no architecture
section (load + rebuild is what is measured, not inference).

Measured (medians over --repeats runs, one process):
  export   quantize float arrays + AdtWriter (tables="auto", builds both table policies) + atomic write
  read     read_adt(path): read, CRC, parse, Huffman-decode every symbol
  rebuild  adt.runtime.rebuild.rebuild_weights(file): every dense float32 weight
Peak memory of read + rebuild is measured in a fresh subprocess per model, two ways:
  rss      ``adt bench``'s method (adt.tools measure_peak): Linux VmHWM (peak resident set) after
           resetting it through /proc/self/clear_refs, minus the resident set just before the load
           (falls back to ru_maxrss deltas where that is not possible; the JSON says which);
  traced   tracemalloc's peak of Python + NumPy allocations during the load (a separate run).
The rebuild budget is adt.runtime.rebuild.check_rebuild_budget's figure, computed from the tables
before anything is rebuilt: what ``adt.runtime.load(..., max_memory=)`` compares with its limit.
Both include the rebuilt weights themselves (dense float32 bytes), which the load must hold.

BLAS threads: ``--threads 1`` (default) for stable numbers on a shared 2-core machine (the rebuild's
tensordot calls stall when another process holds a core); ``--threads 0`` keeps the library default.

Run (from the repository root):
    .venv/bin/python -m research.benchmarks.wrn_scale [--repeats 3] [--threads 1] [--out results/wrn_scale.json]
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

from adt.runtime.format import AdtWriter, quantize, read_adt, write_atomic  # noqa: E402
from adt.runtime.samples import lenet5_plan  # noqa: E402
from adt.tools.benchmark import measure_peak, median_time  # noqa: E402
from research.benchmarks.profiling import own_time_profile  # noqa: E402
from research.paths import REPO, RESULTS  # noqa: E402

__all__ = ["TUCKER_Q", "TUCKER_B", "PLAIN_Q", "PLAIN_B", "TARGET_LOAD_S", "TARGET_PEAK_X", "MODELS",
           "wrn_28_10_spec", "lenet5_spec", "random_values", "export", "child_memory", "measure_memory",
           "profile_load", "bench_model", "render_md", "main"]

TUCKER_Q, TUCKER_B = 512, 3.0
PLAIN_Q, PLAIN_B = 256, 1.0
TARGET_LOAD_S = 5.0
TARGET_PEAK_X = 2.0


# -- model specs: (name, shape, reshape, core) for Tucker layers, (name, shape) for plain ones ------
def wrn_28_10_spec() -> tuple[list, list]:
    """WRN-28-10 (Zagoruyko & Komodakis; pre-activation blocks) with the paper's Table 13 plans."""
    t13 = {  # (cin, cout) -> (reshape, core), paper appendix Table 13
        (16, 160): ((16, 16, 10, 9), (10, 10, 6, 6)),
        (160, 160): ((24, 24, 20, 20), (12, 12, 12, 12)),
        (160, 320): ((80, 80, 72), (36, 36, 36)),
        (320, 320): ((32, 32, 30, 30), (16, 16, 16, 16)),
        (320, 640): ((40, 40, 36, 32), (18, 18, 18, 18)),
        (640, 640): ((48, 48, 40, 40), (20, 20, 20, 20)),
    }
    tucker, plain = [], [("conv1.weight", (16, 3, 3, 3))]
    cin = 16
    for g, width in enumerate((160, 320, 640), start=1):
        for i in range(4):
            p = f"block{g}.layer.{i}"
            for bn, ch in (("bn1", cin), ("bn2", width)):
                plain += [(f"{p}.{bn}.{k}", (ch,)) for k in ("weight", "bias", "running_mean", "running_var")]
            tucker.append((f"{p}.conv1.weight", (width, cin, 3, 3), *t13[(cin, width)]))
            tucker.append((f"{p}.conv2.weight", (width, width, 3, 3), *t13[(width, width)]))
            if i == 0:
                plain.append((f"{p}.shortcut.weight", (width, cin, 1, 1)))
            cin = width
    plain += [(f"bn.{k}", (640,)) for k in ("weight", "bias", "running_mean", "running_var")]
    plain += [("fc.weight", (10, 640)), ("fc.bias", (10,))]
    return tucker, plain


def lenet5_spec() -> tuple[list, list]:
    """LeNet-5 (20-50-500-10) with the paper-matching ADA-Tucker plan of ``adt.runtime.samples``."""
    plan = lenet5_plan()
    return ([(p.weight_name, p.shape, p.reshape, p.core) for p in plan], [(p.bias_name, (p.bias,)) for p in plan])


MODELS = {"lenet5": lenet5_spec, "wrn_28_10": wrn_28_10_spec}


def random_values(spec: tuple[list, list], seed: int = 0) -> dict:
    """Float32 cores, factors and plain arrays shaped per the spec (Laplace, like trained ADA weights)."""
    rng = np.random.default_rng(seed)
    tucker, plain = spec
    out = {"tucker": [], "plain": []}
    for name, shape, reshape, core in tucker:
        c = rng.laplace(scale=0.5, size=core).astype(np.float32)
        f = [rng.laplace(scale=0.5, size=(n, k)).astype(np.float32) for n, k in zip(reshape, core)]
        out["tucker"].append((name, shape, c, f))
    for name, shape in plain:
        out["plain"].append((name, rng.laplace(scale=0.1, size=shape).astype(np.float32)))
    return out


def export(values: dict, path: Path, producer: str = "research/benchmarks/wrn_scale.py (random values)",
           model: str | None = None, architecture: bytes | None = None) -> int:
    """Quantize ``values`` (Eq. 13: one group for the Tucker arrays, one for the plain ones) and write
    the .adt file, with the ``producer`` (and ``model``) metadata and an optional architecture
    section; returns its size."""
    w = AdtWriter(tables="auto")
    w.add_metadata("producer", producer)
    if model is not None:
        w.add_metadata("model", model)
    if architecture is not None:
        w.set_architecture(architecture)
    gt = w.add_group(TUCKER_Q, TUCKER_B)
    gp = w.add_group(PLAIN_Q, PLAIN_B)
    cores = [w.add_core(quantize(c, TUCKER_Q, TUCKER_B), gt) for _, _, c, _ in values["tucker"]]
    for ci, (name, shape, _, factors) in zip(cores, values["tucker"]):
        w.add_tucker(name, shape, ci, [quantize(f, TUCKER_Q, TUCKER_B) for f in factors], gt)
    for name, v in values["plain"]:
        w.add_plain(name, quantize(v, PLAIN_Q, PLAIN_B), gp)
    return w.write(path)


# -- peak memory (child process) ---------------------------------------------------------------
def child_memory(path: str, mode: str) -> dict:
    """Run in a fresh process: the peak memory of read_adt + rebuild_weights of ``path``."""
    from adt.runtime.rebuild import rebuild_weights
    if mode == "traced":
        import tracemalloc
        tracemalloc.start()
        weights = rebuild_weights(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"method": "tracemalloc peak (Python + NumPy allocations)", "peak_bytes": peak,
                "weights_bytes": sum(a.nbytes for a in weights.values())}
    sizes: dict[str, int] = {}

    def load() -> None:  # keeps nothing alive after it returns but the byte count
        # by path, as load() does: the decoded symbols are dropped as their weights are rebuilt
        sizes["weights_bytes"] = sum(a.nbytes for a in rebuild_weights(path).values())
    return {**measure_peak(load), **sizes}


def measure_memory(path: Path, mode: str) -> dict:
    """:func:`child_memory` in a fresh interpreter (this module run with ``--child``)."""
    out = subprocess.run([sys.executable, "-m", "research.benchmarks.wrn_scale", "--child", str(path), mode],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout)


def profile_load(path: Path, top: int = 12) -> list[dict]:
    """cProfile of one read + rebuild: the functions with the most own time."""
    from adt.runtime.rebuild import rebuild_weights
    rows = own_time_profile(lambda: rebuild_weights(read_adt(path)), runs=1, top=top)
    return [{"function": r.function, "calls": r.calls, "own_s": round(r.own_s, 4),
             "cumulative_s": round(r.cumulative_s, 4)} for r in rows]


def bench_model(name: str, repeats: int, workdir: Path) -> dict:
    from adt.runtime.rebuild import check_rebuild_budget, rebuild_weights
    from adt.tools.inspect_report import build_report

    spec = MODELS[name]()
    values = random_values(spec)
    path = workdir / f"{name}.adt"
    export_s, size = median_time(lambda: export(values, path), repeats)
    read_s, f = median_time(lambda: read_adt(path), repeats)
    rebuild_s, weights = median_time(lambda: rebuild_weights(f), repeats)
    load_s, _ = median_time(lambda: rebuild_weights(read_adt(path)), repeats)
    for (pname, shape, *_rest) in spec[0] + spec[1]:  # sanity: every weight rebuilt at its shape
        assert weights[pname].shape == tuple(shape) and weights[pname].dtype == np.float32, pname
    report = build_report(path)
    t = report["totals"]
    dense = t["original_float32_bytes"]
    symbols = t["stored_values"]
    rss = measure_memory(path, "rss")
    traced = measure_memory(path, "traced")
    budget = check_rebuild_budget(f, None).peak  # what load's max_memory is checked against
    return {
        "model": name,
        "parameters": t["parameters"],
        "tucker_layers": len(spec[0]),
        "plain_arrays": len(spec[1]),
        "dense_float32_bytes": dense,
        "file_bytes": size,
        "true_ratio": t["true_ratio"],
        "paper_raw_ratio": report["paper"]["raw_ratio"],
        "paper_qh_ratio": report["paper"]["qh_ratio"],
        "stored_values": symbols,
        "avg_code_bits": t["avg_code_bits"],
        "payload_over_entropy": t["payload_over_entropy"],
        "export_s": export_s,
        "read_s": read_s,
        "decode_msymbols_per_s": symbols / read_s / 1e6,
        "rebuild_s": rebuild_s,
        "load_rebuild_s": load_s,
        "peak_rss_bytes": rss["peak_bytes"],
        "peak_rss_method": rss["method"],
        "peak_traced_bytes": traced["peak_bytes"],
        "peak_traced_method": traced["method"],
        "peak_rss_over_dense": rss["peak_bytes"] / dense,
        "peak_traced_over_dense": traced["peak_bytes"] / dense,
        "rebuild_budget_bytes": budget,
        "profile_read_rebuild": profile_load(path),
    }


def render_md(result: dict) -> str:
    """A short Markdown summary of the JSON (every number comes from it)."""
    rows = result["models"]
    mib = 2 ** 20
    lines = [
        "# Scale benchmark: LeNet-5 to Wide-ResNet-28-10",
        "",
        f"Generated by `{result['benchmark']}` with the JSON beside this file (medians of {result['repeats']} runs; "
        f"Python {result['machine']['python']}, NumPy {result['machine']['numpy']}, {result['machine']['cpus']} CPUs, "
        f"load average {result['machine']['loadavg_before'][0]:.2f} at the start, BLAS threads: "
        f"{result['machine']['blas_threads']}). "
        "Random Laplace values (no training) with the paper's ADA-Tucker shapes (WRN-28-10: appendix Table 13, "
        "the 3x3 block convs; stem, 1x1 shortcuts, BatchNorm and classifier stored plain). Q=512, b=3 (Tucker), "
        "Q=256, b=1 (plain). No architecture section: this measures export, decode and weight rebuild.",
        "",
        "| | " + " | ".join(r["model"] for r in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in rows) + " |")
    row("dense parameters", lambda r: f"{r['parameters']:,}")
    row("dense float32", lambda r: f"{r['dense_float32_bytes'] / mib:.2f} MiB")
    row(".adt file", lambda r: f"{r['file_bytes']:,} B")
    row("true ratio (float32 bytes / file bytes)", lambda r: f"{r['true_ratio']:.1f}x")
    row("paper's Eq. 11 raw / Eq. 14 +QH ratio", lambda r: f"{r['paper_raw_ratio']:.1f}x / {r['paper_qh_ratio']:.1f}x")
    row("export (quantize + write)", lambda r: f"{r['export_s']:.3f} s")
    row("read + decode", lambda r: f"{r['read_s']:.3f} s ({r['decode_msymbols_per_s']:.1f} M values/s)")
    row("rebuild weights", lambda r: f"{r['rebuild_s']:.3f} s")
    row("load + rebuild", lambda r: f"{r['load_rebuild_s']:.3f} s")
    row("peak RSS of load + rebuild", lambda r: f"{r['peak_rss_bytes'] / mib:.1f} MiB ({r['peak_rss_over_dense']:.2f}x dense)")
    row("peak traced allocations", lambda r: f"{r['peak_traced_bytes'] / mib:.1f} MiB ({r['peak_traced_over_dense']:.2f}x dense)")
    row("rebuild budget (checked against load's max_memory, default 256 MiB)",
        lambda r: f"{r['rebuild_budget_bytes'] / mib:.1f} MiB")
    wrn = next((r for r in rows if r["model"] == "wrn_28_10"), None)
    if wrn:
        lines += ["", "WRN-28-10 targets (issue 7; issue 18's load + first run figure is in results/memory.md):", ""]
        for t in result["targets"]:
            lines.append(f"- `{t['id']}` ({t['target']}): {t['measured']:g}{t['unit']}, "
                         f"{'met' if t['met'] else 'MISSED'}")
        lines += ["", "Where the WRN-28-10 load spends its time (cProfile, own time):", ""]
        for p in wrn["profile_read_rebuild"][:5]:
            lines.append(f"- `{p['function']}`: {p['own_s']:.3f} s in {p['calls']} calls")
    lines += ["", f"Peak RSS method: {rows[0]['peak_rss_method']}. The peak includes the rebuilt float32 weights "
                  "themselves (the dense bytes), which any loader must hold."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.wrn_scale", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per step (median reported)")
    ap.add_argument("--out", default=str(RESULTS / "wrn_scale.json"), help="where to write the JSON")
    ap.add_argument("--md", default=None, help="also write a Markdown summary (default: the --out path with .md)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="which models")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads (0 = the library default; default 1: stable on a small shared machine). "
                         "Only honoured on this script's command line (BLAS reads it at import)")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child_memory(*args.child)))
        return 0

    loadavg_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_model(m, args.repeats, Path(tmp)) for m in args.models]
    wrn = next((r for r in rows if r["model"] == "wrn_28_10"), None)
    result = {
        "benchmark": "research/benchmarks/wrn_scale.py",
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform(), "loadavg_before": loadavg_before,
                    "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "library default")},
        "command": "python -m research.benchmarks.wrn_scale " + " ".join(sys.argv[1:] if argv is None else argv),
        "loadavg_before": loadavg_before,
        "repeats": args.repeats,
        "targets": [],
        "models": rows,
    }
    if wrn:
        result["targets"] = [
            {"id": "wrn_28_10_load_rebuild_s", "target": f"<= {TARGET_LOAD_S:g} s",
             "measured": round(wrn["load_rebuild_s"], 4), "unit": " s", "limit": TARGET_LOAD_S, "met": wrn["load_rebuild_s"] <= TARGET_LOAD_S,
             "detail": f"read + decode + rebuild of every weight, median of {args.repeats}"},
            {"id": "wrn_28_10_peak_load_rebuild", "target": f"<= {TARGET_PEAK_X:g}x dense float32",
             "measured": round(wrn["peak_rss_over_dense"], 4), "unit": "x", "limit": TARGET_PEAK_X,
             "met": wrn["peak_rss_over_dense"] <= TARGET_PEAK_X,
             "detail": f"peak RSS of read + rebuild {wrn['peak_rss_bytes'] / 2**20:.1f} MiB "
                       f"({wrn['peak_rss_method']})"},
        ]
    result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, (json.dumps(result, indent=1) + "\n").encode())
    write_atomic(Path(args.md) if args.md else out.with_suffix(".md"), render_md(result).encode())
    for r in rows:
        print(f"{r['model']:>10}: {r['parameters']:>10,} params, file {r['file_bytes']:>9,} B "
              f"(true {r['true_ratio']:.1f}x), export {r['export_s']:.3f}s, read {r['read_s']:.3f}s "
              f"({r['decode_msymbols_per_s']:.1f} Msym/s), rebuild {r['rebuild_s']:.3f}s, load+rebuild "
              f"{r['load_rebuild_s']:.3f}s, peak rss {r['peak_rss_bytes'] / 2**20:.1f} MiB "
              f"({r['peak_rss_over_dense']:.2f}x dense), traced {r['peak_traced_over_dense']:.2f}x")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
