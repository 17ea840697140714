"""`adt run` and `adt to-onnx` as a user runs them (subprocess): outputs, --json, MNIST scoring,
and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

import adt.runtime as rt
from adt.runtime.mnist import load_mnist, normalize
from adt.runtime.samples import lenet5_file

from cli_helpers import CLI, adt, assert_one_line_error
from tools_adt_files import flat_mlp_file


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    # b = 0.3 (values a tenth of the sample's): activations stay O(1), so that outputs compare tightly
    (d / "lenet.adt").write_bytes(lenet5_file(seed=0, b=0.3))
    (d / "weights.adt").write_bytes(lenet5_file(seed=0, b=0.3, architecture=False))
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "x64.npy", x.astype(np.float64))
    np.save(d / "xint.npy", np.zeros((2, 1, 28, 28), np.int32))
    np.save(d / "xbad.npy", np.zeros((2, 1, 20, 20), np.float32))
    (d / "junk.npy").write_bytes(b"not a numpy file")
    return d, rt.load(d / "lenet.adt").run(x)


def test_run_input_prints_outputs_and_argmax(files):
    d, expected = files
    out = adt("run", d / "lenet.adt", "--input", d / "x.npy")
    assert out.returncode == 0, out.stderr
    assert "output [5, 10] float32" in out.stdout
    assert f"argmax: {' '.join(map(str, expected.argmax(1)))}" in out.stdout


@pytest.mark.parametrize("engine", ["numpy", "onnxruntime"])
def test_run_input_saves_outputs(files, tmp_path, engine):
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    d, expected = files
    out = adt("run", d / "lenet.adt", "--input", d / "x.npy", "-o", tmp_path / "y.npy", "--engine", engine,
              "--batch-size", 2)
    assert out.returncode == 0, out.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and y.shape == (5, 10)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    if engine == "numpy":  # batches of 2 give the same outputs as one batch of 5
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)


def test_run_input_json_and_limit(files):
    d, expected = files
    out = adt("run", d / "lenet.adt", "--input", d / "x64.npy", "--json", "--limit", 3)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["n"] == 3 and r["output_shape"] == [3, 10] and r["argmax"] == expected[:3].argmax(1).tolist()
    np.testing.assert_allclose(np.array(r["output"], np.float32), expected[:3], rtol=1e-5, atol=1e-6)


def test_run_mnist_accuracy_json(files, mnist_dir):
    d, _ = files
    # the sample file stores no input convention: ADT's MNIST one is named explicitly
    out = adt("run", d / "lenet.adt", "--mnist", mnist_dir, "--limit", 300, "--json", "--batch-size", 128,
              "--assume-convention", "mnist")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    images, labels = load_mnist(mnist_dir, "test")
    pred = rt.load(d / "lenet.adt").run(normalize(images[:300])).argmax(1)
    assert r["n"] == 300 and r["correct"] == int((pred == labels[:300]).sum())
    assert r["accuracy"] == pytest.approx(r["correct"] / 300) and r["engine"] == "numpy"
    assert r["seconds"] > 0


def test_run_mnist_from_adt_data_and_flat_mlp_input(tmp_path, mnist_dir):
    """--mnist without DIR reads $ADT_DATA; a graph taking flat [N, 784] vectors gets flat images."""
    (tmp_path / "mlp.adt").write_bytes(flat_mlp_file())
    out = adt("run", tmp_path / "mlp.adt", "--mnist", "--limit", 50, "--assume-convention", "mnist",
              env={"ADT_DATA": str(mnist_dir)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("accuracy ") and "/50) on the MNIST test set" in out.stdout


@pytest.mark.parametrize("args,match", [
    (["{d}/missing.adt", "--input", "{d}/x.npy"], "is not a file"),
    (["{d}/lenet.adt", "--input", "{d}/nope.npy"], "is not a file"),
    (["{d}/lenet.adt", "--input", "{d}/junk.npy"], "cannot read"),
    (["{d}/lenet.adt", "--input", "{d}/xint.npy"], "holds int32 values, expected floats"),
    (["{d}/lenet.adt", "--input", "{d}/xbad.npy"], "input 'input' has shape [2, 1, 20, 20], expected [N, 1, 28, 28]"),
    (["{d}/weights.adt", "--input", "{d}/x.npy"], "no architecture section"),
    (["{d}/x.npy", "--input", "{d}/x.npy"], "magic"),
    (["{d}/lenet.adt", "--mnist", "{d}/no_such_dir"], "does not exist"),
    (["{d}/lenet.adt", "--mnist", "{d}", "-o", "{d}/y.npy"], "-o/--output goes with --input"),
    (["{d}/lenet.adt", "--input", "{d}/x.npy", "--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_run_errors_are_one_line(files, args, match):
    d, _ = files
    assert_one_line_error(adt("run", *[a.format(d=d) for a in args]), "run", match)


def test_run_mnist_without_dir_or_env(files):
    d, _ = files
    env = {k: v for k, v in os.environ.items() if k != "ADT_DATA"}
    out = subprocess.run(CLI + ["run", str(d / "lenet.adt"), "--mnist"], capture_output=True, text=True, env=env)
    assert_one_line_error(out, "run", "set ADT_DATA")


def test_run_needs_input_or_mnist(files):
    d, _ = files
    out = adt("run", d / "lenet.adt")
    assert out.returncode == 2 and "one of the arguments --images --input --data --mnist is required" in out.stderr


def test_to_onnx(files, tmp_path):
    d, _ = files
    out = adt("to-onnx", d / "lenet.adt", "-o", tmp_path / "m.onnx", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    data = (tmp_path / "m.onnx").read_bytes()
    assert r["bytes"] == len(data) and r["initializers"] == 8 and r["parameters"] == 431080
    assert data == rt.load(d / "lenet.adt").onnx_bytes()
    out = adt("to-onnx", d / "lenet.adt", "-o", tmp_path / "m2.onnx")
    assert out.returncode == 0 and out.stdout.startswith(f"wrote {tmp_path / 'm2.onnx'}: ")


def test_to_onnx_errors(files, tmp_path):
    d, _ = files
    assert_one_line_error(adt("to-onnx", d / "weights.adt", "-o", tmp_path / "m.onnx"), "to-onnx", "no architecture section")
    assert_one_line_error(adt("to-onnx", d / "missing.adt", "-o", tmp_path / "m.onnx"), "to-onnx", "is not a file")
    assert not (tmp_path / "m.onnx").exists()


# -- --max-memory (issue 17) ------------------------------------------------------------------------
@pytest.mark.parametrize("text,value", [
    ("268435456", 268435456), ("512M", 512 << 20), ("512m", 512 << 20), ("2G", 2 << 30), ("2GB", 2 << 30),
    ("1.5GiB", 3 << 29), ("64KiB", 64 << 10), ("100B", 100), ("1T", 1 << 40), ("none", None), ("None", None),
])
def test_max_memory_sizes(text, value):
    from adt.tools.commands.run import parse_size
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "0", "-5", "0.1", "abc", "12X", "1.5.2G", "GB", "nan", "inf", "5iB", "1e30"])
def test_max_memory_bad_values_are_one_line_usage_errors(files, text):
    d, _ = files
    out = adt("run", d / "lenet.adt", "--input", d / "x.npy", "--max-memory", text)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-memory" in lines[0] and "invalid size" in lines[0], out.stderr


def test_max_memory_is_documented_in_help():
    out = adt("run", "--help")
    assert out.returncode == 0 and "--max-memory SIZE" in out.stdout and "1.5GiB" in out.stdout
    assert "none" in out.stdout and "1024" in out.stdout


def test_run_max_memory_reaches_load(files):
    d, expected = files
    # LeNet-5's rebuild needs about 1.7 MiB: 1M is refused naming the figure and the limit
    out = adt("run", d / "lenet.adt", "--input", d / "x.npy", "--max-memory", "1M")
    assert_one_line_error(out, "run", "max_memory=1.00 MiB")
    for size in ("64M", "none"):
        out = adt("run", d / "lenet.adt", "--input", d / "x.npy", "--max-memory", size, "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["argmax"] == expected.argmax(1).tolist()


def test_run_max_memory_bounds_the_forward_pass(files, tmp_path):
    d, _ = files
    # a batch of 256 LeNet-5 inputs: the rebuild fits in 8 MiB, the activations (19.7 MiB) do not
    np.save(tmp_path / "big.npy", np.zeros((256, 1, 28, 28), np.float32))
    out = adt("run", d / "lenet.adt", "--input", tmp_path / "big.npy", "--max-memory", "8M")
    line = assert_one_line_error(out, "run", "max_memory=8.00 MiB")
    assert " node " in line and "would need" in line


def test_verify_takes_max_memory(files):
    d, _ = files
    assert adt("verify", d / "lenet.adt", "--max-memory", "64M").returncode == 0
    out = adt("verify", d / "lenet.adt", "--max-memory", "1M")
    assert out.returncode == 1 and "max_memory=1.00 MiB" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert adt("verify", d / "lenet.adt", "--max-memory", "lots").returncode == 2
