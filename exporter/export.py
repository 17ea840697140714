"""Quantize a (SCADA-)ADA-Tucker model with Eq. 13 and write it as one ``.adt`` file.

What is stored: every float tensor the inference graph reads (COMMON.md architecture contract) —
Tucker layers as core + factor symbols (a SCADA shared core ONCE), everything else (biases,
BatchNorm weight/bias/running stats, untouched layers) as plain quantized values. Nothing is left
out, so the file alone runs the model and its size is the honest size.

Quantizer groups (``groups=``):
  * ``"single"``: one (Q, b) for every value;
  * ``"kind"`` (default): one group each for cores, factors and other tensors;
  * ``"tensor"``: one group per core, per Tucker layer (its factors) and per plain tensor.
``q`` and ``b`` are a number or a dict keyed by kind (``"cores"``, ``"factors"``, ``"other"``).

The rule for b when it is not given (``b_rule``): ``"max"`` (default) takes b = max |w| over the
group's values, so no value is clipped and the levels span exactly the values' range;
``"pXX"`` (e.g. ``"p99.9"``) takes the XX-th percentile of |w|, trading clipped outliers for finer
levels. A group whose values are all zero gets b = 1. The report records the rule and every b.

How a value picks its level (``rounding``): ``"floor"`` (default) is Eq. 13 exactly; ``"nearest"``
takes the closest level of the same grid (half the worst-case error, no downward bias). The file
format and the decoder are the same either way (FORMAT.md section 9: the writer chooses symbols).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from math import prod
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from adt.runtime.format import AdtWriter, read_adt
from adt.runtime.format.quantize import ROUNDINGS, check_quantizer, dequantize, quantize

from .errors import ModelError, PlanError
from .onnx_graph import architecture_bytes, frozen_copy, referenced_tensors, stored_tensors
from .tucker import tucker_layers

KINDS = ("cores", "factors", "other")
GROUPINGS = ("single", "kind", "tensor")
DEFAULT_Q = 512  # the paper's LeNet-5 setting (Sec. 4, Q = 512)


# --------------------------------------------------------------------------------------------------
# What the model stores
# --------------------------------------------------------------------------------------------------
@dataclass
class Inventory:
    """Every stored tensor of a model, in table order. ``cores[i]`` = (core tensor, cp, order);
    ``tucker[name]`` = (TuckerWeight, core index); ``plain[name]`` = float tensor of the frozen model."""

    cores: list[tuple[torch.Tensor, bool, int]]
    tucker: dict[str, tuple[Any, int]]
    plain: dict[str, torch.Tensor]
    order: list[str]
    shapes: dict[str, tuple[int, ...]]
    core_names: list[str] = field(default_factory=list)  # core i's key: its first layer's weight name


def _weight_name(path: str) -> str:
    return f"{path}.weight" if path else "weight"


def inventory(model: nn.Module, names: Sequence[str] | None = None) -> Inventory:
    """Collect cores, Tucker layers and plain tensors. ``names`` (PyTorch names) restricts the
    plain tensors to those the architecture references; by default every float tensor is kept."""
    frozen = frozen_copy(model)
    tensors = stored_tensors(frozen)
    keep = set(tensors) if names is None else set(names)
    order = [k for k in tensors if k in keep]
    cores: list[tuple[torch.Tensor, bool, int]] = []
    core_names: list[str] = []
    core_index: dict[int, int] = {}
    tucker: dict[str, tuple[Any, int]] = {}
    for path, _, tw in tucker_layers(model):
        if _weight_name(path) not in keep:
            continue  # a layer the inference graph never reads is not stored
        key = id(tw.core)
        if key not in core_index:
            core_index[key] = len(cores)
            cores.append((tw.core, tw.cp, tw.order))
            core_names.append(_weight_name(path))
        tucker[_weight_name(path)] = (tw, core_index[key])
    for name in tucker:
        if name not in tensors:
            raise ModelError(f"Tucker layer weight {name!r} is not in the frozen model's state_dict")
    plain = {k: tensors[k] for k in order if k not in tucker}
    shapes = {k: tuple(int(d) for d in tensors[k].shape) for k in order}
    return Inventory(cores, tucker, plain, order, shapes, core_names)


# --------------------------------------------------------------------------------------------------
# Quantizer groups
# --------------------------------------------------------------------------------------------------
@dataclass
class GroupSpec:
    """One Eq. 13 quantizer: its label, Q levels, bound b and how b was chosen."""

    label: str
    q: int
    b: float
    rule: str


@dataclass
class QuantPlan:
    """Resolved quantizers: ``groups`` and which group every core / table entry uses. Cores are
    keyed by the weight name of the first layer that uses them (stable across inventories)."""

    grouping: str
    groups: list[GroupSpec]
    core_group: dict[str, int] = field(default_factory=dict)
    param_group: dict[str, int] = field(default_factory=dict)
    rounding: str = "floor"  # how values pick their level: "floor" (Eq. 13) or "nearest"

    def for_core(self, key: str) -> tuple[int, float]:
        g = self.groups[self.core_group[key]]
        return g.q, g.b

    def for_param(self, name: str) -> tuple[int, float]:
        g = self.groups[self.param_group[name]]
        return g.q, g.b

    def describe(self) -> str:
        return "; ".join(f"{g.label}: Q={g.q} b={g.b:.6g} ({g.rule})" for g in self.groups) + f"; {self.rounding}"


def choose_b(values: np.ndarray, rule: str = "max") -> float:
    """b from the value distribution: ``"max"`` = max |w|; ``"pXX"`` = XX-th percentile of |w|.
    All-zero values give 1.0 (any b > 0 represents 0 exactly for even Q)."""
    a = np.abs(np.asarray(values, dtype=np.float64).reshape(-1))
    if rule == "max":
        b = float(a.max()) if a.size else 0.0
    elif rule.startswith("p"):
        try:
            pct = float(rule[1:])
        except ValueError:
            raise PlanError(f"b rule must be 'max' or 'pXX' (e.g. 'p99.9'), got {rule!r}") from None
        if not 0 < pct <= 100:
            raise PlanError(f"b rule percentile must be in (0, 100], got {rule!r}")
        b = float(np.percentile(a, pct)) if a.size else 0.0
    else:
        raise PlanError(f"b rule must be 'max' or 'pXX' (e.g. 'p99.9'), got {rule!r}")
    b = float(np.float32(b))
    return b if b > 0 else 1.0


def _per_kind(value: Any, kind: str, what: str) -> Any:
    if isinstance(value, Mapping):
        bad = [k for k in value if k not in KINDS]
        if bad:
            raise PlanError(f"{what} keys must be among {KINDS}, got {bad[0]!r}")
        return value.get(kind)
    return value


def _tensor_values(inv: Inventory) -> tuple[dict[int, np.ndarray], dict[str, list[np.ndarray]]]:
    core_vals = {i: c.detach().cpu().float().numpy() for i, (c, _, _) in enumerate(inv.cores)}
    param_vals: dict[str, list[np.ndarray]] = {}
    for name in inv.order:
        if name in inv.tucker:
            tw, _ = inv.tucker[name]
            param_vals[name] = [m.detach().cpu().float().numpy() for m in tw.factors]
        else:
            param_vals[name] = [inv.plain[name].detach().cpu().float().numpy()]
    return core_vals, param_vals


def make_quant_plan(model: nn.Module | Inventory, q: int | Mapping[str, int] = DEFAULT_Q,
                    b: float | Mapping[str, float] | None = None, groups: str = "kind",
                    b_rule: str = "max", rounding: str = "floor") -> QuantPlan:
    """Resolve Q and b for every stored tensor of ``model`` (see the module docstring)."""
    inv = model if isinstance(model, Inventory) else inventory(model)
    if groups not in GROUPINGS:
        raise PlanError(f"groups must be one of {GROUPINGS}, got {groups!r}")
    if rounding not in ROUNDINGS:
        raise PlanError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    core_vals, param_vals = _tensor_values(inv)

    # members: (label, kind, [("core", i) | ("param", name)])
    members: list[tuple[str, str, list[tuple[str, Any]]]] = []
    cores = [("core", i) for i in range(len(inv.cores))]  # index here, name in the plan
    factors = [("param", n) for n in inv.order if n in inv.tucker]
    others = [("param", n) for n in inv.order if n not in inv.tucker]
    if groups == "single":
        members.append(("all", "other", cores + factors + others))
    elif groups == "kind":
        for kind, items in zip(KINDS, (cores, factors, others)):
            if items:
                members.append((kind, kind, items))
    else:
        members += [(f"core of {inv.core_names[i]}", "cores", [("core", i)]) for i in range(len(inv.cores))]
        members += [(n, "factors" if n in inv.tucker else "other", [("param", n)]) for n in inv.order]

    plan = QuantPlan(groups, [], rounding=rounding)
    for label, kind, items in members:
        qk = _per_kind(q, kind, "q")
        qk = DEFAULT_Q if qk is None else qk
        bk = _per_kind(b, kind, "b")
        vals = np.concatenate([
            (core_vals[key] if typ == "core" else np.concatenate([v.reshape(-1) for v in param_vals[key]])).reshape(-1)
            for typ, key in items
        ])
        if bk is None:
            bk, rule = choose_b(vals, b_rule), b_rule
        else:
            rule = "given"
        try:
            check_quantizer(int(qk), float(bk))
        except Exception as exc:
            raise PlanError(f"group {label!r}: {exc}") from None
        gi = len(plan.groups)
        plan.groups.append(GroupSpec(label, int(qk), float(np.float32(bk)), rule))
        for typ, key in items:
            if typ == "core":
                plan.core_group[inv.core_names[key]] = gi
            else:
                plan.param_group[key] = gi
    return plan


# --------------------------------------------------------------------------------------------------
# Symbols and the exporter's own float32 rebuild
# --------------------------------------------------------------------------------------------------
@dataclass
class Quantized:
    """Eq. 13 symbols of everything the file stores (what the writer receives)."""

    cores: list[np.ndarray]                      # core i symbols (CP: the diagonal)
    params: dict[str, list[np.ndarray]]          # Tucker: factor symbols; plain: [symbols]


def quantize_model(inv: Inventory, plan: QuantPlan) -> Quantized:
    core_vals, param_vals = _tensor_values(inv)
    r = plan.rounding
    cores = [quantize(core_vals[i], *plan.for_core(inv.core_names[i]), r) for i in range(len(inv.cores))]
    params = {n: [quantize(v, *plan.for_param(n), r) for v in param_vals[n]] for n in inv.order}
    return Quantized(cores, params)


def tucker_rebuild_np(core: np.ndarray, factors: Sequence[np.ndarray], shape: Sequence[int],
                      cp: bool = False) -> np.ndarray:
    """reshape(core x_1 M_1 ... x_d M_d, shape) in float64, rounded once to float32. A CP core is
    its diagonal (r,) and expands to the superdiagonal tensor."""
    d = len(factors)
    c = np.asarray(core, dtype=np.float64)
    if cp:
        dense = np.zeros((c.shape[0],) * d)
        idx = np.arange(c.shape[0])
        dense[(idx,) * d] = c
        c = dense
    t = c
    for m in factors:
        # contract the leading mode; the new n_i axis goes last, so after d steps modes are in order
        t = np.tensordot(t, np.asarray(m, dtype=np.float64), axes=([0], [1]))
    return t.reshape(tuple(shape)).astype(np.float32)


def dequantized_weights(model: nn.Module | Inventory, plan: QuantPlan,
                        quantized: Quantized | None = None) -> dict[str, np.ndarray]:
    """The exporter's float32 rebuild of the quantized model, by PyTorch tensor name: what the
    runtime must reproduce from the file (Tucker layers rebuilt from dequantized core/factors)."""
    inv = model if isinstance(model, Inventory) else inventory(model)
    qz = quantized or quantize_model(inv, plan)
    out = {}
    for name in inv.order:
        q, b = plan.for_param(name)
        if name in inv.tucker:
            tw, ci = inv.tucker[name]
            cq, cb = plan.for_core(inv.core_names[ci])
            core = dequantize(qz.cores[ci], cq, cb)
            facs = [dequantize(s, q, b) for s in qz.params[name]]
            out[name] = tucker_rebuild_np(core, facs, inv.shapes[name], cp=inv.cores[ci][1])
        else:
            out[name] = dequantize(qz.params[name][0], q, b).reshape(inv.shapes[name])
    return out


def quantized_model(model: nn.Module, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """A frozen (dense) copy of ``model`` carrying ``weights``: evaluates the quantized file in torch."""
    m = frozen_copy(model)
    state = m.state_dict()
    for name, w in weights.items():
        state[name] = torch.from_numpy(np.asarray(w, dtype=np.float32).copy()).reshape(state[name].shape)
    m.load_state_dict(state)
    return m.eval()


# --------------------------------------------------------------------------------------------------
# Accuracy (optional)
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def accuracy(model: nn.Module, data: Any, batch_size: int = 1000) -> float:
    """Top-1 accuracy on ``data``: an iterable of (x, y) batches, or (x, y) arrays/tensors."""
    was_training = model.training
    model.eval()
    correct = total = 0
    if isinstance(data, tuple) and len(data) == 2:
        x_all, y_all = (torch.as_tensor(np.asarray(a)) for a in data)
        batches = ((x_all[i:i + batch_size], y_all[i:i + batch_size]) for i in range(0, len(x_all), batch_size))
    else:
        batches = data
    for x, y in batches:
        pred = model(x.float()).argmax(dim=1)
        correct += int((pred == y.long()).sum())
        total += int(y.numel())
    model.train(was_training)
    return correct / max(total, 1)


def mnist_test_set(data_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The normalized MNIST test set ([N,1,28,28] float32, labels int64) from ``data_dir``/$ADT_DATA."""
    from adt.runtime.mnist import load_mnist, normalize

    images, labels = load_mnist(data_dir, "test")
    return normalize(images), labels.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Writing the file
# --------------------------------------------------------------------------------------------------
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

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


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


def byte_breakdown(f) -> dict[str, Any]:
    """Where the bytes of a read :class:`AdtFile` go: header, each section, checksum, and the
    payload split into cores / factors / other values (in bytes, from the per-tensor bit counts)."""
    from adt.runtime.format import ENC_TUCKER

    sections = {"header": f.header_bytes}
    for s in f.sections:
        sections[s.name] = s.length
    sections["checksum"] = f.checksum_bytes
    core_bits = sum(c.bits for c in f.cores)
    factor_bits = sum(p.bits for p in f.params if p.encoding == ENC_TUCKER)
    other_bits = sum(p.bits for p in f.params if p.encoding != ENC_TUCKER)
    split = {"cores": core_bits / 8, "factors": factor_bits / 8, "other": other_bits / 8}
    return {"sections": sections, "payload_split_bytes": split}


def export_adt(model: nn.Module, path: str | Path | None, *, input_shape: Sequence[int] | None = None,
               q: int | Mapping[str, int] = DEFAULT_Q, b: float | Mapping[str, float] | None = None,
               groups: str = "kind", b_rule: str = "max", rounding: str = "floor",
               plan: QuantPlan | None = None, tables: str = "auto", compact_names: bool = False, metadata: Mapping[str, str] | None = None,
               auto_metadata: bool = True, model_name: str | None = None, data_dir: str | Path | None = None,
               test_data: Any = None) -> ExportReport:
    """Quantize ``model`` (Eq. 13), write one ``.adt`` file to ``path`` (atomically; ``None`` only
    builds it) and report its size and ratios.

    ``input_shape``: one sample's shape (default ``model.input_shape``). ``rounding``: "floor"
    (Eq. 13) or "nearest" level (module docstring). ``plan``: a resolved :class:`QuantPlan` (e.g. the
    one quantization-aware training used) overriding q/b/groups/rounding.
    ``compact_names``: one-letter tensor names and no default-valued ONNX attributes (smallest files).
    ``auto_metadata``: record producer, model, method, quantizers and accuracies; ``metadata`` adds
    entries. With ``data_dir`` (MNIST) or ``test_data`` the test accuracy before and after
    quantization is measured (the latter on the exporter's own float32 rebuild).
    """
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ModelError("export needs input_shape (one sample's shape, e.g. (1, 28, 28)) or model.input_shape")
    was_training = model.training
    model.eval()
    try:
        return _export(model, path, tuple(int(d) for d in input_shape), q, b, groups, b_rule, rounding, plan,
                       tables, compact_names, metadata, auto_metadata, model_name, data_dir, test_data)
    finally:
        model.train(was_training)


def _export(model, path, input_shape, q, b, groups, b_rule, rounding, plan, tables, compact_names, metadata,
            auto_metadata, model_name, data_dir, test_data) -> ExportReport:
    from adt import runtime as _rt  # noqa: F401  (package import only; runtime never imports torch)
    from .onnx_graph import architecture_model

    all_names = list(stored_tensors(frozen_copy(model)))
    rename = compact_name_map(all_names) if compact_names else {n: n for n in all_names}
    proto = architecture_model(model, input_shape, rename)
    if compact_names:
        strip_default_attributes(proto)
    arch = proto.SerializeToString(deterministic=True)
    inverse = {v: k for k, v in rename.items()}
    referenced = referenced_tensors(arch)
    unknown = sorted(r for r in referenced if r not in inverse)
    if unknown:
        raise ModelError(f"the architecture reads {unknown[0]!r}, which is no parameter or buffer of the model")
    inv = inventory(model, names=[inverse[r] for r in referenced])
    if compact_names:  # letters follow the table order of what is actually stored
        rename = compact_name_map(inv.order)
        proto = architecture_model(model, input_shape, rename)
        strip_default_attributes(proto)
        arch = proto.SerializeToString(deterministic=True)
    else:
        rename = {n: n for n in inv.order}

    if plan is None:
        plan = make_quant_plan(inv, q=q, b=b, groups=groups, b_rule=b_rule, rounding=rounding)
    else:
        missing = [n for n in inv.order if n not in plan.param_group]
        missing += [f"the core of {c}" for c in inv.core_names if c not in plan.core_group]
        if missing:
            raise PlanError(f"the given quantization plan does not cover {missing[0]!r}")
    qz = quantize_model(inv, plan)
    _check_variances(inv, plan, qz)

    acc_float = acc_quant = None
    data = test_data if test_data is not None else (mnist_test_set(data_dir) if data_dir is not None else None)
    if data is not None:
        acc_float = accuracy(frozen_copy(_without_fake_quant(model)), data)
        acc_quant = accuracy(quantized_model(model, dequantized_weights(inv, plan, qz)), data)

    w = AdtWriter(tables=tables)
    if auto_metadata:
        from importlib.metadata import PackageNotFoundError, version
        try:
            ver = version("adt")
        except PackageNotFoundError:
            ver = "0"
        method = ("scada" if len(inv.cores) == 1 and len(inv.tucker) > 1 else "ada") if inv.cores else "dense"
        w.add_metadata("producer", f"adt {ver}")
        if model_name:
            w.add_metadata("model", model_name)
        w.add_metadata("method", method)
        # Q and b of every group are in the tensor table already; say only how they were chosen
        rules = "/".join(sorted({g.rule for g in plan.groups}))
        w.add_metadata("quant", f"eq13 groups={plan.grouping} b={rules}"
                       + (f" rounding={plan.rounding}" if plan.rounding != "floor" else ""))
        w.add_metadata("input", "x".join(str(d) for d in input_shape))
        if acc_float is not None:
            w.add_metadata("acc_float", f"{acc_float:.4f}")
            w.add_metadata("acc_quant", f"{acc_quant:.4f}")
    for k, v in (metadata or {}).items():
        w.add_metadata(str(k), str(v))
    w.set_architecture(arch)
    gids = [w.add_group(g.q, g.b) for g in plan.groups]
    for i, (_, cp, order) in enumerate(inv.cores):
        w.add_core(qz.cores[i], group=gids[plan.core_group[inv.core_names[i]]], cp_order=order if cp else None)
    for name in inv.order:
        g = gids[plan.param_group[name]]
        if name in inv.tucker:
            _, ci = inv.tucker[name]
            w.add_tucker(rename[name], inv.shapes[name], core=ci, factors=qz.params[name], group=g)
        else:
            w.add_plain(rename[name], qz.params[name][0], group=g)
    data_bytes = w.to_bytes()
    if path is not None:
        w.write(path)

    f = read_adt(data_bytes)
    dense_params = sum(prod(inv.shapes[n]) for n in inv.order)
    stored = sum(int(c.size) for c in qz.cores) + sum(int(s.size) for n in inv.order for s in qz.params[n])
    raw = dense_params / stored
    mean_bits = f.payload_bits / stored
    split = byte_breakdown(f)
    return ExportReport(
        path=str(path) if path is not None else None,
        file_bytes=len(data_bytes),
        dense_float32_bytes=4 * dense_params,
        true_ratio=4 * dense_params / len(data_bytes),
        dense_params=dense_params,
        stored_values=stored,
        raw_ratio=raw,
        payload_bits=f.payload_bits,
        mean_code_bits=mean_bits,
        paper_eq14_ratio=32 * raw / mean_bits if mean_bits else float("inf"),
        table_policy=w.chosen_policy or tables,
        grouping=plan.grouping,
        b_rule=b_rule,
        rounding=plan.rounding,
        groups=[asdict(g) for g in plan.groups],
        sections=split["sections"],
        payload_split_bytes=split["payload_split_bytes"],
        compact_names=compact_names,
        names=dict(rename),
        acc_float=acc_float,
        acc_quantized=acc_quant,
    )


def _check_variances(inv: Inventory, plan: QuantPlan, qz: Quantized) -> None:
    """BatchNorm variances must stay >= 0 after Eq. 13 (rounding with an odd Q can push a
    small variance to -b/Q, and sqrt(var + eps) would then be NaN on the device)."""
    for name in inv.order:
        if name.endswith("running_var"):
            q, b = plan.for_param(name)
            low = float(dequantize(qz.params[name][0], q, b).min())
            if low < 0:
                raise PlanError(f"{name}: quantized with Q={q} a variance becomes {low:.3g} < 0; "
                                "use an even Q for this group (0 is then a level)")


def _without_fake_quant(model: nn.Module) -> nn.Module:
    """A copy whose Tucker layers rebuild from the float core/factors (QAT flags cleared), so
    'accuracy before quantization' really is the float model's."""
    import copy

    m = copy.deepcopy(model)
    for _, _, tw in tucker_layers(m):
        tw.core_quant = tw.factor_quant = None
    from .qat import remove_plain_fake_quant
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
