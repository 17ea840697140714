"""Hand-built architectures and .adt files for the runtime tests: no exporter, no torch, no onnx.

The graphs are built with the runtime's own ONNX encoder (:mod:`adt.runtime.onnx_proto`: make_node,
Graph, OnnxModel); the LeNet-5 graph and plan are the shared ones from :mod:`adt.runtime.samples`.
Each builder returns ``(architecture OnnxModel, {name: spec})``; :func:`make_adt` turns the specs
into Tucker-coded or plain parameters, stores the architecture without weight initializers (the
contract) and returns the file bytes.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from math import prod

import numpy as np

from adt.runtime.format import AdtWriter, quantize, read_adt
from adt.runtime.onnx_proto import FLOAT, Graph, OnnxModel, ValueInfo, make_node
from adt.runtime.samples import OPSET, lenet5_model, lenet5_plan


def _model(nodes, inputs, outputs, initializers=(), opset=OPSET) -> OnnxModel:
    graph = Graph(nodes=list(nodes), name="g", initializers=list(initializers), inputs=list(inputs),
                  outputs=list(outputs))
    return OnnxModel(ir_version=8, opsets={"ai.onnx": opset}, graph=graph, producer_name="")


def _io(name, shape) -> ValueInfo:
    return ValueInfo(name, FLOAT, list(shape) if shape is not None else None)


# Parameter specs: ("tucker", shape, reshape, ranks) or ("plain", shape, scale) or ("positive", shape)
def lenet5():
    """The shared LeNet-5 (adt.runtime.samples): its graph, and its plan's reshapes and core ranks."""
    specs = {}
    for layer in lenet5_plan():
        specs[layer.weight_name] = ("tucker", layer.shape, layer.reshape, layer.core)
        specs[layer.bias_name] = ("plain", (layer.bias,), 0.1)
    return lenet5_model(), specs


def mlp():
    """LeNet-300-100 with a Softmax head and MatMul + Add for the last layer (both ops covered)."""
    nodes = [
        make_node("Flatten", ["input"], ["1"]),
        make_node("Gemm", ["1", "fc1.weight", "fc1.bias"], ["2"], transB=1),
        make_node("Relu", ["2"], ["3"]),
        make_node("Gemm", ["3", "fc2.weight", "fc2.bias"], ["4"], transB=1, alpha=0.5, beta=2.0),
        make_node("Relu", ["4"], ["5"]),
        make_node("MatMul", ["5", "fc3.weight_t"], ["6"]),
        make_node("Add", ["6", "fc3.bias"], ["7"]),
        make_node("Softmax", ["7"], ["output"], axis=1),
    ]
    specs = {
        "fc1.weight": ("tucker", (300, 784), (15, 20, 28, 28), (5, 5, 5, 5)),
        "fc1.bias": ("plain", (300,), 0.1),
        "fc2.weight": ("tucker", (100, 300), (10, 10, 300), (4, 4, 6)),
        "fc2.bias": ("plain", (100,), 0.1),
        "fc3.weight_t": ("cp", (100, 10), (10, 10, 10), 4),
        "fc3.bias": ("plain", (10,), 0.1),
    }
    return _model(nodes, [_io("input", ["N", 1, 28, 28])], [_io("output", ["N", 10])]), specs


def resblock():
    """A CIFAR ResNet basic block (Conv-BN-Relu-Conv-BN + shortcut, Add, Relu) then
    GlobalAveragePool -> Flatten -> Gemm; BN stays a node; conv2 shares conv1's SCADA core."""
    bn = dict(epsilon=1e-5)
    nodes = [
        make_node("Conv", ["input", "conv0.weight"], ["1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        make_node("BatchNormalization", ["1", "bn0.weight", "bn0.bias", "bn0.running_mean", "bn0.running_var"], ["2"], **bn),
        make_node("Relu", ["2"], ["3"]),
        make_node("Conv", ["3", "conv1.weight"], ["4"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        make_node("BatchNormalization", ["4", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"], ["5"], **bn),
        make_node("Relu", ["5"], ["6"]),
        make_node("Conv", ["6", "conv2.weight"], ["7"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        make_node("BatchNormalization", ["7", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var"], ["8"], **bn),
        make_node("Add", ["8", "3"], ["9"]),
        make_node("Relu", ["9"], ["10"]),
        make_node("AveragePool", ["10"], ["11"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                  count_include_pad=0),
        make_node("GlobalAveragePool", ["11"], ["12"]),
        make_node("Flatten", ["12"], ["13"]),
        make_node("Gemm", ["13", "fc.weight", "fc.bias"], ["output"], transB=1),
    ]
    specs = {"conv0.weight": ("tucker", (16, 3, 3, 3), (16, 3, 9), (4, 3, 4))}
    for i in range(3):
        specs[f"bn{i}.weight"] = ("plain", (16,), 1.0)
        specs[f"bn{i}.bias"] = ("plain", (16,), 0.1)
        specs[f"bn{i}.running_mean"] = ("plain", (16,), 0.1)
        specs[f"bn{i}.running_var"] = ("positive", (16,))
    specs["conv1.weight"] = ("shared", (16, 16, 3, 3), (16, 16, 9), (4, 4, 4))
    specs["conv2.weight"] = ("shared", (16, 16, 3, 3), (16, 16, 9), (4, 4, 4))
    specs["fc.weight"] = ("tucker", (10, 16), (10, 16), (3, 3))
    specs["fc.bias"] = ("plain", (10,), 0.1)
    return _model(nodes, [_io("input", ["N", 3, 8, 8])], [_io("output", ["N", 10])]), specs


def strip(model: OnnxModel) -> bytes:
    """The contract's architecture bytes: no initializer for any stored parameter."""
    return model.to_bytes()


def make_adt(model, specs: dict, seed: int = 0, tables: str = "auto", metadata: dict | None = None) -> bytes:
    """Quantize random values for every spec and write the .adt file (architecture = ``model``)."""
    rng = np.random.default_rng(seed)
    w = AdtWriter(tables=tables)
    for k, v in (metadata or {"producer": "runtime tests"}).items():
        w.add_metadata(k, v)
    if model is not None:
        w.set_architecture(strip(model))
    q, b = 256, 1.0
    gf = w.add_group(q, b)       # factors and plain parameters
    gc = w.add_group(512, 2.0)   # cores
    cores: dict[str, int] = {}
    shared = None
    for name, spec in specs.items():  # the writer takes every core before any parameter
        if spec[0] == "shared":
            if shared is None:
                shared = w.add_core(quantize(rng.normal(0, 0.8, spec[3]), 512, 2.0), gc)
            cores[name] = shared
        elif spec[0] == "tucker":
            cores[name] = w.add_core(quantize(rng.normal(0, 0.8, spec[3]), 512, 2.0), gc)
        elif spec[0] == "cp":
            cores[name] = w.add_core(quantize(rng.normal(0, 0.8, spec[3]), 512, 2.0), gc, cp_order=len(spec[2]))
    for name, spec in specs.items():
        kind = spec[0]
        if kind in ("tucker", "shared"):
            _, shape, reshape, ranks = spec
            # factor scale keeps the rebuilt weights O(1/sqrt(fan_in)) so activations stay O(1)
            fan = prod(shape[1:])
            scale = (1.0 / np.sqrt(fan)) ** (1 / len(ranks)) / np.sqrt(max(ranks))
            factors = [quantize(rng.normal(0, scale, (n, k)), q, b) for n, k in zip(reshape, ranks)]
            w.add_tucker(name, shape, cores[name], factors, gf)
        elif kind == "cp":
            _, shape, reshape, rank = spec
            scale = (1.0 / np.sqrt(shape[0])) ** (1 / len(reshape))
            factors = [quantize(rng.normal(0, scale, (n, rank)), q, b) for n in reshape]
            w.add_tucker(name, shape, cores[name], factors, gf)
        elif kind == "plain":
            _, shape, scale = spec
            w.add_plain(name, quantize(rng.normal(0, scale, shape), q, b), gf)
        elif kind == "positive":
            _, shape = spec
            w.add_plain(name, quantize(rng.uniform(0.5, 0.95, shape), q, b), gf)
        else:
            raise ValueError(kind)
    return w.to_bytes()


def tt_mlp():
    """A two-layer MLP whose weights are tensor trains (format 2.0) and whose biases are plain."""
    nodes = [
        make_node("Flatten", ["input"], ["1"]),
        make_node("Gemm", ["1", "fc1.weight", "fc1.bias"], ["2"], transB=1),
        make_node("Relu", ["2"], ["3"]),
        make_node("Gemm", ["3", "fc2.weight", "fc2.bias"], ["output"], transB=1),
    ]
    specs = {
        "fc1.weight": ("tt", (100, 784), (10, 10, 28, 28), (4, 6, 4)),
        "fc1.bias": ("plain", (100,), 0.1),
        "fc2.weight": ("tt", (10, 100), (10, 10, 10), (3, 3)),
        "fc2.bias": ("plain", (10,), 0.1),
    }
    return _model(nodes, [_io("input", ["N", 1, 28, 28])], [_io("output", ["N", 10])]), specs


def make_tt_adt(model, specs: dict, seed: int = 0) -> bytes:
    """Like :func:`make_adt` for specs ``("tt", shape, reshape, ranks)`` and ``("plain", shape, scale)``:
    random TT cores scaled so that each weight is O(1/sqrt(fan_in))."""
    rng = np.random.default_rng(seed)
    w = AdtWriter()
    w.add_metadata("producer", "runtime tests")
    if model is not None:
        w.set_architecture(strip(model))
    q, b = 256, 1.0
    g = w.add_group(q, b)
    for name, spec in specs.items():
        if spec[0] == "tt":
            _, shape, reshape, ranks = spec
            r = (1,) + tuple(ranks) + (1,)
            # a product of d cores summed over the ranks has variance s^(2d) * prod(ranks)
            target = 1.0 / np.sqrt(prod(shape[1:]))
            s = (target ** 2 / prod(ranks)) ** (1 / (2 * len(reshape)))
            w.add_tt(name, shape, [quantize(rng.normal(0, s, (r[k], n, r[k + 1])), q, b)
                                   for k, n in enumerate(reshape)], g)
        else:
            _, shape, scale = spec
            w.add_plain(name, quantize(rng.normal(0, scale, shape), q, b), g)
    return w.to_bytes()


def dense_model(model: OnnxModel, weights: dict):
    """The architecture with ``weights`` as initializers, built with the onnx package (independent of
    the runtime's own wire-level assembly). Needs onnx: only the conformance tests call it."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load_from_string(model.to_bytes())
    used = {n for node in m.graph.node for n in node.input}
    for name, arr in weights.items():
        if name in used:
            m.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
    return m


def float64_rebuild(data: bytes) -> dict[str, np.ndarray]:
    """An independent rebuild: one np.einsum over the whole expression in float64, rounded once."""
    f = read_adt(data)
    out = {}
    for p in f.params:
        if p.reshape is None:
            out[p.name] = f.values(p.symbols, p.group).astype(np.float64).reshape(p.shape).astype(np.float32)
            continue
        c = f.cores[p.core]
        core = f.core_values(p.core).astype(np.float64)  # CP expanded to the superdiagonal tensor
        facs = [f.values(m, p.group).astype(np.float64) for m in p.factors]
        d = len(facs)
        letters, ranks = "abcdefgh"[:d], "ijklmnop"[:d]
        spec = ranks + "," + ",".join(a + r for a, r in zip(letters, ranks)) + "->" + letters
        out[p.name] = np.einsum(spec, core, *facs, optimize=True).reshape(p.shape).astype(np.float32)
        assert c.dims == core.shape
    return out


def python_child(prelude: str, code: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``prelude`` then ``code`` (both dedented) in a fresh interpreter: the prelude sets up what
    must hold before anything is imported (an import blocker, an address-space limit)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(prelude) + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def refused_before_allocating(data: bytes, match: str, error: type) -> tuple[float, int]:
    """Load ``data`` expecting ``error`` matching ``match``; return (seconds, traced peak bytes) so that
    the caller asserts the refusal came at once and allocated nothing of the parameter's size."""
    import re
    import time
    import tracemalloc

    import adt.runtime as rt

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        rt.load(data)
    except error as exc:
        if not re.search(match, str(exc)):
            raise AssertionError(f"{error.__name__} {str(exc)!r} does not match {match!r}") from None
    else:
        raise AssertionError(f"loading the file did not raise {error.__name__}")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return time.perf_counter() - t0, peak


def rebuild_with_traced_peak(f):
    """``(rebuild_plan(f), rebuild_weights(f) with no limit, traced peak bytes of that rebuild)``: what
    the budget tests compare the plan's estimate against."""
    import tracemalloc

    from adt.runtime.rebuild import rebuild_plan, rebuild_weights

    plan = rebuild_plan(f)
    tracemalloc.start()
    try:
        weights = rebuild_weights(f, max_memory=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return plan, weights, peak
