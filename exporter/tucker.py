"""ADA-Tucker and SCADA-Tucker weights as ``torch.nn.utils.parametrize`` parametrizations.

A parametrized ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` keeps its class and its
``forward``; only ``module.weight`` is now computed each step as (paper Eq. 1 and Eq. 8)

    W = reshape(C x_1 M_1 x_2 M_2 ... x_d M_d, shape),   C: (k_1..k_d), M_i: (n_i, k_i),

with a C-order reshape (the convention of the .adt format). The dense weight does not survive as a
trained or stored tensor: the parametrization's ``right_inverse`` returns an empty tensor, so
``parametrizations.weight.original`` holds 0 elements and never receives a gradient. The core and
the factors are ordinary ``nn.Parameter`` s of the :class:`TuckerWeight`, so autograd gives Eq. 3-5
(and Eq. 9 for a shared core: gradients of all layers add up in the one core Parameter).

SCADA-Tucker (paper Sec. 2.4): every layer's :class:`TuckerWeight` references the SAME core
Parameter object; layers whose reshaped order is lower than the core's get padded modes of size 1
with ``1 x k`` factors.
"""
from __future__ import annotations

import logging
import math
import numbers
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from adt.runtime.format.quantize import ROUNDINGS

from .errors import ModelError, PlanError
from .planner import LayerPlan, count_stored

log = logging.getLogger("adt.exporter")

#: Layer types ADT knows how to parametrize (their weight is the only tensor that gets factorized).
SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# --------------------------------------------------------------------------------------------------
# Eq. 13 fake quantization with a straight-through gradient
# --------------------------------------------------------------------------------------------------
class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, q: int, b: float, nearest: bool) -> Tensor:  # type: ignore[override]
        # Same arithmetic as adt.runtime.format.quantize/dequantize: b rounded to float32, the rest
        # in float64, one final rounding to the input dtype -> bit-identical to the file's values.
        b64 = float(torch.tensor(b, dtype=torch.float32))
        xd = x.detach().to(torch.float64)
        t = (xd.clamp(-b64, b64) + b64) * q / (2.0 * b64)
        s = torch.floor(t + 0.5 if nearest else t).clamp(max=q - 1)
        ctx.save_for_backward(x)
        ctx.b = b64
        return (-b64 + s * (2.0 * b64 / q)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # Straight-through inside [-b, b]; outside, the clip has zero slope (clipped STE).
        inside = (x >= -ctx.b) & (x <= ctx.b)
        return grad * inside.to(grad.dtype), None, None, None


def fake_quant_ste(x: Tensor, q: int, b: float, rounding: str = "floor") -> Tensor:
    """Eq. 13 quantize-dequantize of ``x`` (exactly ``adt.runtime.format.fake_quantize``: floor or
    nearest level, symbol clamped to Q-1), with a straight-through gradient (identity inside
    [-b, b], 0 outside)."""
    if not (isinstance(q, numbers.Integral) and q >= 1) or not (float(b) > 0 and math.isfinite(float(b))):
        raise PlanError(f"fake quantization needs an integer Q >= 1 and a finite b > 0, got Q={q!r}, b={b!r}")
    if rounding not in ROUNDINGS:
        raise PlanError(f"fake quantization rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return _FakeQuantSTE.apply(x, int(q), float(b), rounding == "nearest")


# --------------------------------------------------------------------------------------------------
# Rebuilding the dense tensor
# --------------------------------------------------------------------------------------------------
def contraction_order(core_dims: Sequence[int], dims: Sequence[int]) -> list[int]:
    """Order of the mode products ``x_i M_i`` that minimises the multiply-adds.

    Contracting mode i costs (current size) * n_i and scales the size by n_i / k_i; swapping two
    neighbouring products shows mode a should go before mode b iff 1/k_a - 1/n_a < 1/k_b - 1/n_b,
    so sorting by that key is optimal: modes that compress most (small core dim, small n) go first.
    """
    return sorted(range(len(dims)), key=lambda i: (1.0 / core_dims[i] - 1.0 / dims[i], dims[i], i))


def tucker_to_tensor(core: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """The multi-mode product ``core x_1 factors[0] ... x_d factors[d-1]`` (factor i: (n_i, k_i)),
    contracting in the cheapest order (see :func:`contraction_order`)."""
    d = core.dim()
    if len(factors) != d:
        raise PlanError(f"core has order {d} but {len(factors)} factors were given")
    for i, m in enumerate(factors):
        if m.dim() != 2 or m.shape[1] != core.shape[i]:
            raise PlanError(f"factor {i} has shape {tuple(m.shape)}, expected (n, {core.shape[i]})")
    order = contraction_order(list(core.shape), [m.shape[0] for m in factors])
    t = core
    axes = list(range(d))  # axes[p] = which tensor mode sits at position p of t
    for i in order:
        pos = axes.index(i)
        # tensordot puts the new n_i axis last
        t = torch.tensordot(t, factors[i], dims=([pos], [1]))
        axes.pop(pos)
        axes.append(i)
    return t.permute([axes.index(i) for i in range(d)])


def cp_to_tensor(weights: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """CP (paper Eq. 7): ``sum_r weights[r] m^1_r o ... o m^d_r`` via running Khatri-Rao products,
    i.e. the Tucker product with a diagonal core, without materialising the r^d core."""
    r = weights.shape[0]
    for i, m in enumerate(factors):
        if m.dim() != 2 or m.shape[1] != r:
            raise PlanError(f"CP factor {i} has shape {tuple(m.shape)}, expected (n, {r})")
    t = factors[0] * weights  # (n_1, r)
    for m in factors[1:]:
        t = (t[:, None, :] * m[None, :, :]).reshape(-1, r)
    return t.sum(dim=1).reshape([m.shape[0] for m in factors])


# --------------------------------------------------------------------------------------------------
# The parametrization
# --------------------------------------------------------------------------------------------------
class TuckerWeight(nn.Module):
    """Parametrization ``weight = reshape(C x_1 M_1 ... x_d M_d, shape)`` of one layer.

    Attributes: ``core`` (dense (k_1..k_d), or the diagonal (r,) when ``cp``; the same Parameter
    object in every layer under SCADA), ``factors`` (factor i: (n_i, k_i)), ``reshape`` (n_1..n_d),
    ``shape`` (the layer's weight shape), ``cp``, ``order``, and optional Eq. 13 fake quantization
    ``core_quant`` / ``factor_quant`` = (Q, b, rounding) for quantization-aware fine-tuning.
    """

    def __init__(self, shape: Sequence[int], reshape: Sequence[int], core: nn.Parameter,
                 factors: Iterable[nn.Parameter], cp: bool = False) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.reshape = tuple(int(n) for n in reshape)
        self.cp = bool(cp)
        self.order = len(self.reshape)
        self.core = core
        self.factors = nn.ParameterList(list(factors))
        self.core_quant: tuple[int, float, str] | None = None
        self.factor_quant: tuple[int, float, str] | None = None
        self.init_error: float | None = None  # relative reconstruction error of the last init
        self._check()

    def _check(self) -> None:
        if math.prod(self.reshape) != math.prod(self.shape):
            raise PlanError(f"reshape {self.reshape} has {math.prod(self.reshape)} elements, "
                            f"weight {self.shape} has {math.prod(self.shape)}")
        if len(self.factors) != self.order:
            raise PlanError(f"{len(self.factors)} factors for a reshape of order {self.order}")
        kdims = self.core_dims
        for i, (m, n, k) in enumerate(zip(self.factors, self.reshape, kdims)):
            if tuple(m.shape) != (n, k):
                raise PlanError(f"factor {i} has shape {tuple(m.shape)}, expected ({n}, {k})")

    @property
    def core_dims(self) -> tuple[int, ...]:
        """(k_1..k_d); for CP every k_i is the rank r."""
        if self.cp:
            return (int(self.core.shape[0]),) * self.order
        return tuple(int(k) for k in self.core.shape)

    def num_params(self, with_core: bool = True) -> int:
        """Core (if ``with_core``) plus factor element count."""
        return (self.core.numel() if with_core else 0) + sum(m.numel() for m in self.factors)

    def dense(self) -> Tensor:
        """The rebuilt weight in the layer's original shape (fake-quantized if quant is set)."""
        core = self.core
        factors = list(self.factors)
        if self.core_quant is not None:
            core = fake_quant_ste(core, *self.core_quant)
        if self.factor_quant is not None:
            factors = [fake_quant_ste(m, *self.factor_quant) for m in factors]
        t = cp_to_tensor(core, factors) if self.cp else tucker_to_tensor(core, factors)
        return t.reshape(self.shape)

    def forward(self, original: Tensor) -> Tensor:  # noqa: ARG002 - the empty placeholder
        return self.dense()

    def right_inverse(self, weight: Tensor) -> Tensor:
        # Keep no dense copy: the registered `original` becomes a 0-element tensor.
        return torch.empty(0, dtype=weight.dtype, device=weight.device)

    def extra_repr(self) -> str:
        kind = f"cp rank={self.core.shape[0]}" if self.cp else f"core={tuple(self.core.shape)}"
        return f"shape={self.shape}, reshape={self.reshape}, {kind}"


# --------------------------------------------------------------------------------------------------
# Applying plans to a model
# --------------------------------------------------------------------------------------------------
def _layer(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ModelError(f"plan names layer {name!r}, which the model does not have") from None
    if not isinstance(module, SUPPORTED):
        raise ModelError(f"layer {name!r} is {type(module).__name__}; ADA-Tucker supports "
                         + ", ".join(c.__name__ for c in SUPPORTED))
    if parametrize.is_parametrized(module, "weight"):
        raise ModelError(f"layer {name!r} already has a parametrized weight")
    return module


def _register(module: nn.Module, tw: TuckerWeight) -> None:
    parametrize.register_parametrization(module, "weight", tw, unsafe=True)
    # The 0-element placeholder is no trainable weight: keep optimizers and counts away from it.
    module.parametrizations.weight.original.requires_grad_(False)


def _new_factors(reshape: Sequence[int], core_dims: Sequence[int], like: Tensor) -> list[nn.Parameter]:
    return [nn.Parameter(torch.empty(n, k, dtype=like.dtype, device=like.device))
            for n, k in zip(reshape, core_dims)]


def _ordered_plan(model: nn.Module, plan: dict[str, LayerPlan]) -> list[tuple[str, LayerPlan]]:
    names = [n for n, _ in model.named_modules()]
    unknown = [n for n in plan if n not in names]
    if unknown:
        raise ModelError(f"plan names layer {unknown[0]!r}, which the model does not have")
    return sorted(plan.items(), key=lambda kv: names.index(kv[0]))


def apply_ada_tucker(model: nn.Module, plan: dict[str, LayerPlan], init: str = "scratch",
                     scheme: str = "kaiming", seed: int | None = None) -> nn.Module:
    """Parametrize every layer named in ``plan`` with its own core (ADA-Tucker), in place.

    ``init``: "scratch" (random core/factors scaled so the rebuilt weight has the ``scheme``
    variance, "kaiming" or "glorot") or "hooi" (HOSVD + HOOI of the layer's current dense weight;
    the relative reconstruction error lands in ``TuckerWeight.init_error``). Returns ``model``.
    """
    from . import init as _init

    _check_init(init)
    gen = _generator(seed)
    for name, lp in _ordered_plan(model, plan):
        lp = LayerPlan.coerce(lp)
        module = _layer(model, name)
        w = module.weight.detach()
        lp.validate(tuple(w.shape), where=name)
        core_shape = (lp.core[0],) if lp.cp else tuple(lp.core)
        core = nn.Parameter(torch.empty(core_shape, dtype=w.dtype, device=w.device))
        tw = TuckerWeight(w.shape, lp.reshape, core, _new_factors(lp.reshape, lp.core, w), cp=lp.cp)
        if init == "hooi":
            tw.init_error = _init.hooi_init_(tw, w)
            log.info("%s: HOOI init, relative reconstruction error %.4g", name, tw.init_error)
        else:
            _init.scratch_init_([tw], [module], scheme=scheme, generator=gen)
        _register(module, tw)
    return model


def apply_scada_tucker(model: nn.Module, plan: dict[str, LayerPlan], init: str = "scratch",
                       scheme: str = "kaiming", seed: int | None = None,
                       core: Sequence[int] | None = None) -> nn.Module:
    """SCADA-Tucker (paper Sec. 2.4), in place: ONE core Parameter shared by all planned layers.

    The shared core's order d is the largest reshape order in the plan and its dims are ``core``
    if given, else the core of a plan of order d (all such plans must agree). A layer of lower order
    gets trailing reshape modes of size 1 (``1 x k`` factors). A layer plan's own core dims, where
    given for its real modes, must equal the shared core's dims there. ``init`` as in
    :func:`apply_ada_tucker`; "hooi" fits the shared core and all factors jointly by alternating
    least squares started from the HOOI of the largest layer.
    """
    from . import init as _init

    _check_init(init)
    items = [(name, LayerPlan.coerce(lp)) for name, lp in _ordered_plan(model, plan)]
    if not items:
        raise PlanError("SCADA-Tucker needs at least one planned layer")
    if any(lp.cp for _, lp in items):
        raise PlanError("SCADA-Tucker shares a dense Tucker core; CP plans cannot be shared")
    d = max(len(lp.reshape) for _, lp in items)
    if core is None:
        tops = {tuple(lp.core) for _, lp in items if len(lp.reshape) == d}
        if len(tops) != 1:
            raise PlanError(f"SCADA-Tucker needs one shared core; plans of order {d} have cores {sorted(tops)}")
        shared = tops.pop()
    else:
        shared = tuple(int(k) for k in core)
    if len(shared) != d or min(shared) < 1:
        raise PlanError(f"shared core {shared} must have order {d} and positive dims")
    modules, tws = [], []
    w0 = _layer(model, items[0][0]).weight
    core_param = nn.Parameter(torch.empty(shared, dtype=w0.dtype, device=w0.device))
    for name, lp in items:
        module = _layer(model, name)
        w = module.weight.detach()
        lp.validate(tuple(w.shape), where=name)
        if tuple(lp.core) != shared[: len(lp.core)]:
            raise PlanError(f"layer {name!r}: core {tuple(lp.core)} differs from the shared core {shared}")
        reshape = tuple(lp.reshape) + (1,) * (d - len(lp.reshape))
        tws.append(TuckerWeight(w.shape, reshape, core_param, _new_factors(reshape, shared, w)))
        modules.append(module)
    if init == "hooi":
        errors = _init.scada_hooi_init_(tws, [m.weight.detach() for m in modules])
        for (name, _), tw, err in zip(items, tws, errors):
            tw.init_error = err
            log.info("%s: SCADA ALS init, relative reconstruction error %.4g", name, err)
    else:
        _init.scratch_init_(tws, modules, scheme=scheme, generator=_generator(seed))
    for module, tw in zip(modules, tws):
        _register(module, tw)
    return model


def _check_init(init: str) -> None:
    if init not in ("scratch", "hooi"):
        raise PlanError(f"init must be 'scratch' or 'hooi', got {init!r}")


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


# --------------------------------------------------------------------------------------------------
# Inspecting and freezing
# --------------------------------------------------------------------------------------------------
def tucker_layers(model: nn.Module) -> list[tuple[str, nn.Module, TuckerWeight]]:
    """``(module path, module, TuckerWeight)`` of every Tucker-parametrized layer, in model order."""
    out = []
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, TuckerWeight):
                    out.append((name, module, p))
    return out


def shared_cores(model: nn.Module) -> list[nn.Parameter]:
    """The distinct core Parameters (one per layer for ADA-Tucker, one in all for SCADA-Tucker)."""
    seen: dict[int, nn.Parameter] = {}
    for _, _, tw in tucker_layers(model):
        seen.setdefault(id(tw.core), tw.core)
    return list(seen.values())


def count_params(model: nn.Module) -> int:
    """Stored parameter count: every distinct parameter and buffer once (a shared core once), the
    0-element placeholders contributing nothing. BatchNorm's ``num_batches_tracked`` is excluded."""
    return count_stored(model)


def freeze(model: nn.Module) -> nn.Module:
    """Replace every Tucker parametrization by its rebuilt dense weight (a plain Parameter), in
    place; the model then runs at dense speed and exports to ONNX like the original."""
    for _, module, _ in tucker_layers(model):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        module.weight.requires_grad_(True)
    return model
