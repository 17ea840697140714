"""Eq. 13 fake quantization with a straight-through gradient (quantization-aware training).

:func:`fake_quant_ste` is the one fake quantizer of the exporter: Tucker cores and factors go
through it inside :class:`adt.exporter.factorize.TuckerWeight`, plain parameters (biases, BatchNorm
affine) through the :class:`PlainFakeQuant` parametrization. Its arithmetic is exactly
``adt.runtime.format.fake_quantize`` (the values the file will decode to), so a model trained through
it computes what the exported file computes.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from adt.runtime.format import ROUNDINGS

from .errors import PlanError

__all__ = ["QuantSpec", "fake_quant_ste", "PlainFakeQuant", "remove_plain_fake_quant"]


@dataclass(frozen=True)
class QuantSpec:
    """One Eq. 13 quantizer: ``q`` levels on [-b, b], values picking their level by ``rounding``."""

    q: int
    b: float
    rounding: str = "floor"

    def __call__(self, x: Tensor) -> Tensor:
        return fake_quant_ste(x, self.q, self.b, self.rounding)


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


class PlainFakeQuant(nn.Module):
    """Parametrization ``x -> fake_quant_ste(x, q, b)`` for a plain (non-Tucker) parameter."""

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        return self.spec(x)


def remove_plain_fake_quant(model: nn.Module) -> None:
    """Remove the plain-parameter fake quantizers, restoring the latent float values (in place)."""
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for attr in list(module.parametrizations.keys()):
            plist = module.parametrizations[attr]
            if len(plist) == 1 and isinstance(plist[0], PlainFakeQuant):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
