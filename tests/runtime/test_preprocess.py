"""The input convention and labels a .adt file carries (adt.runtime.preprocess, FORMAT.md §4.1):
JSON round trips, strict parsing with typed errors, the arithmetic against hand-built NumPy
pipelines, and Model.preprocess / Model.predict on files that store them (and on files that do not)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import adt.runtime as rt
from adt.runtime.format import AdtWriter, read_adt
from adt.runtime.mnist import MEAN, STD, normalize
from adt.runtime.preprocess import (
    INPUT_KEY, LABELS_KEY, MAX_CHANNELS, AdtPreprocessError, InputConvention, labels_to_json, parse_labels,
    read_convention, read_labels, top_k,
)
from adt.runtime.samples import lenet5_file

RGB_NHWC = InputConvention("NHWC", "uint8", (8, 6, 3), 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                           "RGB", "center-crop")
CONVENTIONS = [
    InputConvention.mnist(),
    RGB_NHWC,
    InputConvention("NCHW", "uint8", (3, 5, 7), 255.0, (0.5,), (0.25,), "RGB", None),
    InputConvention("NCHW", "float32", (2, 4, 4), 1.0, (1.5, -2.0), (3.0, 0.5)),
    InputConvention("NC", "float32", (12,), 10.0, (0.0,), (2.0,)),
    InputConvention("NHWC", "uint8", (4, 4, 1), 127.5, (1.0,), (1.0,), "L", "stretch"),
]


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


# -- the arithmetic ---------------------------------------------------------------------------------
def test_mnist_convention_is_normalize_bit_for_bit():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    raw[0].flat[:256] = np.arange(256)  # every pixel value at least once
    conv = InputConvention.mnist()
    x = conv.apply(raw)
    assert x.dtype == np.float32 and x.shape == (64, 1, 28, 28) and x.flags.c_contiguous
    assert np.array_equal(_bits(x), _bits(normalize(raw)))
    assert conv.mean == (MEAN,) and conv.std == (STD,) and conv.model_shape == (1, 28, 28)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_rgb_uint8_matches_a_hand_built_pipeline(layout):
    rng = np.random.default_rng(1)
    nchw = rng.integers(0, 256, (5, 3, 8, 6), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    # the pipeline a user would write: float32 pixels / 255, then per channel (x - mean) / std
    want = nchw.astype(np.float32) / np.float32(255)
    want = (want - np.array(mean, np.float32)[None, :, None, None]) / np.array(std, np.float32)[None, :, None, None]
    if layout == "NHWC":
        conv, raw = RGB_NHWC, np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    else:
        conv, raw = InputConvention("NCHW", "uint8", (3, 8, 6), 255.0, mean, std, "RGB"), nchw
    before = raw.copy()
    x = conv.apply(raw)
    assert x.shape == (5, 3, 8, 6) and x.dtype == np.float32
    assert np.array_equal(_bits(x), _bits(want))
    assert np.array_equal(raw, before)  # the caller's batch is untouched


def test_float_convention_copies_and_accepts_any_float_dtype():
    conv = InputConvention("NCHW", "float32", (2, 4, 4), 1.0, (1.5, -2.0), (3.0, 0.5))
    raw = np.random.default_rng(2).standard_normal((3, 2, 4, 4)).astype(np.float32)
    before = raw.copy()
    x = conv.apply(raw)
    assert x is not raw and np.array_equal(raw, before)
    want = (raw - np.array([1.5, -2.0], np.float32)[None, :, None, None]) / np.array([3.0, 0.5], np.float32)[None, :, None, None]
    assert np.array_equal(_bits(x), _bits(want))
    assert np.array_equal(_bits(conv.apply(raw.astype(np.float64))), _bits(conv.apply(raw)))
    assert np.array_equal(_bits(conv.apply(raw.astype(">f4"))), _bits(x))  # big-endian input


def test_flat_convention_scales_features():
    conv = InputConvention("NC", "float32", (12,), 10.0, (0.0,), (2.0,))
    raw = np.arange(24, dtype=np.float32).reshape(2, 12)
    x = conv.apply(raw)
    assert x.shape == (2, 12)
    assert np.array_equal(_bits(x), _bits(raw / np.float32(10) / np.float32(2)))


@pytest.mark.parametrize("raw,match", [
    (np.zeros((2, 28, 28), np.float32), "dtype float32, the input convention takes uint8 [N, 28, 28] (layout NHW)"),
    (np.zeros((2, 28, 28), np.int16), "dtype int16"),
    (np.zeros((2, 1, 28, 28), np.uint8), "shape [2, 1, 28, 28], the input convention takes uint8 [N, 28, 28]"),
    (np.zeros((28, 28), np.uint8), "shape [28, 28]"),
    ([[0]], "must be a NumPy array"),
])
def test_raw_input_that_does_not_fit_is_named(raw, match):
    with pytest.raises(AdtPreprocessError) as e:
        InputConvention.mnist().apply(raw)
    assert match in str(e.value)


def test_conform_only_rearranges_unambiguous_layouts():
    rng = np.random.default_rng(3)
    nhwc = rng.integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    nchw_conv = InputConvention("NCHW", "uint8", (3, 8, 6), 255.0, color="RGB")
    assert np.array_equal(nchw_conv.conform(nhwc), nhwc.transpose(0, 3, 1, 2))
    assert np.array_equal(RGB_NHWC.conform(nhwc.transpose(0, 3, 1, 2)), nhwc)
    gray = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    mnist = InputConvention.mnist()
    assert np.array_equal(mnist.conform(gray[..., None]), gray)
    assert np.array_equal(mnist.conform(gray[:, None]), gray)
    one = InputConvention("NHWC", "uint8", (28, 28, 1))
    assert one.conform(gray).shape == (2, 28, 28, 1)
    odd = np.zeros((2, 5, 5, 5), np.uint8)   # not a layout of (8, 6, 3): returned as is, apply names it
    assert RGB_NHWC.conform(odd) is odd


def test_top_k_is_sorted_and_column_zero_is_argmax():
    out = np.random.default_rng(4).standard_normal((50, 7))
    out[0] = [1, 3, 3, 0, 3, 2, -1]  # ties go to the lower index, as argmax does
    idx, val = top_k(out, 3)
    assert idx.dtype == np.int64 and idx.shape == (50, 3)
    assert np.array_equal(idx[:, 0], out.argmax(1)) and idx[0].tolist() == [1, 2, 4]
    assert np.all(np.diff(val, axis=1) <= 0) and np.array_equal(val, np.take_along_axis(out, idx, 1))
    for bad in (0, 8, True):
        with pytest.raises(AdtPreprocessError, match="top_k"):
            top_k(out, bad)


# -- JSON -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv", CONVENTIONS, ids=lambda c: c.describe())
def test_json_round_trip_through_a_file(conv):
    text = conv.to_json()
    assert InputConvention.from_json(text) == conv and InputConvention.from_json(text.encode()) == conv
    assert json.loads(text) == conv.to_dict() and list(json.loads(text)) == [
        "layout", "dtype", "shape", "divisor", "mean", "std", "color", "resize"]
    labels = ["zéro", "un", "deux"]
    data = lenet5_file(metadata={INPUT_KEY: text, LABELS_KEY: labels_to_json(labels)})
    meta = read_adt(data).metadata
    assert read_convention(meta) == conv and read_labels(meta) == labels


def test_defaults_fill_optional_fields():
    conv = InputConvention.from_json('{"layout": "NC", "dtype": "float32", "shape": [3]}')
    assert (conv.divisor, conv.mean, conv.std, conv.color, conv.resize) == (1.0, (0.0,), (1.0,), None, None)
    x = np.array([[1, 2, 3]], np.float32)
    assert np.array_equal(conv.apply(x), x)


def _obj(**changes):
    d = RGB_NHWC.to_dict()
    d.update(changes)
    return json.dumps({k: v for k, v in d.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize("text,match", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"layout": "NC", "layout": "NC", "dtype": "float32", "shape": [3]}', "duplicate JSON field \"layout\""),
    ('{"layout": "NC", "dtype": "float32", "shape": [3], "divisor": NaN}', "NaN is not a JSON number"),
    ('{"layout": "NC", "dtype": "float32", "shape": [3], "mean": [Infinity]}', "Infinity is not a JSON number"),
    (_obj(gamma=2.2), "unknown field \"gamma\""),
    (_obj(layout=_DROP), "missing field 'layout'"),
    (_obj(layout="NWHC"), "'layout' is \"NWHC\", expected one of NCHW, NHWC, NHW, NC"),
    (_obj(layout=3), "'layout' is 3, expected a string"),
    (_obj(dtype="int8"), "'dtype' is \"int8\", expected one of uint8, float32"),
    (_obj(shape=[8, 6]), "'shape' is [8, 6], expected 3 dimensions for layout NHWC"),
    (_obj(shape=[8, 0, 3]), "'shape[1]' is 0, expected an integer 1..65536"),
    (_obj(shape=[8, True, 3]), "'shape[1]' is true"),
    (_obj(shape=[8, 6.0, 3]), "'shape[1]' is 6.0"),
    (_obj(shape="8x6x3"), "expected a list of 3 dimensions"),
    (_obj(shape=[1, 1, MAX_CHANNELS + 1], mean=[0], std=[1], color=None, resize=None),
     f"expected at most {MAX_CHANNELS} channels"),
    (_obj(divisor=0), "'divisor' is 0, expected a number > 0"),
    (_obj(divisor="255"), "'divisor' is \"255\", expected a number"),
    (_obj(divisor=1e39), "expected a finite float32 number"),
    (_obj(mean=[0.5, 0.5]), "'mean' has 2 values, expected 1 or 3 (one per channel)"),
    (_obj(mean=[]), "'mean' has 0 numbers, expected 1..4096"),
    (_obj(mean=0.5), "'mean' is 0.5, expected a list of numbers"),
    (_obj(std=[0.2, 0.0, 0.2]), "'std' is [0.2, 0.0, 0.2], expected numbers > 0"),
    (_obj(std=[0.2, None, 0.2]), "'std[1]' is null, expected a number"),
    (_obj(color="L"), "'color' is \"L\", expected a mode of 3 channel(s)"),
    (_obj(color="CMYK"), "'color' is \"CMYK\", expected null or one of L, RGB"),
    (_obj(color=1), "'color' is 1, expected null or a string"),
    (_obj(color=None), "'resize' is \"center-crop\", expected null when color is null"),
    (_obj(resize="fit"), "'resize' is \"fit\", expected null or one of stretch, center-crop"),
    (_obj(dtype="float32"), "'color' is \"RGB\", expected null for dtype float32"),
    ('{"layout": "NC", "dtype": "uint8", "shape": [3], "color": "L"}', "expected null for layout NC"),
    ("[" * 100_000, "over the limit of 65535"),
    ("[" * 60_000 + "]" * 60_000, "over the limit"),
    ('{"a":' * 20_000 + "1" + "}" * 20_000, "input convention"),
])
def test_malformed_conventions_are_typed_errors(text, match):
    with pytest.raises(AdtPreprocessError) as e:
        InputConvention.from_json(text)
    assert match in str(e.value) and isinstance(e.value, rt.AdtError)


def test_constructor_validates_like_the_parser():
    with pytest.raises(AdtPreprocessError, match="'layout' is \"CHW\""):
        InputConvention("CHW", "uint8", (1, 2, 2))
    with pytest.raises(AdtPreprocessError, match="'std' has 2 values, expected 1 or 4"):
        InputConvention("NC", "float32", (4,), std=(1, 2))
    with pytest.raises(AdtPreprocessError, match="over the limit"):
        InputConvention.from_json(b"\xff" * 70_000)
    with pytest.raises(AdtPreprocessError, match="not valid UTF-8"):
        InputConvention.from_json(b"\xff{}")
    assert InputConvention("NC", "float32", [4], mean=np.array([1.0])).shape == (4,)


def test_labels_round_trip_and_malformed():
    names = ["cat", "dog", "cat", "日本", "a" * 256]  # repeats are allowed (some data sets have them)
    text = labels_to_json(names)
    assert parse_labels(text) == names and parse_labels(text.encode()) == names
    for bad, match in [("{}", "expected a list of strings"), ("[]", "0 names, expected 1..65536"),
                       ('["a", 3]', "labels[1] is 3, expected a string"), ('["a", ""]', "labels[1] has 0 characters"),
                       (json.dumps(["x" * 257]), "labels[0] has 257 characters"), ("[", "not valid JSON"),
                       ('"cat"', "expected a list of strings")]:
        with pytest.raises(AdtPreprocessError) as e:
            parse_labels(bad)
        assert match in str(e.value)
    with pytest.raises(AdtPreprocessError, match="over the metadata value limit"):
        labels_to_json(["x" * 250] * 300)


# -- Model ------------------------------------------------------------------------------------------
def test_model_without_convention_refuses_raw_input_until_one_is_named():
    m = rt.load(lenet5_file(seed=0, b=0.3))
    assert m.input_convention is None and m.labels is None
    raw = np.random.default_rng(5).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    with pytest.raises(AdtPreprocessError, match="stores no input convention"):
        m.predict(raw)
    got = m.predict(raw, convention=InputConvention.mnist(), batch_size=4)
    assert got.dtype == np.int64 and np.array_equal(got, m.run(normalize(raw)).argmax(1))


def test_model_uses_the_stored_convention_and_labels():
    labels = [f"digit {i}" for i in range(10)]
    data = lenet5_file(seed=0, b=0.3, metadata={INPUT_KEY: InputConvention.mnist().to_json(),
                                                LABELS_KEY: labels_to_json(labels)})
    m = rt.load(data)
    assert m.input_convention == InputConvention.mnist() and m.labels == labels
    raw = np.random.default_rng(6).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    out = m.run(normalize(raw))
    assert np.array_equal(_bits(m.preprocess(raw)), _bits(normalize(raw)))
    assert m.predict(raw).tolist() == [labels[i] for i in out.argmax(1)]
    top3 = m.predict(raw, top_k=3, batch_size=2)
    assert top3.shape == (9, 3)
    assert top3.tolist() == [[labels[i] for i in row] for row in np.argsort(-out, axis=1, kind="stable")[:, :3]]
    with pytest.raises(AdtPreprocessError, match="top_k"):
        m.predict(raw, top_k=11)
    with pytest.raises(AdtPreprocessError, match="takes uint8"):
        m.predict(normalize(raw))


def test_stored_labels_must_match_the_class_count():
    m = rt.load(lenet5_file(metadata={INPUT_KEY: InputConvention.mnist().to_json(), LABELS_KEY: '["a", "b"]'}))
    with pytest.raises(AdtPreprocessError, match="stores 2 labels but the model outputs 10 classes"):
        m.predict(np.zeros((1, 28, 28), np.uint8))


@pytest.mark.parametrize("key,value,match", [
    (INPUT_KEY, '{"layout": "NHW"}', "missing field 'dtype'"),
    (INPUT_KEY, "1x28x28", "not valid JSON"),
    (LABELS_KEY, '["a", 1]', "labels[1] is 1"),
])
def test_a_malformed_entry_fails_the_load(key, value, match):
    data = lenet5_file(metadata={key: value})
    with pytest.raises(AdtPreprocessError, match=match.replace("[", r"\[").replace("]", r"\]")):
        rt.load(data)
    assert read_adt(data).metadata[key] == value  # the container itself stays readable


def test_the_free_text_input_key_of_older_files_is_not_the_convention():
    m = rt.load(lenet5_file(metadata={"input": "1x28x28"}))
    assert m.input_convention is None


def test_runtime_import_stays_torch_and_pillow_free():
    code = ("import sys, adt.runtime, adt.runtime.preprocess; "
            "print(sorted(k for k in ('torch', 'PIL', 'onnx') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- exported from torch ----------------------------------------------------------------------------
def _tiny_rgb_net():
    torch = pytest.importorskip("torch")
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 4, 5))


def test_exported_file_predicts_like_torch_on_raw_uint8(tmp_path):
    torch = pytest.importorskip("torch")
    from adt.exporter.export import export_adt
    net = _tiny_rgb_net()
    labels = ["ant", "bee", "cat", "dog", "eel"]
    path = tmp_path / "rgb.adt"
    export_adt(net, path, input_shape=(3, 8, 6), input_convention=RGB_NHWC, labels=labels)
    m = rt.load(path)
    assert m.input_convention == RGB_NHWC and m.labels == labels
    raw = np.random.default_rng(7).integers(0, 256, (40, 8, 6, 3), dtype=np.uint8)
    # torch's own preprocessing: ToTensor (HWC uint8 -> CHW / 255) then Normalize(mean, std)
    t = torch.from_numpy(raw).permute(0, 3, 1, 2).float().div(255)
    t = (t - torch.tensor(RGB_NHWC.mean).view(1, 3, 1, 1)) / torch.tensor(RGB_NHWC.std).view(1, 3, 1, 1)
    assert np.array_equal(_bits(m.preprocess(raw)), _bits(t.numpy()))
    # the file holds the quantized weights: compare with torch running those (the export check's
    # engine comparison), whose argmax the runtime must reproduce
    with torch.no_grad():
        logits = m.run(t.numpy())
        want = net(t).numpy().argmax(1)
    got = m.predict(raw)
    assert got.tolist() == [labels[i] for i in logits.argmax(1)]
    assert np.mean(logits.argmax(1) == want) >= 0.9  # quantization moves few decisions on this tiny net


def test_exported_flat_model_takes_raw_images(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn
    from adt.exporter.export import export_adt
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(784, 10))
    path = tmp_path / "flat.adt"
    export_adt(net, path, input_shape=(784,), input_convention=InputConvention.mnist())
    m = rt.load(path)
    assert m.input_shape[1:] == [784]
    raw = np.random.default_rng(8).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    x = normalize(raw).reshape(12, 784)
    assert np.array_equal(m.predict(raw), m.run(x).argmax(1))


def test_export_refuses_conventions_and_labels_that_do_not_fit(tmp_path):
    pytest.importorskip("torch")
    from adt.exporter.errors import ModelError
    from adt.exporter.export import export_adt
    net = _tiny_rgb_net()
    with pytest.raises(ModelError, match=r"turns raw samples into \[1, 28, 28\].*takes samples of shape \[3, 8, 6\]"):
        export_adt(net, None, input_shape=(3, 8, 6), input_convention=InputConvention.mnist())
    with pytest.raises(ModelError, match="3 labels given, the model outputs 5 classes"):
        export_adt(net, None, input_shape=(3, 8, 6), labels=["a", "b", "c"])
    with pytest.raises(ModelError, match="written from the input_convention / labels options"):
        export_adt(net, None, input_shape=(3, 8, 6), metadata={LABELS_KEY: '["a"]'})
    with pytest.raises(AdtPreprocessError, match="labels\\[0\\] has 0 characters"):
        export_adt(net, None, input_shape=(3, 8, 6), labels=["", "b", "c", "d", "e"])
    assert not list(tmp_path.iterdir())


def test_writer_side_stays_readable_by_the_container():
    w = AdtWriter()
    w.add_metadata(INPUT_KEY, RGB_NHWC.to_json())
    f = read_adt(w.to_bytes())
    assert InputConvention.from_json(f.metadata[INPUT_KEY]) == RGB_NHWC


def test_format_md_describes_the_members_and_bounds_the_code_enforces():
    from pathlib import Path

    from adt.runtime import preprocess as P
    spec = (Path(__file__).resolve().parents[2] / "format_spec" / "FORMAT.md").read_text()
    section = spec.split("### 4.1 Typed entries", 1)[1].split("## 5.", 1)[0]
    members = [line.split("|")[1].strip().strip("`") for line in section.splitlines()
               if line.startswith("| `")]
    assert tuple(members) == P._FIELDS
    assert f"each 1..{P.MAX_DIM}" in section and f"channels `C` ≤ {P.MAX_CHANNELS}" in section
    assert f"at most 2^{P.MAX_SAMPLE_ELEMENTS.bit_length() - 1} elements" in section
    assert f"1..{P.MAX_LABELS} strings, each 1..{P.MAX_LABEL_CHARS} characters" in section
    assert f"`{P.INPUT_KEY}`" in section and f"`{P.LABELS_KEY}`" in section
    assert InputConvention.mnist().to_json() in section.replace("\n", "")
