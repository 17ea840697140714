"""Collect every run record in ``results/runs/`` into ``results/mnist.json`` and ``results/mnist.md``.

Numbers are copied from the records (no rounding in our favour: errors are shown to 2 decimals as
measured on the 10,000 test images, i.e. exact multiples of 0.01%). Best and median are over seeds.
"""
from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from adt.runtime.format import write_atomic
from research.reproduce.presets import ABLATIONS, PAPER_TABLE1, ROWS

__all__ = ["recipe_label", "write_report"]


def _load(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def _pct(v: float) -> str:
    """An error in %: 2 decimals when that is exact (every single run), else 3 (a median of two runs
    can end in 5 at the third decimal, and 2 decimals would round it in our favour half the time)."""
    return f"{v:.2f}" if abs(round(v, 2) - v) < 1e-9 else f"{v:.3f}"


def recipe_label(r: dict[str, Any]) -> str:
    """Short name of a record's training recipe, e.g. ``step/10`` or ``cos wd0.05 ls0.1``."""
    parts = ["cos" if r.get("schedule") == "cosine" else f"step/{r['decay_every']}"]
    if r.get("lr", 0.01) != 0.01:
        parts.append(f"lr{r['lr']:g}")
    if r.get("weight_decay"):
        parts.append(f"wd{r['weight_decay']:g}")
    if r.get("label_smoothing"):
        parts.append(f"ls{r['label_smoothing']:g}")
    if r.get("model") == "lenet5-relu":
        parts.append("conv-ReLU")
    if r.get("teacher"):
        parts.append(f"KD a{r['distill_alpha']:g} T{r['distill_temperature']:g}")
        if not r["teacher"].startswith(f"{r.get('model')}-"):  # a teacher of another architecture
            parts.append(f"from {r['teacher']}")
    if r.get("init_from"):
        parts.append("HOOI init")
    return " ".join(parts)


def _summary(recs: list[dict[str, Any]]) -> dict[str, Any]:
    ef = [r["err_float"] for r in recs]
    eq = [r["err_file"] for r in recs]
    by = [r["file_bytes"] for r in recs]
    best = min(recs, key=lambda r: (r["err_file"], r["file_bytes"]))
    return {"seeds": [r["seed"] for r in recs], "n": len(recs),
            "err_float_best": min(ef), "err_float_median": statistics.median(ef),
            "err_file_best": min(eq), "err_file_median": statistics.median(eq),
            "bytes_min": min(by), "bytes_median": statistics.median(by),
            "true_ratio_median": statistics.median(r["true_ratio"] for r in recs),
            "eq14_ratio_median": statistics.median(r["paper_eq14_ratio"] for r in recs),
            "best_file": best["file"], "best_seed": best["seed"], "stored_params": recs[0]["stored_params"],
            "epochs": sorted({r["epochs"] for r in recs}), "recipe": recipe_label(recs[0]), "qat_epochs": recs[0]["qat_epochs"],
            "train_seconds_median": statistics.median(r["train_seconds"] for r in recs),
            "qat_seconds_median": statistics.median(r["qat_seconds"] for r in recs),
            "evaluators": sorted({r["evaluator"] for r in recs}), "dense_float32_bytes": recs[0]["dense_float32_bytes"]}


def _targets(row: str, s: dict[str, Any]) -> str:
    """Whether the row's issue-5 target is met on the MEDIAN seed (and on the best)."""
    p = PAPER_TABLE1[row]
    need_bytes = s["dense_float32_bytes"] / p["cr_qh"]  # the paper's +QH ratio as a file size
    out = []
    for tag, err, size in (("median", s["err_file_median"], s["bytes_median"]),
                           ("best", s["err_file_best"], s["bytes_min"])):
        # errors are image counts / 10,000 in percent: round away float noise (118/10000 -> 1.18, not
        # 1.1800000000000002) before comparing, never toward the target by more than that noise
        ok_e, ok_b = round(err, 9) <= p["err_qh"], size <= need_bytes
        miss = []
        if not ok_e:
            miss.append(f"error +{_pct(err - p['err_qh'])} pt")
        if not ok_b:
            miss.append(f"size +{size - need_bytes:.0f} B")
        out.append(f"{tag}: " + ("MET" if not miss else "missed (" + ", ".join(miss) + ")"))
    return "; ".join(out)


#: Issue 22's goals: (label, model, method, every file at most this many bytes, median file error at most %).
ISSUE22_GOALS = (("LeNet-5 ADA", "lenet5", "ada", 1500, 0.94), ("LeNet-300-100 ADA", "lenet300", "ada", 2666, 1.91),
                 ("LeNet-5 SCADA", "lenet5", "scada", 1500, 1.18),
                 ("LeNet-300-100 SCADA", "lenet300", "scada", 2666, 2.26))


def _goal_lines(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    """Issue 22: for each goal, the (row, export) groups of >= 3 seeds whose LARGEST file fits the size,
    best median first (up to 3), the best within 5% and 15% over the size, and the smallest group that
    meets the error at any size."""
    L = ["", "## Issue 22 goals (every file within the size, median file error within the goal)", "",
         "Only groups of at least 3 seeds. A warm-started export (issue 22: QAT from the row's committed "
         "`paper` file) was tuned on seed 0, so its median over the other seeds is shown too. Protocols: "
         "`results/NOTES.md` rows 29-30; re-run one group with `python -m research.reproduce mnist --stage "
         "export --rows ROW --seeds 0,1,2,3,4,5 --variants EXPORT` (warm starts need no checkpoint; the "
         "others need the row's training stage first).", "",
         "| goal | row / export | seeds | largest file B | median err % | median err % without seed 0 | verdict |",
         "|---|---|---|---|---|---|---|"]
    for label, model, method, cap, err in ISSUE22_GOALS:
        cands = []
        for (run, var), rs in groups.items():
            if len(rs) < 3 or rs[0].get("model") != model or rs[0].get("method") != method:
                continue
            med = statistics.median(r["err_file"] for r in rs)
            rest = [r["err_file"] for r in rs if r["seed"] != 0]
            warm = bool((rs[0].get("variant_spec") or {}).get("warm_start"))
            cands.append({"key": f"{run} / {var}", "n": len(rs), "max": max(r["file_bytes"] for r in rs),
                          "med": med, "rest": statistics.median(rest) if warm and rest else None})
        fits = sorted((c for c in cands if c["max"] <= cap), key=lambda c: (c["med"], c["max"]))[:3]
        # the closest approaches just over the size (5% and 15%), and the smallest group meeting the error
        near = [min((c for c in cands if c["max"] <= f * cap), key=lambda c: (c["med"], c["max"]), default=None)
                for f in (1.05, 1.15)]
        accurate = sorted((c for c in cands if round(c["med"], 9) <= err), key=lambda c: c["max"])[:1]
        shown = []
        for c in fits + near + accurate:
            if c is not None and c not in shown:
                shown.append(c)
        if not shown:
            L.append(f"| {label}: <= {cap:,} B, <= {err}% | (no group of >= 3 seeds) | | | | | |")
        for c in shown:
            ok_b, ok_e = c["max"] <= cap, round(c["med"], 9) <= err
            miss = [] if ok_e else [f"error +{_pct(c['med'] - err)} pt"]
            miss += [] if ok_b else [f"size +{c['max'] - cap} B"]
            verdict = "MET" if not miss else "missed (" + ", ".join(miss) + ")"
            rest = "" if c["rest"] is None else _pct(c["rest"])
            L.append(f"| {label}: <= {cap:,} B, <= {err}% | {c['key']} | {c['n']} | {c['max']:,} | {_pct(c['med'])} | "
                     f"{rest} | {verdict} |")
    return L


def write_report(out: Path) -> dict[str, Any]:
    """Collect ``out/runs/*.json`` (and the recipe probes in ``out/logs/``) into ``out/mnist.json`` and
    ``out/mnist.md``; return the JSON document."""
    recs = _load(out)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in recs:
        groups[(r["row"], r["variant"])].append(r)
    summary = {f"{run}/{var}": _summary(rs) for (run, var), rs in sorted(groups.items())}
    for key, s in summary.items():
        spec = ROWS.get(key.split("/")[0])
        if spec is not None:
            s["table_row"] = spec.row
            s["target"] = _targets(spec.row, s)
    doc = {"generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "paper_table1": PAPER_TABLE1,
           "summary": summary, "runs": recs}
    write_atomic(out / "mnist.json", json.dumps(doc, indent=1, sort_keys=True).encode())

    L = ["# MNIST: ADA-Tucker paper Table 1 vs ADT `.adt` files", "",
         "Generated by `python -m research.reproduce mnist --stage report` from `results/runs/*.json`. "
         "Error after quantization = the `.adt` FILE run by the torch-free evaluator named in the last column; "
         "true ratio = float32 bytes of the dense model / file bytes (everything counted); Eq. 14 = the paper's "
         "formula 32 x raw ratio / mean Huffman code length (ignores tables, shapes, header, architecture). "
         "Errors: best / median over the listed seeds. Paper columns are copied from its Table 1.", "",
         "## Table 1 rows", "",
         "| row | export | params (paper) | err float % (paper raw) | err file % best / median (paper +QH) "
         "| Eq.14 ratio (paper) | true ratio | file B (paper-implied) | seeds | recipe | epochs + QAT "
         "| train s (median) | target |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run, spec in ROWS.items():
        row = spec.row
        p = PAPER_TABLE1[row]
        for (r, var), _ in sorted(groups.items()):
            if r != run:
                continue
            s = summary[f"{r}/{var}"]
            L.append(f"| {row}" + (f" ({run})" if run != row else "") + f" | {var} | {s['stored_params']} ({p['params']}) | {s['err_float_best']:.2f} / "
                     f"{_pct(s['err_float_median'])} ({p['err_raw']}) | {s['err_file_best']:.2f} / "
                     f"{_pct(s['err_file_median'])} ({p['err_qh']}) | {s['eq14_ratio_median']:.0f} ({p['cr_qh']}) | "
                     f"{s['true_ratio_median']:.0f} | {s['bytes_median']:.0f} ({s['dense_float32_bytes'] / p['cr_qh']:.0f}) | "
                     f"{','.join(map(str, s['seeds']))} | {s['recipe']} | {'/'.join(map(str, s['epochs']))} + {s['qat_epochs']} | "
                     f"{s['train_seconds_median']:.0f} | {_targets(row, s)} |")
    L += _goal_lines(groups)
    abl = [(k, v) for k, v in summary.items() if k.split("/")[0] in ABLATIONS]
    if abl:
        L += ["", "## Ablations (shorter runs: see epochs)", "",
              "| run | what | export | params | err float % | err file % | file B | true ratio | epochs | seeds |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for k, s in abl:
            run, var = k.split("/")
            L.append(f"| {run} | {ABLATIONS[run].note} | {var} | {s['stored_params']} | {_pct(s['err_float_median'])} | "
                     f"{_pct(s['err_file_median'])} | {s['bytes_median']:.0f} | {s['true_ratio_median']:.0f} | {'/'.join(map(str, s['epochs']))} | "
                     f"{','.join(map(str, s['seeds']))} |")
    probes = sorted((out / "logs").glob("recipe-*.json"))
    if probes:
        L += ["", "## Recipe probes (float models only, no file; `python -m research.reproduce.recipe`)", "",
              "| probe | base run | seed | recipe | epochs | err float % (last epoch) | best epoch err % "
              "(not used for selection claims) | last train loss | train s |",
              "|---|---|---|---|---|---|---|---|---|"]
        for pth in probes:
            g = json.loads(pth.read_text())
            accs = g.get("test_acc_per_epoch") or [g["float_test_acc"]]
            L.append(f"| {g['run']} | {g.get('base_run', '')} | {g['seed']} | {recipe_label(g)} | {g['epochs']} | "
                     f"{100 * (1 - g['float_test_acc']):.2f} | {100 * (1 - max(accs)):.2f} | "
                     f"{g['epoch_losses'][-1]:.4f} | {g['train_seconds']:.0f} |")
    L += ["", "## Every exported file (the log of what was tried)", "",
          "| file | params | Q/b per group | QAT ep | err float % | err exporter-quant % | err file % | bytes | "
          "header+checksum / arch / tensor table / code tables B | payload B (cores / factors / other) | true ratio | "
          "Eq.14 | train s | evaluator |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        qs = ",".join(f"{g['label']}:{g['q']}/b{g['b']:.3g}" for g in r["groups"])
        if r.get("rounding", "floor") != "floor":  # records before the option existed were all floor
            qs += f" ({r['rounding']})"
        sec = r["sections"]
        L.append(f"| {r['file']} | {r['stored_params']} | {qs} | {r['qat_epochs']} | {r['err_float']:.2f} | "
                 f"{r['err_exporter_quant']:.2f} | {r['err_file']:.2f} | {r['file_bytes']} | "
                 f"{sec.get('header', 0) + sec.get('checksum', 0)} / {sec.get('architecture', 0)} / "
                 f"{sec.get('tensor table', 0)} / {sec.get('code tables', 0)} | {sec.get('payload', 0)} ("
                 + " / ".join(f"{v:.0f}" for v in r["payload_split_bytes"].values()) + ") | "
                 f"{r['true_ratio']:.0f} | {r['paper_eq14_ratio']:.0f} | {r['train_seconds']:.0f} | {r['evaluator']} |")
    write_atomic(out / "mnist.md", ("\n".join(L) + "\n").encode())
    return doc
