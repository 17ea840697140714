"""A user's data as training and test loaders, preprocessed by the input convention the file records.

    from adt.exporter.datasets import load_dataset
    data = load_dataset("cifar.npz", batch_size=128)     # or an IDX folder, an image folder, "mydata.py:make"
    train(model, data.train_loader, TrainConfig(...))    # model input: data.input_shape, data.num_classes
    export_adt(model, "m.adt", input_shape=data.input_shape, input_convention=data.convention,
               labels=data.classes)

**The round trip.** For the file forms (see :mod:`adt.runtime.datasets`) the loaders hold
``data.convention.apply(raw)``: the very function the runtime applies to raw samples
(``Model.predict``, ``adt run --images/--input/--data``), so the file's convention is the training
pipeline by construction. The convention:

- ``divisor``: 255 for uint8 data, 1 for float data, unless given;
- ``mean``/``std``: per channel, computed from the whole training split (before ``subset``) of
  ``raw / divisor`` (population std; a channel with std 0 gets 1; flat NC data gets one mean and
  std over all features), unless given. An MNIST-style IDX folder takes MNIST's mean and std
  (:data:`adt.runtime.mnist.MEAN`/``STD``) instead, so that for MNIST the convention is exactly
  :meth:`InputConvention.mnist` and existing MNIST results do not change;
- ``color``: how image files are decoded: the image folder's mode; for uint8 arrays of 1 or 3 channels
  "L" or "RGB" (assumed RGB channel order); None for float or other data (then ``adt run --images`` is
  refused). ``resize``: the resize mode given (IDX folders: "stretch", as ``mnist()``), else None:
  images given at inference must then have the training size.

**``module:factory``** (``pkg.mod:make`` or ``path/to/file.py:make``): ``make()`` returns
``(train_dataset, test_dataset)``, torch datasets yielding ``(x, y)`` samples already preprocessed
(they are used as they are). ADT cannot know that preprocessing, so the convention is None (the file
records none, and the runtime then needs model-ready inputs) unless ``mean``, ``std`` or ``divisor``
is given: then it records uint8 raw samples (float32 when ``divisor`` is 1) in ``layout`` (default
NCHW) that become the factory's samples by ``/divisor`` (default 255), ``-mean``, ``/std``.
"""
from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, Subset, TensorDataset

from adt.runtime.datasets import DatasetError, RawData, read_raw
from adt.runtime.mnist import MEAN as MNIST_MEAN, STD as MNIST_STD
from adt.runtime.preprocess import InputConvention

from .data import SeededLoader, tensor_loader
from .user_code import first_line as _first_line
from .user_code import import_file
from .user_code import on_sys_path as _on_sys_path

__all__ = ["Dataset", "DatasetError", "MAX_TENSOR_BYTES", "channel_stats", "is_factory_spec", "load_dataset",
           "make_convention"]

#: Default limit on the preprocessed (float32) training or test tensor, checked before allocating.
MAX_TENSOR_BYTES = 16 * 1024 ** 3


@dataclass
class Dataset:
    """Loaders of a user's data and what the model and the file need to know about it.

    ``train_loader``: shuffling, reseeded per epoch by :func:`adt.exporter.fit.train`
    (:class:`~adt.exporter.data.SeededLoader`); ``test_loader``: in order. Both yield
    ``(x float32 [B, *input_shape], y int64 [B])``. ``input_shape``: one model input sample, (C, H, W)
    (or (F,) for flat data). ``convention``: what the file records (None for a factory without
    mean/std/divisor). ``raw``: the raw arrays (None for a factory). ``kind``: "idx", "npz",
    "images" or "factory". ``notes``: lines for the user (an inferred layout, a seeded split, ...)."""

    train_loader: SeededLoader
    test_loader: DataLoader
    input_shape: tuple[int, ...]
    convention: InputConvention | None
    classes: list[str] | None
    num_classes: int
    kind: str
    source: str
    raw: RawData | None = None
    notes: tuple[str, ...] = field(default=())


def _floats(name: str, value: float | Sequence[float] | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):  # "0.5" or "0.49,0.48,0.45", as a flag gives it
        value = [v for v in value.replace(" ", "").split(",") if v]
    vals = (value,) if isinstance(value, (int, float, np.integer, np.floating)) else tuple(value)
    try:
        return tuple(float(v) for v in vals)
    except (TypeError, ValueError):
        raise DatasetError(f"{name} must be a number or one number per channel, got {value!r}") from None


def _channel_axis(layout: str, ndim: int) -> int | None:
    """The channel axis of a raw batch (None: one set of statistics: NHW, and NC, whose thousands of
    features would not fit a metadata value as per-feature statistics)."""
    return {"NHWC": ndim - 1, "NCHW": 1}.get(layout)


def channel_stats(x: np.ndarray, layout: str, divisor: float,
                  chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``float32(x) / float32(divisor)`` (float64 sums over
    chunks of samples, two passes, so memory stays one chunk). A std of 0 is reported as 1."""
    axis = _channel_axis(layout, x.ndim)
    reduce = tuple(a for a in range(x.ndim) if a != axis)
    d = np.float32(divisor)
    count = x.size // (x.shape[axis] if axis is not None else 1)
    total = 0.0
    for i in range(0, len(x), chunk):
        total = total + (x[i:i + chunk].astype(np.float32) / d).astype(np.float64).sum(axis=reduce)
    mean = np.atleast_1d(total / count)
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    m = mean.reshape(shape)
    sq = 0.0
    for i in range(0, len(x), chunk):
        sq = sq + np.square((x[i:i + chunk].astype(np.float32) / d).astype(np.float64) - m).sum(axis=reduce)
    std = np.sqrt(np.atleast_1d(sq / count))
    std = np.where(std > 0, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def make_convention(raw: RawData, *, mean: float | Sequence[float] | None = None,
                    std: float | Sequence[float] | None = None, divisor: float | None = None,
                    color: str | None = None, resize: str | None = None) -> InputConvention:
    """The input convention of ``raw``'s data (see the module docstring for the defaults); the
    training split gives the statistics, so ``raw.x_train`` must be there unless mean and std are."""
    uint8 = raw.dtype == "uint8"
    div = float(divisor) if divisor is not None else (255.0 if uint8 else 1.0)
    m, s = _floats("mean", mean), _floats("std", std)
    if raw.kind == "idx" and m is None and s is None:
        m, s = (MNIST_MEAN,), (MNIST_STD,)
    if m is None or s is None:
        if raw.x_train is None:
            raise DatasetError(f"{raw.source}: mean and std must be given when there is no training split")
        cm, cs = channel_stats(raw.x_train, raw.layout, div)
        m, s = m or cm, s or cs
    image_layout = raw.layout in ("NHWC", "NCHW", "NHW")
    if color is None:
        color = raw.color
    if color is None and uint8 and image_layout and raw.channels in (1, 3):
        color = "L" if raw.channels == 1 else "RGB"
    if resize is None:
        resize = raw.resize if raw.resize is not None else ("stretch" if raw.kind == "idx" else None)
    if color is None:
        resize = None
    return InputConvention(layout=raw.layout, dtype=raw.dtype, shape=raw.sample_shape, divisor=div, mean=m,
                           std=s, color=color, resize=resize)


def _subset_idx(n: int, subset: int | None, seed: int) -> np.ndarray | None:
    """A fixed random subset, sorted (as :func:`adt.exporter.data.mnist_loaders` takes it)."""
    if subset is None or subset >= n:
        return None
    if subset < 1:
        raise DatasetError(f"subset must be >= 1, got {subset}")
    return np.sort(np.random.default_rng(seed).choice(n, size=int(subset), replace=False))


def _preprocessed(conv: InputConvention, x: np.ndarray, what: str, max_bytes: int,
                  chunk: int = 8192) -> torch.Tensor:
    """``conv.apply(x)`` as a tensor, computed a chunk at a time into one array (the convention is
    per sample, so the values are those of one call on the whole array)."""
    shape = (len(x), *conv.model_shape)
    need = 4 * math.prod(shape)
    if need > max_bytes:
        raise DatasetError(f"{what}: the preprocessed samples {list(shape)} float32 need {need:,} bytes, over the "
                           f"limit of {max_bytes:,} (use a subset)")
    out = np.empty(shape, np.float32)
    for i in range(0, len(x), chunk):
        out[i:i + chunk] = conv.apply(x[i:i + chunk])
    return torch.from_numpy(out)


def load_dataset(spec: str | os.PathLike, *, layout: str | None = None, image_size: Any = None,
                 color: str | None = None, resize: str | None = None,
                 mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                 divisor: float | None = None, subset: int | None = None, test_subset: int | None = None,
                 seed: int = 0, batch_size: int = 256, test_batch_size: int = 1000,
                 test_fraction: float | None = None, progress: bool = True,
                 max_bytes: int = MAX_TENSOR_BYTES) -> Dataset:
    """The data ``spec`` names, as loaders (see the module docstring).

    ``spec``: an IDX folder, an .npz, an image folder (:func:`adt.runtime.datasets.read_raw`) or
    ``module:factory``. ``layout``: of the raw samples (None: inferred). ``image_size``: H,W (or one
    side) image files are brought to, with ``resize`` ("stretch" / "center-crop"; None: they must
    all have one size) and ``color`` ("L" / "RGB"). ``mean``/``std``/``divisor``: override the
    convention's (one value or one per channel). ``subset``/``test_subset``: a seeded random subset
    of that many training / test samples. ``seed``: the subset, the split of an image folder without
    a test folder, and the training order. ``test_fraction``: that split's share (default
    :data:`adt.runtime.datasets.TEST_FRACTION`). ``max_bytes``: limit on each preprocessed tensor."""
    if batch_size < 1 or test_batch_size < 1:
        raise DatasetError(f"batch sizes must be >= 1, got {batch_size} and {test_batch_size}")
    if is_factory_spec(spec):
        return _from_factory(str(spec), layout=layout, color=color, resize=resize, mean=mean, std=std,
                             divisor=divisor, subset=subset, test_subset=test_subset, seed=seed,
                             batch_size=batch_size, test_batch_size=test_batch_size)
    kwargs: dict[str, Any] = {} if test_fraction is None else {"test_fraction": test_fraction}
    # color and resize steer decoding for image folders; for arrays they are only recorded
    raw = read_raw(spec, layout=layout, image_shape=image_size, color=color, resize=resize, seed=seed,
                   progress=progress, **kwargs)
    conv = make_convention(raw, mean=mean, std=std, divisor=divisor, color=color, resize=resize)
    assert raw.x_train is not None and raw.y_train is not None
    xtr, ytr = raw.x_train, raw.y_train
    idx = _subset_idx(len(xtr), subset, seed)
    if idx is not None:
        xtr, ytr = xtr[idx], ytr[idx]
    xte, yte = raw.x_test, raw.y_test
    idx = _subset_idx(len(xte), test_subset, seed)
    if idx is not None:
        xte, yte = xte[idx], yte[idx]
    train = tensor_loader(_preprocessed(conv, xtr, f"{raw.source} (train)", max_bytes), torch.from_numpy(ytr),
                          batch_size, True, seed)
    test = tensor_loader(_preprocessed(conv, xte, f"{raw.source} (test)", max_bytes), torch.from_numpy(yte),
                         test_batch_size, False)
    return Dataset(train, test, tuple(conv.model_shape), conv, raw.classes, raw.num_classes, raw.kind, raw.source,
                   raw, raw.notes)


# ------------------------------------------------------------------------------------ module:factory


def is_factory_spec(spec: str | os.PathLike) -> bool:
    """True for ``pkg.mod:NAME`` / ``path/file.py:NAME`` (a path that exists is never a factory)."""
    if not isinstance(spec, str) or Path(spec).exists():
        return False
    left, colon, right = spec.rpartition(":")
    return bool(colon and left and right.isidentifier())


def _import_factory(spec: str) -> Any:
    """The callable NAME of ``pkg.mod:NAME`` or ``path/file.py:NAME`` (the file's folder, or the
    working folder for a module name, is on ``sys.path`` while it is imported and called)."""
    left, _, name = spec.rpartition(":")
    if left.endswith(".py") or "/" in left or os.sep in left:
        path = Path(left).expanduser()
        if not path.is_file():
            raise DatasetError(f"--data {spec!r}: file {str(path)!r} does not exist")
        with _on_sys_path(str(path.resolve().parent)):
            try:
                mod = import_file(path, "data")
            except Exception as exc:  # noqa: BLE001 - the user's file: any failure is one line
                raise DatasetError(f"--data {spec!r}: importing {str(path)!r} failed: {_first_line(exc)}") from exc
        where = repr(str(path))
    else:
        if not all(p.isidentifier() for p in left.split(".")):
            raise DatasetError(f"--data {spec!r}: {left!r} is neither a .py file nor a dotted module name, and "
                               "no such file or folder exists")
        with _on_sys_path(os.getcwd(), last=True):
            try:
                mod = importlib.import_module(left)
            except Exception as exc:  # noqa: BLE001 - the user's module: any failure is one line
                raise DatasetError(f"--data {spec!r}: importing {left!r} failed: {_first_line(exc)}") from exc
        where = f"module {left!r}"
    fn = getattr(mod, name, None)
    if fn is None or not callable(fn):
        raise DatasetError(f"--data {spec!r}: {where} has no callable {name!r}")
    return fn


def _labels_of(ds: Any) -> np.ndarray:
    """All labels of a torch dataset: its ``targets`` (torchvision), a TensorDataset's second tensor,
    a Subset's through its indices, else one pass over the samples."""
    if isinstance(ds, Subset):
        return _labels_of(ds.dataset)[np.asarray(ds.indices)]
    targets = getattr(ds, "targets", None)
    if targets is not None:
        return np.asarray(targets).reshape(-1)
    if isinstance(ds, TensorDataset) and len(ds.tensors) >= 2:
        return ds.tensors[1].numpy().reshape(-1)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))])


def _check_torch_dataset(spec: str, ds: Any, which: str) -> tuple[int, ...]:
    if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
        raise DatasetError(f"--data {spec!r}: the {which} dataset is a {type(ds).__name__}, expected a torch "
                           "Dataset (with __len__ and __getitem__)")
    if len(ds) == 0:
        raise DatasetError(f"--data {spec!r}: the {which} dataset is empty")
    sample = ds[0]
    if not isinstance(sample, (tuple, list)) or len(sample) != 2:
        raise DatasetError(f"--data {spec!r}: the {which} dataset's samples are {type(sample).__name__}, "
                           "expected (x, y) pairs")
    return tuple(torch.as_tensor(sample[0]).shape)


def _from_factory(spec: str, *, layout: str | None, color: str | None, resize: str | None,
                  mean: Any, std: Any, divisor: float | None, subset: int | None, test_subset: int | None,
                  seed: int, batch_size: int, test_batch_size: int) -> Dataset:
    fn = _import_factory(spec)
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - the user's factory: any failure is one line
        raise DatasetError(f"--data {spec!r}: calling it failed: {_first_line(exc)}") from exc
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise DatasetError(f"--data {spec!r} returned a {type(out).__name__}, expected (train_dataset, test_dataset)")
    train_ds, test_ds = out
    shape = _check_torch_dataset(spec, train_ds, "training")
    test_shape = _check_torch_dataset(spec, test_ds, "test")
    if test_shape != shape:
        raise DatasetError(f"--data {spec!r}: test samples have shape {list(test_shape)}, training samples "
                           f"{list(shape)}")
    classes = getattr(train_ds, "classes", None)
    classes = [str(c) for c in classes] if isinstance(classes, (list, tuple)) and classes else None
    if classes is not None:
        n_cls = len(classes)
    else:
        n_cls = int(max(_labels_of(train_ds).max(), _labels_of(test_ds).max())) + 1
    conv = None
    if mean is not None or std is not None or divisor is not None:
        conv = _factory_convention(shape, layout, color, resize, mean, std, divisor)
    idx = _subset_idx(len(train_ds), subset, seed)
    if idx is not None:
        train_ds = Subset(train_ds, idx.tolist())
    idx = _subset_idx(len(test_ds), test_subset, seed)
    if idx is not None:
        test_ds = Subset(test_ds, idx.tolist())
    gen = torch.Generator()
    gen.manual_seed(seed)
    train = SeededLoader(DataLoader(train_ds, batch_size=batch_size, sampler=RandomSampler(train_ds, generator=gen)),
                         gen)
    test = DataLoader(test_ds, batch_size=test_batch_size, shuffle=False)
    note = (f"--data {spec}: samples are used as the factory gives them; "
            + ("the file records no input convention (pass mean/std to record one)" if conv is None
               else f"the file records {conv.describe()}"))
    return Dataset(train, test, shape, conv, classes, n_cls, "factory", spec, None, (note,))


def _factory_convention(shape: tuple[int, ...], layout: str | None, color: str | None, resize: str | None,
                        mean: Any, std: Any, divisor: float | None) -> InputConvention:
    """The convention a factory's (already preprocessed) samples stand for, from the flags."""
    div = 255.0 if divisor is None else float(divisor)
    dtype = "float32" if div == 1.0 else "uint8"
    if len(shape) == 1:
        lay, raw_shape = "NC", shape
    elif len(shape) == 3:
        lay = layout or "NCHW"
        c, h, w = shape
        raw_shape = {"NCHW": shape, "NHWC": (h, w, c), "NHW": (h, w)}.get(lay, ())
        if not raw_shape or (lay == "NHW" and c != 1):
            raise DatasetError(f"layout {lay} cannot hold model inputs of shape {list(shape)}")
    else:
        raise DatasetError(f"factory samples have shape {list(shape)}; a convention needs (C, H, W) or (F,)")
    if color is None and dtype == "uint8" and lay != "NC" and shape[0] in (1, 3):
        color = "L" if shape[0] == 1 else "RGB"
    return InputConvention(layout=lay, dtype=dtype, shape=tuple(raw_shape), divisor=div,
                           mean=_floats("mean", mean) or (0.0,), std=_floats("std", std) or (1.0,),
                           color=color, resize=resize if color is not None else None)

