"""The model's architecture as a lean ONNX graph with no weights (COMMON.md "architecture contract").

Why the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): in torch 2.x the
torch.export-based exporter rewrites ``flatten`` into Shape/Squeeze/Concat/Reshape chains and its
optimizer folds BatchNormalization into the preceding Conv, which would change the stored weights;
the TorchScript path with ``do_constant_folding=False`` and ``training=EVAL`` keeps one ONNX node
per layer (Conv, BatchNormalization, Flatten, Gemm, ...) and names the weights by their PyTorch names.

Post-processing then enforces the contract: parameter initializers removed (the runtime supplies
them from the tensor table), ``input``/``output`` with a symbolic batch dim ``N``, doc strings,
producer, metadata, value_info and node names stripped, intermediate names shortened to decimal
counters. Every byte here ends up (DEFLATE-compressed) in the .adt file.
"""
from __future__ import annotations

import io
import warnings
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from adt.runtime.numpy_engine import OPS
from adt.runtime.onnx_proto import add_initializers

from .errors import ModelError
from .factorize import frozen_copy, stored_tensors

__all__ = ["OPSET", "RUNTIME_OPS", "architecture_model", "architecture_bytes", "referenced_tensors", "with_weights"]

#: Highest default-domain opset the exporter writes.
OPSET = 17
#: Ops the NumPy engine runs (the engine's own registry); anything else is refused at export time.
RUNTIME_OPS = frozenset(OPS)


def _torch_export(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    x = torch.zeros((2, *input_shape), dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, (x,), buf, input_names=["input"], output_names=["output"], opset_version=OPSET,
            do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
            dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, dynamo=False,
        )
    return buf.getvalue()


def architecture_model(model: nn.Module, input_shape: Sequence[int],
                       rename: Mapping[str, str] | None = None):
    """The contract-conforming :class:`onnx.ModelProto` of ``model`` for inputs ``[N, *input_shape]``.

    ``rename`` maps PyTorch tensor names to the names the tensor table uses (``compact_names``);
    the returned graph references every stored tensor under its (renamed) name, never as an
    initializer. Raises :class:`ModelError` if the graph needs an op the runtime cannot run or
    hard-codes the batch size.
    """
    import onnx
    from onnx import numpy_helper

    frozen = frozen_copy(model)
    params = stored_tensors(frozen)
    proto = onnx.load_from_string(_torch_export(frozen, input_shape))
    g = proto.graph
    rename = dict(rename or {})

    # The TorchScript exporter deduplicates initializers with equal values (e.g. a fresh BN's
    # running_var == weight == ones) by emitting `Identity(weight) -> running_var`. The runtime
    # supplies every stored tensor itself, so such Identity nodes must go.
    dropped = [n for n in g.node if n.op_type == "Identity" and n.output[0] in params and n.input[0] in params]
    for n in dropped:
        g.node.remove(n)

    kept_inits = []
    for t in g.initializer:
        if t.name in params:
            continue
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            raise ModelError(
                f"the exported graph holds a float constant {t.name!r} {list(t.dims)} that is not a model "
                "parameter or buffer; write the model so that every float tensor is a registered parameter/buffer"
            )
        kept_inits.append(t)
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    graph_inputs = [i for i in g.input if i.name == "input"]
    del g.input[:]
    g.input.extend(graph_inputs)

    # Contract checks: ops, opset, batch dimension.
    for n in g.node:
        if n.op_type not in RUNTIME_OPS or n.domain not in ("", "ai.onnx"):
            raise ModelError(f"the graph needs op {n.op_type!r} (node {n.name!r}), which the ADT runtime does not run; "
                             f"supported: {', '.join(sorted(RUNTIME_OPS))}")
    consts = {t.name: numpy_helper.to_array(t) for t in kept_inits}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    for n in g.node:
        if n.op_type == "Reshape" and n.input[1] in consts:
            shape = consts[n.input[1]].reshape(-1)
            if shape.size and int(shape[0]) not in (0, -1):
                raise ModelError(f"Reshape to {shape.tolist()} fixes the batch size; use torch.flatten(x, 1) "
                                 "or x.reshape(x.shape[0], -1)/x.view(-1, K)")

    # Names: stored tensors -> table names, everything else -> short counters.
    names: dict[str, str] = {"input": "input", "output": "output"}
    for k in params:
        names[k] = rename.get(k, k)
    taken = set(names.values())
    counter = 0

    def short(name: str) -> str:
        nonlocal counter
        if name == "" or name in names:
            return names.get(name, name)
        while str(counter) in taken:
            counter += 1
        names[name] = str(counter)
        taken.add(names[name])
        counter += 1
        return names[name]

    for t in g.initializer:
        t.name = short(t.name)
    for n in g.node:
        for i, v in enumerate(n.input):
            n.input[i] = short(v)
        for i, v in enumerate(n.output):
            n.output[i] = short(v)
        # ONNX is proto2: an empty string that is SET is still serialized, so clear the fields.
        n.ClearField("name")
        n.ClearField("doc_string")
        for a in n.attribute:
            a.ClearField("doc_string")
    for v in list(g.input) + list(g.output):
        v.name = names.get(v.name, v.name)
        v.ClearField("doc_string")

    # Symbolic batch on input and outputs.
    for v in list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    if [o.name for o in g.output] != ["output"]:
        raise ModelError(f"the model must have exactly one output, got {len(g.output)}")

    del g.value_info[:]
    g.ClearField("doc_string")
    g.name = "g"
    for f in ("doc_string", "producer_name", "producer_version", "domain", "model_version"):
        proto.ClearField(f)
    del proto.metadata_props[:]
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx") and op.version > OPSET:
            raise ModelError(f"graph uses opset {op.version}, the runtime accepts <= {OPSET}")
        if op.domain == "":
            op.ClearField("domain")
    return proto


def architecture_bytes(model: nn.Module, input_shape: Sequence[int],
                       rename: Mapping[str, str] | None = None) -> bytes:
    """Serialized ONNX architecture of ``model`` (see :func:`architecture_model`); deterministic."""
    return architecture_model(model, input_shape, rename).SerializeToString(deterministic=True)


def referenced_tensors(arch: bytes) -> set[str]:
    """Names the architecture's nodes read that are neither produced by a node, nor graph inputs,
    nor initializers: exactly the tensors the runtime must supply from the tensor table."""
    import onnx

    g = onnx.load_from_string(arch).graph
    produced = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
    return {i for n in g.node for i in n.input if i and i not in produced}


def with_weights(arch: bytes, weights: Mapping[str, np.ndarray]) -> bytes:
    """The architecture with ``weights`` (name -> float32 array) put back as initializers: a dense
    ONNX model onnxruntime can run (the runtime's :func:`adt.runtime.onnx_proto.add_initializers`,
    after checking that every tensor the graph reads is given)."""
    needed = sorted(referenced_tensors(arch))
    missing = [n for n in needed if n not in weights]
    if missing:
        raise ModelError(f"architecture needs tensor {missing[0]!r}, which is not among the weights")
    return add_initializers(arch, {n: np.asarray(weights[n], dtype=np.float32) for n in needed})
