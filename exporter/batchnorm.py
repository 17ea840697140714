"""How the exporter stores BatchNorm: as the per-channel affine map it computes at inference.

In eval mode a BatchNorm layer computes ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, i.e.
``y = x * scale + shift`` with ``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale``.
The file stores ``scale`` and ``shift`` (one value per channel each), and the architecture computes
``Mul(x, scale)`` then ``Add(., shift)``; the four statistics are not stored.

Why not the four statistics: Eq. 13 quantizes linearly, and a small running variance (0.0028 in a
trained stem BatchNorm) shares its step with values hundreds of times larger: it rounds to 0, and
``1 / sqrt(0 + eps)`` multiplies that channel by up to 316 instead of 19. No quantization of the
statistics can be made safe without relying on ``eps``. ``scale`` and ``shift`` are the function
itself: their quantization error is a per-channel error of the layer's output, of the same order as
the weights' own, and nothing can collapse (each tensor gets its own quantizer: ``quantplan``).

Why not fold into the preceding Conv: a Tucker-stored weight cannot absorb a per-output-channel
scale (its balanced reshape mixes the channel index across modes), so one rule for every BatchNorm
is simpler and exact. The runtime may still fold ``Mul``/``Add`` into a preceding Conv at load time.

Only eval-mode BatchNorm with running statistics is exported (``track_running_stats=False`` normalizes
with the batch's own statistics at inference, which is not an affine map): :class:`ModelError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from .errors import ModelError
from .factorize import stored_tensors

__all__ = ["SCALE_SUFFIX", "SHIFT_SUFFIX", "AffineBatchNorm", "batchnorm_layers", "affine_tensors",
           "replaced_statistics", "batchnorm_ranks", "replace_with_affine_", "inference_tensors",
           "recalibrate_batchnorm_"]

SCALE_SUFFIX = "bn_scale"
SHIFT_SUFFIX = "bn_shift"
_STATS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class AffineBatchNorm:
    """One BatchNorm layer at ``path`` and the names of its stored ``scale``/``shift`` tensors."""

    path: str
    module: nn.modules.batchnorm._BatchNorm

    @property
    def scale_name(self) -> str:
        return f"{self.path}.{SCALE_SUFFIX}" if self.path else SCALE_SUFFIX

    @property
    def shift_name(self) -> str:
        return f"{self.path}.{SHIFT_SUFFIX}" if self.path else SHIFT_SUFFIX

    def stat_name(self, stat: str) -> str:
        return f"{self.path}.{stat}" if self.path else stat

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) as float32, computed in float64 from the layer's eval-mode statistics."""
        m = self.module
        var = m.running_var.detach().double()
        mean = m.running_mean.detach().double()
        gamma = m.weight.detach().double() if m.weight is not None else torch.ones_like(var)
        beta = m.bias.detach().double() if m.bias is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + float(m.eps))
        shift = beta - mean * scale
        return scale.float(), shift.float()


def batchnorm_layers(model: nn.Module) -> Iterator[AffineBatchNorm]:
    """Every BatchNorm layer of ``model`` (module order); refuses one that normalizes with batch statistics."""
    for path, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_var is None or m.running_mean is None:
                raise ModelError(f"{path or 'the model'}: BatchNorm without running statistics "
                                 "(track_running_stats=False) normalizes with each batch's statistics; "
                                 "it has no fixed inference function to store")
            yield AffineBatchNorm(path, m)


def affine_tensors(model: nn.Module, ranks: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """``{scale_name: scale, shift_name: shift}`` of every BatchNorm layer, shaped ``(C, 1, ..., 1)``
    to broadcast over an input of rank ``ranks[path]`` (ONNX aligns shapes from the right); a layer
    whose rank is not given gets ``(C, 1, 1)`` for BatchNorm2d, ``(C, 1, 1, 1)`` for 3d and ``(C,)`` for 1d."""
    out: dict[str, torch.Tensor] = {}
    for bn in batchnorm_layers(model):
        scale, shift = bn.scale_shift()
        rank = (ranks or {}).get(bn.path)
        if rank is None:
            rank = {nn.BatchNorm2d: 4, nn.BatchNorm3d: 5}.get(type(bn.module), 2)
        shape = (scale.numel(),) + (1,) * max(rank - 2, 0)
        out[bn.scale_name] = scale.reshape(shape)
        out[bn.shift_name] = shift.reshape(shape)
    return out


def replaced_statistics(model: nn.Module) -> set[str]:
    """The state_dict names the affine tensors replace (never stored)."""
    return {bn.stat_name(s) for bn in batchnorm_layers(model) for s in _STATS}


def batchnorm_ranks(model: nn.Module, examples: tuple[torch.Tensor, ...]) -> dict[str, int]:
    """Input rank of every BatchNorm layer, from one forward pass of ``examples`` (eval mode)."""
    ranks: dict[str, int] = {}
    hooks = []
    for bn in batchnorm_layers(model):
        hooks.append(bn.module.register_forward_pre_hook(
            lambda mod, args, path=bn.path: ranks.__setitem__(path, args[0].dim())))
    try:
        with torch.no_grad():
            model(*examples)
    finally:
        for h in hooks:
            h.remove()
    return ranks


class _Affine(nn.Module):
    """``x * scale + shift`` with per-channel ``scale``/``shift`` shaped to broadcast: what the file's
    ``Mul``/``Add`` pair computes, for evaluating the file's values in torch."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, rank_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("scale", scale.reshape(rank_shape))
        self.register_buffer("shift", shift.reshape(rank_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 2)
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)


def replace_with_affine_(model: nn.Module, weights: Mapping[str, object]) -> None:
    """Replace, in place, every BatchNorm layer whose ``scale``/``shift`` are in ``weights`` by the
    affine map they define, so that torch computes exactly what the file's graph computes."""
    for bn in list(batchnorm_layers(model)):
        if bn.scale_name not in weights:
            continue
        scale = torch.as_tensor(np.asarray(weights[bn.scale_name], dtype=np.float32)).reshape(-1)
        shift = torch.as_tensor(np.asarray(weights[bn.shift_name], dtype=np.float32)).reshape(-1)
        parent_path, _, attr = bn.path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if not attr:
            raise ModelError("the model itself is a BatchNorm layer: nothing to export")
        setattr(parent, attr, _Affine(scale, shift, (-1,)))


def inference_tensors(frozen: nn.Module, ranks: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Every float tensor the exported graph reads, by name, in state_dict order: parameters and
    buffers, except that each BatchNorm's four statistics are replaced (at the position of the first)
    by its ``scale`` and ``shift`` (:func:`affine_tensors`). ``frozen``: a :func:`frozen_copy`."""
    affine = affine_tensors(frozen, ranks)
    owner = {bn.stat_name(s): bn for bn in batchnorm_layers(frozen) for s in _STATS}
    out: dict[str, torch.Tensor] = {}
    for name, t in stored_tensors(frozen).items():
        bn = owner.get(name)
        if bn is None:
            out[name] = t
        elif bn.scale_name not in out:
            out[bn.scale_name] = affine[bn.scale_name]
            out[bn.shift_name] = affine[bn.shift_name]
    return out


def recalibrate_batchnorm_(model: nn.Module, data: Iterable, batches: int = 20) -> int:
    """Re-estimate every BatchNorm's running statistics on up to ``batches`` batches of ``data``
    (an iterable of ``(x, y)`` or of ``x``), in place, by torch's rule (``torch.optim.swa_utils.update_bn``):
    one pass in which every BatchNorm normalizes with its batch's statistics, the running mean and
    (unbiased) variance becoming their plain averages over the batches (``momentum=None``). Use it
    after an initialisation that changed the layers before each BatchNorm (HOOI, any compression):
    the old statistics describe the uncompressed activations. Other layers run in eval mode (no dropout); no gradient.
    Returns the number of batches used."""
    layers = list(batchnorm_layers(model))
    if not layers:
        return 0
    was_training = {m: m.training for m in model.modules()}
    momenta = {bn.module: bn.module.momentum for bn in layers}
    used = 0
    try:
        model.eval()
        for bn in layers:
            bn.module.reset_running_stats()
            bn.module.momentum = None  # cumulative moving average = the plain mean over the batches
            bn.module.train()
        with torch.no_grad():
            for batch in data:
                if used >= batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(torch.as_tensor(x).float())
                used += 1
    finally:
        for m, t in was_training.items():
            m.train(t)
        for m, mom in momenta.items():
            m.momentum = mom
    if used == 0:
        raise ModelError("BatchNorm recalibration got no batches of data")
    return used
