"""Shared LeNet-5 fixtures, torch-free and onnx-free: the layer plan, the hand-built ONNX graph and a
.adt file with random quantized weights. The runtime's tests, the format benchmarks and the board
checks all take them from here (there used to be three copies of each). Also ResNet-18's parameter
shapes, the "ResNet-sized file" of the memory tests.

The plan follows the paper's appendix (arXiv 1906.07671, Tables 4-7 and Sec. 2.2): Conv1 reshaped to
25x20 with a 5x5 core, Conv2 to 50x25x20 with a 5x5x5 core, FC1 to 40x25x20x20 with a 5^4 core, FC2 to
25x20x10 with a 5x5x5 core, plus the four biases stored plain. The sample weights are Laplacian (the
paper, Sec. 4 / Fig. 9: "the weight distribution is close to Laplacian", almost all in [-3, 3]); their
scales are assumptions, not trained weights. They are quantized with the paper's Q = 512, b = 3.

    from adt.runtime.samples import lenet5_file
    import adt.runtime as rt
    m = rt.load(lenet5_file(seed=0))          # runs: input [N, 1, 28, 28] -> [N, 10]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .format import AdtWriter, quantize
from .onnx_proto import FLOAT, Graph, OnnxModel, ValueInfo, make_node

__all__ = [
    "B", "BIAS_SCALE", "CORE_SCALE", "FACTOR_SCALE", "OPSET", "Q", "LayerSpec", "LayerSymbols",
    "lenet5_architecture", "lenet5_file", "lenet5_model", "lenet5_plan", "lenet5_symbols", "lenet5_writer",
    "RESNET18_PARAMS", "resnet18_shapes",
]

Q, B = 512, 3.0
CORE_SCALE, FACTOR_SCALE, BIAS_SCALE = 0.6, 0.25, 0.05   # Laplace scales (assumed)
OPSET = 17


@dataclass(frozen=True)
class LayerSpec:
    """One LeNet-5 layer: its weight ``shape``, the Tucker ``reshape`` dims n_i, the ``core`` dims k_i
    and the length of its bias. Parameters are ``f"{name}.weight"`` and ``f"{name}.bias"``."""

    name: str
    shape: tuple[int, ...]
    reshape: tuple[int, ...]
    core: tuple[int, ...]
    bias: int

    @property
    def weight_name(self) -> str:
        return f"{self.name}.weight"

    @property
    def bias_name(self) -> str:
        return f"{self.name}.bias"


@dataclass
class LayerSymbols:
    """Quantized symbols of one layer: the core, the factor matrices (n_i, k_i) and the bias."""

    spec: LayerSpec
    core: np.ndarray
    factors: list[np.ndarray]
    bias: np.ndarray


_PLAN = (
    LayerSpec("conv1", (20, 1, 5, 5), (25, 20), (5, 5), 20),
    LayerSpec("conv2", (50, 20, 5, 5), (50, 25, 20), (5, 5, 5), 50),
    LayerSpec("fc1", (500, 800), (40, 25, 20, 20), (5, 5, 5, 5), 500),
    LayerSpec("fc2", (10, 500), (25, 20, 10), (5, 5, 5), 10),
)


def lenet5_plan() -> list[LayerSpec]:
    """The LeNet-5 layers in file order (conv1, conv2, fc1, fc2)."""
    return list(_PLAN)


def lenet5_model(name: str = "lenet5") -> OnnxModel:
    """Caffe LeNet-5 as the exporter's ``lenet5`` model (conv 20@5x5 -> maxpool 2 -> conv 50@5x5 ->
    maxpool 2 -> fc 800->500 -> ReLU -> fc 500->10), ONNX opset 17, IR version 8, input
    ``input`` [N, 1, 28, 28], output ``output`` [N, 10]. The weights are referenced by name and not
    stored: the runtime supplies them (the architecture contract)."""
    nodes = [
        make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["a"], kernel_shape=[5, 5]),
        make_node("MaxPool", ["a"], ["b"], kernel_shape=[2, 2], strides=[2, 2]),
        make_node("Conv", ["b", "conv2.weight", "conv2.bias"], ["c"], kernel_shape=[5, 5]),
        make_node("MaxPool", ["c"], ["d"], kernel_shape=[2, 2], strides=[2, 2]),
        make_node("Flatten", ["d"], ["e"], axis=1),
        make_node("Gemm", ["e", "fc1.weight", "fc1.bias"], ["f"], transB=1),
        make_node("Relu", ["f"], ["g"]),
        make_node("Gemm", ["g", "fc2.weight", "fc2.bias"], ["output"], transB=1),
    ]
    graph = Graph(nodes=nodes, name=name, inputs=[ValueInfo("input", FLOAT, ["N", 1, 28, 28])],
                  outputs=[ValueInfo("output", FLOAT, ["N", 10])])
    return OnnxModel(ir_version=8, opsets={"ai.onnx": OPSET}, graph=graph)


def lenet5_architecture() -> bytes:
    """:func:`lenet5_model` serialized: the bytes a writer stores as the architecture."""
    return lenet5_model().to_bytes()


def lenet5_symbols(seed: int = 0) -> list[LayerSymbols]:
    """Per layer, Laplacian values quantized with Q = 512, b = 3 (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in _PLAN:
        core = quantize(rng.laplace(0, CORE_SCALE, size=spec.core), Q, B)
        factors = [quantize(rng.laplace(0, FACTOR_SCALE, size=(n, k)), Q, B) for n, k in zip(spec.reshape, spec.core)]
        bias = quantize(rng.laplace(0, BIAS_SCALE, size=spec.bias), Q, B)
        out.append(LayerSymbols(spec, core, factors, bias))
    return out


def lenet5_writer(layers: list[LayerSymbols], tables: str = "auto", groups: str = "one", b: float = B) -> AdtWriter:
    """An AdtWriter holding the layers' symbols (no metadata, no architecture). ``groups``: "one"
    (one quantizer group for everything) or "per_layer" (one group per layer, same Q and b, so the
    code tables may differ per layer). ``b``: the bound stored in the groups; the symbols stay the same,
    every value scales by ``b / B`` (a smaller b gives smaller activations, e.g. ``b=0.6``: O(1) outputs)."""
    if groups not in ("one", "per_layer"):
        raise ValueError(f"groups must be 'one' or 'per_layer', got {groups!r}")
    w = AdtWriter(tables=tables)
    if groups == "one":
        g = w.add_group(Q, b)
        gids = [g] * len(layers)
    else:
        gids = [w.add_group(Q, b) for _ in layers]
    cores = [w.add_core(layer.core, gid) for layer, gid in zip(layers, gids)]
    for layer, gid, c in zip(layers, gids, cores):
        w.add_tucker(layer.spec.weight_name, layer.spec.shape, c, layer.factors, gid)
        w.add_plain(layer.spec.bias_name, layer.bias, gid)
    return w


def lenet5_file(seed: int = 0, tables: str = "auto", groups: str = "one", architecture: bool = True,
                metadata: Mapping[str, str] | None = None, b: float = B) -> bytes:
    """A LeNet-5 .adt file with :func:`lenet5_symbols` weights (random, untrained: for tests,
    benchmarks and board checks, never for accuracy). ``architecture``: store :func:`lenet5_architecture`
    (then the file runs); ``metadata``: key/value pairs to store; ``b``: see :func:`lenet5_writer`."""
    w = lenet5_writer(lenet5_symbols(seed), tables, groups, b)
    for key, value in (metadata or {}).items():
        w.add_metadata(key, value)
    if architecture:
        w.set_architecture(lenet5_architecture())
    return w.to_bytes()


#: torchvision's ResNet-18 (ImageNet head), weights and BatchNorm affine only.
RESNET18_PARAMS = 11_689_512


def resnet18_shapes(running_stats: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """torchvision's ResNet-18 parameters by name, in model order (``RESNET18_PARAMS`` values); with
    ``running_stats`` every BatchNorm also has its running mean and variance (what a file stores)."""
    bn_fields = ("weight", "bias", "running_mean", "running_var") if running_stats else ("weight", "bias")

    def bn(prefix: str, ch: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{prefix}.{p}", (ch,)) for p in bn_fields]

    shapes = [("conv1.weight", (64, 3, 7, 7)), *bn("bn1", 64)]
    cin = 64
    for li, cout in enumerate((64, 128, 256, 512), 1):
        for b in range(2):
            p = f"layer{li}.{b}"
            shapes += [(f"{p}.conv1.weight", (cout, cin if b == 0 else cout, 3, 3)), *bn(f"{p}.bn1", cout),
                       (f"{p}.conv2.weight", (cout, cout, 3, 3)), *bn(f"{p}.bn2", cout)]
            if b == 0 and cin != cout:
                shapes += [(f"{p}.downsample.0.weight", (cout, cin, 1, 1)), *bn(f"{p}.downsample.1", cout)]
        cin = cout
    return shapes + [("fc.weight", (1000, 512)), ("fc.bias", (1000,))]
