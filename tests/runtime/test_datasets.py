"""adt.runtime.images and adt.runtime.datasets: the forms of ``--data`` read as raw arrays, torch-free.

All data is generated here (seeded NumPy, PNGs written with Pillow into tmp_path, IDX files written
by hand); real MNIST only through the ``mnist_dir`` fixture."""
from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from adt.runtime import datasets as ds
from adt.runtime import images as im
from adt.runtime.datasets import DatasetError, read_raw, read_test_split
from adt.runtime.preprocess import InputConvention

try:
    from PIL import Image
except ImportError:  # the base install: the array forms are still tested, image files are not
    Image = None

pil = pytest.mark.skipif(Image is None, reason="Pillow is not installed")


def _png(path: Path, arr: np.ndarray) -> Path:
    """Write uint8 [H, W] (L) or [H, W, 3] (RGB) losslessly as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _rgb(rng: np.random.Generator, h: int = 8, w: int = 6) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _image_tree(root: Path, rng, classes: dict[str, int], h: int = 8, w: int = 6) -> dict[Path, np.ndarray]:
    """An ImageFolder tree: ``classes`` maps a class folder name to how many RGB PNGs it gets."""
    written = {}
    for name, n in classes.items():
        for i in range(n):
            arr = _rgb(rng, h, w)
            written[_png(root / name / f"img{i:03d}.png", arr)] = arr
    return written


def _idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """Write one split as IDX files (magic 2051 images, 2049 labels, big-endian dims)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = "train" if split == "train" else "t10k"
    img = struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes()
    lbl = struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    for name, data in ((f"{stem}-images-idx3-ubyte", img), (f"{stem}-labels-idx1-ubyte", lbl)):
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _arrays(rng, n_train=20, n_test=10, sample=(8, 6, 3), classes=4, dtype=np.uint8):
    def x(n):
        return (rng.integers(0, 256, (n, *sample)) if dtype == np.uint8 else rng.random((n, *sample))).astype(dtype)
    return dict(x_train=x(n_train), y_train=rng.integers(0, classes, n_train), x_test=x(n_test),
                y_test=rng.integers(0, classes, n_test))


# --------------------------------------------------------------------------------------- images


@pil
def test_list_images_is_sorted_and_filters_by_extension(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.JPG", "c.webp", "notes.txt", "d.tiff"):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
        else:
            Image.fromarray(_rgb(rng)).save(tmp_path / name, format={"jpg": "JPEG", "webp": "WEBP", "png": "PNG",
                                                                    "tiff": "TIFF"}[name.split(".")[1].lower()])
    (tmp_path / "sub.png").mkdir()  # a folder named like an image is not a file
    (tmp_path / "._b.png").write_bytes(b"AppleDouble")  # macOS metadata, not an image
    assert [p.name for p in im.list_images(tmp_path)] == ["a.JPG", "b.png", "c.webp", "d.tiff"]
    with pytest.raises(DatasetError, match="does not exist"):
        im.list_images(tmp_path / "missing")


@pil
def test_load_image_layouts_and_colors_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    rgb = _rgb(rng, 7, 5)
    gray = rng.integers(0, 256, (7, 5), dtype=np.uint8)
    p_rgb, p_gray = _png(tmp_path / "c.png", rgb), _png(tmp_path / "g.png", gray)

    assert np.array_equal(im.load_image(p_rgb), rgb)                       # own size, own colour, NHWC
    assert np.array_equal(im.load_image(p_rgb, (7, 5), layout="NCHW"), rgb.transpose(2, 0, 1))
    assert np.array_equal(im.load_image(p_gray), gray[..., None])          # L keeps a channel axis of 1
    assert np.array_equal(im.load_image(p_gray, layout="NHW"), gray)
    assert np.array_equal(im.load_image(p_gray, (1, 7, 5), layout="NCHW"), gray[None])
    # RGB asked of a grayscale file: three equal channels; L asked of an RGB file: Pillow's luma
    assert np.array_equal(im.load_image(p_gray, color="RGB"), np.repeat(gray[..., None], 3, axis=2))
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(im.load_image(p_rgb, (7, 5, 1)), luma[..., None])
    assert im.load_image(p_rgb).dtype == np.uint8


@pil
def test_load_image_from_an_input_convention(tmp_path):
    rng = np.random.default_rng(2)
    p = _png(tmp_path / "c.png", _rgb(rng, 12, 12))
    for conv, shape in (
        (InputConvention("NHWC", "uint8", (4, 4, 3), color="RGB", resize="stretch"), (4, 4, 3)),
        (InputConvention("NCHW", "uint8", (3, 4, 4), color="RGB", resize="stretch"), (3, 4, 4)),
        (InputConvention.mnist(), (28, 28)),
        (InputConvention("NCHW", "uint8", (1, 5, 5), color="L", resize="center-crop"), (1, 5, 5)),
    ):
        x = im.load_image(p, conv)
        assert x.shape == shape and x.dtype == np.uint8
        assert conv.apply(x[None]).shape == (1, *conv.model_shape)
    with pytest.raises(DatasetError, match="takes arrays"):
        im.load_image(p, InputConvention("NCHW", "uint8", (3, 4, 4)))


@pil
def test_resize_modes(tmp_path):
    # H=30, W=60: left half black, right half white
    arr = np.zeros((30, 60, 3), np.uint8)
    arr[:, 30:] = 255
    p = _png(tmp_path / "wide.png", arr)
    stretch = im.load_image(p, (10, 10), resize="stretch")[..., 0].astype(int)
    crop = im.load_image(p, (10, 10), resize="center-crop")[..., 0].astype(int)
    assert stretch.shape == crop.shape == (10, 10)
    # stretch keeps both halves side by side; the crop sees only the middle: its left quarter is a
    # column of the black half near the edge, its right quarter the white half
    assert stretch[:, :4].max() < 30 and stretch[:, 6:].min() > 225
    assert crop[:, :3].max() < 30 and crop[:, 7:].min() > 225
    # without scaling, center-crop is the exact centre window (torchvision's rounding)
    rng = np.random.default_rng(3)
    arr = _rgb(rng, 30, 50)
    p2 = _png(tmp_path / "exact.png", arr)
    assert np.array_equal(im.load_image(p2, (30, 30), resize="center-crop"), arr[:, 10:40])
    assert np.array_equal(im.load_image(p2, (30, 50), resize=None), arr)
    with pytest.raises(DatasetError, match=r"exact\.png.*30x50.*expected 30x30"):
        im.load_image(p2, (30, 30))
    with pytest.raises(DatasetError, match="resize"):
        im.load_image(p2, (30, 30), resize="squash")


@pil
def test_oversized_image_is_refused_before_decoding(tmp_path, monkeypatch):
    p = _png(tmp_path / "big.png", np.zeros((100, 120, 3), np.uint8))
    assert im.load_image(p, max_pixels=12_000).shape == (100, 120, 3)

    def no_decode(self, *a, **k):
        raise AssertionError("the pixels were decoded")

    from PIL import ImageFile
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(DatasetError, match=r"big\.png.*12,000 pixels.*11,999"):
        im.load_image(p, max_pixels=11_999)


@pil
def test_corrupt_and_missing_image_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetError, match=r"bad\.png"):
        im.load_image(bad)
    good = _png(tmp_path / "t.png", _rgb(np.random.default_rng(4), 32, 32))
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"trunc\.png"):
        im.load_image(truncated)
    with pytest.raises(DatasetError, match="does not exist"):
        im.load_image(tmp_path / "nope.png")


def test_pillow_missing_is_a_typed_error(tmp_path, monkeypatch):
    p = tmp_path / "x.png"
    p.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    with pytest.raises(im.PillowMissingError, match="pip install pillow") as info:
        im.load_image(p)
    assert isinstance(info.value, ImportError) and isinstance(info.value, DatasetError)


@pil
def test_image_folder_classes_sorted_labels_and_pixels(tmp_path):
    rng = np.random.default_rng(5)
    written = _image_tree(tmp_path, rng, {"zebra": 2, "ant": 3, "c10": 1, "c2": 2})
    nested = _png(tmp_path / "ant" / "deeper" / "n.png", _rgb(rng))  # found recursively, as torchvision does
    written[nested] = np.asarray(Image.open(nested))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "ant" / "readme.txt").write_text("not an image")
    (tmp_path / "ant" / "._img000.png").write_bytes(b"AppleDouble")

    x, y, classes = im.load_image_folder(tmp_path, progress=False)
    assert classes == sorted(["zebra", "ant", "c10", "c2"]) == ["ant", "c10", "c2", "zebra"]
    paths, labels, _ = im.scan_image_folder(tmp_path)
    assert len(paths) == len(written) == len(x) == len(y)
    assert np.array_equal(labels, y) and y.dtype == np.int64
    for p, xi, yi in zip(paths, x, y):
        assert classes[yi] == p.relative_to(tmp_path).parts[0]
        assert np.array_equal(xi, written[p])
    assert x.shape == (len(written), 8, 6, 3)


@pil
def test_image_folder_errors_and_byte_cap(tmp_path):
    rng = np.random.default_rng(6)
    _image_tree(tmp_path / "ok", rng, {"a": 2, "b": 2})
    (tmp_path / "ok" / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty.*no image files"):
        im.load_image_folder(tmp_path / "ok", progress=False)
    (tmp_path / "ok" / "empty").rmdir()
    need = 4 * 8 * 6 * 3
    with pytest.raises(DatasetError, match=f"{need:,} bytes, over the limit of {need - 1:,}"):
        im.load_image_folder(tmp_path / "ok", max_bytes=need - 1, progress=False)
    assert len(im.load_image_folder(tmp_path / "ok", max_bytes=need, progress=False)[0]) == 4
    _png(tmp_path / "ok" / "b" / "odd.png", _rgb(rng, 9, 6))  # a different size without a resize mode
    with pytest.raises(DatasetError, match=r"odd\.png.*9x6.*expected 8x6"):
        im.load_image_folder(tmp_path / "ok", progress=False)
    x, _, _ = im.load_image_folder(tmp_path / "ok", (8, 6), resize="stretch", progress=False)
    assert x.shape == (5, 8, 6, 3)
    with pytest.raises(DatasetError, match="no class sub-folders"):
        im.load_image_folder(tmp_path / "ok" / "a", progress=False)


# --------------------------------------------------------------------------------------- arrays


@pytest.mark.parametrize("layout, sample", [("NHWC", (8, 6, 3)), ("NCHW", (3, 8, 6)), ("NHWC", (8, 6, 1)),
                                            ("NCHW", (1, 8, 6))])
def test_npz_layout_is_inferred_and_arrays_kept(tmp_path, layout, sample):
    rng = np.random.default_rng(7)
    a = _arrays(rng, sample=sample)
    raw = read_raw(_npz(tmp_path / "d.npz", **a))
    assert raw.kind == "npz" and raw.layout == layout and raw.sample_shape == sample
    assert any(f"layout {layout} inferred" in n for n in raw.notes)
    for k in ("x_train", "x_test"):
        assert np.array_equal(getattr(raw, k), a[k]) and getattr(raw, k).dtype == np.uint8
    for k in ("y_train", "y_test"):
        assert np.array_equal(getattr(raw, k), a[k]) and getattr(raw, k).dtype == np.int64
    assert raw.num_classes == max(a["y_train"].max(), a["y_test"].max()) + 1 and raw.classes is None
    assert raw.channels == (3 if 3 in (sample[0], sample[-1]) else 1)


def test_npz_ranks_dtypes_and_stated_layouts(tmp_path):
    rng = np.random.default_rng(8)
    a = _arrays(rng, sample=(8, 6), dtype=np.float64)
    raw = read_raw(_npz(tmp_path / "g.npz", **a))
    assert raw.layout == "NHW" and raw.dtype == "float32"  # float64 -> float32
    assert np.array_equal(raw.x_train, a["x_train"].astype(np.float32))
    as_nhwc = read_raw(tmp_path / "g.npz", layout="NHWC")
    assert as_nhwc.sample_shape == (8, 6, 1) and np.array_equal(as_nhwc.x_test[..., 0], raw.x_test)
    assert read_raw(tmp_path / "g.npz", layout="NCHW").sample_shape == (1, 8, 6)
    assert read_raw(tmp_path / "g.npz", layout="NC").sample_shape == (48,)
    flat = read_raw(_npz(tmp_path / "f.npz", **_arrays(rng, sample=(5,))))
    assert flat.layout == "NC" and flat.sample_shape == (5,) and flat.channels == 5
    four = read_raw(_npz(tmp_path / "one.npz", **_arrays(rng, sample=(8, 6, 1))), layout="NHW")
    assert four.sample_shape == (8, 6)
    with pytest.raises(DatasetError, match="layout must be one of"):
        read_raw(tmp_path / "g.npz", layout="HWC")


def test_ambiguous_layout_asks_for_the_flag(tmp_path):
    rng = np.random.default_rng(9)
    both = _npz(tmp_path / "both.npz", **_arrays(rng, sample=(3, 8, 3)))
    neither = _npz(tmp_path / "neither.npz", **_arrays(rng, sample=(5, 8, 7)))
    with pytest.raises(DatasetError, match=r"x_train.*cannot infer the layout.*both.*--layout"):
        read_raw(both)
    with pytest.raises(DatasetError, match=r"neither.*--layout"):
        read_raw(neither)
    assert read_raw(both, layout="NCHW").layout == "NCHW"
    assert read_raw(neither, layout="NHWC").sample_shape == (5, 8, 7)


def test_malformed_npz_names_the_key(tmp_path):
    rng = np.random.default_rng(10)
    good = _arrays(rng)

    def bad(name, **changes):
        a = {**good, **changes}
        return _npz(tmp_path / name, **{k: v for k, v in a.items() if v is not None})

    with pytest.raises(DatasetError, match=r"missing key 'y_test'.*it has x_test, x_train, y_train"):
        read_raw(bad("m.npz", y_test=None))
    with pytest.raises(DatasetError, match=r"x_train has dtype int32, expected uint8 or float32"):
        read_raw(bad("d.npz", x_train=good["x_train"].astype(np.int32)))
    with pytest.raises(DatasetError, match=r"y_test has dtype float64, expected integer"):
        read_raw(bad("yf.npz", y_test=good["y_test"].astype(np.float64)))
    y = good["y_test"].copy()
    y[3] = -1
    with pytest.raises(DatasetError, match=r"y_test\[3\] = -1 is out of range"):
        read_raw(bad("neg.npz", y_test=y))
    with pytest.raises(DatasetError, match=r"y_train\[\d+\] = 3 is out of range: labels must be in \[0, 3\)"):
        read_raw(bad("cls.npz", classes=np.array(["a", "b", "c"]), y_train=np.full(20, 3)))
    with pytest.raises(DatasetError, match=r"y_train has shape \[19\], expected \[20\]"):
        read_raw(bad("len.npz", y_train=good["y_train"][:19]))
    with pytest.raises(DatasetError, match="x_test samples have shape"):
        read_raw(bad("shape.npz", x_test=good["x_test"][:, :4]))
    xf = good["x_train"].astype(np.float32)
    xf[2, 0, 0, 0] = np.nan
    with pytest.raises(DatasetError, match=r"x_train\[2\] holds NaN"):
        read_raw(bad("nan.npz", x_train=xf, x_test=good["x_test"].astype(np.float32)))
    with pytest.raises(DatasetError, match=r"x_test has dtype float32, x_train uint8"):
        read_raw(bad("mixed.npz", x_test=good["x_test"].astype(np.float32)))
    with pytest.raises(DatasetError, match=r"x_train is an object \(pickled\) array"):
        read_raw(bad("obj.npz", x_train=np.array([None] * 20, dtype=object)))
    with pytest.raises(DatasetError, match="classes names 'a' more than once"):
        read_raw(bad("dup.npz", classes=np.array(["a", "b", "a", "c"])))
    (tmp_path / "t.npz").write_bytes(b"definitely not a zip")
    with pytest.raises(DatasetError, match="not an .npz"):
        read_raw(tmp_path / "t.npz")
    with pytest.raises(DatasetError, match="does not exist"):
        read_raw(tmp_path / "none.npz")


def test_npz_classes_and_byte_cap(tmp_path):
    rng = np.random.default_rng(11)
    a = _arrays(rng, classes=3)
    names = np.array(["cat", "dog", "émeu"])
    raw = read_raw(_npz(tmp_path / "c.npz", classes=names, **a))
    assert raw.classes == ["cat", "dog", "émeu"] and raw.num_classes == 3
    total = sum(a[k].nbytes for k in a) + names.nbytes
    with pytest.raises(DatasetError, match=f"hold {total:,} bytes, over the limit of {total - 1:,}"):
        read_raw(tmp_path / "c.npz", max_bytes=total - 1)
    assert read_raw(tmp_path / "c.npz", max_bytes=total).num_classes == 3


# ------------------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_any_size_and_class_count(tmp_path, gz):
    rng = np.random.default_rng(12)
    xtr, xte = rng.integers(0, 256, (30, 12, 10), dtype=np.uint8), rng.integers(0, 256, (9, 12, 10), dtype=np.uint8)
    ytr, yte = rng.integers(0, 17, 30), rng.integers(0, 17, 9)
    _idx(tmp_path, "train", xtr, ytr, gz)
    _idx(tmp_path, "test", xte, yte, gz)
    raw = read_raw(tmp_path)
    assert raw.kind == "idx" and raw.layout == "NHW" and raw.classes is None
    assert np.array_equal(raw.x_train, xtr) and np.array_equal(raw.x_test, xte)
    assert np.array_equal(raw.y_train, ytr) and raw.y_train.dtype == np.int64
    assert raw.num_classes == max(ytr.max(), yte.max()) + 1
    assert read_raw(tmp_path, layout="NHWC").sample_shape == (12, 10, 1)
    test = read_test_split(tmp_path)
    assert test.x_train is None and np.array_equal(test.x_test, xte)
    (tmp_path / ("train-labels-idx1-ubyte" + (".gz" if gz else ""))).unlink()
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte"):
        read_raw(tmp_path)
    assert np.array_equal(read_test_split(tmp_path).y_test, yte)  # the test split needs only t10k


def test_real_mnist_folder(mnist_dir):
    from adt.runtime.mnist import load_mnist, normalize

    raw = read_raw(mnist_dir)
    x, y = load_mnist(mnist_dir, "test")
    assert raw.x_train.shape == (60000, 28, 28) and raw.num_classes == 10 and raw.layout == "NHW"
    assert np.array_equal(raw.x_test, x) and np.array_equal(raw.y_test, y)
    conv = InputConvention.mnist()
    test = read_test_split(mnist_dir, convention=conv)
    assert np.array_equal(conv.apply(test.x_test[:500]), normalize(x[:500]))


# --------------------------------------------------------------------------------- image folders


@pil
def test_image_folder_with_train_and_test(tmp_path):
    rng = np.random.default_rng(13)
    tr = _image_tree(tmp_path / "train", rng, {"b": 3, "a": 2, "c": 2})
    te = _image_tree(tmp_path / "val", rng, {"c": 1, "a": 2})  # a class missing from the test split
    raw = read_raw(tmp_path, progress=False)
    assert raw.kind == "images" and raw.classes == ["a", "b", "c"] and raw.num_classes == 3
    assert raw.layout == "NHWC" and raw.color == "RGB" and raw.x_train.shape == (7, 8, 6, 3)
    # test labels are the training split's indices: a -> 0, c -> 2 (not the test folder's own 0, 1)
    assert raw.y_test.tolist() == [0, 0, 2]
    paths, _, _ = im.scan_image_folder(tmp_path / "val")
    assert all(np.array_equal(raw.x_test[i], te[p]) for i, p in enumerate(paths))
    paths, _, _ = im.scan_image_folder(tmp_path / "train")
    assert all(np.array_equal(raw.x_train[i], tr[p]) for i, p in enumerate(paths))
    small = read_raw(tmp_path, image_shape=4, resize="stretch", color="L", layout="NCHW", progress=False)
    assert small.x_train.shape == (7, 1, 4, 4) and small.x_test.shape == (3, 1, 4, 4) and small.color == "L"
    _image_tree(tmp_path / "val", rng, {"d": 1})
    with pytest.raises(DatasetError, match="class 'd' is not one of"):
        read_raw(tmp_path, progress=False)


@pil
def test_image_folder_without_test_split_is_split_per_class_with_a_seed(tmp_path):
    rng = np.random.default_rng(14)
    _image_tree(tmp_path, rng, {"x": 10, "y": 5, "z": 2})
    raw = read_raw(tmp_path, progress=False)
    all_x, all_y, _ = im.load_image_folder(tmp_path, progress=False)
    assert len(raw.y_train) + len(raw.y_test) == len(all_y) == 17
    assert np.bincount(raw.y_test).tolist() == [2, 1, 1]  # round(20%) per class, at least one, never all
    assert set(raw.y_train.tolist()) == {0, 1, 2}
    assert any("seed 0" in n for n in raw.notes)
    # the two splits partition the images
    key = {a.tobytes() for a in all_x}
    assert {a.tobytes() for a in raw.x_train} | {a.tobytes() for a in raw.x_test} == key
    again = read_raw(tmp_path, progress=False)
    assert np.array_equal(again.x_test, raw.x_test)
    other = [read_raw(tmp_path, seed=s, progress=False).x_test for s in range(1, 6)]
    assert any(not np.array_equal(o, raw.x_test) for o in other)
    half = read_raw(tmp_path, test_fraction=0.5, progress=False)
    assert np.bincount(half.y_test).tolist() == [5, 2, 1]  # round(2.5) = 2 (banker's rounding)
    with pytest.raises(DatasetError, match="test fraction"):
        read_raw(tmp_path, test_fraction=1.0, progress=False)
    (tmp_path / "train").mkdir()
    _png(tmp_path / "train" / "x" / "a.png", _rgb(rng))
    with pytest.raises(DatasetError, match="has train/ but no test/ or val/"):
        read_raw(tmp_path, progress=False)


@pil
def test_test_split_only(tmp_path):
    rng = np.random.default_rng(15)
    a = _arrays(rng, sample=(8, 6, 3))
    only = _npz(tmp_path / "test.npz", x_test=a["x_test"], y_test=a["y_test"], classes=np.array(list("abcd")))
    with pytest.raises(DatasetError, match="missing key 'x_train'"):
        read_raw(only)
    raw = read_test_split(only)
    assert raw.x_train is None and raw.y_train is None and np.array_equal(raw.x_test, a["x_test"])
    # mapped by name onto the model's classes; a name the model lacks is an error
    mapped = read_test_split(only, classes=["d", "c", "b", "a", "e"])
    assert np.array_equal(mapped.y_test, 3 - a["y_test"]) and mapped.num_classes == 5
    with pytest.raises(DatasetError, match="class 'd' is not one of the model's 3 classes"):
        read_test_split(only, classes=["a", "b", "c"])
    with pytest.raises(DatasetError, match=r"out of range: labels must be in \[0, 2\)"):
        read_test_split(_npz(tmp_path / "n.npz", x_test=a["x_test"], y_test=a["y_test"]), num_classes=2)
    # a single ImageFolder tree is taken whole; a test/ sub-folder is preferred when there is one
    tree = _image_tree(tmp_path / "imgs", rng, {"b": 2, "a": 1})
    t = read_test_split(tmp_path / "imgs", progress=False)
    assert len(t.x_test) == len(tree) and t.classes == ["a", "b"]
    _image_tree(tmp_path / "imgs" / "test", rng, {"q": 2})
    assert read_test_split(tmp_path / "imgs", progress=False).classes == ["q"]


@pil
def test_test_split_follows_a_convention(tmp_path):
    rng = np.random.default_rng(16)
    a = _arrays(rng, sample=(8, 6, 3))
    p = _npz(tmp_path / "t.npz", x_test=a["x_test"], y_test=a["y_test"])
    nchw = InputConvention("NCHW", "uint8", (3, 8, 6), divisor=255.0)
    raw = read_test_split(p, convention=nchw)
    assert raw.layout == "NCHW" and np.array_equal(raw.x_test, a["x_test"].transpose(0, 3, 1, 2))
    with pytest.raises(DatasetError, match="does not fit the model's input convention"):
        read_test_split(p, convention=InputConvention("NCHW", "float32", (3, 8, 6)))
    with pytest.raises(DatasetError, match="does not fit"):
        read_test_split(p, convention=InputConvention("NHWC", "uint8", (8, 8, 3)))
    # an ambiguous stored shape takes the convention's layout instead of failing
    amb = _npz(tmp_path / "amb.npz", x_test=rng.integers(0, 256, (4, 3, 5, 3), dtype=np.uint8),
               y_test=np.arange(4))
    assert read_test_split(amb, convention=InputConvention("NHWC", "uint8", (3, 5, 3))).sample_shape == (3, 5, 3)
    # image files are decoded to the convention's size, colour and layout
    _image_tree(tmp_path / "imgs", rng, {"a": 2, "b": 1}, h=20, w=16)
    conv = InputConvention("NCHW", "uint8", (1, 10, 10), divisor=255.0, color="L", resize="center-crop")
    imgs = read_test_split(tmp_path / "imgs", convention=conv, progress=False)
    assert imgs.x_test.shape == (3, 1, 10, 10) and imgs.layout == "NCHW"
    assert np.array_equal(read_test_split(tmp_path / "imgs", convention=conv, layout="NHWC", progress=False).x_test,
                          imgs.x_test)  # a stated array layout does not apply to image files
    assert conv.apply(imgs.x_test).shape == (3, 1, 10, 10)
    assert read_test_split(tmp_path / "imgs", convention=InputConvention.mnist(), progress=False).x_test.shape \
        == (3, 28, 28)
    with pytest.raises(DatasetError, match="takes arrays"):
        read_test_split(tmp_path / "imgs", convention=nchw, progress=False)


def test_data_kind(tmp_path):
    _idx(tmp_path / "idx", "test", np.zeros((1, 2, 2), np.uint8), np.zeros(1, np.uint8), gz=True)
    (tmp_path / "imgs").mkdir()
    z = _npz(tmp_path / "a.npz", x=np.zeros(1))
    assert [ds.data_kind(p) for p in (tmp_path / "idx", tmp_path / "imgs", z)] == ["idx", "images", "npz"]


def test_arrays_need_neither_torch_nor_pillow(tmp_path):
    """The base install reads .npz and IDX data; only image files need Pillow, and say so."""
    from runtime_models import python_child

    rng = np.random.default_rng(17)
    a = _arrays(rng)
    _npz(tmp_path / "d.npz", **a)
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = python_child("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "PIL"):
                    raise ImportError(f"{name} is blocked in this test")
        sys.meta_path.insert(0, Block())
    """, f"""
        import numpy as np
        from adt.runtime.datasets import read_raw
        from adt.runtime.images import PillowMissingError, load_image
        raw = read_raw({str(tmp_path / 'd.npz')!r})
        np.save({str(tmp_path / 'y.npy')!r}, raw.y_train)
        try:
            load_image({str(tmp_path / 'x.png')!r})
        except PillowMissingError as exc:
            print("refused:", exc)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "PIL")))
    """, timeout=120)
    assert out.returncode == 0, out.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), a["y_train"])
    assert "refused: reading image files needs Pillow" in out.stdout and out.stdout.rstrip().endswith("[]")


@pytest.mark.parametrize("text,want", [("32", (32, 32)), ("24,32", (24, 32)), ("24x32", (24, 32))])
def test_image_size_from_command_line_text(text, want):
    from adt.runtime.images import image_geometry
    geo = image_geometry(text, "RGB", "stretch")
    assert (geo.height, geo.width) == want


def test_image_size_text_that_is_no_size():
    from adt.runtime.images import DatasetError, image_geometry
    with pytest.raises(DatasetError, match="image size 'a,b'"):
        image_geometry("a,b")
