"""Where every byte of a .adt file goes: the data behind ``adt inspect`` (torch-free).

:func:`build_report` turns a file into a JSON-serializable dict; :func:`render_text` prints it as a
table; :func:`plot_report` draws the size breakdown (matplotlib, the optional ``[plot]`` extra).

The bytes by section and the payload split come from :func:`adt.runtime.format.byte_breakdown`, the
one byte-accounting routine of ADT (it checks that they add up to the file size exactly); this module
adds the per-core and per-parameter view and checks that it adds up to the payload.

The paper's ratios (Eq. 11/12 raw, Eq. 14 "+QH") count values, not bytes; they are reported next to
the true on-disk ratio, labelled as the paper's, so a reader can compare with its Table 1.
"""
from __future__ import annotations

import os
import unicodedata
from typing import Any

import numpy as np

from adt.runtime.format import (CORE_CP, ENC_PLAIN, ENC_TT, SECTION_ARCH, SECTION_META, AdtFile, byte_breakdown,
                                entropy_bits, read_adt)
from adt.runtime.preprocess import INPUT_KEY, LABELS_KEY, AdtPreprocessError, read_convention, read_labels

__all__ = ["build_report", "render_text", "plot_report", "entropy_bits", "safe_text"]

DISPLAY_LIMIT = 120  # characters of a name / metadata value shown by render_text
LABELS_SHOWN = 20    # class names listed by render_text (the JSON report has them all)


# -- small helpers -------------------------------------------------------------------------------
def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def safe_text(value: Any, limit: int | None = DISPLAY_LIMIT) -> str:
    """``value`` as printable text: control/format characters and backslashes escaped (no terminal
    escape sequence from a file can reach the screen), cut to ``limit`` characters."""
    out = []
    for ch in str(value):
        cat = unicodedata.category(ch)
        if ch == "\\":
            out.append("\\\\")
        elif cat[0] == "C" or cat in ("Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    text = "".join(out)
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _check(ok: bool, what: str) -> None:
    """The accounting invariants; an explicit raise, so ``python -O`` cannot skip them."""
    if not ok:
        raise AssertionError(f"inspect accounting bug: {what}")


# -- the report ----------------------------------------------------------------------------------
def build_report(source: AdtFile | bytes | str | os.PathLike) -> dict:
    """A JSON-serializable description of a .adt file (a path, its bytes, or a decoded AdtFile).

    Raises an AdtError (from the reader) for an invalid file; raises AssertionError if the byte
    accounting does not add up to the file size or the payload (a reader/report bug, never a user error).
    """
    f = source if isinstance(source, AdtFile) else read_adt(source)

    # Which parameters use each core: a core used by more than one is a SCADA shared core.
    users: dict[int, list[str]] = {i: [] for i in range(len(f.cores))}
    for p in f.params:
        if p.core is not None:
            users[p.core].append(p.name)

    # -- bytes per section, and the payload split (bits) ------------------------------------------
    bd = byte_breakdown(f)  # checks that both add up
    rows = [{"name": r.name, "kind": r.kind, "bytes": r.bytes, "share": r.bytes / f.file_size} for r in bd.sections]
    payload_split = [{"name": n, "bits": b, "bytes": b / 8, "share_of_file": b / 8 / f.file_size}
                     for n, b in bd.payload_bits.items()]

    # -- per core ---------------------------------------------------------------------------------
    cores = []
    for i, c in enumerate(f.cores):
        n = c.stored_count
        cores.append({
            "index": i, "kind": "CP" if c.kind == CORE_CP else "Tucker", "dims": list(c.dims),
            "group": c.group, "users": users[i], "stored_values": n, "bits": c.bits,
            "avg_code_bits": _ratio(c.bits, n), "entropy_bits": entropy_bits(c.symbols),
        })

    # -- per parameter ----------------------------------------------------------------------------
    layers = []
    for p in f.params:
        numel = p.numel
        core_bits = 0
        ranks = None
        if p.encoding == ENC_PLAIN:
            arrays = [p.symbols.reshape(-1)]
            method, core_dims, core_idx, core_share_bits = "plain", None, None, 0.0
        elif p.encoding == ENC_TT:
            # a tensor train has no shared core: its own TT cores are all its values
            arrays = [g.reshape(-1) for g in p.factors]
            method, core_dims, core_idx, core_share_bits = "TT", None, None, 0.0
            ranks = list(p.ranks)
        else:
            arrays = [m.reshape(-1) for m in p.factors]
            c = f.cores[p.core]
            shared = len(users[p.core]) > 1
            method = "SCADA shared core" if shared else ("CP" if c.kind == CORE_CP else "ADA")
            core_dims, core_idx = list(c.dims), p.core
            if shared:
                # A shared core is listed once under "cores"; for the per-layer ratio its bits are
                # split evenly among the parameters that use it.
                core_share_bits = c.bits / len(users[p.core])
            else:
                core_share_bits, core_bits = 0.0, c.bits
                arrays.append(c.symbols.reshape(-1))
        sym = np.concatenate(arrays)
        bits = p.bits + core_bits
        layers.append({
            "name": p.name, "shape": list(p.shape), "numel": numel,
            "reshape": list(p.reshape) if p.reshape is not None else None,
            "core": core_idx, "core_dims": core_dims, "tt_ranks": ranks, "method": method, "group": p.group,
            # own values and their payload bits: factors or plain values, plus the core unless shared
            "stored_values": int(sym.size),
            "bits": bits,
            "factor_or_value_bits": p.bits,
            "core_bits": core_bits,
            "core_bits_share": core_share_bits,
            "avg_code_bits": _ratio(bits, sym.size),
            "entropy_bits": entropy_bits(sym),
            "ratio": _ratio(32 * numel, bits + core_share_bits),
        })
    _check(sum(r["bits"] for r in layers) + sum(c.bits for i, c in enumerate(f.cores) if len(users[i]) != 1)
           == f.payload_bits, "per-layer bits do not add up to the payload")

    # -- entropy bound of the payload: one static code per table, so the best any such code could do
    # is sum over tables of (values coded with it) x (their empirical entropy).
    by_table: dict[int, list[np.ndarray]] = {}
    for c in f.cores:
        by_table.setdefault(f.groups[c.group].table, []).append(c.symbols.reshape(-1))
    for p in f.params:
        arrays = [p.symbols.reshape(-1)] if p.encoding == ENC_PLAIN else [m.reshape(-1) for m in p.factors]
        by_table.setdefault(f.groups[p.group].table, []).extend(arrays)
    entropy_total = 0.0
    for arrays in by_table.values():
        allsym = np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)
        entropy_total += allsym.size * entropy_bits(allsym)

    # -- totals -----------------------------------------------------------------------------------
    orig = f.original_float32_bytes()
    by_kind = {s.kind: s.length for s in f.sections}
    non_weight = by_kind.get(SECTION_ARCH, 0) + by_kind.get(SECTION_META, 0)
    weights_only = f.file_size - non_weight
    stored_values = sum(c.stored_count for c in f.cores) + sum(p.stored_count for p in f.params)
    totals = {
        "parameters": sum(p.numel for p in f.params),
        "original_float32_bytes": orig,
        "file_bytes": f.file_size,
        "true_ratio": _ratio(orig, f.file_size),
        "weights_only_bytes": weights_only,
        "weights_only_ratio": _ratio(orig, weights_only),
        "stored_values": stored_values,
        "payload_bits": f.payload_bits,
        "avg_code_bits": _ratio(f.payload_bits, stored_values),
        "entropy_bound_bits": entropy_total,
        "payload_over_entropy": _ratio(f.payload_bits, entropy_total),
    }

    # -- the paper's formula ratios (Sec. 3): values, not bytes ------------------------------------
    n_shared = sum(1 for u in users.values() if len(u) > 1)
    n_own = sum(1 for u in users.values() if len(u) == 1)
    n_tt = sum(1 for p in f.params if p.encoding == ENC_TT)
    equation = ("no decomposed parameters" if not n_shared and not n_own and not n_tt else
                "tensor-train values (Eq. 11's counting applied to TT cores)" if not n_shared and not n_own else
                "Eq. 12 (SCADA-Tucker)" if n_shared and not n_own else
                "Eq. 11/12 (own and shared cores)" if n_shared else "Eq. 11 (ADA-Tucker)")
    tucker = [p for p in f.params if p.encoding != ENC_PLAIN]   # every decomposed parameter (Tucker, CP, TT)
    tucker_cores = sorted({p.core for p in tucker if p.core is not None})
    n_tucker = sum(p.numel for p in tucker)
    stored_tucker = sum(f.cores[i].stored_count for i in tucker_cores) + sum(p.stored_count for p in tucker)
    raw = _ratio(totals["parameters"], stored_values)
    a_bar = totals["avg_code_bits"]
    paper = {
        "label": "the paper's formulas (Zhong et al., Sec. 3), counting values, not file bytes",
        "equation": equation,
        # Eq. 11/12 with every parameter counted (plain ones, e.g. biases, stored as themselves),
        # as the #(Param.) column of Table 1 / Table 9 counts them.
        "raw_ratio": raw,
        # Eq. 11/12 exactly as written: the decomposed layers only.
        "raw_ratio_decomposed_only": _ratio(n_tucker, stored_tucker),
        # Eq. 14: r_QH = 32 r / a_bar, a_bar = average Huffman code length of the stored values.
        "avg_code_bits": a_bar,
        "qh_ratio": (32 * raw / a_bar) if raw and a_bar else None,
    }

    # -- the typed metadata entries (FORMAT.md §4.1): parsed, or the reason they cannot be --------
    try:
        conv = read_convention(f.metadata)
        convention = None if conv is None else {**conv.to_dict(), "description": conv.describe()}
    except AdtPreprocessError as exc:
        convention = {"error": str(exc)}
    try:
        labels = read_labels(f.metadata)
    except AdtPreprocessError as exc:
        labels = {"error": str(exc)}

    return {
        "input_convention": convention,
        "labels": labels,
        "file": {
            "version": f"{f.version[0]}.{f.version[1]}",
            "bytes": f.file_size,
            "metadata": dict(f.metadata),
            "architecture_bytes": len(f.architecture) if f.architecture is not None else None,
            "tables": len(f.tables),
            "groups": [{"q": g.q, "b": g.b, "table": g.table} for g in f.groups],
        },
        "sections": rows,
        "payload": payload_split,
        "cores": cores,
        "layers": layers,
        "totals": totals,
        "paper": paper,
    }


# -- text ----------------------------------------------------------------------------------------
def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:,.1f}x"


def _fmt_bits(b: float | None) -> str:
    return "-" if b is None else f"{b:.2f}"


def _fmt_bytes(b: float) -> str:
    return f"{b:,.0f} B" if b >= 10 or float(b).is_integer() else f"{b:.1f} B"


def _dims(d: list[int] | None) -> str:
    return "-" if d is None else "x".join(str(x) for x in d)


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def render_text(report: dict) -> str:
    """The report as a readable plain-text table (every string from the file escaped)."""
    fi, t, pp = report["file"], report["totals"], report["paper"]
    out = [f".adt version {fi['version']}, {fi['bytes']:,} bytes, {len(report['layers'])} parameters, "
           f"{len(report['cores'])} cores, {fi['tables']} code table(s)"]
    conv, labels = report.get("input_convention"), report.get("labels")
    parsed = {INPUT_KEY: isinstance(conv, dict) and "error" not in conv, LABELS_KEY: isinstance(labels, list)}
    for k, v in fi["metadata"].items():
        if parsed.get(k):
            continue  # shown parsed below
        out.append(f"  {safe_text(k, 40)}: {safe_text(v)}")
    if conv is None:
        out.append("  input convention: none stored (raw samples need an explicit convention; see adt run --help)")
    elif "error" in conv:
        out.append(f"  input convention: INVALID, {safe_text(conv['error'])}")
    else:
        out.append(f"  input convention: {safe_text(conv['description'], None)}")
    if isinstance(labels, dict):
        out.append(f"  labels: INVALID, {safe_text(labels['error'])}")
    elif labels is not None:
        shown = ", ".join(safe_text(n, 40) for n in labels[:LABELS_SHOWN])
        more = f", ... ({len(labels) - LABELS_SHOWN} more)" if len(labels) > LABELS_SHOWN else ""
        out.append(f"  labels ({len(labels)}): {shown}{more}")
    groups = ", ".join(f"#{i}: Q={g['q']} b={g['b']:g} table {g['table']}" for i, g in enumerate(fi["groups"]))
    out.append(f"  quantizer groups: {groups or '-'}")
    if fi["architecture_bytes"] is not None:
        out.append(f"  architecture: ONNX graph, {fi['architecture_bytes']:,} bytes before DEFLATE")

    out += ["", "Bytes by section"]
    rows = [[r["name"], f"{r['bytes']:,}", f"{100 * r['share']:.1f}%"] for r in report["sections"]]
    rows.append(["total", f"{fi['bytes']:,}", "100.0%"])
    out += _table(["section", "bytes", "share"], rows, {1, 2})
    out += ["", "Payload split"]
    rows = [[r["name"], f"{r['bits']:,}", f"{r['bytes']:,.1f}", f"{100 * r['share_of_file']:.1f}%"] for r in report["payload"]]
    out += _table(["part", "bits", "bytes", "of file"], rows, {1, 2, 3})

    if report["cores"]:
        out += ["", "Cores"]
        rows = [[str(c["index"]), c["kind"], _dims(c["dims"]), str(len(c["users"])), f"{c['stored_values']:,}",
                 f"{c['bits']:,}", _fmt_bits(c["avg_code_bits"]), _fmt_bits(c["entropy_bits"])] for c in report["cores"]]
        out += _table(["core", "kind", "dims", "users", "values", "bits", "avg bits", "entropy"], rows, {0, 3, 4, 5, 6, 7})

    out += ["", "Parameters (stored values and bits include the parameter's own core; avg bits = payload bits"
                " per value; entropy = empirical, bits per value; a TT parameter's core column: its ranks r_1..r_(d-1))"]
    rows = []
    for r in report["layers"]:
        core = _dims(r["core_dims"]) if r.get("tt_ranks") is None else "r=" + (_dims(r["tt_ranks"]) if r["tt_ranks"] else "-")
        rows.append([safe_text(r["name"], 48), _dims(r["shape"]), _dims(r["reshape"]), core,
                     r["method"], f"{r['stored_values']:,}", f"{r['bits']:,}", _fmt_bits(r["avg_code_bits"]),
                     _fmt_bits(r["entropy_bits"]), _fmt_ratio(r["ratio"])])
    out += _table(["name", "shape", "reshape", "core", "method", "stored", "bits", "avg bits", "entropy", "ratio"],
                  rows, {5, 6, 7, 8, 9})
    if any(r["method"] == "SCADA shared core" for r in report["layers"]):
        out.append("(a shared core's bits are split evenly among its users in the per-parameter ratio;"
                   " its values are listed under Cores)")

    out += ["", "Totals",
            f"  original float32 bytes : {t['original_float32_bytes']:,} ({t['parameters']:,} parameters x 4)",
            f"  file bytes             : {t['file_bytes']:,}",
            f"  TRUE ratio             : {_fmt_ratio(t['true_ratio'])}  (original float32 bytes / file bytes)",
            f"  weights-only ratio     : {_fmt_ratio(t['weights_only_ratio'])}  (file without architecture and"
            f" metadata: {t['weights_only_bytes']:,} bytes)",
            f"  payload                : {t['payload_bits']:,} bits for {t['stored_values']:,} values"
            f" ({_fmt_bits(t['avg_code_bits'])} bits/value); entropy bound {t['entropy_bound_bits']:,.0f} bits"
            + (f" (payload = {t['payload_over_entropy']:.3f}x)" if t["payload_over_entropy"] else ""),
            "",
            f"Paper's formula ratios ({pp['equation']}; they count values, not bytes, and ignore tables,",
            "headers and the architecture):",
            f"  raw, all parameters     : {_fmt_ratio(pp['raw_ratio'])}",
            f"  raw, decomposed only    : {_fmt_ratio(pp['raw_ratio_decomposed_only'])}",
            f"  +QH (Eq. 14, a={_fmt_bits(pp['avg_code_bits'])} bits) : {_fmt_ratio(pp['qh_ratio'])}"]
    return "\n".join(out) + "\n"


# -- plot ----------------------------------------------------------------------------------------
def plot_report(report: dict, path: str | os.PathLike, top: int = 20) -> None:
    """Draw where the bytes go (needs matplotlib): left, the file by section with the payload split;
    right, the largest parameters by payload bytes. Written atomically as a PNG."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import EngFormatter, MaxNLocator

    from adt.runtime.format import write_atomic

    parts = [(r["name"], r["bytes"]) for r in report["sections"] if r["name"] != "payload"]
    parts += [("payload: " + r["name"], r["bytes"]) for r in report["payload"] if r["bits"]]
    parts = [(n, b) for n, b in parts if b > 0]
    parts.sort(key=lambda x: x[1])

    layers = sorted(report["layers"], key=lambda r: r["bits"] + r["core_bits_share"], reverse=True)
    shown, rest = layers[:top], layers[top:]
    lnames = [safe_text(r["name"], 32) for r in shown]
    lbytes = [(r["bits"] + r["core_bits_share"]) / 8 for r in shown]
    if rest:
        lnames.append(f"{len(rest)} others")
        lbytes.append(sum(r["bits"] + r["core_bits_share"] for r in rest) / 8)
    lnames, lbytes = lnames[::-1], lbytes[::-1]

    t = report["totals"]
    height = max(4.0, 0.32 * max(len(parts), len(lnames)) + 1.8)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, height))
    total = report["file"]["bytes"]
    y = range(len(parts))
    bars = a1.barh(list(y), [b for _, b in parts], color=["#4c72b0" if n.startswith("payload") else "#999999" for n, _ in parts])
    a1.set_yticks(list(y), [n for n, _ in parts])
    a1.set_xlabel("bytes")
    a1.set_title(f"file: {total:,} bytes (true ratio {_fmt_ratio(t['true_ratio'])})")
    for bar, (_, b) in zip(bars, parts):
        a1.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {_fmt_bytes(b)} ({100 * b / total:.1f}%)",
                va="center", fontsize=8)
    a1.set_xlim(0, max(b for _, b in parts) * 1.45)
    for ax in (a1, a2):
        ax.xaxis.set_major_formatter(EngFormatter(unit="B"))
        ax.xaxis.set_major_locator(MaxNLocator(5))

    colors = {"ADA": "#4c72b0", "CP": "#55a868", "SCADA shared core": "#c44e52", "TT": "#8172b2", "plain": "#999999"}
    method_of = {safe_text(r["name"], 32): r["method"] for r in shown}
    y2 = range(len(lnames))
    bars = a2.barh(list(y2), lbytes, color=[colors.get(method_of.get(n, ""), "#dddddd") for n in lnames])
    a2.set_yticks(list(y2), lnames, fontsize=8)
    a2.set_xlabel("payload bytes (incl. own core / share of a shared core)")
    a2.set_title("payload by parameter")
    for bar, b in zip(bars, lbytes):
        a2.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {_fmt_bytes(b)}", va="center", fontsize=7)
    a2.set_xlim(0, max(lbytes) * 1.25 if lbytes else 1)
    a2.legend(handles=[Patch(color=c, label=m) for m, c in colors.items()
                       if any(r["method"] == m for r in report["layers"])], loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    write_atomic(path, buf.getvalue())
