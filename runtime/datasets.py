"""A user's labelled data as raw arrays, torch-free: what ``--data`` names, read the same way by the
exporter (to train) and by the runtime (``adt run --data``, to score).

Three forms, told apart by what the path is:

- **an MNIST-style IDX folder** (``train-``/``t10k-images-idx3-ubyte`` and ``-labels-idx1-ubyte``,
  gzip-compressed or not: MNIST, Fashion-MNIST, any image size and class count), read by
  :func:`adt.runtime.mnist.load_mnist`;
- **an .npz file** with ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``classes``
  (class names, a 1-D string array), loaded with ``allow_pickle=False``. ``x_*`` are uint8 or float
  (float16/float64 are converted to float32; no NaN or infinity), [N, H, W, C], [N, C, H, W],
  [N, H, W] or [N, F]; ``y_*`` are integers in [0, number of classes), one per sample;
- **an image folder**: ``train/`` and ``test/`` (or ``val/``) sub-folders, each in torchvision's
  ``ImageFolder`` layout (one sub-folder per class, classes sorted by name); a folder holding only
  class folders is split per class, ``test_fraction`` of each class (rounded, at least one image
  when a class has two or more) to the test split, chosen with a seeded generator
  (``numpy.random.default_rng(seed)``), so the same folder and seed always give the same split.

**Raw samples.** Arrays are returned as stored (uint8 or float32), in ``RawData.layout`` order,
one of :data:`adt.runtime.preprocess.LAYOUTS`. The layout is the one given, else read from the array:
[N, F] is "NC" (flat features); [N, H, W] is "NHW" (one channel, no channel axis: IDX files,
grayscale arrays); for [N, A, B, C] a last axis of 1 or 3 means "NHWC" and a second axis of 1 or 3
means "NCHW", and when both or neither hold a :class:`DatasetError` asks for the layout. A given
layout rearranges without changing a value: a channel axis of 1 is added (NHW data asked as NHWC or
NCHW) or dropped (4-D data asked as NHW), and NC flattens each sample. Image files give NHWC samples
unless another image layout is asked for. Labels are int64. Every error is a :class:`DatasetError`
naming the path (and key), the expected and the actual value.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .images import (
    MAX_TOTAL_BYTES, DatasetError, ImageGeometry, PillowMissingError, image_geometry, load_image_folder,
)
from .preprocess import LAYOUTS, AdtPreprocessError
from .mnist import FILES as IDX_FILES, load_mnist

__all__ = [
    "DatasetError", "KINDS", "LAYOUTS", "NPZ_KEYS", "PillowMissingError", "RawData", "TEST_DIRS",
    "TEST_FRACTION", "data_kind", "infer_layout", "read_raw", "read_test_split",
]

#: The forms ``--data`` accepts as files or folders (``module:factory`` is the exporter's).
KINDS = ("idx", "npz", "images")
#: The arrays an .npz must hold (``classes`` is optional).
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Sub-folders of an image folder taken as its test split, in this order of preference.
TEST_DIRS = ("test", "val")
#: Default share of each class held out when an image folder has no test split of its own.
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class RawData:
    """Labelled raw data: arrays as stored, samples in ``layout`` order.

    ``x_train``/``y_train`` are None when only a test split was read (:func:`read_test_split`).
    ``classes``: class names (IDX files and .npz without ``classes`` have none); ``num_classes``:
    their count, else the largest label + 1. ``color``/``resize``: how image files were decoded
    (None for arrays). ``notes``: one line per thing decided for the user (an inferred layout, a
    seeded split), for the CLI to print."""

    x_train: np.ndarray | None
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    layout: str
    classes: list[str] | None
    num_classes: int
    kind: str
    source: str
    color: str | None = None
    resize: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One raw sample's shape in ``layout`` order."""
        return tuple(int(d) for d in self.x_test.shape[1:])

    @property
    def dtype(self) -> str:
        """"uint8" or "float32"."""
        return str(self.x_test.dtype)

    @property
    def channels(self) -> int:
        """Channels of a sample (1 for NHW; the features of an NC vector)."""
        s = self.sample_shape
        return {"NHWC": s[-1], "NCHW": s[0], "NHW": 1, "NC": s[0]}[self.layout]


# ---------------------------------------------------------------------------------------- forms


def _is_idx_folder(p: Path) -> bool:
    stems = [s for pair in IDX_FILES.values() for s in pair]
    return any((p / s).exists() or (p / (s + ".gz")).exists() for s in stems)


def data_kind(spec: str | os.PathLike) -> str:
    """Which form ``spec`` is: "idx", "npz" or "images" (a DatasetError if it is none of them)."""
    p = Path(spec)
    if not p.exists():
        raise DatasetError(f"data {str(p)!r} does not exist (expected an IDX folder, an .npz file or an image folder)")
    if p.is_dir():
        return "idx" if _is_idx_folder(p) else "images"
    if zipfile.is_zipfile(p):
        return "npz"
    raise DatasetError(f"data file {str(p)!r} is not an .npz (zip) archive; give an .npz with "
                       f"{', '.join(NPZ_KEYS)}, an IDX folder or an image folder")


def read_raw(spec: str | os.PathLike, *, layout: str | None = None, image_shape: Any = None,
             color: str | None = None, resize: str | None = None, seed: int = 0,
             test_fraction: float = TEST_FRACTION, max_bytes: int = MAX_TOTAL_BYTES,
             progress: bool = True) -> RawData:
    """Both splits of the data at ``spec`` (an IDX folder, an .npz or an image folder; see the module
    docstring).

    ``layout``: of the raw samples, one of :data:`LAYOUTS` ("NCHW", "NHWC", "NHW", "NC"; None =
    read from the arrays' shapes, NHWC for image files).
    ``image_shape``/``color``/``resize``: for image folders (see :func:`adt.runtime.images.image_geometry`;
    None = the first training image's size and colour, and every image must have that size).
    ``seed``/``test_fraction``: the split of an image folder with no test sub-folder.
    ``max_bytes``: refuse data whose arrays would exceed this many bytes, before loading them."""
    _check_layout(layout)
    kind = data_kind(spec)
    if kind == "idx":
        return _read_idx(Path(spec), layout, test_only=False)
    if kind == "npz":
        return _read_npz(Path(spec), layout, test_only=False, max_bytes=max_bytes)
    return _read_images(Path(spec), layout, image_shape, color, resize, seed, test_fraction, max_bytes,
                        progress)


def read_test_split(spec: str | os.PathLike, *, convention: Any = None, layout: str | None = None,
                    image_shape: Any = None, color: str | None = None, resize: str | None = None,
                    classes: Sequence[str] | None = None, num_classes: int | None = None,
                    max_bytes: int = MAX_TOTAL_BYTES, progress: bool = True) -> RawData:
    """The test split only, for scoring a file: an IDX folder's t10k files, an .npz's ``x_test`` and
    ``y_test`` (nothing else is needed or loaded), an image folder's ``test/`` (or ``val/``)
    sub-folder, or a folder of class folders taken whole. ``x_train``/``y_train`` are None.

    ``convention``: the model's :class:`~adt.runtime.preprocess.InputConvention`: images are decoded
    to its shape, colour and resize mode; arrays are rearranged into its layout where that is
    unambiguous (:meth:`InputConvention.conform`) and must then match its dtype and shape, so
    ``convention.apply(raw.x_test)`` is the model's input.
    ``classes``: the class names the model was trained with (a file's stored labels): labels are
    then mapped by name (folder names, an .npz's ``classes``) to their index there, and a name the
    model does not know is an error; data without names must use labels below ``len(classes)``.
    ``num_classes``: the model's class count; labels must be below it. Other arguments: see
    :func:`read_raw` (``layout``, ``image_shape``, ``color``, ``resize`` need not be given with a
    convention)."""
    _check_layout(layout)
    kind = data_kind(spec)
    if kind == "idx":
        raw = _read_idx(Path(spec), layout, test_only=True)
    elif kind == "npz":
        raw = _read_npz(Path(spec), layout, test_only=True, max_bytes=max_bytes,
                        fallback=None if convention is None else convention.layout)
    else:
        root = Path(spec)
        sub = next((root / d for d in TEST_DIRS if (root / d).is_dir()), root)
        if convention is not None and convention.color is not None and image_shape is None:
            image_shape, layout = convention, None  # ``layout`` says how arrays are stored, not images
        elif convention is not None and convention.color is None:
            raise DatasetError(f"{root}: the model's input convention takes arrays ({convention.describe()}), "
                               "not image files: give an .npz")
        geo = image_geometry(image_shape, color, resize, layout)
        x, y, names = load_image_folder(sub, *_geo_args(geo), layout=geo.layout, max_bytes=max_bytes,
                                        progress=progress)
        raw = RawData(None, None, x, y, geo.layout, names, len(names), "images", str(root),
                      _color_of(x, geo.layout), geo.resize)
    if convention is not None:
        try:
            x = convention.check_raw(convention.conform(raw.x_test))
        except AdtPreprocessError as exc:
            raise DatasetError(f"{raw.source}: x_test does not fit the model's input convention: {exc}") from None
        raw = _replace(raw, x_test=x, layout=convention.layout)
    if classes is not None:
        raw = _map_to_classes(raw, list(classes))
    if num_classes is not None:
        _check_labels(raw.y_test, "y_test", raw.source, num_classes, "the model's class count")
        raw = _replace(raw, num_classes=int(num_classes))
    return raw


# ----------------------------------------------------------------------------------------- checks


def _check_layout(layout: str | None) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise DatasetError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def _replace(raw: RawData, **changes: Any) -> RawData:
    from dataclasses import replace
    return replace(raw, **changes)


def infer_layout(shape: Sequence[int], where: str = "x_train") -> str:
    """"NHWC" or "NCHW" for a 4-D array shape: a last axis of 1 or 3 means NHWC, a second axis of 1
    or 3 means NCHW; a DatasetError asking for the layout when both or neither hold."""
    shape = tuple(int(d) for d in shape)
    last, second = shape[3] in (1, 3), shape[1] in (1, 3)
    if last and not second:
        return "NHWC"
    if second and not last:
        return "NCHW"
    why = "both axis 1 and axis 3 could be channels" if last else "neither axis 1 nor axis 3 has 1 or 3 entries"
    raise DatasetError(f"{where}: cannot infer the layout of shape {list(shape)} ({why}); "
                       "state it: layout NCHW or NHWC (--layout)")


def _with_layout(x: np.ndarray, layout: str | None, key: str, source: str,
                 fallback: str | None = None) -> tuple[np.ndarray, str, str | None]:
    """``x`` in a layout (given, else read from its shape; see the module doc) and a note saying
    how the layout was inferred (None when it was given or the rank leaves no choice). ``fallback``:
    the layout taken when a 4-D shape is ambiguous (a model's convention), instead of an error."""
    where = f"{source}: {key}"
    if x.ndim == 2:
        if layout not in (None, "NC"):
            raise DatasetError(f"{where} has shape {list(x.shape)} (flat [N, F]), which cannot be layout {layout}")
        return x, "NC", None
    if x.ndim not in (3, 4):
        raise DatasetError(f"{where} has shape {list(x.shape)}, expected [N, H, W, C], [N, C, H, W], [N, H, W] "
                           "or [N, F]")
    if layout == "NC":
        return x.reshape(len(x), -1), "NC", None
    if x.ndim == 3:
        if layout in (None, "NHW"):
            return x, "NHW", None
        return (x[:, None] if layout == "NCHW" else x[..., None]), layout, None
    if layout == "NHW":
        for axis in (3, 1):
            if x.shape[axis] == 1:
                return np.squeeze(x, axis=axis), "NHW", None
        raise DatasetError(f"{where} has shape {list(x.shape)}: no channel axis of size 1 to drop for layout NHW")
    if layout is not None:
        return x, layout, None
    if fallback in ("NCHW", "NHWC"):
        try:
            lay = infer_layout(x.shape, where)
        except DatasetError:
            return x, fallback, None
    else:
        lay = infer_layout(x.shape, where)
    return x, lay, f"{where}: layout {lay} inferred from shape {list(x.shape)} (state it with --layout)"


def _check_labels(y: np.ndarray, key: str, source: str, limit: int | None, what: str = "") -> None:
    """Labels are >= 0 and, when ``limit`` is given, below it (``what`` says where the limit comes from)."""
    if y.size == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        bad = lo
    elif limit is not None and hi >= limit:
        bad = hi
    else:
        return
    at = int(np.flatnonzero(y == bad)[0])
    expected = f"in [0, {limit})" + (f" ({what})" if what else "") if limit is not None else ">= 0"
    raise DatasetError(f"{source}: {key}[{at}] = {bad} is out of range: labels must be {expected}")


def _check_pair(x: np.ndarray, y: np.ndarray, xk: str, yk: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype == np.uint8:
        pass
    elif x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            at = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
            raise DatasetError(f"{source}: {xk}[{at}] holds NaN or infinite values (expected finite numbers)")
    else:
        raise DatasetError(f"{source}: {xk} has dtype {x.dtype}, expected uint8 or float32 "
                           "(float16/float64 are converted)")
    if len(x) == 0:
        raise DatasetError(f"{source}: {xk} holds no samples (expected N >= 1)")
    if y.dtype.kind not in "iu":
        raise DatasetError(f"{source}: {yk} has dtype {y.dtype}, expected integer class indices")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"{source}: {yk} has shape {list(y.shape)}, expected [{len(x)}] (one label per "
                           f"sample of {xk})")
    return x, y.astype(np.int64)


def _color_of(x: np.ndarray, layout: str) -> str:
    """The Pillow mode decoded image samples of ``x`` have."""
    c = {"NHWC": lambda: x.shape[3], "NCHW": lambda: x.shape[1]}.get(layout, lambda: 1)()
    return "L" if c == 1 else "RGB"


def _map_to_classes(raw: RawData, classes: list[str]) -> RawData:
    """Relabel ``raw``'s test split by class name onto ``classes`` (or check unnamed labels fit)."""
    if raw.classes is None:
        _check_labels(raw.y_test, "y_test", raw.source, len(classes), f"{len(classes)} classes")
        return _replace(raw, classes=classes, num_classes=len(classes))
    index = {name: i for i, name in enumerate(classes)}
    unknown = [n for n in raw.classes if n not in index]
    if unknown:
        raise DatasetError(f"{raw.source}: class {unknown[0]!r} is not one of the model's {len(classes)} classes "
                           f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
    table = np.asarray([index[n] for n in raw.classes], dtype=np.int64)
    return _replace(raw, y_test=table[raw.y_test], classes=classes, num_classes=len(classes))


# -------------------------------------------------------------------------------------------- IDX


def _read_idx(folder: Path, layout: str | None, test_only: bool) -> RawData:
    from .mnist import MnistError

    try:
        splits = {s: load_mnist(folder, s) for s in (("test",) if test_only else ("train", "test"))}
    except MnistError as exc:
        raise DatasetError(str(exc)) from None
    xs, lay = {}, layout
    for s, (x, _) in splits.items():
        xs[s], lay, _ = _with_layout(x, layout, f"{s} images", str(folder))
    ys = {s: y.astype(np.int64) for s, (_, y) in splits.items()}
    n_cls = max(int(y.max()) + 1 if y.size else 0 for y in ys.values())
    return RawData(xs.get("train"), ys.get("train"), xs["test"], ys["test"], str(lay), None, n_cls, "idx",
                   str(folder))


# -------------------------------------------------------------------------------------------- npz


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each member's shape and dtype, read from its .npy header (nothing is decompressed beyond it)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:  # 3.0 (UTF-8 field names) has no public header reader; np.load checks it
                        continue
                out[info.filename[:-4]] = (tuple(int(d) for d in shape), np.dtype(dtype))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npz archive ({exc})") from None
    return out


def _read_npz(path: Path, layout: str | None, test_only: bool, max_bytes: int,
              fallback: str | None = None) -> RawData:
    src = str(path)
    needed = ("x_test", "y_test") if test_only else NPZ_KEYS
    heads = _npz_headers(path)
    missing = [k for k in needed if k not in heads]
    if missing:
        have = ", ".join(sorted(heads)) or "no arrays"
        raise DatasetError(f"{src}: missing key {missing[0]!r} (an .npz needs {', '.join(needed)}; it has {have})")
    wanted = [k for k in (*needed, "classes") if k in heads]
    for k in wanted:
        if heads[k][1].hasobject:
            raise DatasetError(f"{src}: {k} is an object (pickled) array, which is not read; store numbers "
                               "(x, y) or strings (classes)")
    need = sum(int(np.prod(heads[k][0], dtype=np.int64)) * heads[k][1].itemsize for k in wanted)
    if need > max_bytes:
        raise DatasetError(f"{src}: the arrays {', '.join(wanted)} hold {need:,} bytes, over the limit of "
                           f"{max_bytes:,}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in wanted}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{src}: cannot load the arrays ({exc})") from None
    except MemoryError:
        raise DatasetError(f"{src}: cannot allocate {need:,} bytes for {', '.join(wanted)}") from None

    splits = ("test",) if test_only else ("train", "test")
    xs, ys = {}, {}
    for s in splits:
        xs[s], ys[s] = _check_pair(arrays[f"x_{s}"], arrays[f"y_{s}"], f"x_{s}", f"y_{s}", src)
    notes = []
    first = splits[0]
    xs[first], lay, note = _with_layout(xs[first], layout, f"x_{first}", src, fallback)
    notes += [note] if note else []
    if not test_only:
        xs["test"], _, _ = _with_layout(xs["test"], lay, "x_test", src)
        if xs["test"].shape[1:] != xs["train"].shape[1:]:
            raise DatasetError(f"{src}: x_test samples have shape {list(xs['test'].shape[1:])}, x_train's "
                               f"{list(xs['train'].shape[1:])} (both splits must match)")
        if xs["test"].dtype != xs["train"].dtype:
            raise DatasetError(f"{src}: x_test has dtype {xs['test'].dtype}, x_train {xs['train'].dtype} "
                               "(both splits must match)")

    classes = None
    if "classes" in arrays:
        c = arrays["classes"]
        if c.dtype.kind not in "US" or c.ndim != 1 or len(c) == 0:
            raise DatasetError(f"{src}: classes has dtype {c.dtype} and shape {list(c.shape)}, expected a "
                               "non-empty 1-D array of strings")
        classes = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in c.tolist()]
        if len(set(classes)) != len(classes):
            dup = next(n for n in classes if classes.count(n) > 1)
            raise DatasetError(f"{src}: classes names {dup!r} more than once (class names must be unique)")
    limit = len(classes) if classes is not None else None
    for s in splits:
        _check_labels(ys[s], f"y_{s}", src, limit, f"{limit} names in classes" if limit else "")
    n_cls = limit if limit is not None else max(int(ys[s].max()) + 1 for s in splits)
    return RawData(xs.get("train"), ys.get("train"), xs["test"], ys["test"], lay, classes, n_cls, "npz", src,
                   notes=tuple(notes))


# ----------------------------------------------------------------------------------- image folders


def _split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded ``fraction`` (rounded; at least 1 and at most n-1 when n >= 2) to test."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(len(idx) * fraction))
        k = min(max(k, 1), len(idx) - 1) if len(idx) >= 2 else 0
        test.append(rng.permutation(idx)[:k])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


def _geo_args(geo: ImageGeometry) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """(shape, color, resize) for :func:`load_image_folder`, from a resolved geometry."""
    shape = None if geo.height is None else (geo.height, geo.width)
    return shape, geo.color, geo.resize


def _read_images(root: Path, layout: str | None, image_shape: Any, color: str | None, resize: str | None,
                 seed: int, fraction: float, max_bytes: int, progress: bool) -> RawData:
    geo = image_geometry(image_shape, color, resize, layout)
    lay, resize = geo.layout, geo.resize
    image_shape, color, _ = _geo_args(geo)
    train_dir = root / "train"
    test_dir = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
    if train_dir.is_dir() and test_dir is not None:
        xtr, ytr, classes = load_image_folder(train_dir, image_shape, color, resize, layout=lay,
                                              max_bytes=max_bytes, progress=progress)
        # the test split is decoded to the training samples' exact shape and colour
        xte, yte, test_classes = load_image_folder(test_dir, xtr.shape[1:], None, resize, layout=lay,
                                                   max_bytes=max_bytes, progress=progress)
        test = _map_to_classes(RawData(None, None, xte, yte, lay, test_classes, len(test_classes), "images",
                                       str(test_dir)), classes)
        return RawData(xtr, ytr, test.x_test, test.y_test, lay, classes, len(classes), "images", str(root),
                       _color_of(xtr, lay), resize)
    if train_dir.is_dir():
        raise DatasetError(f"{root}: has train/ but no {' or '.join(d + '/' for d in TEST_DIRS)} beside it "
                           "(give both, or only class folders to split)")
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"test fraction must be between 0 and 1 (exclusive), got {fraction}")
    x, y, classes = load_image_folder(root, image_shape, color, resize, layout=lay, max_bytes=max_bytes,
                                      progress=progress)
    tr, te = _split_indices(y, fraction, seed)
    if len(tr) == 0 or len(te) == 0:
        raise DatasetError(f"{root}: {len(y)} images are too few to split into a training and a test split "
                           "(give train/ and test/ sub-folders)")
    note = (f"{root}: no train/ and test/ sub-folders: {len(te)} of {len(y)} images ({fraction:.0%} of each "
            f"class, seed {seed}) held out as the test split")
    return RawData(x[tr], y[tr], x[te], y[te], lay, classes, len(classes), "images", str(root),
                   _color_of(x, lay), resize, (note,))
