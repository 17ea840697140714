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


def tiny_onnx() -> bytes:
    """The architecture of a tiny MLP per the ADT contract: input [N,1,4,4] -> Flatten -> Gemm -> Relu
    -> Gemm -> output [N,3]; weights referenced by name, not stored in the graph."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Flatten", ["input"], ["a"], axis=1),
             helper.make_node("Gemm", ["a", "fc1.weight", "fc1.bias"], ["b"], transB=1),
             helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("Gemm", ["c", "fc2.weight", "fc2.bias"], ["output"], transB=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="")
    model.ir_version = 8
    return model.SerializeToString()


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
