"""How many bytes does the architecture section take with plain DEFLATE (format 0) and with the
ADT-ONNX-1 preset dictionary (format 1)? Writes results/arch_dict.json.

    .venv/bin/python -m research.benchmarks.arch_dict_bench      # needs onnx; torch for the torch-export rows

Architectures (all follow the contract: input "input" [N, ...], output "output", no parameter
initializers):
  * "minimal": built with onnx.helper, default attributes left out;
  * "torch": exported with torch.onnx.export (opset 17, constant folding off), then stripped the way
    the contract asks: parameter initializers/inputs removed, doc strings, producer, node names and
    value_info dropped, intermediate names shortened to hex counters.
LeNet-5 and LeNet-300-100 are the models the dictionary was tuned for; the BatchNorm CNN is held out.
"""
from __future__ import annotations

import io
import json
import zlib

from adt.runtime.format.archdict import ONNX_DICT_V1
from research.paths import RESULTS

__all__ = ["OUT", "deflate", "minimal_models", "torch_models", "main"]

OUT = RESULTS / "arch_dict.json"


def deflate(data: bytes, zdict: bytes | None = None) -> int:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=zdict) if zdict else zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return len(c.compress(data) + c.flush())


# -- "minimal" graphs ---------------------------------------------------------------------------
def _model(nodes, inshape, outshape) -> bytes:
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("input", T.FLOAT, inshape)],
                     [h.make_tensor_value_info("output", T.FLOAT, outshape)])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8).SerializeToString()


def minimal_models() -> dict[str, bytes]:
    from onnx import helper as h

    lenet5 = _model([
        h.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["a"], kernel_shape=[5, 5]),
        h.make_node("Relu", ["a"], ["b"]),
        h.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Conv", ["c", "conv2.weight", "conv2.bias"], ["d"], kernel_shape=[5, 5]),
        h.make_node("Relu", ["d"], ["e"]),
        h.make_node("MaxPool", ["e"], ["f"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Flatten", ["f"], ["g"]),
        h.make_node("Gemm", ["g", "fc1.weight", "fc1.bias"], ["i"], transB=1),
        h.make_node("Relu", ["i"], ["j"]),
        h.make_node("Gemm", ["j", "fc2.weight", "fc2.bias"], ["output"], transB=1),
    ], ["N", 1, 28, 28], ["N", 10])
    lenet300 = _model([
        h.make_node("Flatten", ["input"], ["a"]),
        h.make_node("Gemm", ["a", "fc1.weight", "fc1.bias"], ["b"], transB=1), h.make_node("Relu", ["b"], ["c"]),
        h.make_node("Gemm", ["c", "fc2.weight", "fc2.bias"], ["d"], transB=1), h.make_node("Relu", ["d"], ["e"]),
        h.make_node("Gemm", ["e", "fc3.weight", "fc3.bias"], ["output"], transB=1),
    ], ["N", 1, 28, 28], ["N", 10])
    nodes, prev = [], "input"
    for i in range(3):
        p = f"features.{i}"
        nodes += [
            h.make_node("Conv", [prev, f"{p}.conv.weight"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            h.make_node("BatchNormalization", [f"c{i}", f"{p}.bn.weight", f"{p}.bn.bias", f"{p}.bn.running_mean",
                                               f"{p}.bn.running_var"], [f"b{i}"], epsilon=1e-5),
            h.make_node("Relu", [f"b{i}"], [f"r{i}"]),
            h.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        prev = f"p{i}"
    nodes += [h.make_node("GlobalAveragePool", [prev], ["gap"]), h.make_node("Flatten", ["gap"], ["fl"]),
              h.make_node("Gemm", ["fl", "classifier.weight", "classifier.bias"], ["output"], transB=1)]
    bncnn = _model(nodes, ["N", 3, 32, 32], ["N", 10])
    return {"lenet5": lenet5, "lenet300_100": lenet300, "bn_cnn_heldout": bncnn}


# -- torch-exported graphs ----------------------------------------------------------------------
def torch_models() -> dict[str, bytes]:
    import onnx
    import torch
    from torch import nn

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

    class LeNet300(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

        def forward(self, x):
            x = torch.flatten(x, 1)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    class BnCnn(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c = [], 3
            for out in (16, 32, 64):
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
                c = out
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Linear(64, 10)

        def forward(self, x):
            return self.classifier(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    def export(model, shape) -> bytes:
        buf = io.BytesIO()
        torch.onnx.export(model.eval(), torch.zeros(1, *shape), buf, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=17,
                          do_constant_folding=False, dynamo=False)
        m = onnx.load_from_string(buf.getvalue())
        params = {n for n, _ in model.state_dict().items()}
        keep = [i for i in m.graph.initializer if i.name not in params]
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        inputs = [i for i in m.graph.input if i.name not in params]
        del m.graph.input[:]
        m.graph.input.extend(inputs)
        m.producer_name = m.producer_version = m.doc_string = ""
        del m.metadata_props[:]
        del m.graph.value_info[:]
        renamed, k = {}, 0
        for node in m.graph.node:
            node.name = node.doc_string = ""
            for j, name in enumerate(node.input):
                node.input[j] = renamed.get(name, name)
            for j, name in enumerate(node.output):
                if name != "output":
                    renamed[name] = format(k, "x")
                    k += 1
                    node.output[j] = renamed[name]
        return m.SerializeToString()

    torch.manual_seed(0)
    return {"lenet5": export(LeNet5(), (1, 28, 28)), "lenet300_100": export(LeNet300(), (1, 28, 28)),
            "bn_cnn_heldout": export(BnCnn(), (3, 32, 32))}


def main() -> int:
    rows = []
    sets = {"minimal": minimal_models}
    try:
        import torch  # noqa: F401
        sets["torch"] = torch_models
    except ImportError:
        print("torch not installed: only the 'minimal' rows")
    for style, make in sets.items():
        for name, raw in make().items():
            plain, withdict = deflate(raw), deflate(raw, ONNX_DICT_V1)
            rows.append({"style": style, "model": name, "onnx_bytes": len(raw), "deflate_bytes": plain,
                         "deflate_dict_bytes": withdict, "saved_bytes": plain - withdict})
    result = {"what": "architecture section body bytes (compressed ONNX) without / with the ADT-ONNX-1 dictionary",
              "dictionary_bytes": len(ONNX_DICT_V1), "rows": rows}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'style':8s} {'model':15s} {'onnx':>5s} {'deflate':>7s} {'+dict':>6s} {'saved':>6s}")
    for r in rows:
        print(f"{r['style']:8s} {r['model']:15s} {r['onnx_bytes']:5d} {r['deflate_bytes']:7d} "
              f"{r['deflate_dict_bytes']:6d} {r['saved_bytes']:6d}")
    print(f"-> {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
