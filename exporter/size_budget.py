"""Compress to a file-size budget: ``adt compress --target-size 50KB``.

The file is the budget, every byte counted: header, metadata, architecture, code tables, tensor
table and payload. Two steps, because the payload's size depends on values that do not exist yet
when the plan is made (Huffman code lengths follow the trained values' distribution):

1. :func:`plan_for_size`, before training, chooses reshapes and cores (or TT ranks: every method of
   :mod:`adt.exporter.methods` plans through the same search; "Tucker values" below means the values
   of the factored layers, TT cores included). It iterates plan -> file ->
   bits per value -> plan: each candidate plan is applied to a copy of the model, its values are
   replaced by a proxy of trained ones (default ``"gaussian"``: normal values with each tensor's
   initial spread; ``"scratch"`` keeps the uniform initial values, ``"hooi"`` decomposes the current
   dense weights), and the copy is encoded to bytes by the exporter's own writer
   (:func:`adt.exporter.export.encode_adt`). Its fixed bytes (everything but the Tucker values'
   payload) and its mean code length of the Tucker values give the next stored-value target,
   ``dense values + (aim x budget - fixed bytes) x 8 / bits per value``, kept inside the bracket of
   earlier rounds (a plan's bytes are not strictly monotone in its target: one quantizer's b serves
   all cores, and layers move between Tucker and dense). It stops at the first proxy file inside the
   window (``aim`` = 0.985, the window's middle). A budget that even the smallest plan (rank-1 cores)
   cannot meet raises :class:`SizeBudgetError` naming the fixed costs.
2. :func:`fit_to_size`, after training (and QAT), encodes the real model and, when the file is
   outside ``[0.97, 1.00] x budget``, rescales every quantizer's Q by one common factor (rounded per
   group, b kept) by bisection on the encoded bytes: fewer levels, fewer bits per value. Q is what can
   change without retraining; the b rule cannot shrink a file (a percentile b below max |w| spreads
   the values over more levels at the same Q), so b stays as chosen. Over the budget even at ``min_q`` levels it
   raises :class:`SizeBudgetError`; under the window even at the most levels (``MAX_Q``) it keeps
   the given Q and says so (more levels than the format allows would be needed). With ``path`` it
   writes the file with :func:`adt.exporter.export_adt` and reports those bytes.

With quantization-aware fine-tuning, fit once before QAT (``q=fit.q`` for
:func:`adt.exporter.qat_finetune`, so that QAT trains with the levels the file will use) and once
after (``plan=qat.plan``): the second fit then usually changes nothing.

Sizes: :func:`parse_size` reads ``"50KB"`` (1 KB = 1,000 bytes), ``"48KiB"`` (1 KiB = 1,024 bytes),
``"2MB"``, ``"1.5MiB"`` or plain bytes ``"50000"``.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from adt.runtime.format import byte_breakdown, read_adt
from adt.runtime.format.limits import MAX_Q

from .errors import PlanError
from .export import ExportOptions, ExportReport, encode_adt, export_adt, prepare_export
from .factorize import tucker_layers
from .methods import Method, get_method
from .planner import MAX_MODE, MIN_NUMEL, LayerPlan, count_stored
from .quantplan import DEFAULT_Q, KINDS, QuantPlan, make_quant_plan
from .tensor_train import tt_layers

__all__ = [
    "WINDOW", "AIM", "MIN_Q", "PROXIES", "SizeBudgetError", "parse_size", "format_size", "SizeEstimate",
    "plan_for_size", "smallest_plan", "SizeFit", "fit_to_size",
]

#: The file must land in [WINDOW[0], WINDOW[1]] x budget.
WINDOW = (0.97, 1.0)
#: Where in the window the searches aim (the middle, so that small drifts stay inside).
AIM = 0.985
#: Fewest Eq. 13 levels :func:`fit_to_size` goes down to (fewer wrecks most models' accuracy).
MIN_Q = 16
#: Proxies of the trained values that :func:`plan_for_size` encodes.
PROXIES = ("gaussian", "scratch", "hooi")

_UNITS = {"b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
          "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*$")


class SizeBudgetError(PlanError):
    """A size budget that cannot be read, or that no plan or quantizer can meet."""


# --------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------
def parse_size(text: str | int) -> int:
    """Bytes from ``"50000"``, ``"50000B"``, ``"50KB"`` / ``"50kB"`` (x 1,000), ``"48KiB"`` (x 1,024),
    ``"2MB"``, ``"1.5MiB"``, ``"1GB"``, ``"1GiB"`` (units case-insensitive; fractions are rounded down to
    whole bytes). A bare ``K``/``M``/``G`` is refused: it does not say 1,000 or 1,024. Raises
    :class:`SizeBudgetError` naming the text and the accepted forms."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value, unit = int(text), "b"
    else:
        m = _SIZE.match(str(text).replace("_", "").lower())
        unit = m.group(2) or "b" if m else ""
        if not m or unit not in _UNITS:
            hint = (" (say KB for 1,000 bytes or KiB for 1,024)" if m and unit in ("k", "m", "g", "ki", "mi", "gi")
                    else "")
            raise SizeBudgetError(f"size {text!r} is not a byte count{hint}: give bytes (50000) or a number with "
                                  "B, KB, MB, GB (powers of 1,000) or KiB, MiB, GiB (powers of 1,024), e.g. 50KB")
        value = float(m.group(1))
    n = int(math.floor(value * _UNITS[unit] + 1e-9))
    if n < 1:
        raise SizeBudgetError(f"size {text!r} is {value * _UNITS[unit]:g} bytes: a budget must be at least 1 byte")
    return n


def format_size(n: int) -> str:
    """``"50,000 bytes (50.0 KB)"``: exact bytes, with KB/MB (powers of 1,000) from 1,000 on."""
    for unit, size in (("GB", 1000 ** 3), ("MB", 1000 ** 2), ("KB", 1000)):
        if n >= size:
            return f"{n:,} bytes ({n / size:.1f} {unit})"
    return f"{n:,} bytes"


def _budget(budget: int | str) -> int:
    return parse_size(budget)


# --------------------------------------------------------------------------------------------------
# What a file of a model spends its bytes on
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Measure:
    """One encoded file: its length, the bits of its factored values (Tucker/CP cores and factors, TT
    cores; "Tucker values" below) and their count."""

    file_bytes: int
    tucker_bits: int
    tucker_values: int
    sections: dict[str, int]
    dense_payload_bytes: float

    @property
    def fixed_bytes(self) -> float:
        """Everything but the Tucker values' payload: header, metadata, architecture, tables, dense values."""
        return self.file_bytes - self.tucker_bits / 8

    @property
    def bits_per_value(self) -> float:
        return self.tucker_bits / self.tucker_values if self.tucker_values else 0.0


def _measure(data: bytes) -> _Measure:
    f = read_adt(data)
    bd = byte_breakdown(f)
    tucker_values = sum(c.stored_count for c in f.cores) + sum(p.stored_count for p in f.params if p.factors)
    sections = {r.name: r.bytes for r in bd.sections}
    dense = (bd.payload_bits["plain biases"] + bd.payload_bits["other plain parameters"]) / 8
    return _Measure(len(data), bd.payload_bits["cores"] + bd.payload_bits["factors"], tucker_values, sections, dense)


def _fixed_costs(m: _Measure) -> str:
    """``architecture 119, metadata 91, ...`` for an error message."""
    named = {k: v for k, v in m.sections.items() if k != "payload"}
    parts = [f"{k} {v:,}" for k, v in sorted(named.items(), key=lambda kv: -kv[1])]
    parts.append(f"dense values' payload {m.dense_payload_bytes:,.0f}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------
@dataclass
class SizeEstimate:
    """What :func:`plan_for_size` chose and why. Every byte figure is the length of a file the
    exporter's writer built for the plan applied to a copy of the model with proxy values (``proxy``):
    ``estimated_bytes`` for the chosen plan, ``smallest_bytes`` for rank-1 cores, ``fixed_bytes`` the
    part of the estimate that is not Tucker payload (header, metadata, architecture, code tables,
    tensor table, dense values), ``bits_per_value`` the proxy's mean code length of the Tucker
    values. ``target``: the stored-value total given to :func:`plan_model` (None: the smallest
    plan). ``rounds``: each round's target, stored values and file bytes."""

    budget_bytes: int
    estimated_bytes: int
    stored_values: int
    tucker_values: int
    dense_values: int
    bits_per_value: float
    fixed_bytes: float
    smallest_bytes: int
    target: int | None
    proxy: str
    sections: dict[str, int] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float:
        """Estimated file bytes / budget."""
        return self.estimated_bytes / self.budget_bytes

    def summary(self) -> str:
        return (f"planned {self.stored_values:,} stored values ({self.tucker_values:,} in factored layers "
                f"at {self.bits_per_value:.2f} bits each on {self.proxy} proxy values, {self.dense_values:,} dense) "
                f"for an estimated {self.estimated_bytes:,}-byte file ({self.ratio:.3f} of the "
                f"{self.budget_bytes:,}-byte budget; {self.fixed_bytes:,.0f} fixed bytes)"
                + (f"; {self.note}" if self.note else ""))


def smallest_plan(model: nn.Module, overrides: Any = None, scada: bool = False, max_mode: int = MAX_MODE,
                  min_numel: int = MIN_NUMEL, method: str | Method | None = None) -> dict[str, Any]:
    """The plan the planner of ``method`` (default ``"scada"`` if ``scada`` else ``"ada"``) approaches at
    the smallest target: rank 1 everywhere (:meth:`adt.exporter.methods.Method.smallest`)."""
    return _method(method, scada).smallest(model, overrides, max_mode=max_mode, min_numel=min_numel)


def _method(method: str | Method | None, scada: bool) -> Method:
    if isinstance(method, Method):
        return method
    return get_method(method if method is not None else "scada" if scada else "ada")


def _proxy_copy(model: nn.Module, plan: Mapping[str, Any], method: Method, proxy: str, seed: int) -> nn.Module:
    """A copy of ``model`` compressed with ``plan`` by ``method`` and carrying ``proxy`` values."""
    inst = copy.deepcopy(model)
    method.apply(inst, dict(plan), init="hooi" if proxy == "hooi" else "scratch", seed=seed)
    if proxy == "gaussian":
        # Trained Tucker values are bell-shaped, not uniform like the scratch init. Measured on LeNet-5
        # (ratio 20, Q = 512): uniform init values code to 8.98 bits each, trained ones to 8.41-8.43
        # after 1 to 6 epochs, this proxy to 8.04; results/target_size.md records the gap per run, which
        # fit_to_size closes with Q. The optimistic side plans more values, and lowering Q a little
        # costs less accuracy than fewer values do.
        gen = torch.Generator().manual_seed(int(seed))
        seen: set[int] = set()
        with torch.no_grad():
            stored = [[tw.core, *tw.factors] for _, _, tw in tucker_layers(inst)]
            stored += [list(tt.cores) for _, _, tt in tt_layers(inst)]
            for tensors in stored:
                for p in tensors:
                    if id(p) in seen:
                        continue
                    seen.add(id(p))
                    std = float(p.detach().double().std()) if p.numel() > 1 else float(p.detach().abs().mean())
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * (std or 1.0))
    return inst.eval()


def plan_for_size(model: nn.Module, budget_bytes: int | str, options: ExportOptions | None = None, *,
                  scada: bool = False, overrides: Any = None, proxy: str = "gaussian", seed: int = 0,
                  aim: float = AIM, window: tuple[float, float] = WINDOW, rounds: int = 6,
                  max_mode: int = MAX_MODE, min_numel: int = MIN_NUMEL, method: str | Method | None = None,
                  **fields_: Any) -> tuple[dict[str, Any], SizeEstimate]:
    """Plan reshapes and cores of the dense ``model`` (not changed) so that its ``.adt`` file lands
    just under ``budget_bytes`` (an int, or text for :func:`parse_size`). ``options`` / ``fields_``: the
    :class:`ExportOptions` the file will be exported with (q, groups, rounding, tables, compact_names,
    input_shape, metadata, ...), since they change its size. ``method``: whose planner and layers
    (:data:`adt.exporter.methods.METHOD_NAMES`; default ``"scada"`` if ``scada`` else ``"ada"``; ``mtd``
    is sized with its ADA plan, which fixes each layer's budget). ``overrides``, ``max_mode``,
    ``min_numel``: as for :func:`plan_model`. ``proxy``: see :data:`PROXIES` and the module docstring.
    Each of at most ``rounds`` rounds aims the proxy file at ``aim`` x budget and the search stops at the
    first one inside ``window`` x budget; else the file closest to the aim under the budget wins.
    Returns ``(plan, estimate)``; raises :class:`SizeBudgetError` when even :func:`smallest_plan`
    does not fit."""
    budget = _budget(budget_bytes)
    if proxy not in PROXIES:
        raise PlanError(f"proxy must be one of {PROXIES}, got {proxy!r}")
    if not 0 < window[0] <= aim <= window[1] <= 1:
        raise PlanError(f"need 0 < window low <= aim <= window high <= 1, got window {window} and aim {aim}")
    opts = replace(options or ExportOptions(), **fields_)
    if opts.plan is not None:
        raise PlanError("plan_for_size chooses the quantizers' groups from q, b and groups: give those, not a "
                        "resolved QuantPlan (that belongs to a model already compressed)")
    total = count_stored(model)
    meth = _method(method, scada)
    kw = dict(max_mode=max_mode, min_numel=min_numel)

    # One ONNX export per set of Tucker layers: the graph is the same for every plan, but a layer's
    # Tucker form moves its weight's slot in the table order (and so its compact name).
    traced: dict[frozenset[str], Any] = {}

    def encode(plan: Mapping[str, LayerPlan]) -> _Measure:
        inst = _proxy_copy(model, plan, meth, proxy, seed)
        key = frozenset(plan)
        traced[key] = prepare_export(inst, opts, like=traced.get(key))
        return _measure(encode_adt(inst, opts, prepared=traced[key]))

    def values(plan: Mapping[str, Any]) -> tuple[int, int]:
        stored = meth.stored(model, plan) if plan else total
        return stored, stored - (meth.factored(plan) if plan else 0)

    small = meth.smallest(model, overrides, **kw)
    if not small:
        raise SizeBudgetError("no layer of the model can be compressed (no Linear/Conv layer with a Tucker form "
                              "smaller than its weight): its file size is fixed; export it to see it")
    m_small = encode(small)
    stored, dense = values(small)
    log = [{"target": None, "stored_values": stored, "file_bytes": m_small.file_bytes}]
    if m_small.file_bytes > budget:
        raise SizeBudgetError(
            f"a budget of {format_size(budget)} is too small for this model: its smallest plan (rank-1 cores, "
            f"{stored:,} stored values) makes a {format_size(m_small.file_bytes)} file, and {m_small.fixed_bytes:,.0f} "
            f"of those bytes are fixed costs ({_fixed_costs(m_small)}); raise the budget, lower Q "
            f"(fewer bits per value), or use compact names (no metadata, shorter tables)")

    best = (small, m_small, None)
    goal = aim * budget
    m = m_small
    under: int | None = None   # the largest target whose file came out at or under the goal
    over: int | None = None    # the smallest target whose file came out over it
    tried: set[int] = set()
    for _ in range(rounds):
        # the fixed point of "fixed bytes + Tucker values x bits per value = goal" for the last file...
        bpv = m.bits_per_value or math.log2(max(2, _typical_q(opts.q)))
        nxt = min(total - 1, dense + int((goal - m.fixed_bytes) * 8 / bpv))  # plan_model wants < total
        # ...kept inside the bracket the earlier files set: a plan's bytes are not strictly monotone in its
        # target (the split over layers moves), so an unbracketed fixed point can oscillate
        if under is not None and over is not None and not under < nxt < over:
            nxt = (under + over) // 2
        if nxt in tried or (under is not None and over is not None and over - under <= max(2, over // 500)):
            break
        tried.add(nxt)
        try:
            plan = meth.plan(model, nxt, overrides, **kw)
        except PlanError:
            break  # below what the planner can split: the smallest plan is the answer
        m = encode(plan)
        stored, dense = values(plan)
        log.append({"target": nxt, "stored_values": stored, "file_bytes": m.file_bytes})
        if m.file_bytes <= budget and abs(m.file_bytes - goal) < abs(best[1].file_bytes - goal):
            best = (plan, m, nxt)
        if window[0] * budget <= m.file_bytes <= window[1] * budget:
            break  # inside the window: training moves the real file by more than a finer plan would gain
        if m.file_bytes <= goal:
            under = max(under or 0, nxt)
            if nxt == total - 1:
                break  # the largest plan the planner makes: nothing more to add
        else:
            over = nxt if over is None else min(over, nxt)
    plan, m, target = best
    stored, dense = values(plan)
    note = ""
    if m.file_bytes < window[0] * budget:
        note = (f"the plan closest to the aim fills {m.file_bytes / budget:.3f} of the budget"
                + (" (the planner never makes a layer bigger than dense)" if target == total - 1 else "")
                + "; fit_to_size raises Q after training")
    est = SizeEstimate(budget, m.file_bytes, stored, m.tucker_values, dense, m.bits_per_value, m.fixed_bytes,
                       m_small.file_bytes, target, proxy, dict(m.sections), log, note)
    return plan, est


def _typical_q(q: Any) -> int:
    if isinstance(q, Mapping):
        vals = [int(v) for k, v in q.items() if k in ("cores", "factors") and v is not None]
        return max(vals) if vals else DEFAULT_Q
    return int(q)


# --------------------------------------------------------------------------------------------------
# Fitting after training
# --------------------------------------------------------------------------------------------------
@dataclass
class SizeFit:
    """What :func:`fit_to_size` measured and chose. ``file_bytes``: the real length of the file that
    ``export_adt(model, path, fit.options)`` writes (the written file's when ``path`` was given:
    ``report``). ``scale``: the common factor applied to every group's Q (1.0: unchanged). ``q``: the
    new Q as given (an int, or per kind) for :func:`adt.exporter.qat_finetune` / ``--q``, None when
    a resolved plan was given. ``plan``: the quantization plan the file uses. ``steps``: every
    encoding tried (scale, Q per group, bytes)."""

    budget_bytes: int
    file_bytes: int
    in_window: bool
    scale: float
    q: int | dict[str, int] | None
    plan: QuantPlan
    options: ExportOptions
    window: tuple[float, float] = WINDOW
    steps: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    report: ExportReport | None = None

    @property
    def ratio(self) -> float:
        """File bytes / budget."""
        return self.file_bytes / self.budget_bytes

    def describe_q(self) -> str:
        """``cores=630,factors=630,other=79`` (per kind), or one number."""
        if isinstance(self.q, Mapping):
            return ",".join(f"{k}={v}" for k, v in self.q.items())
        if self.q is not None:
            return str(self.q)
        return ", ".join(f"{g.label}={g.q}" for g in self.plan.groups)

    def summary(self) -> str:
        where = "inside" if self.in_window else "OUTSIDE"
        change = "Q unchanged" if self.scale == 1.0 else f"Q scaled x{self.scale:.3g} to {self.describe_q()}"
        return (f"{self.file_bytes:,} bytes = {self.ratio:.4f} of the {self.budget_bytes:,}-byte budget, {where} "
                f"the window [{self.window[0]:g}, {self.window[1]:g}]; {change}"
                + (f"; {self.note}" if self.note else ""))


def _group_kinds(inv: Any, plan: QuantPlan) -> list[str]:
    """The kind (:data:`KINDS`) of the values in each group of ``plan`` (the first member's)."""
    kinds: list[str | None] = [None] * len(plan.groups)
    for key, g in plan.core_group.items():
        kinds[g] = kinds[g] or "cores"
    for name, g in plan.param_group.items():
        kind = "factors" if inv.factored(name) else "norm" if name in inv.norm else "other"
        kinds[g] = kinds[g] or kind
    return [k or "other" for k in kinds]


def fit_to_size(model: nn.Module, budget_bytes: int | str, options: ExportOptions | None = None, *,
                path: Any = None, window: tuple[float, float] = WINDOW, aim: float = AIM, min_q: int = MIN_Q,
                max_steps: int = 30, **fields_: Any) -> SizeFit:
    """Fit the trained ``model``'s file into ``window`` x ``budget_bytes`` by rescaling Q (see the module
    docstring). ``options`` / ``fields_``: the :class:`ExportOptions` of the export (q, or a QAT's
    ``plan``; groups, rounding, tables, metadata, test_data, selfcheck, ...). ``path``: write the file
    there with :func:`export_adt` (its report in ``SizeFit.report``); else nothing is written, and
    ``export_adt(model, path, fit.options)`` writes exactly ``fit.file_bytes`` bytes. Raises
    :class:`SizeBudgetError` when the file exceeds the budget even at ``min_q`` levels."""
    budget = _budget(budget_bytes)
    lo_r, hi_r = window
    if not 0 < lo_r <= aim <= hi_r:
        raise PlanError(f"need 0 < window low <= aim <= window high, got window {window} and aim {aim}")
    if not 2 <= min_q <= MAX_Q:
        raise PlanError(f"min_q must be in 2..{MAX_Q}, got {min_q}")
    opts = replace(options or ExportOptions(), **fields_)
    prepared = prepare_export(model, opts)
    base = opts.plan if opts.plan is not None else make_quant_plan(
        prepared.inv, q=opts.q, b=opts.b, groups=opts.groups, b_rule=opts.b_rule, rounding=opts.rounding)
    missing = base.missing(prepared.inv)
    if missing:
        raise PlanError(f"the given quantization plan does not cover {missing[0]!r}")
    qs = [g.q for g in base.groups]
    kinds = _group_kinds(prepared.inv, base)

    def scaled(s: float) -> QuantPlan:
        groups = [replace(g, q=int(min(MAX_Q, max(min(q, min_q), round(q * s))))) for g, q in zip(base.groups, qs)]
        return replace(base, groups=groups)

    sizes: dict[tuple[int, ...], int] = {}
    steps: list[dict[str, Any]] = []

    def size(s: float) -> int:
        plan = scaled(s)
        key = tuple(g.q for g in plan.groups)
        if key not in sizes:
            sizes[key] = len(encode_adt(model, opts, prepared=prepared, plan=plan))
            steps.append({"scale": s, "q": list(key), "file_bytes": sizes[key]})
        return sizes[key]

    def inside(n: int, limit: int) -> bool:
        return lo_r * budget <= n <= limit

    def search(limit: int) -> tuple[float, str]:
        """The scale whose file lands in [lo x budget, limit], or the closest under ``limit``, and a note."""
        s0 = size(1.0)
        if inside(s0, limit):
            return 1.0, ""
        goal = aim * budget - (budget - limit)
        if s0 > limit:
            lo_s, hi_s = min_q / max(qs), 1.0
            if max(qs) <= min_q or size(lo_s) > limit:
                smallest = size(lo_s)
                m = _measure(encode_adt(model, opts, prepared=prepared, plan=scaled(lo_s)))
                raise SizeBudgetError(
                    f"the file does not fit a budget of {format_size(budget)}: with every quantizer at "
                    f"{'its' if max(qs) <= min_q else 'the fewest'} levels (min Q {min_q}) it is "
                    f"{format_size(smallest)} ({smallest / budget:.3f} of the budget), of which "
                    f"{m.fixed_bytes:,.0f} bytes are not Tucker values ({_fixed_costs(m)}); plan fewer stored "
                    "values (plan_for_size with this budget), raise the budget or lower min_q")
        else:
            lo_s, hi_s = 1.0, MAX_Q / min(qs)
            if min(qs) >= MAX_Q or size(hi_s) < lo_r * budget:
                top = size(hi_s)
                return 1.0, (f"under the window: even at Q {MAX_Q} (the format's most levels) the file would be "
                             f"{format_size(top)} ({top / budget:.3f} of the budget), so Q is left as given; the plan "
                             "stores too few values for this budget (plan_for_size plans more)")
        # bisection in log scale: size(lo_s) <= goal side, size(hi_s) > goal side
        a, b = math.log2(lo_s), math.log2(hi_s)
        for _ in range(max_steps):
            mid = (a + b) / 2
            n = size(2.0 ** mid)
            if inside(n, limit):
                return 2.0 ** mid, ""
            if n > goal:
                b = mid
            else:
                a = mid
            if scaled(2.0 ** a).groups == scaled(2.0 ** b).groups or b - a < 1e-6:
                break
        # no scale landed inside: the fullest file under the limit among every one tried
        under = [(st["file_bytes"], st["scale"]) for st in steps if st["file_bytes"] <= limit]
        n, s = max(under) if under else (size(2.0 ** a), 2.0 ** a)
        return s, (f"the window is not reachable by rescaling Q (one step of Q moves the file past it): the closest "
                   f"file under the budget is {format_size(n)}")

    limit = int(math.floor(hi_r * budget))
    s, note = search(limit)
    plan = scaled(s)
    q_out = _q_per_kind(opts, plan, kinds)
    final = replace(opts, plan=plan)
    n = len(encode_adt(model, final, prepared=prepared))
    report = None
    if path is not None:
        report = export_adt(model, path, final)
        if report.file_bytes != n and report.file_bytes > limit:
            # the export wrote metadata the encoding did not foresee: fit again to the room left
            extra = report.file_bytes - n
            s, note = search(limit - extra)
            plan = scaled(s)
            q_out = _q_per_kind(opts, plan, kinds)
            final = replace(opts, plan=plan)
            report = export_adt(model, path, final)
            note = (note + "; " if note else "") + f"the export adds {extra} bytes the encoding did not: fitted again"
        n = report.file_bytes
    return SizeFit(budget, n, lo_r * budget <= n <= hi_r * budget, s, q_out, plan, final, tuple(window), steps,
                   note, report)


def _q_per_kind(opts: ExportOptions, plan: QuantPlan, kinds: list[str]) -> int | dict[str, int] | None:
    """The plan's Q as ``q`` for make_quant_plan / qat_finetune: an int when one was given and all groups
    agree, else per kind; None when the caller gave a resolved plan (its groups need not follow kinds)."""
    if opts.plan is not None:
        return None
    by_kind: dict[str, int] = {}
    for kind, g in zip(kinds, plan.groups):
        if by_kind.setdefault(kind, g.q) != g.q:
            return None
    if not isinstance(opts.q, Mapping) and len(set(by_kind.values())) == 1:
        return next(iter(by_kind.values()))
    return {k: by_kind[k] for k in KINDS if k in by_kind}
