"""``adt to-onnx FILE.adt -o model.onnx``: the dense ONNX model (stored architecture + rebuilt float32
weights as initializers) for other toolchains. Needs only numpy and bitarray."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import adt.runtime as rt
from adt.tools.errors import CommandError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the .adt model")
    parser.add_argument("-o", "--output", metavar="OUT.onnx", required=True,
                        help="where to write the dense ONNX model (written atomically)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")


def run(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise CommandError(f"{args.file!r} is not a file")
    f = rt.read_adt(args.file)
    if f.architecture is None:
        raise CommandError(f"{args.file!r} has no architecture section: there is no model to convert")
    # No engine: the dense model is written even for ops only onnxruntime (not the NumPy engine) runs.
    model = rt.load(f, engine=None)
    size = model.to_onnx(args.output)
    used = {n for node in model.architecture.graph.nodes for n in node.inputs}
    n_init = sum(1 for k in model.weights if k in used)
    params = sum(int(v.size) for k, v in model.weights.items() if k in used)
    if args.json:
        print(json.dumps({"output": str(args.output), "bytes": size, "initializers": n_init,
                          "parameters": params, "adt_bytes": f.file_size}, ensure_ascii=True))
    else:
        print(f"wrote {args.output}: {size:,} bytes, {n_init} weight initializers ({params:,} parameters) "
              f"from a {f.file_size:,}-byte .adt file")
    return 0
