"""`adt run` and `adt inspect` with the input convention and labels a file stores (issue 20, item 3):
--images, raw --input, --data, --mnist with and without a convention, and the one-line errors.
Commands run in-process through the CLI's entry function (two as real subprocesses).

The files are hand-built linear classifiers (Flatten -> Gemm) with random weights: their predictions
depend on the input, so a wrong preprocessing step changes them. Every expected value is computed
here from the file with a hand-written NumPy (and Pillow) pipeline, never by the code under test."""
from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest

import adt.runtime as rt
from adt.runtime.format import AdtWriter, quantize
from adt.runtime.mnist import load_mnist, normalize
from adt.runtime.onnx_proto import FLOAT, Graph, OnnxModel, ValueInfo, make_node
from adt.runtime.preprocess import INPUT_KEY, LABELS_KEY, InputConvention, labels_to_json
from adt.tools.cli import main

from cli_helpers import adt as adt_subprocess
from cli_helpers import assert_one_line_error

Image = pytest.importorskip("PIL.Image")

MNIST = InputConvention.mnist()
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
RGB = InputConvention("NHWC", "uint8", (8, 6, 3), 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "RGB", None)
ANIMALS = ["ant", "bee", "cat", "dog"]


def linear_file(in_shape: tuple[int, ...], classes: int, metadata: dict | None = None, flat: bool = False,
                seed: int = 0) -> bytes:
    """A runnable file: input [N, *in_shape] -> Flatten -> Gemm -> [N, classes] (``flat``: input
    [N, features], no Flatten), with random weights."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(in_shape))
    nodes = [make_node("Gemm", ["input" if flat else "a", "fc.weight", "fc.bias"], ["output"], transB=1)]
    if not flat:
        nodes.insert(0, make_node("Flatten", ["input"], ["a"], axis=1))
    graph = Graph(nodes=nodes, name="linear",
                  inputs=[ValueInfo("input", FLOAT, ["N", features] if flat else ["N", *in_shape])],
                  outputs=[ValueInfo("output", FLOAT, ["N", classes])])
    w = AdtWriter()
    for k, v in (metadata or {}).items():
        w.add_metadata(k, v)
    w.set_architecture(OnnxModel(ir_version=8, opsets={"ai.onnx": 17}, graph=graph).to_bytes())
    g = w.add_group(512, 3.0)
    w.add_plain("fc.weight", quantize(rng.laplace(scale=0.05, size=(classes, features)), 512, 3.0), g)
    w.add_plain("fc.bias", quantize(rng.laplace(scale=0.1, size=classes), 512, 3.0), g)
    return w.to_bytes()


def meta(conv: InputConvention | None, labels: list[str] | None) -> dict:
    out = {}
    if conv is not None:
        out[INPUT_KEY] = conv.to_json()
    if labels is not None:
        out[LABELS_KEY] = labels_to_json(labels)
    return out


def rgb_by_hand(raw_nhwc: np.ndarray) -> np.ndarray:
    """RGB's arithmetic written out: HWC uint8 -> CHW float32 / 255 -> per channel (x - mean) / std."""
    x = raw_nhwc.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    mean = np.array(RGB.mean, np.float32)[None, :, None, None]
    std = np.array(RGB.std, np.float32)[None, :, None, None]
    return (x - mean) / std


def softmax(out: np.ndarray) -> np.ndarray:
    e = np.exp(out - out.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    (d / "digits.adt").write_bytes(linear_file((1, 28, 28), 10, meta(MNIST, DIGITS)))
    (d / "digits_flat.adt").write_bytes(linear_file((1, 28, 28), 10, meta(MNIST, None), flat=True))
    (d / "bare.adt").write_bytes(linear_file((1, 28, 28), 10))
    (d / "rgb.adt").write_bytes(linear_file((3, 8, 6), 4, meta(RGB, ANIMALS), seed=1))
    rng = np.random.default_rng(0)
    # grayscale PNGs of several sizes (the convention stretches them to 28 x 28)
    (d / "gray").mkdir()
    for i, (h, w) in enumerate([(28, 28), (40, 30), (20, 50), (28, 28), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(d / "gray" / f"img{i}.png")
    (d / "gray" / "notes.txt").write_text("not an image")
    # RGB PNGs of the exact size (the convention has no resize)
    (d / "rgb").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)).save(d / "rgb" / f"{i:02d}.png")
    (d / "rgb_badsize").mkdir()
    Image.fromarray(rng.integers(0, 256, (9, 6, 3), dtype=np.uint8)).save(d / "rgb_badsize" / "big.png")
    np.save(d / "raw.npy", rng.integers(0, 256, (7, 28, 28), dtype=np.uint8))
    np.save(d / "float.npy", normalize(np.load(d / "raw.npy")))
    x = rng.integers(0, 256, (60, 8, 6, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 60)
    np.savez(d / "rgb_nhwc.npz", x_train=x[:10], y_train=y[:10], x_test=x, y_test=y)
    np.savez(d / "rgb_nchw.npz", x_train=x[:10].transpose(0, 3, 1, 2), y_train=y[:10],
             x_test=x.transpose(0, 3, 1, 2), y_test=y)
    (d / "mnist.json").write_text(MNIST.to_json())
    return d


def adt(*args) -> SimpleNamespace:
    """``adt ARGS`` in this process (``adt.tools.cli.main``, the entry point's function): the same
    parser, dispatch and one-line errors as the subprocess, without a Python start-up per call.
    Returns ``returncode``, ``stdout`` and ``stderr`` like a finished subprocess."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # usage errors and --help
            code = exc.code if isinstance(exc.code, int) else 1
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_json(*args) -> dict:
    out = adt("run", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# -- --images ---------------------------------------------------------------------------------------
def test_images_are_decoded_resized_and_normalised_by_the_files_convention(d):
    r = run_json(d / "digits.adt", "--images", d / "gray", "--top-k", 3)
    files = sorted(p for p in (d / "gray").iterdir() if p.suffix == ".png")
    # by hand: Pillow grayscale, bilinear stretch to 28 x 28, then ADT's MNIST normalisation
    raw = np.stack([np.asarray(Image.open(p).convert("L").resize((28, 28), Image.BILINEAR)) for p in files])
    out = rt.load(d / "digits.adt").run(normalize(raw))
    order = np.argsort(-out, axis=1, kind="stable")[:, :3]
    assert [p["image"] for p in r["predictions"]] == [p.name for p in files]
    assert r["convention_source"] == "file" and r["convention"] == MNIST.to_dict() and r["top_k"] == 3
    assert [p["classes"] for p in r["predictions"]] == order.tolist()
    assert [p["labels"] for p in r["predictions"]] == [[DIGITS[i] for i in row] for row in order]
    probs = np.take_along_axis(softmax(out.astype(np.float64)), order, 1)
    np.testing.assert_allclose([p["scores"] for p in r["predictions"]], probs, rtol=1e-6)
    assert len(set(order[:, 0].tolist())) > 1  # the inputs really change the answer


def test_images_text_output_names_each_file_and_its_label(d):
    out = adt("run", d / "rgb.adt", "--images", d / "rgb")
    assert out.returncode == 0, out.stderr
    files = sorted((d / "rgb").iterdir())
    raw = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
    pred = rt.load(d / "rgb.adt").run(rgb_by_hand(raw)).argmax(1)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(files)
    for line, f, k in zip(lines, files, pred):
        name, rest = line.split(None, 1)
        assert name == f.name and rest.startswith(f"{ANIMALS[k]} (")


def test_images_errors_are_one_line(d):
    assert_one_line_error(adt("run", d / "rgb.adt", "--images", d / "rgb_badsize"), "run",
                          "big.png: image is 9x6 (HxW), expected 8x6")
    assert_one_line_error(adt("run", d / "bare.adt", "--images", d / "gray"), "run",
                          "stores no input convention")
    assert_one_line_error(adt("run", d / "digits.adt", "--images", d / "nowhere"), "run", "does not exist")
    assert_one_line_error(adt("run", d / "digits.adt", "--images", d / "rgb", "--top-k", 11), "run",
                          "--top-k must be 1..10")


def test_assumed_convention_for_images_of_a_bare_file(d):
    r = run_json(d / "bare.adt", "--images", d / "gray", "--assume-convention", "mnist")
    r2 = run_json(d / "bare.adt", "--images", d / "gray", "--assume-convention", d / "mnist.json")
    assert r["convention_source"] == "assumed" and r["predictions"] == r2["predictions"]
    assert all("labels" not in p for p in r["predictions"])


# -- --input ----------------------------------------------------------------------------------------
def test_raw_input_is_preprocessed_with_the_files_convention(d):
    raw = np.load(d / "raw.npy")
    want = rt.load(d / "digits.adt").run(normalize(raw))
    r = run_json(d / "digits.adt", "--input", d / "raw.npy")
    assert r["preprocessed"] and r["convention_source"] == "file"
    np.testing.assert_allclose(np.array(r["output"], np.float32), want, rtol=1e-6, atol=1e-6)
    assert r["argmax"] == want.argmax(1).tolist() and r["labels"] == [DIGITS[i] for i in r["argmax"]]
    text = adt("run", d / "digits.adt", "--input", d / "raw.npy", "--top-k", 2)
    assert text.returncode == 0, text.stderr
    assert f"labels: {' '.join(DIGITS[i] for i in want.argmax(1))}" in text.stdout
    assert "input preprocessed with the file input convention: uint8 NHW 28x28" in text.stderr


def test_flat_model_gets_flattened_raw_input(d):
    raw = np.load(d / "raw.npy")
    want = rt.load(d / "digits_flat.adt").run(normalize(raw).reshape(len(raw), -1))
    r = run_json(d / "digits_flat.adt", "--input", d / "raw.npy")
    assert r["argmax"] == want.argmax(1).tolist() and "labels" not in r


def test_model_ready_input_still_works(d):
    x = np.load(d / "float.npy")
    want = rt.load(d / "bare.adt").run(x)
    r = run_json(d / "bare.adt", "--input", d / "float.npy")  # no convention: floats are model-ready
    assert not r["preprocessed"] and r["argmax"] == want.argmax(1).tolist()
    r = run_json(d / "digits.adt", "--input", d / "float.npy", "--model-ready")
    assert not r["preprocessed"] and r["argmax"] == rt.load(d / "digits.adt").run(x).argmax(1).tolist()


def test_bare_file_with_an_assumed_convention_equals_the_stored_one(d):
    a = run_json(d / "bare.adt", "--input", d / "raw.npy", "--assume-convention", "mnist")
    b = run_json(d / "bare.adt", "--input", d / "raw.npy", "--assume-convention", MNIST.to_json())
    want = rt.load(d / "bare.adt").run(normalize(np.load(d / "raw.npy")))
    assert a["convention_source"] == "assumed" and a["argmax"] == b["argmax"] == want.argmax(1).tolist()


@pytest.mark.parametrize("args,match", [
    (["digits.adt", "--input", "float.npy"], "holds float32 values, but the input convention takes raw uint8"),
    (["bare.adt", "--input", "raw.npy"], "holds uint8 values, expected floats (model-ready input)"),
    (["digits.adt", "--input", "raw.npy", "--assume-convention", "mnist"], "stores its own input convention"),
    (["bare.adt", "--input", "raw.npy", "--assume-convention", "imagenet"], "neither a known name (mnist)"),
    (["bare.adt", "--input", "raw.npy", "--assume-convention", '{"layout": "NHW"}'], "missing field 'dtype'"),
    (["rgb.adt", "--input", "raw.npy"], "the input convention takes uint8 [N, 8, 6, 3] (layout NHWC)"),
    (["digits.adt", "--images", "gray", "--model-ready"], "--model-ready goes with --input or --data"),
    (["digits.adt", "--data", "rgb_nhwc.npz", "--top-k", "2"], "--top-k goes with --input or --images"),
    (["digits.adt", "--input", "raw.npy", "--layout", "NHWC"], "--layout goes with --data"),
    (["bare.adt", "--input", "float.npy", "--model-ready", "--assume-convention", "mnist"], "exclude each other"),
])
def test_input_errors_are_one_line(d, args, match):
    args = [str(d / a) if (d / a).exists() else a for a in args]
    assert_one_line_error(adt("run", *args), "run", match)


# -- --data -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("npz", ["rgb_nhwc.npz", "rgb_nchw.npz"])
def test_data_npz_accuracy_and_per_class_counts(d, npz):
    r = run_json(d / "rgb.adt", "--data", d / npz)
    with np.load(d / "rgb_nhwc.npz") as z:
        x, y = z["x_test"], z["y_test"]
    pred = rt.load(d / "rgb.adt").run(rgb_by_hand(x)).argmax(1)
    assert r["n"] == len(y) and r["correct"] == int((pred == y).sum())
    assert r["accuracy"] == pytest.approx(r["correct"] / len(y)) and r["kind"] == "npz"
    assert [c["label"] for c in r["per_class"]] == ANIMALS
    for c in r["per_class"]:
        k = c["class"]
        assert c["n"] == int((y == k).sum()) and c["correct"] == int(((pred == k) & (y == k)).sum())
    assert sum(c["n"] for c in r["per_class"]) == len(y)
    assert len(set(pred.tolist())) > 1


def test_data_image_folder_maps_class_folders_to_stored_labels(d, tmp_path):
    root = tmp_path / "pets"
    rng = np.random.default_rng(9)
    truth = {}
    for cls in ("dog", "ant"):  # a subset, not in label order: mapped by name
        (root / cls).mkdir(parents=True)
        for i in range(4):
            arr = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
            truth[(cls, i)] = arr
    r = run_json(d / "rgb.adt", "--data", root)
    keys = sorted(truth)  # ("ant", 0..3), ("dog", 0..3)
    x = np.stack([truth[k] for k in keys])
    y = np.array([ANIMALS.index(c) for c, _ in keys])
    pred = rt.load(d / "rgb.adt").run(rgb_by_hand(x)).argmax(1)
    assert r["kind"] == "images" and r["n"] == 8 and r["correct"] == int((pred == y).sum())
    per = {c["label"]: c for c in r["per_class"]}
    assert per["ant"]["n"] == 4 and per["dog"]["n"] == 4 and per["bee"]["n"] == 0 and per["bee"]["accuracy"] is None
    text = adt("run", d / "rgb.adt", "--data", root)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"accuracy {r['accuracy']:.4f} ({r['correct']}/8) on ")


def test_data_model_ready_float_npz(d, tmp_path):
    with np.load(d / "rgb_nhwc.npz") as z:
        x, y = z["x_test"], z["y_test"]
    xf = rgb_by_hand(x)  # preprocessed, stored NCHW
    np.savez(tmp_path / "f.npz", x_train=xf[:4], y_train=y[:4], x_test=xf, y_test=y)
    assert_one_line_error(adt("run", d / "rgb.adt", "--data", tmp_path / "f.npz"), "run",
                          "or --model-ready if they are preprocessed already")
    r = run_json(d / "rgb.adt", "--data", tmp_path / "f.npz", "--model-ready")
    pred = rt.load(d / "rgb.adt").run(xf).argmax(1)
    assert r["correct"] == int((pred == y).sum()) and r["convention_source"] == "model-ready"


def test_data_needs_a_convention_or_model_ready(d):
    assert_one_line_error(adt("run", d / "bare.adt", "--data", d / "rgb_nhwc.npz"), "run",
                          "stores no input convention")


# -- --mnist ----------------------------------------------------------------------------------------
def test_mnist_uses_the_files_convention(d, mnist_dir):
    r = run_json(d / "digits.adt", "--mnist", mnist_dir, "--limit", 500)
    images, labels = load_mnist(mnist_dir, "test")
    pred = rt.load(d / "digits.adt").run(normalize(images[:500])).argmax(1)
    assert r["n"] == 500 and r["correct"] == int((pred == labels[:500]).sum())
    assert r["convention_source"] == "file" and r["convention"] == MNIST.to_dict()


def test_mnist_with_another_convention_in_the_file(d, mnist_dir, tmp_path):
    """A model trained on pixels / 255 (no mean/std): --mnist applies THAT, not ADT's normalisation."""
    conv = InputConvention("NHWC", "uint8", (28, 28, 1), 255.0)
    (tmp_path / "unit.adt").write_bytes(linear_file((1, 28, 28), 10, meta(conv, None)))
    r = run_json(tmp_path / "unit.adt", "--mnist", mnist_dir, "--limit", 300)
    images, labels = load_mnist(mnist_dir, "test")
    x = (images[:300].astype(np.float32) / np.float32(255))[:, None]
    m = rt.load(tmp_path / "unit.adt")
    pred = m.run(x).argmax(1)
    assert r["correct"] == int((pred == labels[:300]).sum())
    assert r["correct"] != int((m.run(normalize(images[:300])).argmax(1) == labels[:300]).sum())


def test_mnist_without_a_convention_asks_for_one(d, mnist_dir):
    line = assert_one_line_error(adt_subprocess("run", d / "bare.adt", "--mnist", mnist_dir), "run",
                                 "stores no input convention")
    assert "--assume-convention mnist" in line
    r = run_json(d / "bare.adt", "--mnist", mnist_dir, "--limit", 200, "--assume-convention", "mnist")
    images, labels = load_mnist(mnist_dir, "test")
    pred = rt.load(d / "bare.adt").run(normalize(images[:200])).argmax(1)
    assert r["correct"] == int((pred == labels[:200]).sum()) and r["convention_source"] == "assumed"


# -- inspect and help -------------------------------------------------------------------------------
def test_inspect_shows_the_convention_and_labels(d, tmp_path):
    out = adt("inspect", d / "digits.adt")
    assert out.returncode == 0, out.stderr
    assert f"  input convention: {MNIST.describe()}" in out.stdout
    assert "  labels (10): zero, one, two, three" in out.stdout
    assert INPUT_KEY + ":" not in out.stdout  # the raw JSON is shown parsed instead
    r = json.loads(adt("inspect", d / "digits.adt", "--json").stdout)
    assert r["input_convention"] == {**MNIST.to_dict(), "description": MNIST.describe()}
    assert r["labels"] == DIGITS and r["file"]["metadata"][INPUT_KEY] == MNIST.to_json()
    bare = adt("inspect", d / "bare.adt")
    assert "input convention: none stored" in bare.stdout
    assert json.loads(adt("inspect", d / "bare.adt", "--json").stdout)["input_convention"] is None
    # a malformed entry does not stop inspect: it is reported (and rt.load refuses the file)
    (tmp_path / "bad.adt").write_bytes(linear_file((1, 28, 28), 10, {INPUT_KEY: '{"layout": "NWHC"}',
                                                                      LABELS_KEY: "[1]"}))
    bad = adt("inspect", tmp_path / "bad.adt")
    assert bad.returncode == 0, bad.stderr
    assert "input convention: INVALID, input convention: missing field 'dtype'" in bad.stdout
    assert "labels: INVALID, labels[0] is 1, expected a string" in bad.stdout
    assert_one_line_error(adt("run", tmp_path / "bad.adt", "--input", d / "float.npy"), "run", "missing field")


def test_run_help_documents_every_new_option():
    out = adt_subprocess("run", "--help")
    assert out.returncode == 0
    for flag in ("--images", "--data", "--top-k", "--assume-convention", "--model-ready", "--layout", "--mnist"):
        assert flag in out.stdout
