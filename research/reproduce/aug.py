"""Random-translation augmentation for MNIST training batches (a recipe lever the paper does not
mention; every run that uses it says so in its record: ``augment`` = max shift in pixels)."""
from __future__ import annotations

from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

__all__ = ["random_shift", "ShiftLoader"]


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift every image of ``x`` [N,C,H,W] by its own random integer (dy, dx) in [-s, s], zero-padded
    with the background value (the minimum of the batch, i.e. normalized black)."""
    n, _, h, w = x.shape
    s = int(max_shift)
    bg = float(x.min())
    padded = F.pad(x, (s, s, s, s), value=bg)
    dy = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * s)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    return torch.gather(out, 3, cols)


class ShiftLoader:
    """Wraps a loader of (x, y) batches; yields randomly shifted x. Forwards ``len`` and the
    ``adt_generator`` attribute so the exporter's train() still reseeds the data order per epoch."""

    def __init__(self, loader: Iterable, max_shift: int, seed: int = 0) -> None:
        self.loader, self.max_shift = loader, int(max_shift)
        self.gen = torch.Generator()
        self.gen.manual_seed(seed + 7919)
        self.adt_generator = getattr(loader, "adt_generator", None)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        for x, y in self.loader:
            yield random_shift(x, self.max_shift, self.gen), y
