"""The input convention and class names a .adt file carries (metadata ``input_convention``, ``labels``).

A model is trained on preprocessed samples: raw pixels converted to float, divided by 255, centred by
a per-channel mean and scaled by a per-channel standard deviation, laid out NCHW. A device that is
handed only the .adt file must apply exactly that, so the exporter records it (FORMAT.md §4.1) and
the runtime applies it (``Model.preprocess`` / ``Model.predict``, ``adt run``). Torch-free: NumPy only.

    conv = InputConvention(layout="NHWC", dtype="uint8", shape=(32, 32, 3), divisor=255.0,
                           mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), color="RGB", resize="stretch")
    x = conv.apply(raw_uint8)            # [N, 32, 32, 3] uint8 -> [N, 3, 32, 32] float32
    text = conv.to_json()                # the metadata value; InputConvention.from_json(text) == conv

The arithmetic is fixed (float32 throughout, so every runtime gets the same bits):
``x = float32(raw) / float32(divisor)``, transposed to NCHW (``NHW`` gains a channel axis of 1), then
``x = (x - float32(mean[c])) / float32(std[c])`` per channel ``c``. :meth:`InputConvention.mnist`
reproduces :func:`adt.runtime.mnist.normalize` bit for bit.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .format.errors import AdtError

__all__ = [
    "COLORS", "DTYPES", "INPUT_KEY", "LABELS_KEY", "LAYOUTS", "MAX_CHANNELS", "MAX_DIM", "MAX_LABEL_CHARS",
    "MAX_LABELS", "MAX_SAMPLE_ELEMENTS", "MAX_VALUE_BYTES", "RESIZES", "AdtPreprocessError", "InputConvention",
    "labels_to_json", "parse_labels", "read_convention", "read_labels", "top_k",
]

#: Metadata key of the input convention (a JSON object, FORMAT.md §4.1). Not ``input``: files written
#: before this key existed carry ``input`` as free text ("1x28x28"), which must stay readable.
INPUT_KEY = "input_convention"
#: Metadata key of the class names (a JSON array of strings, FORMAT.md §4.1).
LABELS_KEY = "labels"

#: Layouts of the RAW samples a user gives (N = batch). ``NHW``: one channel without a channel axis
#: (grayscale images, e.g. MNIST's [N, 28, 28]); ``NC``: flat feature vectors, no image.
LAYOUTS = ("NCHW", "NHWC", "NHW", "NC")
DTYPES = ("uint8", "float32")
#: Pillow modes an image is converted to before it becomes a raw sample ("L": 1 channel, "RGB": 3).
COLORS = ("L", "RGB")
#: How an image loader reaches ``shape``: "stretch" (resize to H x W, aspect ratio not kept) or
#: "center-crop" (shorter side resized to fit, then the centre cut out). None: images must have that size.
RESIZES = ("stretch", "center-crop")

MAX_CHANNELS = 4096
MAX_DIM = 65536                 # any one dimension of a sample
MAX_SAMPLE_ELEMENTS = 1 << 28   # elements of one raw sample (the format's bound on one parameter)
MAX_LABELS = 65536
MAX_LABEL_CHARS = 256
MAX_VALUE_BYTES = 65535         # a metadata value's limit (FORMAT.md §4), so the JSON's too

_FIELDS = ("layout", "dtype", "shape", "divisor", "mean", "std", "color", "resize")
_REQUIRED = ("layout", "dtype", "shape")
_COLOR_CHANNELS = {"L": 1, "RGB": 3}


class AdtPreprocessError(AdtError):
    """An input convention or a label list that is malformed (in a file or given by a caller), or raw
    input that does not match the convention (wrong dtype or shape): the message names the field or
    the array, what was expected and what was found."""


def _fail(field: str, expected: str, got: Any) -> AdtPreprocessError:
    return AdtPreprocessError(f"input convention: {field!r} is {_show(got)}, expected {expected}")


def _show(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=True) if isinstance(v, (str, int, float, list, tuple, type(None), bool)) \
        else type(v).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _number(field: str, v: Any) -> float:
    """A finite real number that is also finite as float32 (bools are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise _fail(field, "a number", v)
    f = float(v)
    if not math.isfinite(f) or abs(f) > float(np.finfo(np.float32).max):
        raise _fail(field, "a finite float32 number", v)
    return f


def _numbers(field: str, v: Any) -> tuple[float, ...]:
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, np.ndarray)):
        raise _fail(field, "a list of numbers", v)
    if not 1 <= len(v) <= MAX_CHANNELS:
        raise AdtPreprocessError(f"input convention: {field!r} has {len(v)} numbers, expected 1..{MAX_CHANNELS}")
    return tuple(_number(f"{field}[{i}]", x) for i, x in enumerate(v))


@dataclass(frozen=True)
class InputConvention:
    """How raw samples become the model's input (see the module doc). Frozen; validated on creation
    (:class:`AdtPreprocessError` naming the field, expected vs found).

    ``layout``: of the raw samples (:data:`LAYOUTS`); ``dtype``: "uint8" or "float32"; ``shape``: one
    raw sample in ``layout`` order without N, e.g. (28, 28) for NHW, (32, 32, 3) for NHWC, (784,) for
    NC; ``divisor``: raw values are divided by it (255 for pixels to [0, 1]); ``mean``/``std``: per
    channel (one value: every channel); ``color``: Pillow mode images are decoded to (None: the
    convention takes arrays only); ``resize``: how images reach the size (None: they must have it)."""

    layout: str
    dtype: str
    shape: tuple[int, ...]
    divisor: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    color: str | None = None
    resize: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise _fail("layout", "one of " + ", ".join(LAYOUTS), self.layout)
        if self.dtype not in DTYPES:
            raise _fail("dtype", "one of " + ", ".join(DTYPES), self.dtype)
        rank = len(self.layout) - 1
        shape = self.shape
        if isinstance(shape, (str, bytes)) or not isinstance(shape, (list, tuple)):
            raise _fail("shape", f"a list of {rank} dimensions", shape)
        if len(shape) != rank:
            raise _fail("shape", f"{rank} dimensions for layout {self.layout} ({self.layout[1:]})", list(shape))
        for i, d in enumerate(shape):
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= int(d) <= MAX_DIM:
                raise _fail(f"shape[{i}]", f"an integer 1..{MAX_DIM}", d)
        shape = tuple(int(d) for d in shape)
        object.__setattr__(self, "shape", shape)
        channels = self.channels
        if channels > MAX_CHANNELS:
            raise _fail("shape", f"at most {MAX_CHANNELS} channels", list(shape))
        if math.prod(shape) > MAX_SAMPLE_ELEMENTS:
            raise _fail("shape", f"at most {MAX_SAMPLE_ELEMENTS} elements per sample", list(shape))
        divisor = _number("divisor", self.divisor)
        if divisor <= 0:
            raise _fail("divisor", "a number > 0", self.divisor)
        object.__setattr__(self, "divisor", divisor)
        for name in ("mean", "std"):
            values = _numbers(name, getattr(self, name))
            if len(values) not in (1, channels):
                raise AdtPreprocessError(f"input convention: {name!r} has {len(values)} values, expected 1 or "
                                         f"{channels} (one per channel)")
            object.__setattr__(self, name, values)
        if any(s <= 0 for s in self.std):
            raise _fail("std", "numbers > 0", list(self.std))
        if self.color is not None:
            if self.color not in COLORS:
                raise _fail("color", "null or one of " + ", ".join(COLORS), self.color)
            if self.layout == "NC":
                raise _fail("color", "null for layout NC (flat vectors are not images)", self.color)
            if self.dtype != "uint8":
                raise _fail("color", "null for dtype float32 (decoded images are uint8)", self.color)
            if _COLOR_CHANNELS[self.color] != channels:
                raise _fail("color", f"a mode of {channels} channel(s) as the shape has "
                                     f"(L: 1, RGB: 3)", self.color)
        if self.resize is not None:
            if self.resize not in RESIZES:
                raise _fail("resize", "null or one of " + ", ".join(RESIZES), self.resize)
            if self.color is None:
                raise _fail("resize", "null when color is null (only decoded images are resized)", self.resize)

    # -- derived ------------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """Channels of a sample (1 for NHW; the features of an NC vector)."""
        return {"NCHW": lambda s: s[0], "NHWC": lambda s: s[2], "NHW": lambda s: 1,
                "NC": lambda s: s[0]}[self.layout](self.shape)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of an image sample; None for NC."""
        s = self.shape
        return {"NCHW": (s[1], s[2]) if len(s) == 3 else None, "NHWC": (s[0], s[1]) if len(s) == 3 else None,
                "NHW": (s[0], s[1]) if len(s) == 2 else None}.get(self.layout)

    @property
    def model_shape(self) -> tuple[int, ...]:
        """One sample as :meth:`apply` returns it: (C, H, W) for images, (C,) for NC."""
        hw = self.image_size
        return (self.channels, *hw) if hw is not None else self.shape

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def describe(self) -> str:
        """One line for people, e.g. ``uint8 NHW 28x28, /255, mean 0.1307, std 0.3081, image L (stretch)``."""
        def nums(v):
            return ",".join(f"{x:g}" for x in v)
        img = f", images {self.color}" + (f" ({self.resize})" if self.resize else " (no resize)") if self.color else ""
        return (f"{self.dtype} {self.layout} {'x'.join(map(str, self.shape))}, /{self.divisor:g}, "
                f"mean {nums(self.mean)}, std {nums(self.std)}{img}")

    # -- applying -----------------------------------------------------------------------------------
    def check_raw(self, raw: Any) -> np.ndarray:
        """``raw`` if it is a batch ``[N, *shape]`` of this convention's dtype (any float dtype for a
        float32 convention), else :class:`AdtPreprocessError` naming expected and found."""
        want = f"{self.dtype} [N, {', '.join(map(str, self.shape))}] (layout {self.layout})"
        if not isinstance(raw, np.ndarray):
            raise AdtPreprocessError(f"raw input must be a NumPy array {want}, got {type(raw).__name__}")
        ok = raw.dtype == np.uint8 if self.dtype == "uint8" else np.issubdtype(raw.dtype, np.floating)
        if not ok:
            hint = (": pass the raw samples (pixels 0..255), not preprocessed values"
                    if self.dtype == "uint8" and np.issubdtype(raw.dtype, np.floating) else "")
            raise AdtPreprocessError(f"raw input has dtype {raw.dtype}, the input convention takes {want}{hint}")
        if raw.ndim != len(self.shape) + 1 or tuple(raw.shape[1:]) != self.shape:
            raise AdtPreprocessError(f"raw input has shape {list(raw.shape)}, the input convention takes {want}")
        return raw

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw batch ``[N, *shape]`` -> float32 model input ``[N, *model_shape]`` (NCHW for images),
        C-contiguous and new (``raw`` is not changed)."""
        raw = self.check_raw(raw)
        if self.layout == "NHWC":
            raw = raw.transpose(0, 3, 1, 2)
        elif self.layout == "NHW":
            raw = raw[:, None]
        x = np.array(raw, dtype=np.float32, order="C")  # always a copy: the caller's array never changes
        if self.divisor != 1.0:
            x /= np.float32(self.divisor)   # in place: the same bits as x / float32(divisor)
        x -= self._per_channel(self.mean, x.ndim)
        x /= self._per_channel(self.std, x.ndim)
        return x

    def _per_channel(self, values: tuple[float, ...], ndim: int):
        if len(values) == 1:
            return np.float32(values[0])
        return np.asarray(values, np.float32).reshape((1, -1) + (1,) * (ndim - 2))

    def conform(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` rearranged into this convention's layout where that is unambiguous, for data sets
        stored another way: the other of NCHW/NHWC (when only one of them matches ``shape``), or a
        missing / extra channel axis of size 1 (``[N, 28, 28]`` for NHWC (28, 28, 1), ``[N, 28, 28, 1]``
        or ``[N, 1, 28, 28]`` for NHW). Only the layout changes, never a value; anything else is
        returned as is (:meth:`check_raw` then names the mismatch)."""
        if not isinstance(raw, np.ndarray) or raw.ndim < 2:
            return raw
        s, got = self.shape, tuple(raw.shape[1:])
        if got == s:
            return raw
        if self.layout in ("NCHW", "NHWC"):
            if raw.ndim == 4:
                other = raw.transpose(0, 3, 1, 2) if self.layout == "NCHW" else raw.transpose(0, 2, 3, 1)
                if tuple(other.shape[1:]) == s:
                    return other
            if raw.ndim == 3 and self.channels == 1 and got == self.image_size:
                return raw[:, None] if self.layout == "NCHW" else raw[..., None]
        if self.layout == "NHW" and raw.ndim == 4:
            if got == (1, *s):
                return raw[:, 0]
            if got == (*s, 1):
                return raw[..., 0]
        return raw

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON object (every field, in the spec's order)."""
        return {"layout": self.layout, "dtype": self.dtype, "shape": list(self.shape), "divisor": self.divisor,
                "mean": list(self.mean), "std": list(self.std), "color": self.color, "resize": self.resize}

    def to_json(self) -> str:
        """The metadata value: compact JSON, every field, ASCII, at most :data:`MAX_VALUE_BYTES`."""
        text = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        if len(text) > MAX_VALUE_BYTES:
            raise AdtPreprocessError(f"input convention: its JSON takes {len(text)} bytes, over the metadata "
                                     f"value limit of {MAX_VALUE_BYTES}")
        return text

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> "InputConvention":
        """From the JSON object: ``layout``, ``dtype``, ``shape`` required, the rest optional with the
        defaults above; an unknown field is an error (it could change the arithmetic)."""
        if not isinstance(obj, Mapping):
            raise AdtPreprocessError(f"input convention: expected a JSON object, got {_show(obj)}")
        unknown = [k for k in obj if k not in _FIELDS]
        if unknown:
            raise AdtPreprocessError(f"input convention: unknown field {_show(unknown[0])}; the fields are "
                                     + ", ".join(_FIELDS))
        missing = [k for k in _REQUIRED if k not in obj]
        if missing:
            raise AdtPreprocessError(f"input convention: missing field {missing[0]!r} (required: "
                                     + ", ".join(_REQUIRED) + ")")
        for k in ("layout", "dtype"):
            if not isinstance(obj[k], str):
                raise _fail(k, "a string", obj[k])
        for k in ("color", "resize"):
            if obj.get(k) is not None and not isinstance(obj[k], str):
                raise _fail(k, "null or a string", obj[k])
        return cls(**{k: obj[k] for k in _FIELDS if k in obj})

    @classmethod
    def from_json(cls, text: str | bytes) -> "InputConvention":
        """Parse a metadata value strictly (:class:`AdtPreprocessError` for anything but a valid
        convention: bad JSON, NaN/Infinity, duplicate fields, unknown fields, wrong types or values)."""
        return cls.from_dict(_loads(text, "input convention"))

    # -- the built-in one ---------------------------------------------------------------------------
    @classmethod
    def mnist(cls) -> "InputConvention":
        """ADT's MNIST convention: uint8 [N, 28, 28], /255, mean 0.1307, std 0.3081 (identical to
        :func:`adt.runtime.mnist.normalize`); images decoded as grayscale and stretched to 28 x 28."""
        from .mnist import MEAN, STD
        return cls(layout="NHW", dtype="uint8", shape=(28, 28), divisor=255.0, mean=(MEAN,), std=(STD,),
                   color="L", resize="stretch")


def _reject_constant(name: str):
    raise AdtPreprocessError(f"{name} is not a JSON number")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise AdtPreprocessError(f"duplicate JSON field {_show(k)}")
        out[k] = v
    return out


def _loads(text: Any, what: str) -> Any:
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_VALUE_BYTES:  # before decoding: the size bounds the work
            raise AdtPreprocessError(f"{what}: {len(text)} bytes of JSON, over the limit of {MAX_VALUE_BYTES}")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise AdtPreprocessError(f"{what}: not valid UTF-8") from None
    if not isinstance(text, str):
        raise AdtPreprocessError(f"{what}: expected JSON text, got {type(text).__name__}")
    if len(text.encode("utf-8")) > MAX_VALUE_BYTES:
        raise AdtPreprocessError(f"{what}: {len(text.encode('utf-8'))} bytes of JSON, over the limit of {MAX_VALUE_BYTES}")
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except AdtPreprocessError as exc:
        raise AdtPreprocessError(f"{what}: {exc}") from None
    except RecursionError:
        raise AdtPreprocessError(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError
        raise AdtPreprocessError(f"{what}: not valid JSON ({exc})") from None


# -- labels -----------------------------------------------------------------------------------------
def check_labels(labels: Any) -> list[str]:
    """``labels`` as a list of class names: 1..:data:`MAX_LABELS` strings of 1..:data:`MAX_LABEL_CHARS`
    characters each (repeats are allowed: some data sets name two classes alike)."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (list, tuple)):
        raise AdtPreprocessError(f"labels: expected a list of strings, got {_show(labels)}")
    if not 1 <= len(labels) <= MAX_LABELS:
        raise AdtPreprocessError(f"labels: {len(labels)} names, expected 1..{MAX_LABELS}")
    for i, name in enumerate(labels):
        if not isinstance(name, str):
            raise AdtPreprocessError(f"labels[{i}] is {_show(name)}, expected a string")
        if not 1 <= len(name) <= MAX_LABEL_CHARS:
            raise AdtPreprocessError(f"labels[{i}] has {len(name)} characters, expected 1..{MAX_LABEL_CHARS}")
    return list(labels)


def labels_to_json(labels: Sequence[str]) -> str:
    """The ``labels`` metadata value: a compact JSON array (UTF-8, at most :data:`MAX_VALUE_BYTES`)."""
    text = json.dumps(check_labels(labels), separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) > MAX_VALUE_BYTES:
        raise AdtPreprocessError(f"labels: their JSON takes {len(text.encode('utf-8'))} bytes, over the metadata "
                                 f"value limit of {MAX_VALUE_BYTES}")
    return text


def parse_labels(text: str | bytes) -> list[str]:
    """Parse a ``labels`` metadata value strictly (:class:`AdtPreprocessError` otherwise)."""
    return check_labels(_loads(text, "labels"))


# -- reading them from a file's metadata ------------------------------------------------------------
def read_convention(metadata: Mapping[str, str]) -> InputConvention | None:
    """The convention stored in ``metadata`` (None when absent; :class:`AdtPreprocessError` when malformed)."""
    text = metadata.get(INPUT_KEY)
    return None if text is None else InputConvention.from_json(text)


def read_labels(metadata: Mapping[str, str]) -> list[str] | None:
    """The class names stored in ``metadata`` (None when absent; :class:`AdtPreprocessError` when malformed)."""
    text = metadata.get(LABELS_KEY)
    return None if text is None else parse_labels(text)


def top_k(outputs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row of ``outputs`` [N, classes]: ``(indices int64 [N, k],
    values [N, k])``, largest first; ties go to the lower index (so column 0 is ``argmax``)."""
    out = np.asarray(outputs)
    if out.ndim != 2:
        raise AdtPreprocessError(f"top-k needs outputs [N, classes], got shape {list(out.shape)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= out.shape[1]:
        raise AdtPreprocessError(f"top_k is {k!r}, expected 1..{out.shape[1]} (the number of classes)")
    idx = np.argsort(-out, axis=1, kind="stable")[:, :k].astype(np.int64)
    return idx, np.take_along_axis(out, idx, axis=1)
