"""Canonical Huffman codec throughput and code efficiency on realistic Laplacian-like symbol streams.

    .venv/bin/python -m research.benchmarks.huffman_bench [--sizes 1000000 10000000] [--repeats 5] [--out results/huffman_bench.json]

For each (Q, b, size): values ~ Laplace(0, scale) quantized with Eq. 13 (the paper's LeNet-5 setting
Q=512, b=3 and LeNet-300-100 setting Q=1500, b=5), then
  * encode: HuffmanCode.encode_into (bitarray's C encoder), symbols/s, median over repeats;
  * decode: HuffmanCode.decode (bitarray's C canonical decoder, the reader's path), symbols/s, median;
  * read_adt: the same stream as one plain parameter of a whole file, symbols/s of read_adt;
  * average code length vs the empirical entropy of the stream (bits/symbol), and the stored code
    table's size in bytes.
Issue 6's targets: decode >= 20 M symbols/s, payload bits <= 1.01 x entropy. Timings depend on the
machine and its load (recorded in the results file): compare runs only on the same machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
from bitarray import bitarray

from adt.runtime.format import AdtWriter, HuffmanCode, quantize, read_adt
from adt.runtime.format.huffman import encode_table
from adt.runtime.format.limits import MAX_Q
from adt.tools.benchmark import median_time
from research.paths import RESULTS

__all__ = ["SETTINGS", "TARGET_DECODE", "TARGET_BITS_OVER_ENTROPY", "bench", "main"]

SETTINGS = [  # Q, b, Laplace scale of the values (assumed; ADA-Tucker weights are Laplacian, Fig. 9)
    (512, 3.0, 0.3),
    (1500, 5.0, 0.3),
]
TARGET_DECODE = 20e6
TARGET_BITS_OVER_ENTROPY = 1.01


def bench(q: int, b: float, scale: float, n: int, repeats: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    symbols = quantize(rng.laplace(0.0, scale, size=n), q, b)
    counts = np.bincount(symbols, minlength=MAX_Q)
    code = HuffmanCode.from_counts(counts)

    def encode():
        bits = bitarray(endian="big")
        code.encode_into(bits, symbols)
        return bits

    t_enc, bits = median_time(encode, repeats)
    t_dec, (decoded, end) = median_time(lambda: code.decode(bits, 0, n, "bench"), repeats)
    assert end == len(bits) and np.array_equal(decoded, symbols), "round trip failed"

    # The same stream as one plain parameter of a whole .adt file: read_adt's full path (CRC,
    # section parsing, table decoding, payload decoding and checks).
    def write():
        w = AdtWriter(tables="shared")
        w.add_plain("x", symbols, w.add_group(q, b))
        return w.to_bytes()

    t_write, data = median_time(write, max(1, repeats // 2))
    t_read, f = median_time(lambda: read_adt(data), repeats)
    assert np.array_equal(f.param("x").symbols, symbols), "file round trip failed"
    p = counts[counts > 0] / n
    entropy = float(-(p * np.log2(p)).sum())
    avg = len(bits) / n
    return {
        "q": q, "b": b, "laplace_scale": scale, "symbols": n, "distinct_symbols": int((counts > 0).sum()),
        "max_code_length": code.max_length, "code_table_bytes": len(encode_table(code.lengths)),
        "encode_symbols_per_s": n / t_enc, "decode_symbols_per_s": n / t_dec,
        "encode_s_median": t_enc, "decode_s_median": t_dec, "repeats": repeats,
        "file_bytes": len(data), "write_adt_s_median": t_write, "read_adt_symbols_per_s": n / t_read,
        "entropy_bits_per_symbol": entropy, "avg_code_bits_per_symbol": avg,
        "bits_over_entropy": avg / entropy,
        "payload_bytes": (len(bits) + 7) // 8,
        "meets_decode_target": n / t_dec >= TARGET_DECODE,
        "meets_efficiency_target": avg / entropy <= TARGET_BITS_OVER_ENTROPY,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.huffman_bench", description="Huffman encode/decode throughput and code length vs entropy.")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="stream lengths (symbols)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (the median is reported)")
    ap.add_argument("--out", type=Path, default=RESULTS / "huffman_bench.json", help="results JSON path")
    args = ap.parse_args(argv)

    rows = [bench(q, b, s, n, args.repeats) for q, b, s in SETTINGS for n in args.sizes]
    result = {
        "what": "canonical Huffman (bitarray C coder) on Eq.13-quantized Laplacian streams",
        "targets": {"decode_symbols_per_s": TARGET_DECODE, "bits_over_entropy": TARGET_BITS_OVER_ENTROPY},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "loadavg_1m_at_start": os.getloadavg()[0]},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'Q':>5s} {'b':>4s} {'symbols':>9s} {'enc Msym/s':>10s} {'dec Msym/s':>10s} {'read_adt':>8s} "
          f"{'H bits':>7s} {'avg bits':>8s} {'ratio':>6s} {'table B':>7s}")
    for r in rows:
        print(f"{r['q']:5d} {r['b']:4.1f} {r['symbols']:9d} {r['encode_symbols_per_s'] / 1e6:10.1f} "
              f"{r['decode_symbols_per_s'] / 1e6:10.1f} {r['read_adt_symbols_per_s'] / 1e6:8.1f} "
              f"{r['entropy_bits_per_symbol']:7.3f} "
              f"{r['avg_code_bits_per_symbol']:8.3f} {r['bits_over_entropy']:6.4f} {r['code_table_bytes']:7d}")
    print(f"targets: decode >= {TARGET_DECODE / 1e6:.0f} M symbols/s, bits <= {TARGET_BITS_OVER_ENTROPY} x entropy"
          f"  (load avg {result['machine']['loadavg_1m_at_start']:.1f} on {os.cpu_count()} CPUs) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
