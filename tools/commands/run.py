"""``adt run FILE.adt``: run a .adt model on image files, a .npy batch or a labelled test set.

Raw samples (``--images``, ``--input`` of raw values, ``--data``, ``--mnist``) are preprocessed with
the input convention the file stores (FORMAT.md §4.1); a file without one is refused for raw data
unless the convention is named explicitly (``--assume-convention mnist``): ADT never guesses how a
model's inputs were normalised. Class names the file stores are printed with the predictions.

Torch-free: needs numpy and bitarray (plus onnxruntime for ``--engine onnxruntime``, Pillow for
image files).
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
from adt.runtime.mnist import load_mnist, resolve_data_dir
from adt.runtime.preprocess import AdtPreprocessError, InputConvention, top_k
from adt.tools.errors import CommandError
from adt.tools.inspect_report import safe_text
from adt.tools.scoring import count_correct, predict

__all__ = ["MAX_MEMORY_HELP", "add_arguments", "add_max_memory", "parse_size", "run"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MAX_MEMORY_HELP = (
    "memory budget for loading and running, checked before the work (weight rebuild, constant folding, "
    "every intermediate and the peak of live ones): bytes (268435456) or a number with a suffix K, M, G "
    "or T, each a power of 1024, written alone or with B/iB (512M, 2GB, 1.5GiB); 'none' for no limit "
    "(default: 256M)")
#: Conventions ``--assume-convention`` knows by name.
NAMED_CONVENTIONS = {"mnist": InputConvention.mnist}


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
    src.add_argument("--images", metavar="DIR",
                     help="classify every image file in DIR (png, jpg, ...; needs Pillow): decoded, resized and "
                          "normalised by the file's input convention; prints each file's top-k classes")
    src.add_argument("--input", metavar="X.npy",
                     help="a .npy batch [N, ...]: raw samples in the layout and dtype of the file's input "
                          "convention (preprocessed here), or, for a file without one (or with --model-ready), "
                          "model-ready float input (cast to float32)")
    src.add_argument("--data", metavar="DIR|FILE.npz",
                     help="score on your labelled test split: an .npz with x_test/y_test, an MNIST-style IDX "
                          "folder or an image folder (test/ or val/ sub-folder, else the whole tree; one "
                          "sub-folder per class); prints the accuracy and per-class counts")
    src.add_argument("--mnist", metavar="DIR", nargs="?", const="",
                     help="score on the MNIST IDX test set in DIR (default: $ADT_DATA), preprocessed with the "
                          "file's own input convention; prints the accuracy")
    parser.add_argument("--top-k", type=int, metavar="K",
                        help="with --images or --input: print the K most likely classes of each sample with their "
                             "scores (softmax of the outputs; default: 1 for --images)")
    parser.add_argument("--assume-convention", metavar="NAME|FILE.json",
                        help="for a file that stores no input convention: how its raw inputs are preprocessed, "
                             "'mnist' (uint8 28x28, (x/255 - 0.1307)/0.3081) or a JSON file / JSON text in the "
                             "format of FORMAT.md 4.1; refused when the file stores its own")
    parser.add_argument("--model-ready", action="store_true",
                        help="with --input or --data: the arrays are already preprocessed float model input; "
                             "the file's input convention is not applied")
    parser.add_argument("--layout", choices=("NCHW", "NHWC"),
                        help="with --data: the layout of the .npz arrays when it cannot be inferred")
    parser.add_argument("-o", "--output", metavar="OUT.npy",
                        help="with --input or --images: save the outputs to this .npy instead of printing them")
    parser.add_argument("--engine", choices=ENGINES, default="numpy",
                        help="inference engine (default: numpy, needs no extra)")
    parser.add_argument("--batch-size", type=int, default=256, metavar="B",
                        help="images per forward pass (default: 256)")
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N samples (or image files)")
    add_max_memory(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is also off with --json or when stderr is not a terminal)")


# -- helpers ---------------------------------------------------------------------------------------
def _run_all(model, x: np.ndarray, batch_size: int, progress: bool) -> tuple[np.ndarray, float]:
    """The outputs on ``x`` and the seconds the forward passes took."""
    t0 = time.perf_counter()
    out = predict(model, x, batch_size, progress)
    return out, time.perf_counter() - t0


def _load_npy(path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise CommandError(f"input {path!r} is not a file")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CommandError(f"cannot read {path!r} as a .npy array: {exc}") from None
    if not isinstance(x, np.ndarray):
        raise CommandError(f"{path!r} is an .npz archive, expected one .npy array")
    if x.ndim < 1 or len(x) == 0:
        raise CommandError(f"{path!r} has shape {list(x.shape)}: expected a non-empty batch [N, ...]")
    return x


def _model_ready(x: np.ndarray, what: str) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.floating):
        raise CommandError(f"{what} holds {x.dtype} values, expected floats (model-ready input)")
    return x.astype(np.float32, copy=False)


def _parse_assumed(text: str) -> InputConvention:
    """``--assume-convention``: a known name, JSON text, or a JSON file."""
    if text in NAMED_CONVENTIONS:
        return NAMED_CONVENTIONS[text]()
    if text.lstrip().startswith("{"):
        return InputConvention.from_json(text)
    p = Path(text)
    if not p.is_file():
        raise CommandError(f"--assume-convention {text!r} is neither a known name ({', '.join(NAMED_CONVENTIONS)}), "
                           "JSON text nor a JSON file")
    if p.stat().st_size > 1 << 20:
        raise CommandError(f"--assume-convention {text!r}: the file is over 1 MiB, not a convention")
    return InputConvention.from_json(p.read_bytes())


def _convention(model, args, needed_for: str) -> tuple[InputConvention, str]:
    """The convention raw data is preprocessed with and where it comes from ("file" or "assumed")."""
    own = model.input_convention
    if args.assume_convention is not None:
        if own is not None:
            raise CommandError(f"{args.file!r} stores its own input convention ({own.describe()}); "
                               "--assume-convention is only for files that store none")
        return _parse_assumed(args.assume_convention), "assumed"
    if own is None:
        hint = ("if it was trained on ADT's MNIST normalisation ((x/255 - 0.1307)/0.3081) pass "
                "--assume-convention mnist" if needed_for == "--mnist" else
                "name it with --assume-convention mnist|FILE.json")
        extra = "; or --model-ready for preprocessed data" if needed_for in ("--data", "--input") else ""
        raise CommandError(f"{args.file!r} stores no input convention, so ADT cannot know how {needed_for} samples "
                           f"were normalised for this model (it never guesses): {hint}{extra}")
    return own, "file"


def _num_classes(model) -> int | None:
    """The class count the graph declares for its one output [N, classes] (None when not static)."""
    outs = model.architecture.graph.outputs
    shape = outs[0].shape if len(outs) == 1 else None
    return shape[1] if shape and len(shape) == 2 and isinstance(shape[1], int) else None


def _scores(out: np.ndarray) -> np.ndarray:
    """Probabilities: the outputs when each row already is a distribution, else their softmax."""
    out = out.astype(np.float64)
    if out.size and (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _top(out: np.ndarray, k: int, labels: list[str] | None) -> list[dict]:
    """Each row's ``k`` most likely classes: ``{"classes", "scores"[, "labels"]}``."""
    if out.ndim != 2:
        raise CommandError(f"the model's output has shape {list(out.shape)}, expected [N, classes] for top-k classes")
    if labels is not None and len(labels) != out.shape[1]:
        raise CommandError(f"the file stores {len(labels)} labels but the model outputs {out.shape[1]} classes")
    if not 1 <= k <= out.shape[1]:
        raise CommandError(f"--top-k must be 1..{out.shape[1]} (the number of classes), got {k}")
    idx, p = top_k(_scores(out), k)
    rows = []
    for i, s in zip(idx.tolist(), p.tolist()):
        row = {"classes": i, "scores": s}
        if labels is not None:
            row["labels"] = [labels[j] for j in i]
        rows.append(row)
    return rows


def _top_text(row: dict) -> str:
    names = row.get("labels") or [str(c) for c in row["classes"]]
    return ", ".join(f"{safe_text(n, 60)} ({s:.3f})" for n, s in zip(names, row["scores"]))


def _save(path: str, out: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, out, allow_pickle=False)
    write_atomic(path, buf.getvalue())


def _emit(result: dict) -> None:
    print(json.dumps(result, ensure_ascii=True))


def _note(args, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr)


# -- the command -----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    if args.top_k is not None and args.top_k < 1:
        raise CommandError(f"--top-k must be >= 1, got {args.top_k}")
    if args.output and (args.mnist is not None or args.data is not None):
        raise CommandError("-o/--output goes with --input or --images (with --mnist and --data only the accuracy "
                           "is reported)")
    if args.top_k is not None and args.input is None and args.images is None:
        raise CommandError("--top-k goes with --input or --images")
    if args.model_ready and args.input is None and args.data is None:
        raise CommandError("--model-ready goes with --input or --data")
    if args.model_ready and args.assume_convention is not None:
        raise CommandError("--model-ready and --assume-convention exclude each other (model-ready input is not "
                           "preprocessed)")
    if args.layout is not None and args.data is None:
        raise CommandError("--layout goes with --data")
    if not Path(args.file).is_file():
        raise CommandError(f"{args.file!r} is not a file")
    progress = not (args.json or args.no_progress) and sys.stderr.isatty()

    # the data is found (and a .npy read) first: a bad path fails before the (costlier) load
    x = None
    if args.input is not None:
        x = _load_npy(args.input)
        if args.limit:
            x = x[:args.limit]
    elif args.mnist is not None:
        resolve_data_dir(args.mnist or None)
    elif args.data is not None:
        from adt.runtime.datasets import data_kind
        data_kind(args.data)
    elif not Path(args.images).is_dir():
        raise CommandError(f"image folder {args.images!r} does not exist or is not a folder")

    t0 = time.perf_counter()
    model = rt.load(args.file, engine=args.engine, max_memory=args.max_memory)
    load_s = time.perf_counter() - t0
    if model.architecture is None:
        raise CommandError(f"{args.file!r} has no architecture section: it holds weights only and cannot be run")
    common = {"engine": args.engine, "file": str(args.file)}

    if args.mnist is not None:
        return _run_mnist(args, model, load_s, progress)
    if args.data is not None:
        return _run_data(args, model, common, load_s, progress)
    if args.images is not None:
        return _run_images(args, model, common, progress)
    return _run_input(args, model, x, common, progress)


def _score(args, model, x: np.ndarray, progress: bool) -> tuple[np.ndarray, float]:
    out, seconds = _run_all(model, x, args.batch_size, progress)
    if out.ndim != 2:
        raise CommandError(f"the model's output has shape {list(out.shape)}, expected [N, classes]")
    return out, seconds


def _run_mnist(args, model, load_s: float, progress: bool) -> int:
    conv, source = _convention(model, args, "--mnist")
    images, labels = load_mnist(args.mnist or None, "test")
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    try:
        x = model.preprocess(conv.conform(images), conv)  # [N, 28, 28]: a channel axis added where the layout has one
    except AdtPreprocessError as exc:
        raise CommandError(f"the MNIST test images do not fit the input convention: {exc}") from None
    out, seconds = _score(args, model, x, progress)
    correct = count_correct(out, labels)
    result = {"accuracy": correct / len(labels), "correct": correct, "n": int(len(labels)),
              "engine": args.engine, "batch_size": args.batch_size, "seconds": seconds,
              "images_per_s": len(labels) / seconds, "load_seconds": load_s, "file": str(args.file),
              "convention": conv.to_dict(), "convention_source": source}
    if args.json:
        _emit(result)
    else:
        print(f"accuracy {result['accuracy']:.4f} ({correct}/{len(labels)}) on the MNIST test set, "
              f"{args.engine} engine, {seconds:.2f} s ({result['images_per_s']:.0f} images/s)")
    return 0


def _run_data(args, model, common: dict, load_s: float, progress: bool) -> int:
    from adt.runtime.datasets import DatasetError, read_test_split

    conv, source = (None, "model-ready") if args.model_ready else _convention(model, args, "--data")
    try:
        # with a convention: image files decoded to its size and colour, arrays rearranged into its
        # layout and checked against its dtype and shape (--layout: how the arrays are stored)
        data = read_test_split(args.data, convention=conv, layout=args.layout, classes=model.labels,
                               num_classes=_num_classes(model), progress=progress)
    except DatasetError as exc:
        if conv is not None and "not preprocessed values" in str(exc):  # float arrays for a uint8 convention
            raise CommandError(f"{exc}; or --model-ready if they are preprocessed already") from None
        raise
    for line in data.notes:
        _note(args, f"note: {line}")
    x, y = data.x_test, data.y_test
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    if conv is None:
        x = _model_ready(x, f"{args.data!r}")
        x = x.transpose(0, 3, 1, 2) if data.layout == "NHWC" else x[:, None] if data.layout == "NHW" else x
        x = x.reshape(len(x), -1) if len(model.input_shape or []) == 2 else np.ascontiguousarray(x)
    else:
        x = model.preprocess(x, conv)
    out, seconds = _score(args, model, x, progress)
    pred = out.argmax(axis=1)
    correct = int((pred == y).sum())
    k = max(out.shape[1], int(y.max()) + 1 if len(y) else 0)
    names = model.labels or data.classes
    per_class = []
    for c in range(k):
        sel = y == c
        n_c, ok_c = int(sel.sum()), int((pred[sel] == c).sum())
        row = {"class": c, "n": n_c, "correct": ok_c, "accuracy": ok_c / n_c if n_c else None}
        if names is not None and c < len(names):
            row["label"] = names[c]
        per_class.append(row)
    result = {"accuracy": correct / len(y), "correct": correct, "n": int(len(y)), "per_class": per_class,
              "data": str(args.data), "kind": data.kind, **common, "batch_size": args.batch_size,
              "seconds": seconds, "images_per_s": len(y) / seconds, "load_seconds": load_s,
              "convention": conv.to_dict() if conv is not None else None, "convention_source": source}
    if args.json:
        _emit(result)
        return 0
    print(f"accuracy {result['accuracy']:.4f} ({correct}/{len(y)}) on {safe_text(args.data)} ({data.kind} test split), "
          f"{args.engine} engine, {seconds:.2f} s ({result['images_per_s']:.0f} images/s)")
    width = max([5] + [len(safe_text(r.get("label", ""), 40)) for r in per_class])
    print(f"  {'class':>5}  {'label':<{width}}  {'n':>7}  {'correct':>7}  accuracy")
    for r in per_class:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        print(f"  {r['class']:>5}  {safe_text(r.get('label', '-'), 40):<{width}}  {r['n']:>7}  {r['correct']:>7}  {acc}")
    return 0


def _run_images(args, model, common: dict, progress: bool) -> int:
    from adt.runtime.images import list_images, load_image

    conv, source = _convention(model, args, "--images")
    if conv.color is None:
        raise CommandError(f"the input convention ({conv.describe()}) is not made for image files (it names no "
                           "colour mode): give arrays with --input instead")
    files = list_images(args.images)
    if not files:
        raise CommandError(f"{args.images!r} holds no image files")
    if args.limit:
        files = files[:args.limit]
    raw = np.stack([load_image(f, conv) for f in files])
    x = model.preprocess(raw, conv)
    out, seconds = _run_all(model, x, args.batch_size, progress)
    if args.output:
        _save(args.output, out)
    rows = _top(out, args.top_k or 1, model.labels)
    if args.json:
        preds = [{"image": f.name, **r} for f, r in zip(files, rows)]
        _emit({**common, "n": len(files), "top_k": args.top_k or 1, "seconds": seconds,
               "convention": conv.to_dict(), "convention_source": source, "predictions": preds,
               **({"saved": str(args.output)} if args.output else {})})
        return 0
    width = max(len(safe_text(f.name, 60)) for f in files)
    for f, r in zip(files, rows):
        print(f"{safe_text(f.name, 60):<{width}}  {_top_text(r)}")
    if args.output:
        print(f"saved outputs {list(out.shape)} float32 to {args.output}")
    return 0


def _run_input(args, model, x: np.ndarray, common: dict, progress: bool) -> int:
    conv, source = None, "model-ready"
    if not args.model_ready and (model.input_convention is not None or args.assume_convention is not None):
        conv, source = _convention(model, args, "--input")
    if conv is None:
        if not np.issubdtype(x.dtype, np.floating):
            raise CommandError(f"{args.input!r} holds {x.dtype} values, expected floats (model-ready input); "
                               "this file stores no input convention to preprocess raw samples with: name one "
                               "with --assume-convention")
        x = _model_ready(x, repr(args.input))
    else:
        if conv.dtype == "uint8" and np.issubdtype(x.dtype, np.floating):
            raise CommandError(f"{args.input!r} holds {x.dtype} values, but the input convention takes raw uint8 "
                               f"samples ({conv.describe()}); pass --model-ready if they are preprocessed already")
        try:
            x = model.preprocess(x, conv)
        except AdtPreprocessError as exc:
            raise CommandError(f"{args.input!r}: {exc}") from None
        _note(args, f"input preprocessed with the {source} input convention: {conv.describe()}")
    out, seconds = _run_all(model, x, args.batch_size, progress)
    if args.output:
        _save(args.output, out)
    labels = model.labels
    rows = _top(out, args.top_k, labels) if args.top_k is not None else None
    if args.json:
        result = {"engine": args.engine, "n": int(len(x)), "output_shape": list(out.shape), "seconds": seconds,
                  "preprocessed": conv is not None, "convention_source": source}
        if out.ndim == 2:
            result["argmax"] = out.argmax(axis=1).tolist()
            if labels is not None and len(labels) == out.shape[1]:
                result["labels"] = [labels[i] for i in result["argmax"]]
        if rows is not None:
            result["top"] = rows
        if args.output:
            result["saved"] = str(args.output)
        else:
            result["output"] = out.tolist()
        _emit(result)
        return 0
    if args.output:
        print(f"saved outputs {list(out.shape)} float32 to {args.output}")
    else:
        with np.printoptions(precision=6, suppress=True, threshold=2000):
            print(f"output {list(out.shape)} float32:")
            print(out)
    if out.ndim == 2:
        top1 = out.argmax(axis=1).tolist()
        print("argmax:", " ".join(map(str, top1)))
        if labels is not None and len(labels) == out.shape[1]:
            print("labels:", " ".join(safe_text(labels[i], 60) for i in top1))
    if rows is not None:
        for i, r in enumerate(rows):
            print(f"{i}: {_top_text(r)}")
    return 0
