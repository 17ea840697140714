"""Make the preset DEFLATE dictionary of architecture format 1 ("ADT-ONNX-1", FORMAT.md §5).

    .venv/bin/python format_spec/make_arch_dict.py            # print the dictionary as hex
    .venv/bin/python format_spec/make_arch_dict.py --check    # compare with runtime/format/archdict.py

The dictionary is the serialized ONNX ModelProto of a synthetic network that uses the NumPy engine's
main ops, with attributes as torch.onnx.export writes them (defaults included) and PyTorch-style
parameter names, in the form the architecture contract prescribes (input/output names, symbolic batch
"N", opset 17, no initializers for parameters). It is tuned to MNIST-sized CNNs/MLPs (5x5 convs, 2x2
pools, 28x28 input), the models ADT targets first; results/arch_dict.json also measures a held-out
BatchNorm CNN. DEFLATE can then code the protobuf framing, op names, attribute names and
name fragments of a real architecture as short back-references into it.

The bytes in runtime/format/archdict.py are normative and frozen: a different onnx version might
serialize this model differently, which is why the reader never rebuilds the dictionary from here.
"""
from __future__ import annotations

import argparse
import hashlib
import sys


def dictionary_model() -> bytes:
    from onnx import TensorProto as T
    from onnx import helper as h

    # Attributes as torch.onnx.export writes them (defaults included), names as PyTorch gives them.
    conv = dict(dilations=[1, 1], group=1, strides=[1, 1])
    pool = dict(ceil_mode=0, dilations=[1, 1], kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2])
    gemm = dict(alpha=1.0, beta=1.0, transB=1)
    n = [
        h.make_node("Conv", ["x", "layer1.0.conv1.weight"], ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], **conv),
        h.make_node("BatchNormalization", ["x", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"],
                    ["x"], epsilon=1e-5, momentum=0.9),
        h.make_node("AveragePool", ["x"], ["x"], ceil_mode=0, count_include_pad=1, kernel_shape=[2, 2],
                    pads=[0, 0, 0, 0], strides=[2, 2]),
        h.make_node("GlobalAveragePool", ["x"], ["x"]),
        h.make_node("Add", ["x", "x"], ["x"]),
        h.make_node("Mul", ["x", "x"], ["x"]),
        h.make_node("Reshape", ["x", "shape"], ["x"], allowzero=0),
        h.make_node("MatMul", ["x", "features.0.weight"], ["x"]),
        h.make_node("Gemm", ["x", "classifier.weight", "classifier.bias"], ["x"], **gemm),
        h.make_node("Softmax", ["x"], ["x"], axis=1),
        h.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["x"], kernel_shape=[5, 5],
                    pads=[0, 0, 0, 0], **conv),
        h.make_node("Relu", ["x"], ["x"]),
        h.make_node("MaxPool", ["x"], ["x"], **pool),
        h.make_node("Flatten", ["x"], ["x"], axis=1),
        h.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["x"], **gemm),
        h.make_node("Gemm", ["x", "fc2.weight", "fc2.bias"], ["output"], **gemm),
    ]
    shape = h.make_tensor("shape", T.INT64, [2], [-1, 800])
    g = h.make_graph(n, "main_graph", [h.make_tensor_value_info("input", T.FLOAT, ["N", 1, 28, 28])],
                     [h.make_tensor_value_info("output", T.FLOAT, ["N", 10])], initializer=[shape])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8).SerializeToString()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Make or check the ADT-ONNX-1 preset DEFLATE dictionary.")
    ap.add_argument("--check", action="store_true", help="compare with runtime/format/archdict.py")
    args = ap.parse_args(argv)
    data = dictionary_model()
    if args.check:
        from adt.runtime.format.archdict import ONNX_DICT_V1

        same = data == ONNX_DICT_V1
        print(f"{'same' if same else 'DIFFERENT'}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
        return 0 if same else 1
    print(f"# {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    for i in range(0, len(data), 48):
        print(f'    "{data[i:i + 48].hex()}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
