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
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from adt.runtime.numpy_engine import OPS
from adt.runtime.onnx_proto import add_initializers

from .batchnorm import batchnorm_layers, inference_tensors
from .errors import ModelError
from .factorize import frozen_copy

__all__ = ["OPSET", "RUNTIME_OPS", "architecture_model", "check_exportable", "example_inputs", "input_names", "architecture_bytes", "referenced_tensors", "with_weights"]

#: Highest default-domain opset the exporter writes.
OPSET = 17
#: Ops the NumPy engine runs (the engine's own registry); anything else is refused at export time.
RUNTIME_OPS = frozenset(OPS)


def input_names(count: int) -> list[str]:
    """The graph's input names: ``input`` (one input), then ``input_1``, ``input_2``, ..."""
    return ["input"] + [f"input_{i}" for i in range(1, count)]


def example_inputs(input_shape: Sequence[int] | None = None, examples: Sequence[Any] | None = None) -> tuple[torch.Tensor, ...]:
    """The tensors the model is traced with: ``examples`` (each with a batch dimension, any dtype:
    integer token ids, several inputs) or, from ``input_shape`` (one sample's shape), a float32 batch of 2."""
    if examples is not None:
        out = tuple(torch.as_tensor(e) for e in examples)
        if not out or any(t.dim() < 1 or t.shape[0] < 1 for t in out):
            raise ModelError("example inputs must be one or more tensors, each with a batch dimension (N, ...)")
        return out
    if input_shape is None:
        raise ModelError("give input_shape (one sample's shape, e.g. (1, 28, 28)) or example inputs")
    return (torch.zeros((2, *(int(d) for d in input_shape)), dtype=torch.float32),)


def _torch_export(model: nn.Module, examples: tuple[torch.Tensor, ...]) -> bytes:
    names = input_names(len(examples))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model, examples, buf, input_names=names, output_names=["output"], opset_version=OPSET,
                do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
                dynamic_axes={**{n: {0: "N"} for n in names}, "output": {0: "N"}}, dynamo=False,
            )
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch's exporter raises many types; the user needs one line
        # e.g. SymbolicValueError "Unsupported: ONNX export of operator adaptive_avg_pool2d, output size
        # that are not factor of input size" (VGG's 7x7 pool on a small input): the first line says it all
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelError(f"torch's ONNX exporter refused the model ({type(exc).__name__}): {first[:300]}") from exc
    return buf.getvalue()


def architecture_model(model: nn.Module, input_shape: Sequence[int] | None = None,
                       rename: Mapping[str, str] | None = None, examples: Sequence[Any] | None = None):
    """The contract-conforming :class:`onnx.ModelProto` of ``model`` for inputs ``[N, *input_shape]``
    (or traced with ``examples``: :func:`example_inputs`).

    ``rename`` maps PyTorch tensor names to the names the tensor table uses (``compact_names``);
    the returned graph references every stored tensor under its (renamed) name, never as an
    initializer. Raises :class:`ModelError` if the graph needs an op the runtime cannot run or
    hard-codes the batch size.
    """
    import onnx
    from onnx import numpy_helper

    frozen = frozen_copy(model)
    params = set(inference_tensors(frozen))
    traced = example_inputs(input_shape, examples)
    proto = onnx.load_from_string(_torch_export(frozen, traced))
    g = proto.graph
    rename = dict(rename or {})
    _batchnorm_to_affine(g, frozen)
    params |= set(frozen.state_dict())  # the replaced BatchNorm statistics: still initializers to drop

    # The TorchScript exporter deduplicates initializers with equal values (e.g. a fresh BN's
    # running_var == weight == ones) by emitting `Identity(weight) -> running_var`. The runtime
    # supplies every stored tensor itself, so such Identity nodes must go.
    dropped = [n for n in g.node if n.op_type == "Identity" and n.output[0] in params and n.input[0] in params]
    for n in dropped:
        g.node.remove(n)

    read = {i for n in g.node for i in n.input}
    kept_inits = []  # integer constants (Reshape targets, ...) stay in the graph
    for t in g.initializer:
        if t.name in params or t.name not in read:  # stored tensors, and what the rewrite left unread
            continue
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            raise ModelError(
                f"the exported graph holds a float constant {t.name!r} {list(t.dims)} that is not a model "
                "parameter or buffer; write the model so that every float tensor is a registered parameter/buffer"
            )
        kept_inits.append(t)
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    declared = input_names(len(traced))
    graph_inputs = [i for i in g.input if i.name in declared]
    del g.input[:]
    g.input.extend(graph_inputs)

    # Contract checks: ops, opset, batch dimension.
    for n in g.node:
        if n.op_type not in RUNTIME_OPS or n.domain not in ("", "ai.onnx"):
            raise ModelError(f"{_layer_of(n.name)} needs op {n.op_type!r}, which the ADT runtime does not run; "
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
            # a target [1] (a scalar made 1-D) holds no batch; any other leading constant fixes it
            if shape.size and int(shape[0]) not in (0, -1) and shape.tolist() != [1]:
                raise ModelError(f"Reshape to {shape.tolist()} fixes the batch size; use torch.flatten(x, 1) "
                                 "or x.reshape(x.shape[0], -1)/x.view(-1, K)")

    # Names: stored tensors -> table names, everything else -> short counters.
    names: dict[str, str] = {"output": "output", **{n: n for n in declared}}
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


def _layer_of(node_name: str) -> str:
    """The PyTorch module path in a TorchScript-exported node name ("/layer1/layer1.0/act/Erf" -> "layer1.0.act")."""
    path = ""
    for part in [p for p in node_name.split("/") if p][:-1]:
        # a scope segment is either a child's name or (nested containers) its full dotted path
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return f"layer {path!r}" if path else "the model's forward (no submodule)"


def check_exportable(model: nn.Module, input_shape: Sequence[int] | None = None,
                     examples: Sequence[Any] | None = None) -> None:
    """Trace ``model`` as the exporter will and raise :class:`ModelError` now (naming the layer and op)
    if its graph cannot be stored or run: call it before any decomposition or training, which can
    take minutes on a large model."""
    architecture_model(model, input_shape, examples=examples)


def _batchnorm_to_affine(g, frozen: nn.Module) -> None:
    """Replace every ``BatchNormalization`` node by ``Mul(x, <path>.bn_scale)`` then ``Add(., <path>.bn_shift)``
    (:mod:`adt.exporter.batchnorm` says why), in place, keeping the node order topological."""
    from onnx import helper

    paths = {bn.stat_name("running_mean"): bn for bn in batchnorm_layers(frozen)}
    nodes = list(g.node)
    out = []
    for n in nodes:
        if n.op_type != "BatchNormalization":
            out.append(n)
            continue
        bn = paths.get(n.input[3]) if len(n.input) == 5 else None
        if bn is None:
            raise ModelError(f"a BatchNormalization node reads {list(n.input)[1:]}, which is no BatchNorm layer's "
                             "running statistics of the model")
        if len(n.output) != 1:
            raise ModelError(f"{bn.path}: BatchNorm exported in training mode (outputs {list(n.output)})")
        mid = f"{n.output[0]}__bn_mul"
        out.append(helper.make_node("Mul", [n.input[0], bn.scale_name], [mid]))
        out.append(helper.make_node("Add", [mid, bn.shift_name], [n.output[0]]))
    del g.node[:]
    g.node.extend(out)


def architecture_bytes(model: nn.Module, input_shape: Sequence[int] | None = None,
                       rename: Mapping[str, str] | None = None, examples: Sequence[Any] | None = None) -> bytes:
    """Serialized ONNX architecture of ``model`` (see :func:`architecture_model`); deterministic."""
    return architecture_model(model, input_shape, rename, examples).SerializeToString(deterministic=True)


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
