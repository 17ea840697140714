"""The NumPy engine's errors name the op and the node (no onnx needed: graphs from the runtime's encoder)."""
from __future__ import annotations

import numpy as np
import pytest

from adt.runtime.errors import AdtExecutionError, AdtUnsupportedOpError
from adt.runtime.numpy_engine import NumpyEngine
from adt.runtime.onnx_proto import FLOAT, Graph, OnnxModel, ValueInfo, make_node, parse_model

RNG = np.random.default_rng(1234)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def build(node, feeds: dict, opset: int = 17) -> OnnxModel:
    """A one-node model: float32 inputs of the feeds' shapes, outputs of unknown type."""
    inputs = [ValueInfo(k, FLOAT, list(v.shape)) for k, v in feeds.items()]
    outputs = [ValueInfo(o, 0, None) for o in node.outputs if o]
    return OnnxModel(ir_version=8, opsets={"ai.onnx": opset}, graph=Graph([node], name="g", inputs=inputs, outputs=outputs))


def test_unsupported_op_names_op_and_node():
    node = make_node("DepthToSpace", ["x"], ["y"], name="my_d2s_node", blocksize=2)  # an op the engine lacks
    with pytest.raises(AdtUnsupportedOpError, match=r"'DepthToSpace'.*my_d2s_node"):
        NumpyEngine(parse_model(build(node, {"x": f32(2, 2)}).to_bytes()), {})


def test_unsupported_domain_names_node():
    node = make_node("Gelu", ["x"], ["y"], name="g1", domain="com.microsoft")
    m = build(node, {"x": f32(2, 2)})
    m.opsets["com.microsoft"] = 1
    with pytest.raises(AdtUnsupportedOpError, match=r"Gelu.*g1.*com\.microsoft"):
        NumpyEngine(parse_model(m.to_bytes()), {})


def test_unsupported_attribute_value():
    node = make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="mp")
    with pytest.raises(AdtUnsupportedOpError, match="Indices.*|mp"):
        NumpyEngine(parse_model(build(node, {"x": f32(1, 1, 4, 4)}).to_bytes()), {})


def test_shape_mismatch_is_an_execution_error_naming_the_node():
    node = make_node("Gemm", ["a", "b"], ["y"], name="fc9")
    eng = NumpyEngine(parse_model(build(node, {"a": f32(2, 3)}).to_bytes()), {"b": f32(4, 5)})
    with pytest.raises(AdtExecutionError, match=r"fc9.*\[2, 3\].*\[4, 5\]"):
        eng.run({"a": f32(2, 3)})
