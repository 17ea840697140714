"""Quantize a (SCADA-)ADA-Tucker model with Eq. 13 and write it as one ``.adt`` file, with a report.

What is stored: every float tensor the inference graph reads (COMMON.md architecture contract) —
Tucker layers as core + factor symbols (a SCADA shared core ONCE), everything else (biases,
untouched layers, BatchNorm as per-channel scale and shift) as plain quantized values
(:mod:`adt.exporter.quantplan` says which quantizer each value uses). Nothing is left out, so the file
alone runs the model and its size is the honest size.

The steps of :func:`export_adt`, each a function here: the architecture (ONNX graph, names
compacted on request) -> the inventory of what it reads -> the quantization plan -> the symbols ->
the file (:class:`adt.runtime.format.AdtWriter`) -> the report, whose byte accounting is the
runtime's (:func:`adt.runtime.format.byte_breakdown`) and whose quantized accuracy is measured on the
weights the runtime rebuilds from the file's own bytes.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields, replace
from math import prod
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import adt.runtime as rt
from adt.runtime.format import AdtFile, AdtWriter, byte_breakdown, read_adt
from adt.runtime.rebuild import rebuild_weights
from adt.runtime.selfcheck import KEY as SELFCHECK_KEY
from adt.runtime.selfcheck import make_selfcheck, probe_input
from adt.runtime.onnx_proto import parse_model
from adt.runtime.preprocess import INPUT_KEY, LABELS_KEY, InputConvention, check_labels, labels_to_json

from .batchnorm import SCALE_SUFFIX, SHIFT_SUFFIX, batchnorm_ranks, inference_tensors, replace_with_affine_
from .data import mnist_test_set
from .errors import ExportCheckError, ModelError, PlanError
from .factorize import frozen_copy, tucker_layers
from .fakequant import remove_plain_fake_quant
from .qat import enable_fake_quant
from .fit import evaluate
from .onnx_graph import architecture_model, example_inputs, input_names, referenced_tensors
from .quantplan import DEFAULT_Q, Inventory, QuantPlan, Quantized, inventory, make_quant_plan, quantize_model
from .tensor_train import tt_layers

__all__ = [
    "DEFAULT_CHECK_TOLERANCE", "ENGINE_TOLERANCE", "ExportCheck", "ExportOptions", "ExportReport", "check_file", "export_adt", "PreparedExport", "prepare_export", "encode_adt", "dequantized_weights", "quantized_model", "compact_name_map",
    "strip_default_attributes", "layer_kinds", "structural_method",
]


#: Default bound of max |file - torch| / max |torch| on the calibration batch: the file's outputs may
#: not differ from the model's by more than the outputs' own scale. Eq. 13 at the default Q = 512 moves
#: a trained model's outputs by a few percent of their scale, a deliberately coarse Q (16-64 levels) on
#: an untrained net by up to about two thirds (tests/exporter); a collapsed BatchNorm (issue 19: 16x)
#: or a wrong graph by far more.
DEFAULT_CHECK_TOLERANCE = 1.0
#: The runtime against torch running the same (dequantized) weights: float32 rounding only.
ENGINE_TOLERANCE = 1e-4


@dataclass
class ExportOptions:
    """How :func:`export_adt` quantizes and writes a model.

    ``input_shape``: one sample's shape (default ``model.input_shape``); or ``example_inputs``: the
    tensors to trace the model with, each with a batch dimension, of any dtype and as many as
    ``forward`` takes (integer token ids for an Embedding; graph inputs ``input``, ``input_1``, ...).
    ``q``, ``b``, ``groups``,
    ``b_rule``, ``rounding``: the quantizers (:func:`adt.exporter.quantplan.make_quant_plan`);
    ``plan``: a resolved :class:`QuantPlan` (e.g. the one quantization-aware training used) that
    overrides them. ``tables``: the writer's Huffman table policy. ``compact_names``: one-letter tensor
    names and no default-valued ONNX attributes (smallest files). ``auto_metadata``: record producer,
    model, method, quantizers and accuracies; ``metadata`` adds entries. With ``data_dir`` (MNIST) or
    ``test_data`` the test accuracy before and after quantization is measured (the latter on the
    weights the runtime rebuilds from the written bytes).

    The written file is checked (:class:`ExportCheck`): run by the runtime on a calibration batch (the
    first 64 test samples when test data is given, else the example inputs, else 16 seeded N(0, 1)
    inputs), its outputs must
    match torch running the file's own dequantized weights to ``ENGINE_TOLERANCE`` (else the graph or
    the engine is wrong), and the float model's outputs to ``check_tolerance`` (max |file - torch| /
    max |torch|: what quantization did to the function). Otherwise :class:`ExportCheckError` and no
    file, unless ``force`` (the report then carries the check and its failure). ``selfcheck``: store
    a probe recipe and the runtime's outputs on it (about 100 bytes of metadata) for ``adt verify`` on
    the device (:mod:`adt.runtime.selfcheck`). ``input_convention``: how raw samples become this model's
    input (:class:`adt.runtime.preprocess.InputConvention`; its ``model_shape`` must be the traced
    sample shape, or its size for a flat model) and ``labels``: the class names (one per output class),
    stored as the metadata entries ``input_convention`` and ``labels`` (FORMAT.md §4.1) so that
    ``Model.predict`` and ``adt run --images`` need no flag. The check still runs on model-ready inputs.
    ``method``: the metadata entry ``method`` (how the file was made, e.g. ``"mtd"``, ``"admm-tt"``);
    by default what its layers are (:func:`structural_method`). ``qat``: the model was fine-tuned through
    ``plan``'s quantizers (:func:`adt.exporter.qat.qat_finetune`), so the function it was trained as is the
    fake-quantized one: the check's reference is then that model, not its latent float values, which
    quantization-aware training does not keep close to the file (after 8 QAT epochs at Q 32 a SCADA LeNet-5's
    latent floats differed from its trained function by 1.37x the outputs' scale, results/NOTES.md row 30)."""

    input_shape: Sequence[int] | None = None
    example_inputs: Sequence[Any] | None = None
    q: int | Mapping[str, int] = DEFAULT_Q
    b: float | Mapping[str, float] | None = None
    groups: str = "kind"
    b_rule: str = "max"
    rounding: str = "nearest"
    plan: QuantPlan | None = None
    tables: str = "auto"
    compact_names: bool = False
    metadata: Mapping[str, str] | None = None
    auto_metadata: bool = True
    model_name: str | None = None
    data_dir: str | Path | None = None
    test_data: Any = None
    check_tolerance: float = DEFAULT_CHECK_TOLERANCE
    force: bool = False
    selfcheck: bool = False
    input_convention: InputConvention | None = None
    labels: Sequence[str] | None = None
    method: str | None = None
    qat: bool = False


@dataclass
class ExportCheck:
    """The written file run by the runtime against torch on a calibration batch (``inputs`` says which).
    ``divergence``: max |file - float model| / max |float model|; ``agreement``: share of equal argmax
    over the batch (outputs of rank >= 2); ``engine_divergence``: the same against torch running the
    file's dequantized weights (tests the graph and engine, not the quantization); ``passed`` against
    ``tolerance`` and :data:`ENGINE_TOLERANCE`. ``reference``: what "float model" was: the model's
    float values, or (``ExportOptions.qat``) the model as quantization-aware training ran it."""

    inputs: str
    divergence: float
    agreement: float | None
    engine_divergence: float
    tolerance: float
    passed: bool
    reference: str = "float model"

    def summary(self) -> str:
        agree = f", argmax agreement {self.agreement:.1%}" if self.agreement is not None else ""
        return (f"file vs torch ({self.reference}) on {self.inputs}: max|diff|/max|torch| = {self.divergence:.3g} "
                f"(tolerance {self.tolerance:g}){agree}; vs torch with the file's weights {self.engine_divergence:.2g} "
                f"(tolerance {ENGINE_TOLERANCE:g})")


@dataclass
class ExportReport:
    """What was written and how well it compresses. ``true_ratio`` counts every byte of the file;
    ``paper_eq14_ratio`` is the paper's formula 32 * raw ratio / mean code length (no tables,
    shapes, headers or architecture): reported for comparison only."""

    path: str | None
    file_bytes: int
    dense_float32_bytes: int
    true_ratio: float
    dense_params: int
    stored_values: int
    raw_ratio: float
    payload_bits: int
    mean_code_bits: float
    paper_eq14_ratio: float
    table_policy: str
    grouping: str
    b_rule: str
    rounding: str
    groups: list[dict]
    sections: dict[str, int]
    payload_split_bytes: dict[str, float]
    compact_names: bool
    names: dict[str, str]
    acc_float: float | None = None
    acc_quantized: float | None = None
    check: ExportCheck | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _architecture(model: nn.Module, examples: tuple[torch.Tensor, ...], rename: Mapping[str, str],
                  compact: bool) -> bytes:
    proto = architecture_model(model, None, rename, examples)
    if compact:
        strip_default_attributes(proto)
    return proto.SerializeToString(deterministic=True)


def _stored(model: nn.Module, examples: tuple[torch.Tensor, ...], compact: bool) -> tuple[bytes, Inventory, dict[str, str]]:
    """The architecture, the inventory of exactly the tensors it reads, and PyTorch name -> table name."""
    frozen = frozen_copy(model)
    ranks = batchnorm_ranks(frozen, examples)
    all_names = list(inference_tensors(frozen, ranks))
    rename = compact_name_map(all_names) if compact else {n: n for n in all_names}
    arch = _architecture(model, examples, rename, compact)
    inverse = {v: k for k, v in rename.items()}
    referenced = referenced_tensors(arch)
    unknown = sorted(r for r in referenced if r not in inverse)
    if unknown:
        raise ModelError(f"the architecture reads {unknown[0]!r}, which is no parameter or buffer of the model")
    inv = inventory(model, names=[inverse[r] for r in referenced], ranks=ranks)
    if compact:  # letters follow the table order of what is actually stored
        rename = compact_name_map(inv.order)
        arch = _architecture(model, examples, rename, compact)
    else:
        rename = {n: n for n in inv.order}
    return arch, inv, rename


def _resolve_plan(inv: Inventory, opts: ExportOptions) -> QuantPlan:
    if opts.plan is None:
        return make_quant_plan(inv, q=opts.q, b=opts.b, groups=opts.groups, b_rule=opts.b_rule,
                               rounding=opts.rounding)
    missing = opts.plan.missing(inv)
    if missing:
        raise PlanError(f"the given quantization plan does not cover {missing[0]!r}")
    return opts.plan


def layer_kinds(inv: Inventory) -> dict[str, str]:
    """How each factored weight is stored: ``"tucker"``, ``"cp"`` or ``"tt"`` (weight name -> kind)."""
    kinds = {n: "cp" if inv.cores[st.core].cp else "tucker" for n, st in inv.tucker.items()}
    kinds.update({n: "tt" for n in inv.tt})
    return kinds


def structural_method(inv: Inventory) -> str:
    """What the file's layers are: ``dense``, ``ada`` (one Tucker core per layer), ``scada`` (one
    core shared by several layers), ``cp``, ``tt``, or ``mixed`` (more than one of Tucker/CP/TT)."""
    kinds = set(layer_kinds(inv).values())
    if not kinds:
        return "dense"
    if len(kinds) > 1:
        return "mixed"
    kind = kinds.pop()
    if kind == "tucker":
        return "scada" if len(inv.cores) == 1 and len(inv.tucker) > 1 else "ada"
    return kind


def _add_metadata(w: AdtWriter, inv: Inventory, plan: QuantPlan, opts: ExportOptions, input_shape: tuple[int, ...],
                  accuracies: tuple[float, float] | None) -> None:
    if opts.auto_metadata:
        from importlib.metadata import PackageNotFoundError, version
        try:
            ver = version("adt")
        except PackageNotFoundError:
            ver = "0"
        w.add_metadata("producer", f"adt {ver}")
        if opts.model_name:
            w.add_metadata("model", opts.model_name)
        w.add_metadata("method", opts.method or structural_method(inv))
        # Q and b of every group are in the tensor table already; say only how they were chosen
        rules = "/".join(sorted({g.rule for g in plan.groups}))
        w.add_metadata("quant", f"eq13 groups={plan.grouping} b={rules}"
                       + (f" rounding={plan.rounding}" if plan.rounding != "floor" else ""))
        w.add_metadata("input", "x".join(str(d) for d in input_shape))
        if accuracies is not None:
            w.add_metadata("acc_float", f"{accuracies[0]:.4f}")
            w.add_metadata("acc_quant", f"{accuracies[1]:.4f}")
    for k, v in (opts.metadata or {}).items():
        w.add_metadata(str(k), str(v))
    # written whatever auto_metadata says: the device needs them to run the model right
    if opts.input_convention is not None:
        w.add_metadata(INPUT_KEY, opts.input_convention.to_json())
    if opts.labels is not None:
        w.add_metadata(LABELS_KEY, labels_to_json(opts.labels))


def _write_tables(w: AdtWriter, inv: Inventory, plan: QuantPlan, qz: Quantized, rename: Mapping[str, str]) -> None:
    gids = [w.add_group(g.q, g.b) for g in plan.groups]
    for i, c in enumerate(inv.cores):
        w.add_core(qz.cores[i], group=gids[plan.core_group[c.name]], cp_order=c.order if c.cp else None)
    for name in inv.order:
        g = gids[plan.param_group[name]]
        if name in inv.tucker:
            w.add_tucker(rename[name], inv.shapes[name], core=inv.tucker[name].core, factors=qz.params[name], group=g)
        elif name in inv.tt:
            w.add_tt(rename[name], inv.shapes[name], cores=qz.params[name], group=g)
        else:
            w.add_plain(rename[name], qz.params[name][0], group=g)


def _accuracies(model: nn.Module, f: AdtFile, rename: Mapping[str, str], opts: ExportOptions) -> tuple[float, float] | None:
    """Test accuracy of the float model and of the weights the runtime rebuilds from the file."""
    data = opts.test_data if opts.test_data is not None else (
        mnist_test_set(opts.data_dir) if opts.data_dir is not None else None)
    if data is None:
        return None
    by_table_name = rebuild_weights(f, max_memory=None)  # the exporter's own file: no device budget
    weights = {name: by_table_name[table] for name, table in rename.items()}
    return (evaluate(frozen_copy(_without_fake_quant(model)), data),
            evaluate(quantized_model(model, weights), data))


def _report(path: str | Path | None, data: bytes, f: AdtFile, inv: Inventory, plan: QuantPlan, qz: Quantized,
            table_policy: str, opts: ExportOptions, rename: Mapping[str, str],
            accuracies: tuple[float, float] | None) -> ExportReport:
    dense_params = sum(prod(inv.shapes[n]) for n in inv.order)
    stored = sum(int(c.size) for c in qz.cores) + sum(int(s.size) for n in inv.order for s in qz.params[n])
    raw = dense_params / stored
    mean_bits = f.payload_bits / stored
    split = byte_breakdown(f).legacy_dict()
    return ExportReport(
        path=str(path) if path is not None else None,
        file_bytes=len(data),
        dense_float32_bytes=4 * dense_params,
        true_ratio=4 * dense_params / len(data),
        dense_params=dense_params,
        stored_values=stored,
        raw_ratio=raw,
        payload_bits=f.payload_bits,
        mean_code_bits=mean_bits,
        paper_eq14_ratio=32 * raw / mean_bits if mean_bits else float("inf"),
        table_policy=table_policy,
        grouping=plan.grouping,
        b_rule=opts.b_rule,
        rounding=plan.rounding,
        groups=[asdict(g) for g in plan.groups],
        sections=split["sections"],
        payload_split_bytes=split["payload_split_bytes"],
        compact_names=opts.compact_names,
        names=dict(rename),
        acc_float=accuracies[0] if accuracies else None,
        acc_quantized=accuracies[1] if accuracies else None,
    )


def _setup(model: nn.Module, options: ExportOptions | None, fields_: Mapping[str, Any],
           caller: str) -> tuple[ExportOptions, tuple[torch.Tensor, ...], tuple[int, ...]]:
    """The options (``options`` with ``fields_`` set on top), the tensors to trace and one sample's shape."""
    known = {f.name for f in fields(ExportOptions)}
    unknown = sorted(set(fields_) - known)
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    opts = replace(options or ExportOptions(), **fields_)
    if opts.qat and opts.plan is None:
        raise PlanError("qat=True says the model was trained through a quantization plan: pass that plan too")
    input_shape = opts.input_shape if opts.input_shape is not None else getattr(model, "input_shape", None)
    if input_shape is None and opts.example_inputs is None:
        raise ModelError("export needs input_shape (one sample's shape, e.g. (1, 28, 28)), model.input_shape "
                         "or example_inputs")
    examples = example_inputs(input_shape if opts.example_inputs is None else None, opts.example_inputs)
    _check_convention(opts, examples)
    return opts, examples, tuple(int(d) for d in examples[0].shape[1:])


def _check_convention(opts: ExportOptions, examples: tuple[torch.Tensor, ...]) -> None:
    """``input_convention`` and ``labels`` fit the model (before any work); their metadata keys are
    not given as free text."""
    taken = sorted({INPUT_KEY, LABELS_KEY} & {str(k) for k in (opts.metadata or {})})
    if taken:
        raise ModelError(f"metadata key {taken[0]!r} is written from the input_convention / labels options, "
                         "not from metadata")
    conv = opts.input_convention
    if conv is not None:
        if not isinstance(conv, InputConvention):
            raise ModelError(f"input_convention must be an InputConvention, got {type(conv).__name__}")
        shape = tuple(int(d) for d in examples[0].shape[1:])
        if len(examples) != 1 or not examples[0].is_floating_point():
            raise ModelError("an input convention describes one float input; this model is traced with "
                             f"{len(examples)} input(s) of dtype {examples[0].dtype}")
        if shape != conv.model_shape and shape != (prod(conv.model_shape),):
            raise ModelError(f"input_convention turns raw samples into {list(conv.model_shape)} ({conv.describe()}), "
                             f"but the model takes samples of shape {list(shape)}")
    if opts.labels is not None:
        check_labels(opts.labels)


def _check_label_count(arch: bytes, opts: ExportOptions) -> None:
    """One label per output class, where the graph declares the class count."""
    if opts.labels is None:
        return
    outputs = parse_model(arch).graph.outputs
    shape = outputs[0].shape if len(outputs) == 1 else None
    if not shape or len(shape) != 2 or not isinstance(shape[1], int):
        raise ModelError("labels need a model with one output [N, classes]; its output is "
                         + (f"{shape}" if len(outputs) == 1 else f"{len(outputs)} tensors"))
    if shape[1] != len(opts.labels):
        raise ModelError(f"{len(opts.labels)} labels given, the model outputs {shape[1]} classes")


def _tables_writer(arch: bytes, inv: Inventory, plan: QuantPlan, qz: Quantized, rename: Mapping[str, str],
                   tables: str) -> AdtWriter:
    """A writer holding the architecture, the groups and every tensor: all of a file but its metadata."""
    w = AdtWriter(tables=tables)
    w.set_architecture(arch)
    _write_tables(w, inv, plan, qz, rename)
    return w


def export_adt(model: nn.Module, path: str | Path | None, options: ExportOptions | None = None,
               **fields_: Any) -> ExportReport:
    """Quantize ``model`` (Eq. 13), write one ``.adt`` file to ``path`` (atomically; ``None`` only
    builds it) and report its size and ratios.

    ``options``: an :class:`ExportOptions`; keyword arguments set its fields (on top of ``options``
    when both are given), e.g. ``export_adt(model, "m.adt", q=128, rounding="floor")``."""
    opts, examples, input_shape = _setup(model, options, fields_, "export_adt")
    was_training = model.training
    model.eval()
    try:
        arch, inv, rename = _stored(model, examples, opts.compact_names)
        _check_label_count(arch, opts)
        plan = _resolve_plan(inv, opts)
        qz = quantize_model(inv, plan)

        def tables_writer() -> AdtWriter:
            return _tables_writer(arch, inv, plan, qz, rename, opts.tables)

        # The accuracies and the self-check go into the metadata, so they are measured on a first
        # build of the same tables (metadata does not change what the runtime computes).
        accuracies, selfcheck = None, None
        if opts.test_data is not None or opts.data_dir is not None or opts.selfcheck:
            probe = tables_writer().to_bytes()
            if opts.test_data is not None or opts.data_dir is not None:
                accuracies = _accuracies(model, read_adt(probe), rename, opts)
            if opts.selfcheck:
                if len(examples) != 1 or not examples[0].is_floating_point():
                    raise ModelError("selfcheck stores a float probe: it needs a model of one float input")
                selfcheck = _selfcheck(probe, input_shape)
        w = tables_writer()
        _add_metadata(w, inv, plan, opts, input_shape, accuracies)
        if selfcheck is not None:
            w.add_metadata(SELFCHECK_KEY, selfcheck)
        data = w.to_bytes()
        check = check_file(model, data, rename, examples, opts)
        if not check.passed and not opts.force:
            raise ExportCheckError(f"refusing to write {path if path is not None else 'the file'}: "
                                   f"{check.summary()}; export with force=True (--force) to write it anyway")
        if path is not None:
            w.write(path)
        report = _report(path, data, read_adt(data), inv, plan, qz, w.chosen_policy or opts.tables, opts, rename,
                         accuracies)
        report.check = check
        return report
    finally:
        model.train(was_training)


@dataclass
class PreparedExport:
    """A model traced once (its options, example inputs, architecture, inventory and table names) for
    repeated :func:`encode_adt` calls that change only the quantizers."""

    options: ExportOptions
    examples: tuple[torch.Tensor, ...]
    input_shape: tuple[int, ...]
    arch: bytes
    inv: Inventory
    rename: dict[str, str]


def prepare_export(model: nn.Module, options: ExportOptions | None = None, *, like: PreparedExport | None = None,
                   **fields_: Any) -> PreparedExport:
    """Trace ``model`` once as :func:`export_adt` does (ONNX architecture, what it reads, table names).
    ``like``: a preparation of the same network under another plan (the same module paths, layers
    Tucker or dense): its architecture and table names are reused and only the inventory is read from
    ``model`` (the graph runs rebuilt dense weights, so a plan does not change it)."""
    opts, examples, input_shape = _setup(model, options, fields_, "prepare_export")
    was_training = model.training
    model.eval()
    try:
        inv = None
        if like is not None and like.options.compact_names == opts.compact_names:
            inv = inventory(model, names=like.inv.order, ranks=batchnorm_ranks(frozen_copy(model), examples))
            arch, rename = like.arch, like.rename
        if inv is None or inv.order != like.inv.order:  # a layer's Tucker form moves its weight's table slot
            arch, inv, rename = _stored(model, examples, opts.compact_names)
        _check_label_count(arch, opts)
    finally:
        model.train(was_training)
    return PreparedExport(opts, examples, input_shape, arch, inv, dict(rename))


def encode_adt(model: nn.Module, options: ExportOptions | None = None, *, prepared: PreparedExport | None = None,
               **fields_: Any) -> bytes:
    """The file :func:`export_adt` writes for these options, built the same way but without measuring
    accuracies (their metadata entries hold placeholders of the same length, so the length is the
    written file's), without the check against torch and without writing anything: what a search over
    quantizer settings needs (:mod:`adt.exporter.size_budget`). ``prepared``: a :func:`prepare_export`
    of the same model and trace options (skips the ONNX export), made after the model's last change
    (it holds a frozen copy of the plain tensors)."""
    opts, _, _ = _setup(model, options, fields_, "encode_adt")
    p = prepared if prepared is not None else prepare_export(model, opts)
    plan = _resolve_plan(p.inv, opts)
    qz = quantize_model(p.inv, plan)
    selfcheck = None
    if opts.selfcheck:
        if len(p.examples) != 1 or not p.examples[0].is_floating_point():
            raise ModelError("selfcheck stores a float probe: it needs a model of one float input")
        probe = _tables_writer(p.arch, p.inv, plan, qz, p.rename, opts.tables).to_bytes()
        selfcheck = _selfcheck(probe, p.input_shape)
    w = _tables_writer(p.arch, p.inv, plan, qz, p.rename, opts.tables)
    measured = opts.test_data is not None or opts.data_dir is not None
    _add_metadata(w, p.inv, plan, opts, p.input_shape, (0.0, 0.0) if measured else None)
    if selfcheck is not None:
        w.add_metadata(SELFCHECK_KEY, selfcheck)
    return w.to_bytes()


def _selfcheck(data: bytes, input_shape: tuple[int, ...], seed: int = 0) -> str:
    """The ``selfcheck`` metadata value (:mod:`adt.runtime.selfcheck`): the runtime's outputs on the probe."""
    shape = (1, *input_shape)
    out = rt.load(data, max_memory=None).run(probe_input(seed, shape))
    return make_selfcheck(out, seed, shape)


def _calibration_batch(examples: tuple[torch.Tensor, ...], opts: ExportOptions) -> tuple[tuple[np.ndarray, ...], str]:
    """The first 64 test samples when test data fits the model's one input, else the example inputs
    when the user gave them, else 16 seeded N(0, 1) samples of the (one, float) input."""
    data = opts.test_data if opts.test_data is not None else (
        mnist_test_set(opts.data_dir) if opts.data_dir is not None else None)
    shape = tuple(examples[0].shape[1:])
    if data is not None and len(examples) == 1:
        x = data[0] if isinstance(data, tuple) and len(data) == 2 else next(iter(data))[0]
        x = np.asarray(x[:64], dtype=np.float32)
        if tuple(x.shape[1:]) == shape:
            return (x,), f"{len(x)} test samples"
    if opts.example_inputs is not None:
        return tuple(t.detach().cpu().numpy() for t in examples), f"the {len(examples[0])} example input sample(s)"
    rng = np.random.default_rng(0)
    return (rng.standard_normal((16, *shape)).astype(np.float32),), "16 seeded N(0, 1) inputs"


def check_file(model: nn.Module, data: bytes, rename: Mapping[str, str], examples: tuple[torch.Tensor, ...],
               opts: ExportOptions | None = None) -> ExportCheck:
    """Run the file ``data`` with the runtime on a calibration batch and compare it with ``model``
    (see :class:`ExportCheck`). ``rename``: PyTorch name -> table name; ``examples``: the traced inputs."""
    opts = opts or ExportOptions()
    xs, what = _calibration_batch(examples, opts)
    m = rt.load(data, max_memory=None)  # the exporter's own file: no device budget
    feeds = xs[0] if len(xs) == 1 else dict(zip(input_names(len(xs)), xs))
    out = np.asarray(m.run(feeds), dtype=np.float64)
    table = rt.rebuild_weights(data, max_memory=None)
    weights = {name: table[t] for name, t in rename.items() if t in table}
    tx = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in xs)
    with torch.no_grad():
        if opts.qat and opts.plan is not None:  # the function QAT trained: its fake quantizers on
            trained = _without_fake_quant(model)
            enable_fake_quant(trained, opts.plan)
            ref = trained.eval()(*tx).double().numpy()
        else:
            ref = frozen_copy(_without_fake_quant(model))(*tx).double().numpy()
        deq = quantized_model(model, weights)(*tx).double().numpy()

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            return float("inf")
        scale = float(np.abs(b).max()) if b.size else 0.0
        diff = float(np.abs(a - b).max()) if a.size else 0.0
        return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))

    div, engine = rel(out, ref), rel(out, deq)
    agree = float((out.argmax(1) == ref.argmax(1)).mean()) if out.ndim >= 2 and out.shape == ref.shape else None
    tol = float(opts.check_tolerance)
    passed = bool(np.isfinite(div) and div <= tol and engine <= ENGINE_TOLERANCE)
    reference = "as trained, with the QAT plan's fake quantizers" if opts.qat else "float model"
    return ExportCheck(what, div, agree, engine, tol, passed, reference)


def dequantized_weights(model: nn.Module | Inventory, plan: QuantPlan,
                        quantized: Quantized | None = None) -> dict[str, np.ndarray]:
    """The float32 weights of the quantized model by PyTorch tensor name: what the file decodes to
    (plain values dequantized; Tucker layers rebuilt by the runtime's own rebuild)."""
    inv = model if isinstance(model, Inventory) else inventory(model)
    qz = quantized or quantize_model(inv, plan)
    w = AdtWriter(tables="shared")
    _write_tables(w, inv, plan, qz, {n: n for n in inv.order})
    return rebuild_weights(w.to_bytes(), max_memory=None)


def quantized_model(model: nn.Module, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """A frozen (dense) copy of ``model`` carrying ``weights``: evaluates the quantized file in torch."""
    m = frozen_copy(model)
    replace_with_affine_(m, weights)  # BatchNorm layers become the stored scale/shift
    state = m.state_dict()
    for name, w in weights.items():
        if name.endswith((f".{SCALE_SUFFIX}", f".{SHIFT_SUFFIX}")) and name not in state:
            continue  # carried by the affine layer replace_with_affine_ put in
        if name not in state:
            raise ModelError(f"weight {name!r} is no parameter or buffer of the model")
        state[name] = torch.from_numpy(np.asarray(w, dtype=np.float32).copy()).reshape(state[name].shape)
    m.load_state_dict(state)
    return m.eval()


def compact_name_map(names: Sequence[str]) -> dict[str, str]:
    """Short table names ``a``..``z``, ``A``..``Z``, then two letters, in table order."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = {}
    for i, n in enumerate(names):
        s = letters[i % 52]
        i //= 52
        while i:
            i -= 1
            s = letters[i % 52] + s
            i //= 52
        out[n] = s
    return out


def _without_fake_quant(model: nn.Module) -> nn.Module:
    """A copy whose Tucker layers rebuild from the float core/factors (QAT flags cleared), so
    'accuracy before quantization' really is the float model's."""
    m = copy.deepcopy(model)
    for _, _, tw in tucker_layers(m):
        tw.core_quant = tw.factor_quant = None
    for _, _, tt in tt_layers(m):
        tt.quant = None
    remove_plain_fake_quant(m)
    return m


# ONNX attribute defaults (ONNX operator spec) that a conforming engine applies when absent.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "Conv": {"group": 1, "dilations": "ones", "strides": "ones", "pads": "zeros", "auto_pad": b"NOTSET"},
    "MaxPool": {"ceil_mode": 0, "dilations": "ones", "strides": "ones", "pads": "zeros",
                "storage_order": 0, "auto_pad": b"NOTSET"},
    "AveragePool": {"ceil_mode": 0, "count_include_pad": 0, "strides": "ones", "pads": "zeros",
                    "auto_pad": b"NOTSET"},
    "Gemm": {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0},
    "BatchNormalization": {"training_mode": 0, "momentum": "drop"},  # momentum only matters in training
    "Flatten": {"axis": 1},
    "Softmax": {"axis": -1},
}


def strip_default_attributes(proto) -> None:
    """Drop node attributes equal to their ONNX default (and BatchNormalization's training-only
    momentum), in place: the graph means the same, every engine applies the defaults, bytes shrink."""
    from onnx import helper

    for n in proto.graph.node:
        defaults = _DEFAULTS.get(n.op_type, {})
        keep = []
        for a in n.attribute:
            d = defaults.get(a.name, None)
            v = helper.get_attribute_value(a)
            if d == "drop":
                continue
            if d == "ones" and isinstance(v, list) and all(x == 1 for x in v):
                continue
            if d == "zeros" and isinstance(v, list) and all(x == 0 for x in v):
                continue
            if d is not None and not isinstance(d, str) and v == d:
                continue
            keep.append(a)
        del n.attribute[:]
        n.attribute.extend(keep)
