"""Hand-built .adt files for the tools tests (no exporter, no torch)."""
from __future__ import annotations

import numpy as np

from adt.runtime.format import AdtWriter, quantize


def sym(rng: np.random.Generator, shape, q: int = 512, b: float = 3.0, scale: float = 1.0) -> np.ndarray:
    """Laplace-distributed values quantized with Eq. 13 (a realistic symbol spread)."""
    return quantize(rng.laplace(scale=scale, size=shape), q, b)


def mixed_file(seed: int = 0, metadata: dict | None = None, arch: bytes | None = None,
               tables: str = "auto") -> bytes:
    """ADA (own core), SCADA (a core shared by two parameters), CP and plain parameters, two groups."""
    rng = np.random.default_rng(seed)
    w = AdtWriter(tables=tables)
    for k, v in (metadata or {"producer": "tests", "model": "mixed"}).items():
        w.add_metadata(k, v)
    if arch is not None:
        w.set_architecture(arch)
    g = w.add_group(512, 3.0)
    g2 = w.add_group(256, 1.0)
    c = w.add_core(sym(rng, (4, 4, 3)), g)
    s = w.add_core(sym(rng, (3, 3)), g)
    cp = w.add_core(sym(rng, 5), g, cp_order=2)
    w.add_tucker("conv1.weight", (20, 1, 5, 5), c, [sym(rng, (5, 4)), sym(rng, (10, 4)), sym(rng, (10, 3))], g)
    w.add_tucker("fc1.weight", (50, 40), s, [sym(rng, (50, 3)), sym(rng, (40, 3))], g)
    w.add_tucker("fc2.weight", (10, 40), s, [sym(rng, (10, 3)), sym(rng, (40, 3))], g)
    w.add_tucker("fc3.weight", (10, 10), cp, [sym(rng, (10, 5)), sym(rng, (10, 5))], g)
    w.add_plain("conv1.bias", sym(rng, 20, 256, 1.0, 0.1), g2)
    w.add_plain("bn.running_var", sym(rng, 20, 256, 1.0, 0.1), g2)
    return w.to_bytes()


def _architecture(nodes: list, name: str, input_shape: list, output_shape: list) -> bytes:
    """An architecture per the ADT contract (ONNX opset 17, IR 8, weights referenced by name, not
    stored), built with the runtime's own protobuf writer: no onnx package needed."""
    from adt.runtime.onnx_proto import FLOAT, Graph, OnnxModel, ValueInfo

    graph = Graph(nodes=nodes, name=name, inputs=[ValueInfo("input", FLOAT, input_shape)],
                  outputs=[ValueInfo("output", FLOAT, output_shape)])
    return OnnxModel(ir_version=8, opsets={"ai.onnx": 17}, graph=graph).to_bytes()


def tiny_onnx() -> bytes:
    """The architecture of a tiny MLP: input [N,1,4,4] -> Flatten -> Gemm -> Relu -> Gemm -> output [N,3]."""
    from adt.runtime.onnx_proto import make_node

    nodes = [make_node("Flatten", ["input"], ["a"], axis=1),
             make_node("Gemm", ["a", "fc1.weight", "fc1.bias"], ["b"], transB=1),
             make_node("Relu", ["b"], ["c"]),
             make_node("Gemm", ["c", "fc2.weight", "fc2.bias"], ["output"], transB=1)]
    return _architecture(nodes, "g", ["N", 1, 4, 4], ["N", 3])


def flat_mlp_file(seed: int = 0) -> bytes:
    """A runnable .adt file whose graph takes flat [N, 784] vectors (no Flatten node): one Gemm 784 -> 10."""
    from adt.runtime.onnx_proto import make_node

    rng = np.random.default_rng(seed)
    w = AdtWriter()
    w.set_architecture(_architecture([make_node("Gemm", ["input", "fc.weight", "fc.bias"], ["output"], transB=1)],
                                     "flat-mlp", ["N", 784], ["N", 10]))
    g = w.add_group(512, 3.0)
    w.add_plain("fc.weight", sym(rng, (10, 784), scale=0.05), g)
    w.add_plain("fc.bias", sym(rng, 10, scale=0.1), g)
    return w.to_bytes()


def tiny_model_file(seed: int = 0) -> bytes:
    """A runnable .adt file: fc1 (8x16) as ADA-Tucker with a 3x3 core, the rest plain."""
    rng = np.random.default_rng(seed)
    w = AdtWriter()
    w.add_metadata("model", "tiny-mlp")
    w.set_architecture(tiny_onnx())
    g = w.add_group(512, 3.0)
    c = w.add_core(sym(rng, (3, 3)), g)
    w.add_tucker("fc1.weight", (8, 16), c, [sym(rng, (8, 3)), sym(rng, (16, 3))], g)
    w.add_plain("fc1.bias", sym(rng, 8, scale=0.1), g)
    w.add_plain("fc2.weight", sym(rng, (3, 8), scale=0.3), g)
    w.add_plain("fc2.bias", sym(rng, 3, scale=0.1), g)
    return w.to_bytes()
