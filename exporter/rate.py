"""A differentiable estimate of how many bits a model's stored symbols cost (rate-aware QAT).

A file stores each quantizer group's symbols with one Huffman code, so its payload is close to
``sum over groups of N_g * H(P_g)`` bits, where ``P_g`` is the histogram of the group's symbols
(results/NOTES.md: ADT's files sit within 0.4-0.6% of that entropy). The histogram of hard symbols
has no gradient, so :class:`RateEstimate` uses a soft one: each latent value is assigned to every
level of its group's Eq. 13 grid with a softmax of its squared distance, in units of the step, over
``temperature`` (the soft-histogram entropy of DeepCABAC and the entropy-constrained quantization
papers). Adding ``weight * bits`` to the training loss trades bits against loss: values leave sparse
levels for crowded ones (zero among them), which is what a Huffman code rewards.

The estimate covers what training can change (cores, factors, TT cores, trained plain parameters);
BatchNorm running statistics are constant during QAT and left out. :meth:`RateEstimate.hard_bits`
gives the entropy of the symbols the file would store now, for logging.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from adt.runtime.format import dequantize, entropy_bits, quantize

from .errors import PlanError
from .factorize import tucker_layers
from .quantplan import QuantPlan, weight_name
from .tensor_train import tt_layers

__all__ = ["soft_entropy_bits", "RateEstimate"]


def soft_entropy_bits(x: Tensor, q: int, b: float, temperature: float = 0.5) -> Tensor:
    """``N * H(P)`` in bits, where ``P`` is the soft histogram of the N values of ``x`` over the
    ``q`` levels of the Eq. 13 grid on [-b, b]: value i goes to level k with weight
    ``softmax_k(-((x_i - c_k) / (temperature * step))^2 / 2)``. Differentiable in ``x``.

    Only the levels within ``6 * temperature + 1`` steps of each value's nearest level take part (the
    rest weigh under e^-18 of the nearest), so memory and time grow with N, not N x Q."""
    if temperature <= 0:
        raise PlanError(f"rate temperature must be > 0, got {temperature}")
    flat = x.reshape(-1)
    n = flat.numel()
    if n == 0:
        return x.new_zeros(())
    # the file's own levels (FORMAT.md "Dequantization"), float64 like fake_quant_ste
    levels = torch.from_numpy(dequantize(np.arange(q), q, b).astype(np.float64)).to(flat.device)
    step = 2.0 * float(np.float32(b)) / q
    half = int(math.ceil(6 * temperature)) + 1
    nearest = torch.round((flat.detach().double() - float(levels[0])) / step).clamp(0, q - 1).long()
    idx = nearest.unsqueeze(1) + torch.arange(-half, half + 1, device=flat.device)
    inside = (idx >= 0) & (idx < q)
    idx = idx.clamp(0, q - 1)
    dist = (flat.unsqueeze(1).double() - levels[idx]) / (temperature * step)
    weights = torch.softmax((-0.5 * dist ** 2).masked_fill(~inside, float("-inf")), dim=1)
    p = torch.zeros(q, dtype=weights.dtype, device=flat.device).index_add_(0, idx.reshape(-1), weights.reshape(-1)) / n
    h = -(p * torch.log2(p.clamp_min(1e-12))).sum()
    return (n * h).to(x.dtype)


@dataclass
class _Group:
    label: str
    q: int
    b: float
    rounding: str
    tensors: list[Tensor]


class RateEstimate:
    """The estimated payload bits of ``model``'s trainable stored values under ``plan``."""

    def __init__(self, model: nn.Module, plan: QuantPlan, temperature: float = 0.5) -> None:
        self.temperature = float(temperature)
        if self.temperature <= 0:
            raise PlanError(f"rate temperature must be > 0, got {temperature}")
        members: dict[int, list[Tensor]] = {}
        seen: set[int] = set()

        def add(group: int, t: Tensor) -> None:
            if id(t) not in seen:  # a SCADA shared core is stored (and counted) once
                seen.add(id(t))
                members.setdefault(group, []).append(t)

        factored: set[str] = set()
        for path, _, tw in tucker_layers(model):
            name = weight_name(path)
            factored.add(name)
            if name in plan.core_group:  # a SCADA core is keyed by its first layer only
                add(plan.core_group[name], tw.core)
            for m in tw.factors:
                add(plan.param_group[name], m)
        for path, _, tt in tt_layers(model):
            factored.add(weight_name(path))
            for g in tt.cores:
                add(plan.param_group[weight_name(path)], g)
        for name, group in plan.param_group.items():
            t = None if name in factored else _latent(model, name)
            if t is not None and t.requires_grad:
                add(group, t)
        self.groups = [_Group(g.label, g.q, g.b, plan.rounding, members[i])
                       for i, g in enumerate(plan.groups) if i in members]

    @property
    def count(self) -> int:
        """How many values the estimate covers."""
        return sum(t.numel() for g in self.groups for t in g.tensors)

    def __call__(self) -> Tensor:
        """Estimated bits (a scalar tensor with a gradient to every covered value)."""
        total = None
        for g in self.groups:
            x = torch.cat([t.reshape(-1) for t in g.tensors])
            bits = soft_entropy_bits(x, g.q, g.b, self.temperature)
            total = bits if total is None else total + bits
        return total if total is not None else torch.zeros(())

    def hard_bits(self) -> float:
        """``sum N_g * H(hard symbol histogram)``: what an ideal entropy coder would pay now."""
        total = 0.0
        for g in self.groups:
            x = np.concatenate([t.detach().cpu().float().numpy().reshape(-1) for t in g.tensors])
            total += entropy_bits(quantize(x, g.q, g.b, g.rounding)) * x.size
        return total


def _latent(model: nn.Module, name: str) -> Tensor | None:
    """The trained float tensor behind state_dict entry ``name`` (behind a fake quantizer if one is
    registered); None for a buffer or a name that is no parameter."""
    path, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        return None
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    return module._parameters.get(attr)
