"""Read the four standard MNIST IDX files (gzip-compressed or not) with NumPy alone.

The folder comes from an explicit path, else the ``ADT_DATA`` environment variable; nothing is ever
downloaded. Headers are big-endian: magic 2049 (labels) / 2051 (images), count, then rows and cols.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from .format.errors import AdtError

__all__ = ["ENV_VAR", "FILES", "MEAN", "STD", "MnistError", "load_mnist", "normalize", "resolve_data_dir"]

ENV_VAR = "ADT_DATA"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Mean and standard deviation of the training pixels scaled to [0, 1]; every ADT model is trained
# and evaluated on (pixels / 255 - MEAN) / STD, so the runtime reproduces the training inputs exactly.
MEAN = 0.1307
STD = 0.3081


class MnistError(AdtError):
    """The MNIST folder is missing, incomplete or holds malformed IDX files."""


def resolve_data_dir(path: str | os.PathLike | None) -> Path:
    """``path`` if given, else $ADT_DATA; a one-line error naming both when neither is set."""
    chosen = path if path is not None else os.environ.get(ENV_VAR)
    if not chosen:
        raise MnistError(f"no MNIST folder given: pass --data DIR or set {ENV_VAR}")
    p = Path(chosen)
    if not p.is_dir():
        raise MnistError(f"MNIST folder {str(p)!r} does not exist")
    return p


def _open(folder: Path, stem: str) -> bytes:
    for name in (stem + ".gz", stem):
        f = folder / name
        if f.exists():
            try:
                return gzip.decompress(f.read_bytes()) if name.endswith(".gz") else f.read_bytes()
            except (OSError, EOFError) as exc:
                raise MnistError(f"{f}: cannot read ({exc})") from None
    raise MnistError(f"{folder}: missing {stem}.gz (the four MNIST IDX files are expected there)")


def _parse(raw: bytes, magic: int, what: str) -> np.ndarray:
    ndim = 3 if magic == 2051 else 1
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise MnistError(f"{what}: {len(raw)} bytes is too short for an IDX header")
    got = struct.unpack(">I", raw[:4])[0]
    if got != magic:
        raise MnistError(f"{what}: IDX magic is {got}, expected {magic}")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    n = int(np.prod(dims, dtype=np.int64))
    if len(raw) - head != n:
        raise MnistError(f"{what}: header declares {n} bytes of data, file has {len(raw) - head}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def load_mnist(path: str | os.PathLike | None = None, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [N, 28, 28], labels uint8 [N])`` of ``split`` ("train" or "test")."""
    if split not in FILES:
        raise MnistError(f"split must be 'train' or 'test', got {split!r}")
    folder = resolve_data_dir(path)
    img_stem, lbl_stem = FILES[split]
    images = _parse(_open(folder, img_stem), 2051, img_stem)
    labels = _parse(_open(folder, lbl_stem), 2049, lbl_stem)
    if len(images) != len(labels):
        raise MnistError(f"{split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], the exact input convention of ADT's MNIST models."""
    x = images.astype(np.float32)[:, None, :, :] / np.float32(255.0)
    return ((x - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)
