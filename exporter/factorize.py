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

Initialisation (``init=``):

* ``scratch`` (the paper's setting: Glorot/Kaiming): core and factors are drawn uniformly with
  zero mean and chosen variances so that the REBUILT weight has the variance the ``scheme`` asks
  for (kaiming: 2/fan_in, glorot: 2/(fan_in+fan_out)). A rebuilt element is a sum of prod(k)
  products of one core entry and d factor entries, so Var(W) = prod(k) * Var(C) * prod_j Var(M_j);
  ADA-Tucker gives core and factors the same entry variance (balanced magnitudes suit Adam's
  per-parameter step size); SCADA-Tucker draws the shared core once and scales each layer's factors
  to that layer's target.
* ``hooi``: the layer's current dense weight decomposed by :mod:`adt.exporter.decompose` (HOSVD +
  HOOI, CP-ALS for CP plans, joint ALS for a SCADA shared core); every hooi init records the
  relative reconstruction error ||W - W_tucker|| / ||W|| in ``TuckerWeight.init_error``.

The rebuild contracts the modes in the order :func:`adt.runtime.rebuild.contraction_order` finds
cheapest: the same order the device uses.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from adt.runtime.rebuild import contraction_order

from . import decompose
from .errors import ModelError, PlanError
from .fakequant import QuantSpec, remove_plain_fake_quant
from .planner import LayerPlan, count_stored

__all__ = [
    "SUPPORTED", "METHODS", "INITS", "SCHEMES", "TuckerWeight", "tucker_to_tensor", "cp_to_tensor",
    "apply_ada_tucker", "apply_scada_tucker", "tucker_layers", "shared_cores", "count_params", "freeze",
    "reconstruction_errors", "frozen_copy", "stored_tensors", "target_variance", "scratch_init_", "hooi_init_", "scada_hooi_init_",
]

log = logging.getLogger("adt.exporter")

#: Layer types ADT knows how to parametrize (their weight is the only tensor that gets factorized).
SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: ``ada``: one core per layer; ``scada``: one core shared by every planned layer.
METHODS = ("ada", "scada")
#: How cores and factors start: random (``scratch``) or from the trained dense weight (``hooi``).
INITS = ("scratch", "hooi")
#: Variance schemes of the scratch init.
SCHEMES = ("kaiming", "glorot")


# --------------------------------------------------------------------------------------------------
# Rebuilding the dense tensor
# --------------------------------------------------------------------------------------------------
def tucker_to_tensor(core: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """The multi-mode product ``core x_1 factors[0] ... x_d factors[d-1]`` (factor i: (n_i, k_i)),
    contracting in the cheapest order (:func:`adt.runtime.rebuild.contraction_order`)."""
    d = core.dim()
    if len(factors) != d:
        raise PlanError(f"core has order {d} but {len(factors)} factors were given")
    for i, m in enumerate(factors):
        if m.dim() != 2 or m.shape[1] != core.shape[i]:
            raise PlanError(f"factor {i} has shape {tuple(m.shape)}, expected (n, {core.shape[i]})")
    order = contraction_order(tuple(int(k) for k in core.shape), tuple(int(m.shape[0]) for m in factors))
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
    sizes = [int(m.shape[0]) for m in factors]
    if len(factors) == 1:
        return (factors[0] * weights).sum(dim=1)

    def khatri_rao(mats: Sequence[Tensor]) -> Tensor:  # (prod n, r), C order over the modes
        t = mats[0]
        for m in mats[1:]:
            t = (t[:, None, :] * m[None, :, :]).reshape(-1, r)
        return t

    # Split the modes where the two Khatri-Rao products are closest in rows, and contract the rank with
    # one matrix product: (P, r) @ (r, Q). The intermediates are (P + Q) x r, not the (N x r) of a
    # running product over all modes (fc1 of LeNet-5 at rank 180: 72M elements per forward).
    split = min(range(1, len(sizes)), key=lambda k: abs(math.log(math.prod(sizes[:k])) - math.log(math.prod(sizes[k:]))))
    left = khatri_rao(list(factors[:split])) * weights
    right = khatri_rao(list(factors[split:]))
    return (left @ right.T).reshape(sizes)


# --------------------------------------------------------------------------------------------------
# The parametrization
# --------------------------------------------------------------------------------------------------
class TuckerWeight(nn.Module):
    """Parametrization ``weight = reshape(C x_1 M_1 ... x_d M_d, shape)`` of one layer.

    Attributes: ``core`` (dense (k_1..k_d), or the diagonal (r,) when ``cp``; the same Parameter
    object in every layer under SCADA), ``factors`` (factor i: (n_i, k_i)), ``reshape`` (n_1..n_d),
    ``shape`` (the layer's weight shape), ``cp``, ``order``, and optional Eq. 13 fake quantization
    ``core_quant`` / ``factor_quant`` (:class:`~adt.exporter.fakequant.QuantSpec`) for
    quantization-aware fine-tuning.
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
        self.core_quant: QuantSpec | None = None
        self.factor_quant: QuantSpec | None = None
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
            core = self.core_quant(core)
        if self.factor_quant is not None:
            factors = [self.factor_quant(m) for m in factors]
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
            tw.init_error = hooi_init_(tw, w)
            log.info("%s: HOOI init, relative reconstruction error %.4g", name, tw.init_error)
        else:
            scratch_init_([tw], [module], scheme=scheme, generator=gen)
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
        errors = scada_hooi_init_(tws, [m.weight.detach() for m in modules])
        for (name, _), tw, err in zip(items, tws, errors):
            tw.init_error = err
            log.info("%s: SCADA ALS init, relative reconstruction error %.4g", name, err)
    else:
        scratch_init_(tws, modules, scheme=scheme, generator=_generator(seed))
    for module, tw in zip(modules, tws):
        _register(module, tw)
    return model


def _check_init(init: str) -> None:
    if init not in INITS:
        raise PlanError(f"init must be one of {INITS}, got {init!r}")


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


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy on the CPU in eval mode whose Tucker parametrizations are replaced by dense weights, so
    every weight is a plain tensor under its PyTorch name (``conv1.weight``)."""
    m = copy.deepcopy(model)
    # deepcopy shares parametrize's generated `Parametrized<Layer>` class with the original, and
    # removing a parametrization deletes the property from that class, which would break the
    # ORIGINAL model. Give every parametrized module of the copy its own class first.
    for module in m.modules():
        if parametrize.is_parametrized(module):
            cls = module.__class__
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    # QAT's fake quantizers on plain parameters come off, restoring the latent float values: the
    # exporter quantizes those itself (quantizing already fake-quantized values can drop a level).
    remove_plain_fake_quant(m)
    freeze(m)
    # Any other parametrization is baked in.
    for module in m.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return m.cpu().eval()  # export, quantization and scoring all happen on the CPU


def stored_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Float parameters and buffers the inference graph can use, by PyTorch name, in state_dict
    order (BatchNorm's integer ``num_batches_tracked`` is not needed at inference)."""
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


def reconstruction_errors(model: nn.Module) -> dict[str, float | None]:
    """Module path -> relative reconstruction error recorded by the last hooi init (None: scratch)."""
    return {name: tw.init_error for name, _, tw in tucker_layers(model)}


# --------------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------------
def target_variance(shape: Sequence[int], scheme: str = "kaiming") -> float:
    """Weight variance of the ``scheme`` for a Linear/Conv weight of ``shape`` (out, in, *kernel)."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    fan_in = shape[1] * receptive if len(shape) > 1 else shape[0]
    fan_out = shape[0] * receptive
    if scheme == "kaiming":
        return 2.0 / fan_in
    if scheme == "glorot":
        return 2.0 / (fan_in + fan_out)
    raise PlanError(f"scratch init scheme must be one of {SCHEMES}, got {scheme!r}")


def _uniform_(t: Tensor, var: float, generator: torch.Generator | None) -> None:
    a = math.sqrt(3.0 * var)
    with torch.no_grad():
        t.copy_((torch.rand(t.shape, generator=generator, dtype=torch.float64) * 2 - 1) * a)


def _terms(tw: TuckerWeight) -> int:
    """Number of core terms summed into one rebuilt element: prod(k), or r for CP."""
    return tw.core.shape[0] if tw.cp else math.prod(tw.core.shape)


def scratch_init_(tws: Sequence[TuckerWeight], modules: Sequence[nn.Module], scheme: str = "kaiming",
                  generator: torch.Generator | None = None) -> None:
    """Random init of ``tws`` (one per module; SCADA ones share a core) for the ``scheme`` variance."""
    targets = [target_variance(tuple(m.weight.shape), scheme) for m in modules]
    # entry variance s^2 giving Var(W) = target when core and all d factors share it
    balanced = [(t / _terms(tw)) ** (1.0 / (tw.order + 1)) for tw, t in zip(tws, targets)]
    core_var: dict[int, float] = {}
    by_core: dict[int, list[float]] = {}
    for tw, s2 in zip(tws, balanced):
        by_core.setdefault(id(tw.core), []).append(s2)
    for tw in tws:
        key = id(tw.core)
        if key not in core_var:
            core_var[key] = math.exp(sum(math.log(v) for v in by_core[key]) / len(by_core[key]))
            _uniform_(tw.core, core_var[key], generator)
    for tw, t in zip(tws, targets):
        fvar = (t / (_terms(tw) * core_var[id(tw.core)])) ** (1.0 / tw.order)
        for m in tw.factors:
            _uniform_(m, fvar, generator)


def _rel_error(tw: TuckerWeight, w: Tensor) -> float:
    with torch.no_grad():
        rebuilt = tw.dense()
        denom = torch.linalg.vector_norm(w.double())
        num = torch.linalg.vector_norm(rebuilt.double() - w.double())
    return float(num / denom) if denom > 0 else float(num)


def _set(param: nn.Parameter, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(param.dtype))


def _set_all(tw: TuckerWeight, core: np.ndarray, factors: Sequence[np.ndarray]) -> None:
    _set(tw.core, core)
    for p, f in zip(tw.factors, factors):
        _set(p, f)


def hooi_init_(tw: TuckerWeight, weight: Tensor) -> float:
    """Fit ``tw`` to the dense ``weight`` (HOSVD + HOOI; CP: CP-ALS); return the relative error."""
    t = weight.detach().cpu().double().numpy().reshape(tw.reshape)
    if tw.cp:
        _set_all(tw, *decompose.balance_cp(*decompose.cp_als(t, tw.core.shape[0])))
    else:
        _set_all(tw, *decompose.balance(*decompose.tucker_hooi(t, tw.core_dims)))
    return _rel_error(tw, weight)


def scada_hooi_init_(tws: Sequence[TuckerWeight], weights: Sequence[Tensor], sweeps: int = 20) -> list[float]:
    """Fit one shared core and per-layer factors to the dense ``weights``
    (:func:`adt.exporter.decompose.scada_als`); return per-layer relative errors."""
    targets = [w.detach().cpu().double().numpy().reshape(tw.reshape) for tw, w in zip(tws, weights)]
    core, factors = decompose.scada_als(targets, tws[0].core_dims, sweeps)
    _set(tws[0].core, core)
    for tw, fs in zip(tws, factors):
        for p, f in zip(tw.factors, fs):
            _set(p, f)
    return [_rel_error(tw, w) for tw, w in zip(tws, weights)]
