"""Issue 20's user path through the CLI: your model file, your dense checkpoint, your data (.npz, image
folder, IDX folder, module:factory), one `adt compress`, then `adt run` on raw images with no
normalisation flag; plus the other --model forms, --target-size and the default plan."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from adt.tools.cli import main

PIL = pytest.importorskip("PIL.Image")

CLASSES = ("red", "green", "blue")

MYNET = textwrap.dedent('''
    import torch
    from torch import nn


    class MyNet(nn.Module):
        """A user's small conv net: conv-BN-ReLU6, pooling, a classifier."""

        def __init__(self, num_classes: int = 10, width: int = 8) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU6(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.head = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.head(torch.flatten(self.features(x), 1))


    def make_net(num_classes: int = 10):
        return MyNet(num_classes=num_classes)
''')


def _sample(k: int, rng: np.random.Generator, size: int = 12) -> np.ndarray:
    """An RGB uint8 image of class k: channel k bright, the others dim, plus noise."""
    img = rng.integers(0, 90, size=(size, size, 3))
    img[..., k] += 150
    return np.clip(img, 0, 255).astype(np.uint8)


def _image_folder(root: Path, per_class: int, seed: int, size: int = 12) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(2, per_class // 3))):
        for k, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                PIL.fromarray(_sample(k, rng, size)).save(d / f"{i:03d}.png")
    return root


def _npz(path: Path, n: int, seed: int, size: int = 12, classes: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    y_tr, y_te = rng.integers(0, classes, n), rng.integers(0, classes, max(6, n // 4))
    x_tr = np.stack([_sample(int(k), rng, size) for k in y_tr])
    x_te = np.stack([_sample(int(k), rng, size) for k in y_te])
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


def _run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def mynet(tmp_path: Path) -> Path:
    f = tmp_path / "mynet.py"
    f.write_text(MYNET)
    return f


def test_own_model_checkpoint_and_image_folder_to_raw_image_predictions(tmp_path, mynet, capsys):
    """The issue's "done when": mynet.py + a dense checkpoint + an image folder -> one `adt compress`
    -> `adt run --images` on raw image files gives class names, with no normalisation flag."""
    data = _image_folder(tmp_path / "imgs", per_class=40, seed=0)
    import importlib.util
    spec = importlib.util.spec_from_file_location("user_mynet_for_ckpt", mynet)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    torch.save(mod.MyNet(num_classes=3).state_dict(), tmp_path / "dense.pt")
    out = tmp_path / "mynet.adt"
    code, stdout, err = _run(["compress", "--model", f"{mynet}:MyNet", "--model-args", "num_classes=3",
                              "--from-checkpoint", tmp_path / "dense.pt", "--data", data, "--image-size", "10",
                              "--resize", "center-crop", "--target", "1.5",
                              "--epochs", "6", "--lr", "0.02", "--batch-size", "30", "--quiet", "-o", out], capsys)
    assert code == 0, err
    assert "input convention" in stdout and "3 class names" in stdout, stdout

    code, stdout, err = _run(["run", out, "--data", data, "--json"], capsys)
    assert code == 0, err
    scored = json.loads(stdout)
    assert scored["accuracy"] >= 0.9, scored

    for k, name in enumerate(CLASSES):
        code, stdout, err = _run(["run", out, "--images", data / "test" / name, "--json"], capsys)
        assert code == 0, err
        result = json.loads(stdout)
        labels = [row["labels"][0] for row in result["predictions"]]
        assert sum(lab == name for lab in labels) >= len(labels) - 1, (name, labels)


def test_npz_data_and_module_factory_model(tmp_path, mynet, capsys, monkeypatch):
    """`package.module:NAME` (a factory) on an .npz (NHWC uint8): the file's convention makes
    `adt run --input raw.npy` (raw uint8) give the same outputs as the model on preprocessed inputs."""
    monkeypatch.syspath_prepend(str(tmp_path))
    npz = _npz(tmp_path / "d.npz", 90, seed=1)
    out = tmp_path / "f.adt"
    code, stdout, err = _run(["compress", "--model", "mynet:make_net", "--model-args", "num_classes=3", "--data", npz,
                              "--target", "1.5", "--epochs", "2", "--batch-size", "30", "--quiet", "-o", out], capsys)
    assert code == 0, err
    raw = np.load(npz)["x_test"][:5]
    np.save(tmp_path / "raw.npy", raw)
    code, stdout, err = _run(["run", out, "--input", tmp_path / "raw.npy", "--json"], capsys)
    assert code == 0, err
    got = np.asarray(json.loads(stdout)["output"], dtype=np.float32)

    import adt.runtime as rt
    model = rt.load(out)
    conv = model.input_convention
    assert conv is not None and conv.layout == "NHWC" and conv.dtype == "uint8"
    x = raw.astype(np.float32) / 255.0  # the pipeline written out by hand: divide, per-channel mean/std, NCHW
    x = (x - np.asarray(conv.mean, np.float32)) / np.asarray(conv.std, np.float32)
    want = model.run(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_saved_exported_program_as_model(tmp_path, mynet, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    import mynet as user  # noqa: E402 - the user's file, put on sys.path above

    torch.manual_seed(0)
    net = user.MyNet(num_classes=3).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(net, (torch.zeros(2, 3, 12, 12),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, tmp_path / "mynet.pt2")
    npz = _npz(tmp_path / "d.npz", 60, seed=2)
    out = tmp_path / "ep.adt"
    code, stdout, err = _run(["compress", "--model", tmp_path / "mynet.pt2", "--data", npz, "--target", "1.5",
                              "--epochs", "1", "--batch-size", "30", "--quiet", "--json", "-o", out], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["check"]["passed"] and report["file_bytes"] == out.stat().st_size


def test_default_plan_is_announced(tmp_path, mnist_dir, capsys):
    out = tmp_path / "d.adt"
    code, stdout, err = _run(["compress", "--model", "lenet5", "--data", mnist_dir, "--subset", "512", "--epochs", "1",
                              "--max-steps", "2", "--quiet", "-o", out], capsys)
    assert code == 0, err
    assert "default target" in err, err
    assert out.stat().st_size > 0


def test_mnist_file_runs_with_its_own_convention(tmp_path, mnist_dir, capsys):
    """A file compressed on the MNIST IDX folder records MNIST's convention: `adt run --mnist` needs no flag
    and `adt run --images` on raw PNGs of test digits gives the same predictions as `--mnist`."""
    out = tmp_path / "m.adt"
    code, stdout, err = _run(["compress", "--preset", "lenet5-ada", "--data", mnist_dir, "--subset", "2048",
                              "--epochs", "1", "--quiet", "--json", "-o", out], capsys)
    assert code == 0, err
    exported = json.loads(stdout)["acc_quantized"]  # the exporter's score of the file on the test set
    code, stdout, err = _run(["run", out, "--mnist", mnist_dir, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == pytest.approx(exported, abs=1e-12)
    from adt.runtime.mnist import load_mnist
    images, _ = load_mnist(mnist_dir, "test")
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(8):
        PIL.fromarray(images[i]).save(folder / f"{i}.png")
    code, stdout, err = _run(["run", out, "--images", folder, "--json"], capsys)
    assert code == 0, err
    import adt.runtime as rt
    want = rt.load(out).predict(images[:8])
    result = json.loads(stdout)
    got = [row["classes"][0] for row in sorted(result["predictions"], key=lambda row: int(row["image"][:-4]))]
    assert got == [int(v) for v in want]


def test_target_size_lands_in_the_window_on_lenet5(tmp_path, mnist_dir, capsys):
    out = tmp_path / "s.adt"
    code, stdout, err = _run(["compress", "--model", "lenet5", "--data", mnist_dir, "--subset", "1024", "--epochs", "1",
                              "--target-size", "30KB", "--quiet", "--json", "-o", out], capsys)
    assert code == 0, err
    size = out.stat().st_size
    assert 0.97 * 30_000 <= size <= 30_000, size
    assert json.loads(stdout)["target_size"]["file_bytes"] == size


def test_target_size_lands_in_the_window_on_resnet20(tmp_path, capsys):
    npz = _npz(tmp_path / "c.npz", 64, seed=3, size=32)
    out = tmp_path / "r.adt"
    code, stdout, err = _run(["compress", "--model", "resnet20", "--data", npz, "--epochs", "1", "--max-steps", "2",
                              "--batch-size", "32", "--target-size", "24KiB", "--quiet", "-o", out], capsys)
    assert code == 0, err
    size = out.stat().st_size
    assert 0.97 * 24 * 1024 <= size <= 24 * 1024, size


@pytest.mark.parametrize("spec", ["research.zoo:resnet18", "research.zoo:mobilenet_v2"])
def test_torchvision_signature_families_from_the_cli(tmp_path, capsys, spec):
    """Issue 20 item 7 against the fixture module (PyPI's torchvision cannot be imported beside this CPU
    torch; research/torchvision/ runs the real one): full-size resnet18 / mobilenet_v2 with
    num_classes=10, a few steps on random .npz data, then the file runs."""
    rng = np.random.default_rng(4)
    npz = tmp_path / "r.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 16),
             x_test=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 8))
    out = tmp_path / "tv.adt"
    code, stdout, err = _run(["compress", "--model", spec, "--model-args", "num_classes=10", "--data", npz,
                              "--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--threads", "2",
                              "--quiet", "--json", "-o", out], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["check"]["passed"], report["check"]
    np.save(tmp_path / "x.npy", np.load(npz)["x_test"][:2])
    code, stdout, err = _run(["run", out, "--input", tmp_path / "x.npy", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["output_shape"] == [2, 10]


@pytest.mark.parametrize("argv,needle", [
    (["--model", "nope.py:Net"], "does not exist"),
    (["--model", "mynet.py:Nope"], "Nope"),
    (["--model", "resnet20", "--epochs", "1"], "--data"),
    (["--data", "missing.npz"], "missing.npz"),
    (["--target-size", "12 parsecs"], "--target-size"),
    (["--target", "2.0", "--target-size", "10KB"], "one of --preset, --target and --target-size"),
])
def test_own_model_errors_are_one_line(tmp_path, mynet, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["compress", *argv, "-o", tmp_path / "x.adt"], capsys)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and needle in lines[0], err


def test_torchrun_two_processes_train_like_one(tmp_path):
    """`torchrun --nproc_per_node 2 adt compress ...` (gloo on the CPU): each process takes half of every
    global batch, so the run is the single-process training; only rank 0 writes the file."""
    import os
    import subprocess
    import sys

    npz = _npz(tmp_path / "d.npz", 96, seed=5)
    # no BatchNorm: under DDP each process normalises with its own slice's statistics (SyncBatchNorm is
    # CUDA-only), which is a different training; the model of `adt compress --model` is then not comparable
    (tmp_path / "plain.py").write_text(MYNET.replace("nn.BatchNorm2d(width)", "nn.Identity()"))
    common = ["--model", f"{tmp_path / 'plain.py'}:MyNet", "--model-args", "num_classes=3", "--data", npz,
              "--target", "1.5",
              "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--quiet", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"w{n}.adt"
        launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
                  if n > 1 else [sys.executable])
        r = subprocess.run([*launch, "-m", "adt.tools.cli", "compress", *[str(a) for a in common], "-o", str(out)],
                           capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[n] = json.loads(r.stdout[r.stdout.index("{"):])
        assert runs[n]["world_size"] == n and runs[n]["file_bytes"] == out.stat().st_size
    assert runs[2]["final_loss"] == pytest.approx(runs[1]["final_loss"], rel=1e-5)
    import adt.runtime as rt
    x = np.load(npz)["x_test"]
    one, two = (rt.load(tmp_path / f"w{n}.adt") for n in (1, 2))
    one, two = one.run(one.preprocess(x)), two.run(two.preprocess(x))
    # the same training up to float reduction order: outputs agree far inside one quantization step's effect
    assert np.abs(one - two).max() <= 1e-3 * np.abs(one).max()


def test_module_factory_data(tmp_path, mynet, capsys):
    """`--data file.py:factory` returning (train_dataset, test_dataset) of preprocessed tensors: the run
    says the file records no input convention, and the file then takes model-ready float input."""
    (tmp_path / "mydata.py").write_text(textwrap.dedent('''
        import torch
        from torch.utils.data import TensorDataset


        def make():
            g = torch.Generator().manual_seed(0)
            y = torch.randint(0, 3, (60,), generator=g)
            x = torch.randn(60, 3, 12, 12, generator=g) + torch.nn.functional.one_hot(y, 3).float()[:, :, None, None]
            return TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:])
    '''))
    out = tmp_path / "fac.adt"
    code, stdout, err = _run(["compress", "--model", f"{mynet}:MyNet", "--model-args", "num_classes=3", "--data",
                              f"{tmp_path / 'mydata.py'}:make", "--target", "1.5", "--epochs", "1", "--batch-size", "16",
                              "--quiet", "--json", "-o", out], capsys)
    assert code == 0, err
    assert "records no input convention" in err
    report = json.loads(stdout)
    assert report["data"]["kind"] == "factory" and report["data"]["input_shape"] == [3, 12, 12]
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32))
    code, stdout, err = _run(["run", out, "--input", tmp_path / "x.npy", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["preprocessed"] is False


def test_torchscript_file_as_model(tmp_path, mynet, capsys, monkeypatch):
    """A traced TorchScript file: converted to an ExportedProgram (its sample shape from --data), its convs
    and linears lifted back to modules, then compressed like any model."""
    monkeypatch.syspath_prepend(str(tmp_path))
    import mynet as user  # noqa: E402 - the user's file, put on sys.path above

    torch.manual_seed(0)
    traced = torch.jit.trace(user.MyNet(num_classes=3).eval(), torch.zeros(2, 3, 12, 12))
    torch.jit.save(traced, tmp_path / "mynet.ts")
    npz = _npz(tmp_path / "d.npz", 60, seed=6)
    out = tmp_path / "ts.adt"
    code, stdout, err = _run(["compress", "--model", tmp_path / "mynet.ts", "--data", npz, "--target", "1.5",
                              "--epochs", "1", "--batch-size", "30", "--quiet", "--json", "-o", out], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    # the second conv (1,152 weights; the others are under the planner's 256) lifted at its own module path
    assert report["check"]["passed"] and list(report["plan"]) == ["features.3"]
