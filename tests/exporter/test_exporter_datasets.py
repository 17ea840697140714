"""adt.exporter.datasets: every ``--data`` form as loaders whose inputs are the file's convention
applied to the raw samples (the round trip), and MNIST unchanged.

Data is generated (seeded NumPy; PNGs written with Pillow into tmp_path); real MNIST only through
the ``mnist_dir`` fixture."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from adt.exporter.data import SeededLoader, mnist_loaders
from adt.exporter.datasets import DatasetError, channel_stats, is_factory_spec, load_dataset
from adt.exporter.fit import EpochSeeded
from adt.runtime.images import load_image, scan_image_folder
from adt.runtime.preprocess import AdtPreprocessError, InputConvention


def _npz(path, rng, sample=(8, 6, 3), n=(40, 12), classes=5, dtype=np.uint8, **extra):
    def x(k):
        if dtype == np.uint8:
            return rng.integers(0, 256, (k, *sample), dtype=np.uint8)
        return (rng.standard_normal((k, *sample)) * 3 + 1).astype(dtype)
    a = dict(x_train=x(n[0]), y_train=rng.integers(0, classes, n[0]), x_test=x(n[1]),
             y_test=rng.integers(0, classes, n[1]), **extra)
    np.savez(path, **a)
    return a


def _rows(x: torch.Tensor) -> dict[bytes, int]:
    return {r.numpy().tobytes(): i for i, r in enumerate(x)}


def test_npz_round_trip_loaders_are_the_convention_applied(tmp_path):
    rng = np.random.default_rng(0)
    a = _npz(tmp_path / "d.npz", rng)
    data = load_dataset(tmp_path / "d.npz", batch_size=16, test_batch_size=5)
    conv = data.convention
    assert (conv.layout, conv.dtype, conv.shape, conv.divisor) == ("NHWC", "uint8", (8, 6, 3), 255.0)
    assert conv.color == "RGB" and conv.resize is None
    assert data.input_shape == (3, 8, 6) and data.num_classes == a["y_train"].max() + 1 and data.kind == "npz"
    # mean/std per channel of the training pixels / 255, computed independently here
    px = a["x_train"].astype(np.float64) / 255.0
    assert np.allclose(conv.mean, px.mean(axis=(0, 1, 2)), rtol=1e-6)
    assert np.allclose(conv.std, px.std(axis=(0, 1, 2)), rtol=1e-6)
    assert any("layout NHWC inferred" in n for n in data.notes)

    # test loader: in order, exactly apply(raw)
    xs, ys = zip(*data.test_loader)
    assert torch.equal(torch.cat(xs), torch.from_numpy(conv.apply(a["x_test"])))
    assert torch.equal(torch.cat(ys), torch.from_numpy(a["y_test"].astype(np.int64)))
    # train loader: shuffled, every row is apply(raw) of a training sample with its label
    expected = conv.apply(a["x_train"])
    where = _rows(torch.from_numpy(expected))
    seen = []
    for x, y in data.train_loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        for xi, yi in zip(x, y):
            i = where[xi.numpy().tobytes()]
            assert yi.item() == a["y_train"][i]
            seen.append(i)
    assert sorted(seen) == list(range(40)) and seen != list(range(40))


def test_train_loader_is_reseeded_per_epoch(tmp_path):
    rng = np.random.default_rng(1)
    _npz(tmp_path / "d.npz", rng)
    data = load_dataset(tmp_path / "d.npz", batch_size=8)
    assert isinstance(data.train_loader, SeededLoader) and isinstance(data.train_loader, EpochSeeded)

    def order(seed):
        data.train_loader.set_epoch(seed)
        return torch.cat([y for _, y in data.train_loader]).tolist(), torch.cat([x for x, _ in data.train_loader])

    y1, _ = order(5)
    y2, _ = order(6)
    y3, _ = order(5)
    assert y1 == y3 and y1 != y2


def test_float_nchw_and_given_statistics(tmp_path):
    rng = np.random.default_rng(2)
    a = _npz(tmp_path / "f.npz", rng, sample=(3, 5, 4), dtype=np.float64)
    data = load_dataset(tmp_path / "f.npz")
    conv = data.convention
    assert (conv.layout, conv.dtype, conv.divisor, conv.color) == ("NCHW", "float32", 1.0, None)
    x = a["x_train"].astype(np.float32).astype(np.float64)
    assert np.allclose(conv.mean, x.mean(axis=(0, 2, 3)), rtol=1e-6)
    assert np.allclose(conv.std, x.std(axis=(0, 2, 3)), rtol=1e-6)
    xt, _ = next(iter(data.test_loader))
    assert torch.equal(xt, torch.from_numpy(conv.apply(a["x_test"].astype(np.float32))))
    given = load_dataset(tmp_path / "f.npz", mean="0.5,0.25,0", std=[2, 2, 2], divisor=4)
    assert given.convention.mean == (0.5, 0.25, 0.0) and given.convention.std == (2.0,) * 3
    assert given.convention.divisor == 4.0
    with pytest.raises(AdtPreprocessError, match="mean"):
        load_dataset(tmp_path / "f.npz", mean=[0.1, 0.2])  # 2 values for 3 channels


def test_flat_data_gets_one_mean_and_std(tmp_path):
    rng = np.random.default_rng(7)
    a = _npz(tmp_path / "flat.npz", rng, sample=(300,), dtype=np.float32)
    data = load_dataset(tmp_path / "flat.npz")
    conv = data.convention
    assert conv.layout == "NC" and data.input_shape == (300,) and len(conv.mean) == len(conv.std) == 1
    assert np.isclose(conv.mean[0], a["x_train"].astype(np.float64).mean(), rtol=1e-6)
    assert len(conv.to_json()) < 300  # per-feature statistics would grow with the features
    x, _ = next(iter(data.test_loader))
    assert torch.equal(x, torch.from_numpy(conv.apply(a["x_test"])))


def test_channel_stats_layouts_and_constant_channel():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (7, 4, 5, 3), dtype=np.uint8)
    x[..., 1] = 9  # a constant channel: std 0 is reported as 1
    m, s = channel_stats(x, "NHWC", 255.0, chunk=3)
    ref = x.astype(np.float32) / np.float32(255)
    assert np.allclose(m, ref.mean(axis=(0, 1, 2)), rtol=1e-6) and s[1] == 1.0
    assert np.allclose([s[0], s[2]], ref.std(axis=(0, 1, 2))[[0, 2]], rtol=1e-5)
    m2, s2 = channel_stats(x.transpose(0, 3, 1, 2), "NCHW", 255.0)
    assert np.allclose(m2, m) and np.allclose(s2, s)
    m3, _ = channel_stats(x[..., 0], "NHW", 255.0)
    assert len(m3) == 1 and np.isclose(m3[0], m[0])


def _png_tree(root, rng, spec, h, w):
    from PIL import Image
    for name, n in spec.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def test_image_folder_round_trip_through_the_runtime_image_loader(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(4)
    _png_tree(tmp_path / "train", rng, {"cat": 5, "ant": 4}, 20, 16)
    _png_tree(tmp_path / "test", rng, {"cat": 2, "ant": 3}, 20, 16)
    data = load_dataset(tmp_path, image_size=(10, 12), resize="center-crop", color="RGB", progress=False)
    conv = data.convention
    assert data.classes == ["ant", "cat"] and data.num_classes == 2 and data.input_shape == (3, 10, 12)
    assert (conv.layout, conv.shape, conv.color, conv.resize) == ("NHWC", (10, 12, 3), "RGB", "center-crop")
    # what the runtime computes from an image file, given only the convention, is the training input
    paths, labels, _ = scan_image_folder(tmp_path / "test")
    raw = np.stack([load_image(p, conv) for p in paths])
    x, y = next(iter(data.test_loader))
    assert torch.equal(x, torch.from_numpy(conv.apply(raw))) and y.tolist() == labels.tolist()
    gray = load_dataset(tmp_path, image_size=8, resize="stretch", color="L", layout="NHW", progress=False)
    assert gray.convention.shape == (8, 8) and gray.input_shape == (1, 8, 8) and gray.convention.color == "L"


def test_export_and_predict_from_raw_images(tmp_path):
    """The whole path: image folder -> loaders -> a model -> a .adt carrying the convention and class
    names -> the runtime, given raw uint8 images, computes the training inputs and the same logits."""
    pytest.importorskip("PIL")
    import adt.runtime as rt
    from adt.exporter import export_adt

    rng = np.random.default_rng(5)
    _png_tree(tmp_path / "imgs", rng, {"b": 6, "a": 6, "c": 6}, 12, 12)
    data = load_dataset(tmp_path / "imgs", resize="stretch", seed=1, progress=False)
    assert any("held out" in n for n in data.notes) and data.classes == ["a", "b", "c"]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3)).eval()
    path = tmp_path / "m.adt"
    export_adt(model, path, input_shape=data.input_shape, input_convention=data.convention, labels=data.classes,
               q=4096)
    m = rt.load(path)
    assert m.input_convention == data.convention and m.labels == ["a", "b", "c"]
    raw = data.raw.x_test
    x, _ = next(iter(data.test_loader))
    assert np.array_equal(m.preprocess(raw), x.numpy())
    assert np.array_equal(m.run(m.preprocess(raw)), m.run(x.numpy()))
    names = m.predict(raw)
    assert list(names) == [data.classes[i] for i in m.run(x.numpy()).argmax(axis=1)]


def test_subsets_are_seeded(tmp_path):
    rng = np.random.default_rng(6)
    a = _npz(tmp_path / "d.npz", rng, n=(50, 30))
    d1 = load_dataset(tmp_path / "d.npz", subset=20, test_subset=7, seed=3)
    d2 = load_dataset(tmp_path / "d.npz", subset=20, test_subset=7, seed=3)
    d3 = load_dataset(tmp_path / "d.npz", subset=20, test_subset=7, seed=4)
    x1 = torch.cat([x for x, _ in d1.test_loader])
    assert len(x1) == 7 and sum(len(y) for _, y in d1.train_loader) == 20
    assert torch.equal(x1, torch.cat([x for x, _ in d2.test_loader]))
    assert not torch.equal(x1, torch.cat([x for x, _ in d3.test_loader]))
    # the statistics come from the whole training split, not the subset
    assert d1.convention.mean == d3.convention.mean == load_dataset(tmp_path / "d.npz").convention.mean
    idx = np.sort(np.random.default_rng(3).choice(30, 7, replace=False))
    assert torch.equal(x1, torch.from_numpy(d1.convention.apply(a["x_test"][idx])))


def test_mnist_gives_the_same_tensors_as_mnist_loaders(mnist_dir):
    data = load_dataset(mnist_dir, subset=3000, test_subset=1500, seed=2, batch_size=128)
    assert data.convention == InputConvention.mnist() and data.input_shape == (1, 28, 28)
    assert data.num_classes == 10 and data.classes is None and data.kind == "idx"
    train, test = mnist_loaders(mnist_dir, batch_size=128, subset=3000, seed=2, test_subset=1500)
    for (xa, ya), (xb, yb) in zip(data.test_loader, test, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    data.train_loader.set_epoch(11)
    train.set_epoch(11)
    for (xa, ya), (xb, yb) in zip(data.train_loader, train, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ------------------------------------------------------------------------------------ module:factory

FACTORY = textwrap.dedent("""
    import torch
    from torch.utils.data import TensorDataset
    from helper_sibling import N  # a sibling import: the file's folder is on sys.path

    class WithTargets(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x, self.targets = x, y
        def __len__(self):
            return len(self.x)
        def __getitem__(self, i):
            return self.x[i], int(self.targets[i])

    def make():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(N, 1, 6, 6, generator=g)
        y = torch.randint(0, 7, (N,), generator=g)
        return TensorDataset(x[:20], y[:20]), WithTargets(x[20:], y[20:].tolist())

    def bad_return():
        return 42

    def raises():
        raise RuntimeError("no data today")

    not_callable = 3
""")


@pytest.fixture
def factory_file(tmp_path):
    (tmp_path / "helper_sibling.py").write_text("N = 30\n")
    path = tmp_path / "mydata.py"
    path.write_text(FACTORY)
    return path


def test_factory_from_a_file(factory_file):
    spec = f"{factory_file}:make"
    assert is_factory_spec(spec) and not is_factory_spec(str(factory_file))
    data = load_dataset(spec, batch_size=8, test_batch_size=4)
    assert data.kind == "factory" and data.convention is None and data.raw is None
    assert data.input_shape == (1, 6, 6) and data.classes is None
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 1, 6, 6, generator=g), torch.randint(0, 7, (30,), generator=g)
    assert data.num_classes == int(y.max()) + 1
    xt, yt = zip(*data.test_loader)
    assert torch.equal(torch.cat(xt), x[20:]) and torch.equal(torch.cat(yt), y[20:])
    assert isinstance(data.train_loader, EpochSeeded)
    data.train_loader.set_epoch(3)
    ys = torch.cat([b for _, b in data.train_loader])
    assert sorted(ys.tolist()) == sorted(y[:20].tolist())
    assert any("no input convention" in n for n in data.notes)
    sub = load_dataset(spec, subset=5, batch_size=8)
    assert sum(len(b) for _, b in sub.train_loader) == 5


def test_factory_from_a_module_with_flags_records_a_convention(factory_file, monkeypatch):
    monkeypatch.syspath_prepend(str(factory_file.parent))
    data = load_dataset("mydata:make", mean=0.1307, std=0.3081)
    conv = data.convention
    assert (conv.layout, conv.dtype, conv.shape, conv.divisor, conv.color) == ("NCHW", "uint8", (1, 6, 6), 255.0, "L")
    assert conv.mean == (0.1307,) and conv.model_shape == data.input_shape


@pytest.mark.parametrize("name, match", [
    ("bad_return", "returned a int, expected"), ("raises", "calling it failed: RuntimeError: no data today"),
    ("not_callable", "has no callable 'not_callable'"), ("missing", "has no callable 'missing'"),
])
def test_factory_errors(factory_file, name, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset(f"{factory_file}:{name}")


def test_factory_import_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"{tmp_path}/nope.py:make")
    with pytest.raises(DatasetError, match="importing 'no_such_module_adt' failed"):
        load_dataset("no_such_module_adt:make")
    (tmp_path / "broken.py").write_text("import nonexistent_thing_adt\n")
    with pytest.raises(DatasetError, match="ModuleNotFoundError"):
        load_dataset(f"{tmp_path}/broken.py:make")
    with pytest.raises(DatasetError, match="does not exist"):  # not factory-shaped: a missing path
        load_dataset(tmp_path / "nothing")
