"""``adt run FILE.adt``: run a .adt model on a .npy batch, or score it on the MNIST test set.

Torch-free: needs numpy and bitarray (plus onnxruntime for ``--engine onnxruntime``).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

import adt.runtime as rt
from adt.runtime import ENGINES
from adt.runtime.format import write_atomic
from adt.runtime.mnist import load_mnist, normalize
from adt.tools.errors import CommandError
from adt.tools.scoring import count_correct, model_input, predict

__all__ = ["MAX_MEMORY_HELP", "add_arguments", "add_max_memory", "parse_size", "run"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MAX_MEMORY_HELP = (
    "memory budget for loading and running, checked before the work (weight rebuild, constant folding, "
    "every intermediate and the peak of live ones): bytes (268435456) or a number with a suffix K, M, G "
    "or T, each a power of 1024, written alone or with B/iB (512M, 2GB, 1.5GiB); 'none' for no limit "
    "(default: 256M)")


def parse_size(text: str) -> int | None:
    """``--max-memory`` values: ``"268435456"``, ``"512M"``, ``"2GB"``, ``"1.5GiB"`` (K/M/G/T are powers of
    1024, with or without ``B``/``iB``) -> bytes; ``"none"`` -> None (no limit). Raises
    ``argparse.ArgumentTypeError`` (a one-line usage error) for anything else or a size below 1 byte."""
    t = text.strip().lower().replace("_", "")
    if t in ("none", "unlimited"):
        return None
    num = t.rstrip("kmgtib")
    unit = t[len(num):]
    unit = unit[:-2] if unit.endswith("ib") and len(unit) == 3 else unit[:-1] if unit.endswith("b") and len(unit) == 2 else unit
    try:
        value = float(num) if num and unit in _UNITS else None
    except ValueError:
        value = None
    if value is None or not 0 < value < float(1 << 62):
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: give bytes or a number with K, M, G or T (powers of 1024), e.g. 512M, "
            f"2GB, 1.5GiB, or 'none'")
    n = int(value * _UNITS[unit])
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: the budget must be at least 1 byte")
    return n


def add_max_memory(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-memory", type=parse_size, default=rt.DEFAULT_MAX_MEMORY, metavar="SIZE",
                        help=MAX_MEMORY_HELP)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the .adt model to run")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="X.npy",
                     help="a .npy batch [N, ...] for the model's input (float arrays are cast to float32)")
    src.add_argument("--mnist", metavar="DIR", nargs="?", const="",
                     help="score on the MNIST IDX test set in DIR (default: $ADT_DATA); prints the accuracy")
    parser.add_argument("-o", "--output", metavar="OUT.npy",
                        help="with --input: save the outputs to this .npy instead of printing them")
    parser.add_argument("--engine", choices=ENGINES, default="numpy",
                        help="inference engine (default: numpy, needs no extra)")
    parser.add_argument("--batch-size", type=int, default=256, metavar="B",
                        help="images per forward pass (default: 256)")
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N samples")
    add_max_memory(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is also off with --json or when stderr is not a terminal)")


def _run_all(model, x: np.ndarray, batch_size: int, progress: bool) -> tuple[np.ndarray, float]:
    """The outputs on ``x`` and the seconds the forward passes took."""
    t0 = time.perf_counter()
    out = predict(model, x, batch_size, progress)
    return out, time.perf_counter() - t0


def _load_input(path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise CommandError(f"input {path!r} is not a file")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CommandError(f"cannot read {path!r} as a .npy array: {exc}") from None
    if not isinstance(x, np.ndarray):
        raise CommandError(f"{path!r} is an .npz archive, expected one .npy array")
    if not np.issubdtype(x.dtype, np.floating):
        raise CommandError(f"{path!r} holds {x.dtype} values, expected floats")
    if x.ndim < 1 or len(x) == 0:
        raise CommandError(f"{path!r} has shape {list(x.shape)}: expected a non-empty batch [N, ...]")
    return x.astype(np.float32, copy=False)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    if args.output and args.mnist is not None:
        raise CommandError("-o/--output goes with --input (with --mnist only the accuracy is reported)")
    if not Path(args.file).is_file():
        raise CommandError(f"{args.file!r} is not a file")
    progress = not (args.json or args.no_progress) and sys.stderr.isatty()

    if args.mnist is not None:
        images, labels = load_mnist(args.mnist or None, "test")
        if args.limit:
            images, labels = images[:args.limit], labels[:args.limit]
    else:
        x = _load_input(args.input)
        if args.limit:
            x = x[:args.limit]

    t0 = time.perf_counter()
    model = rt.load(args.file, engine=args.engine, max_memory=args.max_memory)
    load_s = time.perf_counter() - t0
    if model.architecture is None:
        raise CommandError(f"{args.file!r} has no architecture section: it holds weights only and cannot be run")

    if args.mnist is not None:
        x = model_input(model, normalize(images))  # flat [N, 784] vectors for a graph that takes them
        out, seconds = _run_all(model, x, args.batch_size, progress)
        if out.ndim != 2:
            raise CommandError(f"the model's output has shape {list(out.shape)}, expected [N, classes]")
        correct = count_correct(out, labels)
        result = {"accuracy": correct / len(labels), "correct": correct, "n": int(len(labels)),
                  "engine": args.engine, "batch_size": args.batch_size, "seconds": seconds,
                  "images_per_s": len(labels) / seconds, "load_seconds": load_s, "file": str(args.file)}
        if args.json:
            print(json.dumps(result, ensure_ascii=True))
        else:
            print(f"accuracy {result['accuracy']:.4f} ({correct}/{len(labels)}) on the MNIST test set, "
                  f"{args.engine} engine, {seconds:.2f} s ({result['images_per_s']:.0f} images/s)")
        return 0

    out, seconds = _run_all(model, x, args.batch_size, progress)
    if args.output:
        buf = io.BytesIO()
        np.save(buf, out, allow_pickle=False)
        write_atomic(args.output, buf.getvalue())
    if args.json:
        result = {"engine": args.engine, "n": int(len(x)), "output_shape": list(out.shape), "seconds": seconds}
        if out.ndim == 2:
            result["argmax"] = out.argmax(axis=1).tolist()
        if args.output:
            result["saved"] = str(args.output)
        else:
            result["output"] = out.tolist()
        print(json.dumps(result, ensure_ascii=True))
    elif args.output:
        print(f"saved outputs {list(out.shape)} float32 to {args.output}")
    else:
        with np.printoptions(precision=6, suppress=True, threshold=2000):
            print(f"output {list(out.shape)} float32:")
            print(out)
        if out.ndim == 2:
            print("argmax:", " ".join(map(str, out.argmax(axis=1).tolist())))
    return 0
