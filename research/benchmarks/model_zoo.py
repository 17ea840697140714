"""The model zoo through the exporter (issue 19): per family of research/zoo.py, file bytes, true ratio,
export time and the file's agreement with torch, or the op that stops it.

    .venv/bin/python -m research.benchmarks.model_zoo [--ratio 2.0] [--q 4096] [--out results/model_zoo.json]

Each family: random init (seed 0), ADA-Tucker at ``--ratio`` with the planner, three Adam steps on random
data (so that BatchNorm statistics and weights are not at their initial values), then ``export_adt``
(Q = ``--q``, groups by kind, floor rounding). ``check`` is the exporter's own check on 16 seeded N(0, 1)
inputs: divergence = max |file - torch| / max |torch|, agreement = equal argmax; ``engine`` is the
runtime against torch running the file's own weights, for the NumPy and ONNX Runtime engines. A
family the runtime cannot run yet is listed with the op the exporter names.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import adt.runtime as rt
from adt.exporter import apply_ada_tucker, export_adt, plan_model
from adt.exporter.errors import ModelError
from adt.exporter.export import quantized_model
from adt.runtime.format import write_atomic
from adt.runtime.rebuild import rebuild_weights
from research.paths import RESULTS
from research.zoo import FAMILIES, RATIOS, train_briefly

__all__ = ["run_family", "main"]


def run_family(name: str, ratio: float, q: int, workdir: Path) -> dict:
    """One row of the table (see the module doc)."""
    make, example = FAMILIES[name]
    torch.manual_seed(0)
    model = make()
    xs = example()
    row: dict = {"family": name, "input": [list(x.shape[1:]) for x in xs]}
    try:
        plan = plan_model(model, RATIOS.get(name, ratio))
        row["ratio"] = RATIOS.get(name, ratio)
        apply_ada_tucker(model, plan, seed=0)
        row["tucker_layers"] = len(plan)
        if len(xs) == 1 and xs[0].is_floating_point():
            train_briefly(model, torch.randn(8, *xs[0].shape[1:]))
        path = workdir / f"{name}.adt"
        t0 = time.perf_counter()
        rep = export_adt(model, path, example_inputs=xs, q=q)
        row["export_s"] = round(time.perf_counter() - t0, 3)
    except ModelError as exc:
        row["refused"] = str(exc).split(";")[0]
        return row
    row.update(file_bytes=rep.file_bytes, dense_float32_bytes=rep.dense_float32_bytes,
               true_ratio=round(rep.true_ratio, 2), divergence=rep.check.divergence, agreement=rep.check.agreement)
    with torch.no_grad():
        ref = quantized_model(model, rebuild_weights(path)).eval()(*xs).numpy()
    scale = float(np.abs(ref).max())
    for engine in ("numpy", "onnxruntime"):
        out = rt.load(path, engine=engine).run(xs[0].numpy())
        row[f"engine_{engine}"] = float(np.abs(out - ref).max() / scale)
    path.unlink()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", type=float, default=2.0,
                    help="ADA-Tucker target ratio of the planner (default 2.0; research.zoo.RATIOS for the smallest families)")
    ap.add_argument("--q", type=int, default=4096, help="Eq. 13 levels (default 4096)")
    ap.add_argument("--out", type=Path, default=RESULTS / "model_zoo.json", help="results JSON (the .md beside it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = args.out.parent / ".model_zoo.tmp"
    work.mkdir(exist_ok=True)
    rows = [run_family(name, args.ratio, args.q, work) for name in FAMILIES]
    work.rmdir()
    ran = [r for r in rows if "refused" not in r]
    worst = max((max(r["engine_numpy"], r["engine_onnxruntime"]) for r in ran), default=0.0)
    res = {"benchmark": "research/benchmarks/model_zoo.py",
           "command": "python -m research.benchmarks.model_zoo " + " ".join(argv or []),
           "machine": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                       "cpus": os.cpu_count()},
           "ratio": args.ratio, "q": args.q, "rows": rows,
           "targets": [{"id": "model_zoo_engine_agreement", "target": "runtime == torch on the file's weights, "
                        "max |diff| <= 1e-4 x max |torch|, both engines, every family that runs",
                        "measured": worst, "unit": "x max|torch|", "limit": 1e-4, "met": bool(worst <= 1e-4),
                        "detail": f"{len(ran)} of {len(rows)} families run; refused: "
                                  + (", ".join(r['family'] for r in rows if 'refused' in r) or "none")}]}
    write_atomic(args.out, (json.dumps(res, indent=1) + "\n").encode())
    md = ["# Model zoo through the exporter (issue 19)", "",
          f"Written by `{res['command'].strip()}`: families of `research/zoo.py` (torchvision's layer structure, "
          f"small widths), ADA-Tucker at {args.ratio:g}x, Q = {args.q}.", "",
          "| family | file bytes | true ratio | export s | file vs float model (max rel. diff, argmax agree) | "
          "runtime vs torch, numpy / onnxruntime |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "refused" in r:
            md.append(f"| {r['family']} | - | - | - | refused: {r['refused']} | - |")
        else:
            md.append(f"| {r['family']} | {r['file_bytes']:,} | {r['true_ratio']}x | {r['export_s']} | "
                      f"{r['divergence']:.3g}, {r['agreement']:.0%} | {r['engine_numpy']:.1e} / {r['engine_onnxruntime']:.1e} |")
    t = res["targets"][0]
    md += ["", f"Target: {t['target']}: {'met' if t['met'] else 'MISSED'} (worst {t['measured']:.2g}; {t['detail']})."]
    write_atomic(args.out.with_suffix(".md"), ("\n".join(md) + "\n").encode())
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
