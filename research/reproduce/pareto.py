"""Bytes against error for LeNet-5 on MNIST: every committed file, the Pareto front of the (row, variant)
medians, and the published anchors (issue 22).

    .venv/bin/python -m research.reproduce.pareto [--results results/mnist.json] [--out results/pareto_lenet5]

Reads the per-file records of ``results/mnist.json`` (each error is the committed ``.adt`` file run by the
torch-free runtime on all 10,000 test images; each size is the file's bytes) and writes
``pareto_lenet5.png`` and ``pareto_lenet5.json`` (the points, the front and the anchors). The anchors are
the published results converted to bytes of a 1,724,320-byte float32 LeNet-5: MIRACLE (Havasi et al.,
ICLR 2019) about 1.5 kB at 0.96%; Bayesian Compression, group horseshoe (Louizos et al., 2017) 771x at
1.0%; the ADA-Tucker and SCADA-Tucker papers (Zhong et al.) 691x at 0.94% and 757x at 1.18%, formula
ratios (stored values x code bits), not file bytes. The goal box is issue 22's: every file <= 1,500 B at
a median error <= 0.94%.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from research.paths import RESULTS

DENSE_BYTES = 1_724_320  # LeNet-5's 431,080 float32 weights
ANCHORS = [  # (label, bytes, error %, how the bytes are known, label offset in points)
    ("MIRACLE (Havasi 2019)", 1_500, 0.96, "reported ~1.5 kB", (-40, 10)),
    ("Bayesian Compr. GHS (Louizos 2017)", round(DENSE_BYTES / 771), 1.00, "771x of float32", (-150, 14)),
    ("ADA-Tucker paper", round(DENSE_BYTES / 691), 0.94, "691x by formula, not file bytes", (8, -14)),
    ("SCADA-Tucker paper", round(DENSE_BYTES / 757), 1.18, "757x by formula, not file bytes", (-120, 10)),
]
GOAL = (1_500, 0.94)


def points(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Every LeNet-5 file, and one median point per (row, variant) with its seeds."""
    files = [{"file": r["file"], "row": r["row"], "variant": r["variant"], "seed": r["seed"],
              "bytes": r["file_bytes"], "error": r["err_file"]}
             for r in records if r.get("model") == "lenet5" and r.get("err_file") is not None]
    groups: dict[tuple[str, str], list[dict]] = {}
    for f in files:
        groups.setdefault((f["row"], f["variant"]), []).append(f)
    medians = [{"row": row, "variant": var, "seeds": len(fs), "bytes": max(f["bytes"] for f in fs),
                "error": statistics.median(f["error"] for f in fs)}
               for (row, var), fs in sorted(groups.items())]
    return files, medians


def front(pts: list[dict]) -> list[dict]:
    """The points no other point beats in both bytes and error (lower is better in both)."""
    out, best = [], float("inf")
    for p in sorted(pts, key=lambda p: (p["bytes"], p["error"])):
        if p["error"] < best:
            out.append(p)
            best = p["error"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.reproduce.pareto", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(RESULTS / "mnist.json"), help="the reproduction's records")
    ap.add_argument("--out", default=str(RESULTS / "pareto_lenet5"), help="output path without extension")
    args = ap.parse_args(argv)
    records = json.loads(Path(args.results).read_text())["runs"]
    files, medians = points(records)
    pf = front([m for m in medians if m["seeds"] >= 3])
    out = Path(args.out)
    doc = {"source": args.results, "goal": {"bytes": GOAL[0], "median_error": GOAL[1]},
           "anchors": [{"label": a, "bytes": b, "error": e, "note": n} for a, b, e, n, _ in ANCHORS],
           "front_of_medians_3plus_seeds": pf, "medians": medians, "files": files}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.scatter([f["bytes"] for f in files], [f["error"] for f in files], s=6, color="#bbbbbb",
               label="every committed file")
    ax.scatter([m["bytes"] for m in medians if m["seeds"] >= 3], [m["error"] for m in medians if m["seeds"] >= 3],
               s=16, color="#4c72b0", label="median of seeds (>= 3), largest file")
    ax.plot([p["bytes"] for p in pf], [p["error"] for p in pf], color="#4c72b0", lw=1.2, label="ADT front (medians)")
    for label, b, e, _, offset in ANCHORS:
        ax.scatter([b], [e], marker="*", s=120, color="#c44e52", zorder=3)
        ax.annotate(label, (b, e), textcoords="offset points", xytext=offset, fontsize=8, color="#c44e52")
    ax.add_patch(plt.Rectangle((0, 0), GOAL[0], GOAL[1], fill=False, ls="--", color="#55a868"))
    ax.annotate("issue 22 goal:\n<= 1,500 B at <= 0.94%", (1_120, 0.70), fontsize=8, color="#55a868")
    ax.set_xscale("log")
    ax.set_xlim(1_100, 5_000)
    ax.set_xticks([1_500], minor=False)
    ax.set_ylim(0.6, 3.0)
    ax.set_xlabel("file bytes, every byte counted (anchors: 1,724,320 float32 bytes / published ratio)")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:,.0f}" if round(v) in (2_000, 3_000, 4_000) else ""))
    ax.set_ylabel("test error % (10,000 MNIST images, file run by the runtime)")
    ax.set_title("LeNet-5 on MNIST: bytes against error (files over 5,000 B not shown)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110, metadata={"Software": None})
    print(f"wrote {out.with_suffix('.png')} and .json: {len(files)} files, {len(medians)} (row, variant) medians, "
          f"front of {len(pf)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
