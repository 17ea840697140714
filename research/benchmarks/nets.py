"""Benchmark networks as runnable .adt files, built without torch: the ONNX graph an exporter writes
(Conv without fused BatchNorm, BatchNormalization, Relu / Clip, Add, pooling, Flatten, Gemm) made
with :mod:`adt.runtime.onnx_proto`, and random weights quantized into the file with AdtWriter.

Weights are random (He-scaled normal conv weights, BatchNorm statistics near identity), so the
activations stay finite through every net; they are for speed and memory figures and for checking
engines against each other, never for accuracy. Every builder is deterministic for a seed and
returns the file's bytes (and writes them to ``path`` when given).

    lenet5       Caffe LeNet-5 of :mod:`adt.runtime.samples` (input [N, 1, 28, 28])
    resnet20     CIFAR ResNet-20 (He et al. 2016, 3x3 basic blocks 16/32/64, 1x1 conv+BN shortcuts)
    resnet18     torchvision's ResNet-18 exactly (7x7/2 stem, max pool, 1000 classes), on 3x32x32
    mobilenetv2  MobileNetV2 width 1.0 (Sandler et al. 2018), 1000 classes, on 3x128x128
                 (the published 128-pixel variant: 224 at batch 64 needs ~1.2 GB per activation)
    wrn_28_10    pre-activation WRN-28-10 on 3x32x32, the parameter names and Tucker plans of
                 ``research.benchmarks.wrn_scale.wrn_28_10_spec`` (paper Table 13), 36.5M parameters

    .venv/bin/python -c "from research.benchmarks.nets import resnet20; resnet20('/tmp/r20.adt')"
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from adt.runtime.format import AdtWriter, quantize
from adt.runtime.onnx_proto import FLOAT, Graph, OnnxModel, Tensor, ValueInfo, make_node
from adt.runtime.samples import OPSET, lenet5_file

__all__ = ["NET_INPUTS", "NETS", "NetBuilder", "lenet5", "mobilenetv2", "resnet18", "resnet20", "wrn_28_10"]

_Q = 256                                          # quantizer levels of every group
_BOUNDS = (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # one group per bound; each array takes the smallest that holds it


@dataclass
class _Tucker:
    shape: tuple[int, ...]
    core: np.ndarray
    factors: list[np.ndarray]


@dataclass
class NetBuilder:
    """Collects ONNX nodes and named float32 weights (plain arrays or Tucker parts) of one net, then
    writes them as an .adt file whose architecture references the weights by name."""

    name: str
    input_shape: tuple[int, ...]
    seed: int = 0
    nodes: list = field(default_factory=list)
    weights: dict = field(default_factory=dict)
    inits: list = field(default_factory=list)
    _n: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def tmp(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    # -- weights ------------------------------------------------------------------------------
    def conv_weight(self, name: str, shape: tuple[int, ...]) -> str:
        fan_in = int(np.prod(shape[1:]))
        self.weights[name] = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        return name

    def bn_params(self, prefix: str, ch: int) -> list[str]:
        r = self.rng
        vals = {"weight": r.uniform(0.5, 1.2, ch), "bias": r.normal(0, 0.1, ch),
                "running_mean": r.normal(0, 0.1, ch), "running_var": r.uniform(0.5, 1.5, ch)}
        names = []
        for k, v in vals.items():
            self.weights[f"{prefix}.{k}"] = v.astype(np.float32)
            names.append(f"{prefix}.{k}")
        return names

    # -- layers -------------------------------------------------------------------------------
    def conv(self, x: str, wname: str, stride: int = 1, pad: int | None = None, group: int = 1,
             bias: str | None = None) -> str:
        k = self.weights[wname].shape[-1]
        p = k // 2 if pad is None else pad
        y = self.tmp("conv")
        ins = [x, wname] + ([bias] if bias else [])
        self.nodes.append(make_node("Conv", ins, [y], kernel_shape=[k, k], strides=[stride, stride],
                                    pads=[p, p, p, p], group=group, dilations=[1, 1]))
        return y

    def bn(self, x: str, prefix: str, ch: int) -> str:
        y = self.tmp("bn")
        self.nodes.append(make_node("BatchNormalization", [x] + self.bn_params(prefix, ch), [y], epsilon=1e-5))
        return y

    def op(self, op: str, ins: list[str], **attrs) -> str:
        y = self.tmp(op.lower())
        self.nodes.append(make_node(op, ins, [y], **attrs))
        return y

    def relu6(self, x: str) -> str:
        if not self.inits:
            self.inits = [Tensor.from_array(np.array(0, np.float32), "relu6_min"),
                          Tensor.from_array(np.array(6, np.float32), "relu6_max")]
        return self.op("Clip", [x, "relu6_min", "relu6_max"])

    def head(self, x: str, cin: int, classes: int, prefix: str = "fc", dropout: bool = False) -> str:
        x = self.op("GlobalAveragePool", [x])
        x = self.op("Flatten", [x], axis=1)
        if dropout:
            x = self.op("Dropout", [x])
        self.weights[f"{prefix}.weight"] = (self.rng.standard_normal((classes, cin)) / np.sqrt(cin)).astype(np.float32)
        self.weights[f"{prefix}.bias"] = self.rng.normal(0, 0.01, classes).astype(np.float32)
        y = "output"
        self.nodes.append(make_node("Gemm", [x, f"{prefix}.weight", f"{prefix}.bias"], [y], transB=1))
        return y

    # -- file ---------------------------------------------------------------------------------
    def model(self, classes: int) -> OnnxModel:
        g = Graph(nodes=self.nodes, initializers=self.inits, name=self.name,
                  inputs=[ValueInfo("input", FLOAT, ["N", *self.input_shape])],
                  outputs=[ValueInfo("output", FLOAT, ["N", classes])])
        return OnnxModel(ir_version=8, opsets={"ai.onnx": OPSET}, graph=g)

    def to_adt(self, classes: int, path: str | os.PathLike | None = None) -> bytes:
        """The .adt file: one quantizer group per bound of ``_BOUNDS`` in use (each array, and each
        Tucker core and factor set, takes the smallest bound holding 99.9% of its values), Tucker cores
        first, then every weight in insertion order."""
        w = AdtWriter(tables="auto")
        w.add_metadata("producer", "research/benchmarks/nets.py (random weights)")
        w.add_metadata("model", self.name)
        w.set_architecture(self.model(classes).to_bytes())

        def bound(a: np.ndarray) -> float:
            m = float(np.quantile(np.abs(a), 0.999)) if a.size > 1 else float(np.abs(a).max())
            return next((b for b in _BOUNDS if b >= m), _BOUNDS[-1])

        # per weight: the bound of its plain values, or of (its core, its factors together)
        bounds = {}
        for name, v in self.weights.items():
            if isinstance(v, _Tucker):
                bounds[name] = (bound(v.core), bound(np.concatenate([f.reshape(-1) for f in v.factors])))
            else:
                bounds[name] = (bound(v),)
        used = sorted({b for bs in bounds.values() for b in bs})
        groups = {b: w.add_group(_Q, b) for b in used}  # only groups that hold values
        cores = {}
        for name, v in self.weights.items():
            if isinstance(v, _Tucker):
                b = bounds[name][0]
                cores[name] = w.add_core(quantize(v.core, _Q, b, rounding="nearest"), groups[b])
        for name, v in self.weights.items():
            if isinstance(v, _Tucker):
                b = bounds[name][1]
                w.add_tucker(name, v.shape, cores[name], [quantize(f, _Q, b, rounding="nearest") for f in v.factors],
                             groups[b])
            else:
                b = bounds[name][0]
                w.add_plain(name, quantize(v, _Q, b, rounding="nearest"), groups[b])
        data = w.to_bytes()
        if path is not None:
            from adt.runtime.format import write_atomic
            write_atomic(path, data)
        return data


# -- the nets ----------------------------------------------------------------------------------------
def lenet5(path: str | os.PathLike | None = None, seed: int = 0) -> bytes:
    """Caffe LeNet-5 (conv 20@5x5, pool, conv 50@5x5, pool, fc 500, ReLU, fc 10), input [N, 1, 28, 28]."""
    data = lenet5_file(seed=seed)
    if path is not None:
        from adt.runtime.format import write_atomic
        write_atomic(path, data)
    return data


def _basic_block(nb: NetBuilder, x: str, p: str, cin: int, cout: int, stride: int, down: str | None) -> str:
    """Post-activation basic block: conv-BN-ReLU-conv-BN + shortcut, ReLU (``down``: the shortcut's
    conv/BN prefix, or None for identity)."""
    y = nb.conv(x, nb.conv_weight(f"{p}.conv1.weight", (cout, cin, 3, 3)), stride)
    y = nb.op("Relu", [nb.bn(y, f"{p}.bn1", cout)])
    y = nb.bn(nb.conv(y, nb.conv_weight(f"{p}.conv2.weight", (cout, cout, 3, 3))), f"{p}.bn2", cout)
    if down is not None:
        s = nb.conv(x, nb.conv_weight(f"{down}.0.weight", (cout, cin, 1, 1)), stride, pad=0)
        x = nb.bn(s, f"{down}.1", cout)
    return nb.op("Relu", [nb.op("Add", [y, x])])


def resnet20(path: str | os.PathLike | None = None, seed: int = 0) -> bytes:
    """CIFAR ResNet-20 (3 stages x 3 basic blocks, 16/32/64 channels, 1x1 conv+BN downsampling
    shortcuts, 10 classes), input [N, 3, 32, 32]; 0.27M parameters."""
    nb = NetBuilder("resnet20", (3, 32, 32), seed)
    x = nb.op("Relu", [nb.bn(nb.conv("input", nb.conv_weight("conv1.weight", (16, 3, 3, 3))), "bn1", 16)])
    cin = 16
    for li, cout in enumerate((16, 32, 64), 1):
        for b in range(3):
            stride = 2 if b == 0 and li > 1 else 1
            p = f"layer{li}.{b}"
            down = f"{p}.downsample" if (stride != 1 or cin != cout) else None
            x = _basic_block(nb, x, p, cin, cout, stride, down)
            cin = cout
    nb.head(x, 64, 10)
    return nb.to_adt(10, path)


def resnet18(path: str | os.PathLike | None = None, seed: int = 0) -> bytes:
    """torchvision's ResNet-18 (7x7/2 stem conv + BN + ReLU, 3x3/2 max pool, 4 stages x 2 basic
    blocks of 64-512 channels, 1000 classes; the names of ``adt.runtime.samples.resnet18_shapes``),
    run on a 3x32x32 input (1x1 at the last stage); 11.7M parameters."""
    nb = NetBuilder("resnet18", (3, 32, 32), seed)
    x = nb.conv("input", nb.conv_weight("conv1.weight", (64, 3, 7, 7)), 2, pad=3)
    x = nb.op("Relu", [nb.bn(x, "bn1", 64)])
    x = nb.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for li, cout in enumerate((64, 128, 256, 512), 1):
        for b in range(2):
            stride = 2 if b == 0 and li > 1 else 1
            p = f"layer{li}.{b}"
            down = f"{p}.downsample" if (stride != 1 or cin != cout) else None
            x = _basic_block(nb, x, p, cin, cout, stride, down)
            cin = cout
    nb.head(x, 512, 1000)
    return nb.to_adt(1000, path)


#: MobileNetV2's inverted-residual settings (expansion t, channels c, repeats n, first stride s).
_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenetv2(path: str | os.PathLike | None = None, seed: int = 0, size: int = 128) -> bytes:
    """MobileNetV2 width 1.0 as torchvision builds it (3x3/2 stem; inverted residuals: 1x1 expand,
    3x3 depthwise, 1x1 project, BN after every conv, ReLU6 = Clip(0, 6), residual Add where shapes
    match; 1x1 conv to 1280, global average pool, Dropout, Gemm to 1000), input [N, 3, size, size]
    (128 by default); 3.5M parameters."""
    nb = NetBuilder("mobilenetv2", (3, size, size), seed)
    x = nb.conv("input", nb.conv_weight("features.0.0.weight", (32, 3, 3, 3)), 2)
    x = nb.relu6(nb.bn(x, "features.0.1", 32))
    cin, idx = 32, 1
    for t, c, n, s in _MBV2:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"features.{idx}.conv"
            hidden = cin * t
            y, j = x, 0
            if t != 1:
                y = nb.conv(y, nb.conv_weight(f"{p}.{j}.0.weight", (hidden, cin, 1, 1)), pad=0)
                y = nb.relu6(nb.bn(y, f"{p}.{j}.1", hidden))
                j += 1
            y = nb.conv(y, nb.conv_weight(f"{p}.{j}.0.weight", (hidden, 1, 3, 3)), stride, group=hidden)
            y = nb.relu6(nb.bn(y, f"{p}.{j}.1", hidden))
            y = nb.conv(y, nb.conv_weight(f"{p}.{j + 1}.weight", (c, hidden, 1, 1)), pad=0)
            y = nb.bn(y, f"{p}.{j + 2}", c)
            x = nb.op("Add", [x, y]) if stride == 1 and cin == c else y
            cin, idx = c, idx + 1
    x = nb.conv(x, nb.conv_weight(f"features.{idx}.0.weight", (1280, cin, 1, 1)), pad=0)
    x = nb.relu6(nb.bn(x, f"features.{idx}.1", 1280))
    nb.head(x, 1280, 1000, prefix="classifier.1", dropout=True)
    return nb.to_adt(1000, path)


def _tucker_weight(nb: NetBuilder, name: str, shape, reshape, core) -> str:
    """A Tucker-stored conv weight: factors (n_i, k_i) ~ N(0, 1/n_i), core scaled so that the rebuilt
    weight has He's standard deviation sqrt(2 / fan_in)."""
    r = nb.rng
    fan_in = int(np.prod(shape[1:]))
    core_std = np.sqrt(2.0 / fan_in) / np.sqrt(np.prod(core) / np.prod(reshape))
    nb.weights[name] = _Tucker(tuple(shape), (r.standard_normal(core) * core_std).astype(np.float32),
                               [(r.standard_normal((n, k)) / np.sqrt(n)).astype(np.float32)
                                for n, k in zip(reshape, core)])
    return name


def wrn_28_10(path: str | os.PathLike | None = None, seed: int = 0) -> bytes:
    """Pre-activation WRN-28-10 (Zagoruyko & Komodakis 2016; BN-ReLU-conv blocks, 1x1 shortcut convs
    in each group's first block, final BN-ReLU, global average pool, fc 640->10), input [N, 3, 32, 32];
    the 24 block 3x3 convs Tucker-stored with the paper's Table 13 plans, everything else plain, with
    exactly the names and shapes of ``research.benchmarks.wrn_scale.wrn_28_10_spec`` (36.5M parameters)."""
    from research.benchmarks.wrn_scale import wrn_28_10_spec
    tucker, plain = wrn_28_10_spec()
    plans = {name: (shape, reshape, core) for name, shape, reshape, core in tucker}
    nb = NetBuilder("wrn_28_10", (3, 32, 32), seed)
    x = nb.conv("input", nb.conv_weight("conv1.weight", (16, 3, 3, 3)))
    cin = 16
    for g, width in enumerate((160, 320, 640), start=1):
        for i in range(4):
            p = f"block{g}.layer.{i}"
            stride = 2 if i == 0 and g > 1 else 1
            o = nb.op("Relu", [nb.bn(x, f"{p}.bn1", cin)])
            y = nb.conv(o, _tucker_weight(nb, f"{p}.conv1.weight", *plans[f"{p}.conv1.weight"]), stride)
            y = nb.op("Relu", [nb.bn(y, f"{p}.bn2", width)])
            y = nb.conv(y, _tucker_weight(nb, f"{p}.conv2.weight", *plans[f"{p}.conv2.weight"]))
            short = x
            if i == 0:  # widening (and downsampling): the shortcut reads the activated input
                short = nb.conv(o, nb.conv_weight(f"{p}.shortcut.weight", (width, cin, 1, 1)), stride, pad=0)
            x = nb.op("Add", [y, short])
            cin = width
    x = nb.op("Relu", [nb.bn(x, "bn", 640)])
    nb.head(x, 640, 10)
    names = {name for name, *_ in tucker} | {name for name, _ in plain}
    assert set(nb.weights) == names, sorted(set(nb.weights) ^ names)  # the spec's names, no more
    return nb.to_adt(10, path)


#: name -> (builder, input shape without the batch dim)
NETS: dict[str, tuple[Callable[..., bytes], tuple[int, ...]]] = {
    "lenet5": (lenet5, (1, 28, 28)),
    "resnet20": (resnet20, (3, 32, 32)),
    "resnet18": (resnet18, (3, 32, 32)),
    "mobilenetv2": (mobilenetv2, (3, 128, 128)),
    "wrn_28_10": (wrn_28_10, (3, 32, 32)),
}
#: name -> input shape without the batch dim
NET_INPUTS = {k: v[1] for k, v in NETS.items()}
