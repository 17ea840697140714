"""MNIST as PyTorch loaders, read with the runtime's torch-free IDX reader.

Inputs are ``adt.runtime.mnist.normalize`` d exactly as the runtime feeds them at inference, so the
accuracy measured here and the one the runtime measures on a ``.adt`` file are comparable.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from adt.runtime.mnist import load_mnist, normalize

__all__ = ["SeededLoader", "tensor_loader", "mnist_loaders", "mnist_test_set"]


def _tensors(data_dir: str | os.PathLike | None, split: str, subset: int | None, seed: int):
    images, labels = load_mnist(data_dir, split)
    if subset is not None and subset < len(images):
        # a fixed random subset (not the first N images) so class balance is kept
        idx = np.sort(np.random.default_rng(seed).choice(len(images), size=int(subset), replace=False))
        images, labels = images[idx], labels[idx]
    return torch.from_numpy(normalize(images)), torch.from_numpy(labels.astype(np.int64))


class SeededLoader:
    """A shuffling :class:`~torch.utils.data.DataLoader` whose order is set per epoch: it is an
    :class:`adt.exporter.fit.EpochSeeded` loader, so :func:`adt.exporter.fit.train` reseeds it before
    every epoch and a resumed run sees the same batches as an uninterrupted one."""

    def __init__(self, loader: DataLoader, generator: torch.Generator) -> None:
        self.loader, self.generator = loader, generator

    def set_epoch(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __iter__(self) -> Iterator:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def tensor_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool,
                  seed: int = 0) -> DataLoader | SeededLoader:
    """Whole-batch loader over in-memory tensors (one index op per batch, not per sample); a
    shuffling one is a :class:`SeededLoader`."""
    ds = TensorDataset(x, y)
    gen = torch.Generator()
    gen.manual_seed(seed)
    sampler = RandomSampler(ds, generator=gen) if shuffle else SequentialSampler(ds)
    loader = DataLoader(ds, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)
    return SeededLoader(loader, gen) if shuffle else loader


def mnist_loaders(data_dir: str | os.PathLike | None = None, batch_size: int = 256, subset: int | None = None,
                  seed: int = 0, test_subset: int | None = None) -> tuple[SeededLoader, DataLoader]:
    """``(train_loader, test_loader)`` of normalized MNIST ([N, 1, 28, 28] float32, int64 labels).

    ``data_dir``: the IDX folder, else $ADT_DATA (one-line MnistError when neither is set).
    ``subset``: use a seeded random subset of that many training images; ``test_subset`` likewise
    for the test split (default: the full test split)."""
    xtr, ytr = _tensors(data_dir, "train", subset, seed)
    xte, yte = _tensors(data_dir, "test", test_subset, seed)
    return tensor_loader(xtr, ytr, batch_size, True, seed), tensor_loader(xte, yte, 1000, False)


def mnist_test_set(data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    """The normalized MNIST test set ([N,1,28,28] float32, labels int64) from ``data_dir``/$ADT_DATA."""
    images, labels = load_mnist(data_dir, "test")
    return normalize(images), labels.astype(np.int64)
