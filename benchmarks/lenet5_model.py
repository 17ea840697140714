"""A LeNet-5-shaped ADA-Tucker model with synthetic Laplacian weights, shared by the format benchmarks.

Shapes follow the paper's appendix (arXiv 1906.07671, Tables 4-7 and Sec. 2.2): Conv1 reshaped to
25x20 with a 5x5 core, Conv2 to 50x25x20 with a 5x5x5 core, FC1 to 40x25x20x20 with a 5^4 core,
FC2 to 25x20x10 with a 5x5x5 core, plus the four biases stored plain. Values are Laplacian (the paper,
Sec. 4 / Fig. 9: "the weight distribution is close to Laplacian", almost all in [-3, 3]); the scales
below are assumptions, not trained weights. Quantized with the paper's Q = 512, b = 3.
"""
from __future__ import annotations

import numpy as np

from adt.runtime.format import AdtWriter, quantize

Q, B = 512, 3.0
# name, original weight shape, reshape dims n_i, core dims k_i, bias length
LAYERS = [
    ("conv1", (20, 1, 5, 5), (25, 20), (5, 5), 20),
    ("conv2", (50, 20, 5, 5), (50, 25, 20), (5, 5, 5), 50),
    ("fc1", (500, 800), (40, 25, 20, 20), (5, 5, 5, 5), 500),
    ("fc2", (10, 500), (25, 20, 10), (5, 5, 5), 10),
]
CORE_SCALE, FACTOR_SCALE, BIAS_SCALE = 0.6, 0.25, 0.05   # Laplace scales (assumed)


def lenet5_symbols(seed: int = 0) -> list[dict]:
    """Per layer: quantized core, factor matrices and bias symbols (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    out = []
    for name, shape, reshape, core, nbias in LAYERS:
        out.append({
            "name": name, "shape": shape,
            "core": quantize(rng.laplace(0, CORE_SCALE, size=core), Q, B),
            "factors": [quantize(rng.laplace(0, FACTOR_SCALE, size=(n, k)), Q, B) for n, k in zip(reshape, core)],
            "bias": quantize(rng.laplace(0, BIAS_SCALE, size=nbias), Q, B),
        })
    return out


def lenet5_writer(layers: list[dict], tables: str, groups: str) -> AdtWriter:
    """An AdtWriter holding the model. ``groups``: "one" (one quantizer group for everything) or
    "per_layer" (one group per layer, same Q and b, so tables may differ per layer)."""
    w = AdtWriter(tables=tables)
    if groups == "one":
        g = w.add_group(Q, B)
        gids = [g] * len(layers)
    else:
        gids = [w.add_group(Q, B) for _ in layers]
    cores = [w.add_core(layer["core"], gid) for layer, gid in zip(layers, gids)]
    for layer, gid, c in zip(layers, gids, cores):
        w.add_tucker(f"{layer['name']}.weight", layer["shape"], c, layer["factors"], gid)
        w.add_plain(f"{layer['name']}.bias", layer["bias"], gid)
    return w
