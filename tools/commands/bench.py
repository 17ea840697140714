"""``adt bench FILE.adt``: how fast a .adt file opens and runs, next to the dense float32 ONNX model of
the same network run by ONNX Runtime, and its peak memory (the load; the load plus the first batch-1
run). The measurements are :mod:`adt.tools.benchmark`'s."""
from __future__ import annotations

import argparse
import json
import os
import sys

from adt.tools.benchmark import bench, bench_threads, render_bench
from adt.tools.commands.run import add_max_memory
from adt.tools.errors import CommandError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the .adt file to benchmark (it needs an architecture section)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="runs per measurement; each number is their median (default 5; steady-state "
                             "latencies use max(4 x repeats, 20) runs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit every engine to N threads: NumPy's BLAS (OMP/OPENBLAS/MKL_NUM_THREADS, in a child "
                             "process) and ONNX Runtime's intra-op pool (the runtime's engine and the dense baseline "
                             "alike). On a small shared machine, --threads 1 gives stable numbers (default: each "
                             "library's own default)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory subprocess. By default a fresh process measures the peak resident "
                             "memory (Linux: VmHWM minus the RSS before the load) of adt.runtime.load (numpy engine: "
                             "read, decode, rebuild, engine preparation) and, for the same process, of the load plus "
                             "the first batch-1 run (activations and work space included): JSON memory.peak_bytes "
                             "and memory.run_peak_bytes, each also over the dense float32 weights")
    add_max_memory(parser)
    parser.add_argument("--json", action="store_true", help="print the results as JSON (for scripts)")


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise CommandError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"--threads must be >= 1, got {args.threads}")
    if not os.path.isfile(args.file):
        raise CommandError(f"{args.file!r} is not a file")
    if args.threads:
        result = bench_threads(args.file, args.repeats, not args.no_memory, args.threads, args.max_memory)
    else:
        result = bench(args.file, args.repeats, memory=not args.no_memory, max_memory=args.max_memory)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=1, ensure_ascii=True) + "\n")
    else:
        sys.stdout.write(render_bench(result))
    return 0
