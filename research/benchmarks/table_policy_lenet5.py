"""Which is smaller on a LeNet-5-shaped model: one shared Huffman table or one table per group?

Writes results/table_policy_lenet5.json. Run (from the repository root):
    .venv/bin/python -m research.benchmarks.table_policy_lenet5
"""
from __future__ import annotations

import json

import numpy as np

from adt.runtime.format import read_adt
from adt.runtime.format.binary import encode_varint
from adt.runtime.format.huffman import code_lengths, encode_table
from adt.runtime.samples import B, Q, LayerSymbols, lenet5_plan, lenet5_symbols, lenet5_writer
from research.paths import RESULTS

__all__ = ["SEEDS", "OUT", "span_table_bytes", "layer_stream", "table_encodings", "measure", "main"]

SEEDS = range(5)
OUT = RESULTS / "table_policy_lenet5.json"


def span_table_bytes(lengths: np.ndarray) -> int:
    """Size of the scaffold's first table encoding, kept here only for comparison: smin, nspan, then
    the Exp-Golomb zig-zag delta of EVERY length in smin..smax (unused symbols as length 0)."""
    used = np.flatnonzero(lengths)
    prev, nbits = 0, 0
    for length in lengths[used[0]:used[-1] + 1].tolist():
        v = 2 * (length - prev) if length >= prev else 2 * (prev - length) - 1
        nbits += 2 * (v + 1).bit_length() - 1
        prev = length
    return len(encode_varint(int(used[0]))) + len(encode_varint(int(used[-1] - used[0] + 1))) + (nbits + 7) // 8


def layer_stream(layer: LayerSymbols) -> np.ndarray:
    """Every symbol of one layer: core, factors, bias."""
    return np.concatenate([layer.core.ravel(), *[m.ravel() for m in layer.factors], layer.bias])


def table_encodings(layers: list[LayerSymbols]) -> dict:
    """Bytes of the stored code tables under the current (gap + delta over used symbols) encoding
    and the span encoding it replaced, for one shared table and for one table per layer."""
    per_layer = [layer_stream(layer) for layer in layers]
    shared = code_lengths(np.bincount(np.concatenate(per_layer), minlength=Q))
    per = [code_lengths(np.bincount(s, minlength=Q)) for s in per_layer]
    return {
        "shared_used_gap_delta": len(encode_table(shared)), "shared_span_delta": span_table_bytes(shared),
        "per_layer_used_gap_delta": sum(len(encode_table(x)) for x in per),
        "per_layer_span_delta": sum(span_table_bytes(x) for x in per),
        "shared_used_symbols": int(np.count_nonzero(shared)),
    }


def measure(layers: list[LayerSymbols], tables: str, groups: str) -> dict:
    data = lenet5_writer(layers, tables, groups).to_bytes()
    f = read_adt(data)
    by = {s.name: s.length for s in f.sections}
    return {"file_bytes": len(data), "code_table_bytes": by["code tables"], "tensor_table_bytes": by["tensor table"],
            "payload_bytes": by["payload"], "tables": len(f.tables), "header_bytes": f.header_bytes}


def main() -> int:
    runs = []
    for seed in SEEDS:
        layers = lenet5_symbols(seed)
        symbols = np.concatenate([layer_stream(layer) for layer in layers])
        p = np.bincount(symbols, minlength=Q) / symbols.size
        entropy_bits = float(-(p[p > 0] * np.log2(p[p > 0])).sum() * symbols.size)
        runs.append({
            "seed": seed, "symbols": int(symbols.size), "distinct_symbols": int((p > 0).sum()),
            "entropy_bytes_one_code": entropy_bits / 8,
            "table_encodings": table_encodings(layers),
            "one_group": measure(layers, "shared", "one"),
            "per_layer_groups_shared_table": measure(layers, "shared", "per_layer"),
            "per_layer_groups_per_group_tables": measure(layers, "per_group", "per_layer"),
        })
    keys = ["one_group", "per_layer_groups_shared_table", "per_layer_groups_per_group_tables"]
    summary = {k: float(np.median([r[k]["file_bytes"] for r in runs])) for k in keys}
    enc_keys = list(runs[0]["table_encodings"])
    enc_summary = {k: float(np.median([r["table_encodings"][k] for r in runs])) for k in enc_keys}
    result = {
        "what": "LeNet-5-shaped ADA-Tucker model (paper appendix shapes, Laplacian synthetic values), Q=512 b=3",
        "layers": [{"name": p.name, "shape": p.shape, "reshape": p.reshape, "core": p.core, "bias": p.bias}
                   for p in lenet5_plan()],
        "q": Q, "b": B, "seeds": list(SEEDS),
        "median_file_bytes": summary,
        "smaller": min(summary, key=summary.get),
        "median_table_bytes_by_encoding": enc_summary,
        "runs": runs,
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'layout':40s} {'file':>6s} {'tables':>7s} {'payload':>8s}")
    for k in keys:
        r = runs[0][k]
        print(f"{k:40s} {summary[k]:6.0f} {r['code_table_bytes']:7d} {r['payload_bytes']:8d}  (tables/payload of seed 0)")
    print("code-table bytes (median): " + ", ".join(f"{k} {v:.0f}" for k, v in enc_summary.items()))
    print(f"smaller: {result['smaller']}  -> {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
