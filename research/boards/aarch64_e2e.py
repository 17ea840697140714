"""End-to-end check of the torch-free runtime on one machine, and the x86-vs-board comparison.

Driven by ``research/boards/board_check.sh`` (which runs ``infer`` once natively and once under
qemu-aarch64 or qemu-arm, then ``compare``; ``aarch64_check.sh`` is its arm64 shorthand); each step also
works by hand, from the repository root:

  python -m research.boards.aarch64_e2e infer --file M.adt --data MNIST_DIR --n 300 --out-dir RUN/x86
      decode M.adt, hash every decoded symbol array (SHA-256), rebuild the weights, classify the
      first N MNIST test images with each engine; writes RUN/x86/run.json + run.npz
  python -m research.boards.aarch64_e2e compare --x86 RUN/x86 --arm RUN/arm64 --json results/arm64.json \
      --md results/arm64.md
      symbols bit-identical?  outputs within tolerance?  same predictions?  -> results files
  python -m research.boards.aarch64_e2e fallback OUT.adt
      a LeNet-5-shaped .adt with seeded random (untrained) weights, for developing the check only
      when no exported LeNet-5 exists; results from it say so ("model_source": "fallback").

``infer`` imports only numpy, adt.runtime and adt.tools' torch-free scoring and timing helpers (plus
onnxruntime for that engine), so it runs inside the emulated aarch64 Debian, where torch does not exist.
``fallback`` writes ``adt.runtime.samples.lenet5_file`` (torch-free and onnx-free too).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["ENGINES", "RTOL", "ATOL_REL", "symbols_digest", "weights_digest", "cmd_infer", "cmd_compare",
           "cmd_fallback", "build_parser", "main"]

ENGINES = ("numpy", "onnxruntime")

# Tolerance of the x86-vs-aarch64 output comparison, relative to the output scale:
# |arm - x86| <= RTOL * |x86| + ATOL_REL * max|x86|. BLAS kernels differ between the two
# architectures (blocking, FMA), so float32 outputs may differ in the last bits; 1e-4 is the
# tolerance issue 4 names for engine-vs-PyTorch agreement.
RTOL = 1e-4
ATOL_REL = 1e-4


# ------------------------------------------------------------------------------------------------
# helpers shared by both machines
# ------------------------------------------------------------------------------------------------
def symbols_digest(f) -> str:
    """SHA-256 over everything the decoder produced: quantizer groups, every core's and every
    parameter's symbols (as little-endian uint16, with shapes and names), metadata and architecture.
    Equal digests on two machines mean bit-identical decoding."""
    h = hashlib.sha256()

    def put(tag: str, arr: np.ndarray | None = None) -> None:
        h.update(tag.encode() + b"\0")
        if arr is not None:
            a = np.ascontiguousarray(arr, dtype="<u2")
            h.update(repr(a.shape).encode() + b"\0" + a.tobytes())

    for i, g in enumerate(f.groups):
        put(f"group {i} q={g.q} b={float(np.float32(g.b)).hex()} table={g.table}")
    for i, c in enumerate(f.cores):
        put(f"core {i} kind={c.kind} dims={tuple(c.dims)} group={c.group}", c.symbols)
    for p in f.params:
        put(f"param {p.name} shape={tuple(p.shape)} enc={p.encoding} group={p.group} core={p.core}")
        if p.symbols is not None:
            put("plain", p.symbols)
        for j, m in enumerate(p.factors):
            put(f"factor {j}", m)
    for k in sorted(f.metadata):
        put(f"meta {k}={f.metadata[k]}")
    put("arch")
    h.update(f.architecture or b"")
    return h.hexdigest()


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    """SHA-256 of the rebuilt float32 weights (names, shapes, little-endian bytes)."""
    h = hashlib.sha256()
    for name in sorted(weights):
        a = np.ascontiguousarray(weights[name], dtype="<f4")
        h.update(f"{name} {a.shape}\0".encode() + a.tobytes())
    return h.hexdigest()


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("bitarray", "onnxruntime", "onnx"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # not installed: recorded as absent
            out[mod] = None
    return out


def _write_json(path: Path, obj) -> None:
    from adt.runtime.format import write_atomic
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


# ------------------------------------------------------------------------------------------------
# infer: one machine's run
# ------------------------------------------------------------------------------------------------
def cmd_infer(args: argparse.Namespace) -> int:
    import adt.runtime as rt
    from adt.runtime.format import read_adt
    from adt.runtime.mnist import load_mnist, normalize
    from adt.tools.benchmark import median_time
    from adt.tools.scoring import model_input, predict

    data = Path(args.file).read_bytes()
    images, labels = load_mnist(args.data, "test")
    n = min(args.n, len(images))
    x = normalize(images[:n])
    y = labels[:n].astype(np.int64)

    t_decode, f = median_time(lambda: read_adt(data), args.repeats)
    report: dict = {
        "machine": platform.machine(),
        "platform": platform.platform(),
        "versions": _versions(),
        "file": str(args.file),
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "file_bytes": len(data),
        "metadata": dict(f.metadata),
        "symbols_sha256": symbols_digest(f),
        "n_images": n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "timings_s": {"decode_median": t_decode},
        "engines": {},
    }
    arrays: dict[str, np.ndarray] = {"labels": y}
    for engine in args.engines:
        try:
            t_load, model = median_time(lambda: rt.load(data, engine=engine), args.repeats)
        except ImportError as exc:  # e.g. onnxruntime absent: recorded, not fatal
            report["engines"][engine] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        if engine == args.engines[0]:
            arrays.update({f"w:{k}": np.asarray(v) for k, v in model.weights.items()})
            report["weights_sha256"] = weights_digest(model.weights)
        # the file's own input convention on the raw uint8 images where it stores one (what `adt run` and
        # Model.predict do on the device), else ADT's MNIST normalisation; then the model's declared input
        # (e.g. [N, 784] for an MLP without Flatten), in --batch-size batches
        conv = model.input_convention
        if conv is not None:
            x_in = model.preprocess(conv.conform(images[:n]))
            report["input_convention"] = conv.to_dict()
        else:
            x_in = model_input(model, x)
        t_run, out = median_time(lambda model=model, x_in=x_in: predict(model, x_in, args.batch_size), args.repeats)
        pred = out.argmax(axis=1)
        arrays[f"out:{engine}"] = out
        report["engines"][engine] = {
            "load_median_s": t_load,
            "infer_median_s": t_run,
            "images_per_s": n / t_run,
            "accuracy": float((pred == y).mean()),
            "output_shape": list(out.shape),
            "output_sha256": hashlib.sha256(np.ascontiguousarray(out, "<f4").tobytes()).hexdigest(),
        }
        print(f"[{platform.machine()}] {engine}: load {t_load:.3f}s, {n} images in {t_run:.3f}s, "
              f"accuracy {report['engines'][engine]['accuracy']:.4f}", flush=True)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "run.npz", **arrays)
    _write_json(out_dir / "run.json", report)
    print(f"[{platform.machine()}] symbols sha256 {report['symbols_sha256']}", flush=True)
    return 0


# ------------------------------------------------------------------------------------------------
# compare: x86 run vs aarch64 run -> results files
# ------------------------------------------------------------------------------------------------
def _diff(a: np.ndarray, ref: np.ndarray) -> dict:
    a = a.astype(np.float64)
    ref = ref.astype(np.float64)
    d = np.abs(a - ref)
    scale = float(np.abs(ref).max()) or 1.0
    # Elementwise relative difference, over elements not negligible against the output scale
    # (a logit of ~0 would turn any rounding difference into a huge ratio).
    big = np.abs(ref) >= 1e-3 * scale
    rel = d[big] / np.abs(ref[big]) if big.any() else np.zeros(1)
    ok = bool(np.all(d <= RTOL * np.abs(ref) + ATOL_REL * scale))
    return {
        "max_abs_diff": float(d.max()),
        "max_rel_diff": float(rel.max()),
        "max_abs_diff_over_scale": float(d.max()) / scale,
        "output_scale": scale,
        "bit_identical": bool(np.array_equal(a, ref)),
        "within_tolerance": ok,
        "same_predictions": bool(np.array_equal(a.argmax(1), ref.argmax(1))),
        "prediction_agreement": float((a.argmax(1) == ref.argmax(1)).mean()),
    }


def cmd_compare(args: argparse.Namespace) -> int:
    runs = {}
    for side, d in (("x86_64", args.x86), ("board", args.arm)):
        d = Path(d)
        runs[side] = (json.loads((d / "run.json").read_text()), np.load(d / "run.npz"))
    (jx, ax), (ja, aa) = runs["x86_64"], runs["board"]
    label = args.label
    if jx["file_sha256"] != ja["file_sha256"] or jx["n_images"] != ja["n_images"]:
        print("compare: the two runs used different files or image counts", file=sys.stderr)
        return 1
    wnames = sorted(k for k in ax.files if k.startswith("w:"))
    wdiff = max((float(np.abs(ax[k].astype(np.float64) - aa[k]).max()) for k in wnames), default=0.0)
    engines = {}
    for e in ENGINES:
        key = f"out:{e}"
        if key in ax.files and key in aa.files:
            engines[e] = _diff(aa[key], ax[key])
            engines[e]["accuracy_x86_64"] = jx["engines"][e]["accuracy"]
            engines[e]["accuracy_board"] = ja["engines"][e]["accuracy"]
            engines[e]["images_equal"] = int(np.sum(aa[key].argmax(1) == ax[key].argmax(1)))
        else:
            engines[e] = {"skipped": ja["engines"].get(e, {}).get("error")
                          or jx["engines"].get(e, {}).get("error") or "not run"}
    cross = {}
    for side, arr in (("x86_64", ax), ("board", aa)):
        if all(f"out:{e}" in arr.files for e in ENGINES):
            cross[side] = _diff(arr["out:onnxruntime"], arr["out:numpy"])
    compared = [v for v in engines.values() if "skipped" not in v]
    passed = (jx["symbols_sha256"] == ja["symbols_sha256"] and bool(compared)
              and all(v["within_tolerance"] and v["same_predictions"] for v in compared))
    tests = json.loads(args.tests) if args.tests else None
    result = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "board": label,
        "command": args.command,
        "targets": _targets(label, jx["n_images"], jx["symbols_sha256"] == ja["symbols_sha256"], engines, tests),
        "model_source": args.model_source,
        "file": _shown(jx["file"]),
        "file_sha256": jx["file_sha256"],
        "file_bytes": jx["file_bytes"],
        "model_metadata": jx["metadata"],
        "n_images": jx["n_images"],
        "tolerance": {"rtol": RTOL, "atol_relative_to_max_abs_output": ATOL_REL,
                      "rule": "|arm - x86| <= rtol*|x86| + atol_rel*max|x86| elementwise"},
        "symbols_sha256": {"x86_64": jx["symbols_sha256"], "board": ja["symbols_sha256"]},
        "symbols_bit_identical": jx["symbols_sha256"] == ja["symbols_sha256"],
        "weights_sha256": {"x86_64": jx.get("weights_sha256"), "board": ja.get("weights_sha256")},
        "weights_bit_identical": jx.get("weights_sha256") == ja.get("weights_sha256"),
        "weights_max_abs_diff": wdiff,
        "engines": engines,
        "engine_vs_engine": cross,
        "environment": {"x86_64": {k: jx[k] for k in ("machine", "platform", "versions")},
                        "board": {k: ja[k] for k in ("machine", "platform", "versions")}},
        "emulation": json.loads(args.emulation) if args.emulation else None,
        "timings_s": {"x86_64": {"decode_median": jx["timings_s"]["decode_median"],
                                 **{e: {k: v[k] for k in ("load_median_s", "infer_median_s", "images_per_s")}
                                    for e, v in jx["engines"].items() if "error" not in v}},
                      "board": {"decode_median": ja["timings_s"]["decode_median"],
                                  **{e: {k: v[k] for k in ("load_median_s", "infer_median_s", "images_per_s")}
                                     for e, v in ja["engines"].items() if "error" not in v}},
                      "repeats": {"x86_64": jx["repeats"], "board": ja["repeats"]}},
        "tests": tests,
        "passed": passed,
    }
    _write_json(Path(args.json), result)
    from adt.runtime.format import write_atomic
    write_atomic(Path(args.md), _markdown(result).encode())
    print(f"compare: {'PASS' if passed else 'FAIL'} -> {args.json}, {args.md}")
    return 0 if passed else 1


def _targets(label: str, n: int, symbols_equal: bool, engines: dict, tests: dict | None) -> list[dict]:
    """The issue's targets for one board, in the results-file shape research/boards/report.py collects."""
    key = label.replace("-", "_")
    out = []
    v = engines.get("numpy", {})
    equal = v.get("images_equal", 0) if "skipped" not in v else 0
    out.append({"id": f"{key}_mnist_{n}", "target": "predictions identical to x86", "measured": equal,
                "unit": "images equal", "limit": n, "met": "skipped" not in v and equal == n,
                "detail": f"NumPy engine, first {n} MNIST test images"
                          + (f", accuracy {v['accuracy_board']:.4f}" if "accuracy_board" in v else "")})
    out.append({"id": f"{key}_symbols", "target": "decoded-symbol SHA-256 identical to x86",
                "measured": int(symbols_equal), "unit": "identical (1 = yes)", "limit": 1, "met": bool(symbols_equal)})
    if tests is not None:
        import re
        passed = sum(int(m) for m in re.findall(r"(\d+) passed", tests.get("summary", "")))
        failed = tests.get("failed") or []
        out.append({"id": f"{key}_tests", "target": "torch-free tests pass under emulation", "measured": passed,
                    "unit": "tests passed", "limit": None, "met": tests.get("exit_code") == 0,
                    "detail": tests.get("summary", "") + (f"; failed: {', '.join(failed)}" if failed else "")})
    return out


def _shown(path: str) -> str:
    """A path inside the repository as repository-relative (results files name no local folders)."""
    repo = Path(__file__).resolve().parents[2]
    try:
        return str(Path(path).resolve().relative_to(repo))
    except ValueError:
        return path


def _markdown(r: dict) -> str:
    ex, ea = r["environment"]["x86_64"], r["environment"]["board"]
    emu = r["emulation"] or {}
    b = r["board"]
    lines = [
        f"# ADT runtime on {b} (qemu-user emulation) vs x86_64",
        "",
        f"Generated {r['date_utc']} by `{r.get('command') or 'research/boards/board_check.sh'}` "
        "(research.boards.aarch64_e2e compare); the figures below are those of the JSON file beside this one.",
        "",
        f"- Model: `{_shown(r['file'])}` ({r['file_bytes']} bytes, sha256 `{r['file_sha256'][:16]}…`), "
        f"source: **{r['model_source']}**",
        f"- Model metadata: {', '.join(f'{k}={v}' for k, v in sorted(r['model_metadata'].items())) or 'none'}",
        f"- Images: the first {r['n_images']} MNIST test images",
        f"- {b}: {emu.get('qemu', 'qemu-user')}, QEMU_CPU={emu.get('qemu_cpu', '?')}, "
        f"Debian {emu.get('debian', '?')}, Python {ea['versions']['python']}, numpy {ea['versions']['numpy']}, "
        f"bitarray {ea['versions']['bitarray']}, onnxruntime {ea['versions']['onnxruntime']}",
        f"- {b} install: {emu.get('install', '?')}; Debian packages: "
        + (", ".join(f"{k} {v}" for k, v in (emu.get("debian_packages") or {}).items()) or "?"),
        f"- x86_64: Python {ex['versions']['python']}, numpy {ex['versions']['numpy']}, "
        f"bitarray {ex['versions']['bitarray']}, onnxruntime {ex['versions']['onnxruntime']}",
        "",
        "| check | result |",
        "| --- | --- |",
        f"| decoded symbols bit-identical (SHA-256) | {'yes' if r['symbols_bit_identical'] else '**NO**'} "
        f"(`{r['symbols_sha256']['board'][:16]}…`) |",
        f"| rebuilt float32 weights bit-identical | {'yes' if r['weights_bit_identical'] else 'no'} "
        f"(max abs diff {r['weights_max_abs_diff']:.3g}) |",
    ]
    for e, v in r["engines"].items():
        if "skipped" in v:
            if v["skipped"] != "not run":      # an engine asked for but unavailable; one not asked for is left out
                lines.append(f"| {e} engine | not compared: {v['skipped']} |")
            continue
        lines.append(
            f"| {e}: outputs {b} vs x86_64 | max abs {v['max_abs_diff']:.3g}, max rel {v['max_rel_diff']:.3g}, "
            f"{'bit-identical' if v['bit_identical'] else ('within' if v['within_tolerance'] else '**OUTSIDE**')}"
            f"{'' if v['bit_identical'] else ' tolerance'} |")
        lines.append(
            f"| {e}: predictions | {'same' if v['same_predictions'] else '**differ**'} "
            f"({v['images_equal']} of {r['n_images']} images equal); accuracy x86 {v['accuracy_x86_64']:.4f}, "
            f"{b} {v['accuracy_board']:.4f} |")
    for side, v in r["engine_vs_engine"].items():
        lines.append(f"| onnxruntime vs numpy on {side} | max abs {v['max_abs_diff']:.3g}, "
                     f"same predictions: {'yes' if v['same_predictions'] else 'no'} |")
    t = r.get("tests")
    if t:
        failed = t.get("failed") or []
        lines.append(f"| runtime tests under emulation | {t.get('summary', '?')}"
                     + (f"; failed: {', '.join(f'`{x}`' for x in failed)}" if failed else "") + " |")
    lines.append(f"| **comparison with x86_64** (symbols, outputs, predictions) | **{'PASS' if r['passed'] else 'FAIL'}** |")
    tol = r["tolerance"]
    lines += ["", f"Tolerance: {tol['rule']}, rtol = {tol['rtol']:g}, atol_rel = "
              f"{tol['atol_relative_to_max_abs_output']:g}.", "",
              f"## Timings (seconds, median over repeats; {b} is emulated, not a real device)", "",
              f"| step | x86_64 | {b} (qemu) |", "| --- | --- | --- |"]
    tx, ta = r["timings_s"]["x86_64"], r["timings_s"]["board"]
    lines.append(f"| decode (read_adt) | {tx['decode_median']:.4f} | {ta['decode_median']:.4f} |")
    for e in ENGINES:
        if e in tx and e in ta:
            lines.append(f"| {e}: load (decode + rebuild + engine setup) | {tx[e]['load_median_s']:.4f} | {ta[e]['load_median_s']:.4f} |")
            lines.append(f"| {e}: classify {r['n_images']} images | {tx[e]['infer_median_s']:.4f} | "
                         f"{ta[e]['infer_median_s']:.4f} |")
    rep = r["timings_s"]["repeats"]
    lines += ["", f"Repeats: x86_64 {rep['x86_64']}, {b} {rep['board']}. Emulated timings only show "
              "the check's cost here; they say nothing about a real ARM board's speed.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# fallback: a LeNet-5-shaped file with random weights (development only)
# ------------------------------------------------------------------------------------------------
def cmd_fallback(args: argparse.Namespace) -> int:
    """Write ``adt.runtime.samples.lenet5_file`` (random quantized LeNet-5 weights, with the LeNet-5
    architecture), labelled as a fallback in its metadata."""
    from adt.runtime.format import write_atomic
    from adt.runtime.samples import lenet5_file

    data = lenet5_file(seed=args.seed, metadata={
        "producer": "research/boards/aarch64_e2e.py fallback (random weights, not a trained model)",
        "model": "lenet5-shaped-fallback"})
    write_atomic(Path(args.out), data)
    print(f"fallback: wrote {args.out} ({len(data)} bytes, random weights)")
    return 0


# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m research.boards.aarch64_e2e",
        description="End-to-end runtime check (infer), x86-vs-aarch64 comparison (compare), "
                    "and a development-only LeNet-5-shaped file (fallback). See research/boards/aarch64_check.sh.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("infer", help="decode, hash, rebuild and classify MNIST test images on this machine")
    pi.add_argument("--file", required=True, help="the .adt model (a LeNet-5 with 1x28x28 input)")
    pi.add_argument("--data", default=None, help="MNIST IDX folder (default: $ADT_DATA)")
    pi.add_argument("--n", type=int, default=10000, help="number of test images, the first N (default 10000: all)")
    pi.add_argument("--batch-size", type=int, default=500, help="images per Model.run call (default 500)")
    pi.add_argument("--engines", type=lambda s: [e for e in s.split(",") if e], default=list(ENGINES),
                    help="comma-separated engines (default numpy,onnxruntime)")
    pi.add_argument("--repeats", type=int, default=3, help="timing repeats, median reported (default 3)")
    pi.add_argument("--out-dir", required=True, help="folder for run.json and run.npz")
    pi.set_defaults(func=cmd_infer)
    pc = sub.add_parser("compare", help="compare an x86_64 run with a board's run and write the results files")
    pc.add_argument("--x86", required=True, help="out-dir of the native infer run")
    pc.add_argument("--arm", required=True, help="out-dir of the emulated board's infer run")
    pc.add_argument("--json", required=True, help="results JSON to write (e.g. results/arm64.json)")
    pc.add_argument("--md", required=True, help="results Markdown to write (e.g. results/arm64.md)")
    pc.add_argument("--model-source", default="unspecified",
                    help="where the model came from, recorded verbatim (e.g. 'exported LeNet-5' or 'fallback')")
    pc.add_argument("--emulation", default=None, help="JSON object describing the emulator (qemu, Debian, CPU)")
    pc.add_argument("--tests", default=None, help="JSON object summarising the emulated pytest run")
    pc.add_argument("--label", default="aarch64", help="the board's name in the results (e.g. armv7l-trixie)")
    pc.add_argument("--command", default=None, help="the command that re-runs this check, recorded verbatim")
    pc.set_defaults(func=cmd_compare)
    pf = sub.add_parser("fallback", help="write a LeNet-5-shaped .adt with seeded random weights")
    pf.add_argument("out", help="output .adt path")
    pf.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    pf.set_defaults(func=cmd_fallback)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
