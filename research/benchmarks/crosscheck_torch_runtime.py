"""Issue 4's acceptance check: the torch-free runtime (both engines) against PyTorch on the full MNIST
test set, for committed LeNet-5 and LeNet-300-100 files.

PyTorch side: the built-in dense model (``adt.exporter.build_model``) with the weights the .adt file decodes
to, run by torch. Runtime side: adt.runtime.load(file, engine=...). Reports prediction agreement and
the largest relative output difference; writes results/crosscheck_torch_runtime.json.

    python -m research.benchmarks.crosscheck_torch_runtime --data DIR
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import adt.runtime as rt
from adt.exporter import build_model
from adt.runtime.mnist import load_mnist, normalize
from research.paths import REPO, RESULTS

__all__ = ["FILES", "check", "main"]

FILES = {"lenet5": "results/adt/lenet5-ada-s0-paper.adt", "lenet300": "results/adt/lenet300-ada-s0-paper.adt"}


def check(model_name: str, rel_path: str, x: np.ndarray, y: np.ndarray) -> dict:
    path = REPO / rel_path
    ref = rt.load(path, engine=None)
    model = build_model(model_name).eval()
    state = model.state_dict()
    # The committed files use compact tensor names (a, b, ...): bind them to the model's parameters
    # by shape, which is unambiguous for these two networks (asserted).
    by_shape = {}
    for name, w in ref.weights.items():
        assert w.shape not in by_shape, f"ambiguous shape {w.shape}"
        by_shape[w.shape] = w
    assert len(by_shape) == len(state), (len(by_shape), len(state))
    model.load_state_dict({k: torch.from_numpy(np.array(by_shape[tuple(v.shape)])) for k, v in state.items()})
    torch.set_num_threads(1)
    with torch.no_grad():
        out_t = torch.cat([model(torch.from_numpy(x[i:i + 1000])) for i in range(0, len(x), 1000)]).numpy()
    row = {"file": rel_path, "n": int(len(x)), "torch_accuracy": float((out_t.argmax(1) == y).mean())}
    scale = float(np.abs(out_t).max())
    for engine in ("numpy", "onnxruntime"):
        m = rt.load(path, engine=engine)
        t0 = time.perf_counter()
        out = np.concatenate([m.run(x[i:i + 1000]) for i in range(0, len(x), 1000)])
        row[engine] = {
            "accuracy": float((out.argmax(1) == y).mean()),
            "same_predictions": int((out.argmax(1) == out_t.argmax(1)).sum()),
            "max_abs_diff": float(np.abs(out - out_t).max()),
            "max_diff_over_output_scale": float(np.abs(out - out_t).max() / scale),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.crosscheck_torch_runtime", description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="MNIST IDX folder (default $ADT_DATA)")
    ap.add_argument("--out", default=str(RESULTS / "crosscheck_torch_runtime.json"))
    args = ap.parse_args()
    images, labels = load_mnist(args.data, "test")
    x = normalize(images)
    rows = {name: check(name, rel, x, labels) for name, rel in FILES.items()}
    text = json.dumps({"generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "tolerance": "max |runtime - torch| / max |torch output| <= 1e-4, identical predictions",
                       "rows": rows}, indent=1)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
