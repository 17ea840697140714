"""A file's self-check: one probe input and a low-precision copy of the outputs the exporter saw.

The exporter (``export_adt(..., selfcheck=True)``) runs the file it wrote on a probe input and stores,
in the metadata entry ``selfcheck``, the probe's recipe and up to :data:`MAX_VALUES` of the outputs as
float16. ``adt verify`` on the device rebuilds the probe, runs decode + rebuild + engine, and compares:
a file whose outputs are garbage on this machine (a broken decoder, engine or platform) fails it.

The probe is not stored, only its recipe: SplitMix64 in counter mode, whose top 24 bits give uniform
values in [-1, 1). Integer arithmetic makes it the same on every platform and NumPy version (NumPy's
own generators promise no stream across versions).

The entry is JSON, ``{"v": 1, "seed": S, "shape": [1, ...], "stride": K, "out": BASE64, "atol": A}``:
``out`` holds ``outputs.ravel()[::stride]`` (at most MAX_VALUES) as little-endian float16, and a value
passes when ``|run - out| <= atol + 2**-10 * |out|`` (float16 keeps 11 significant bits).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .format import AdtError

if TYPE_CHECKING:
    from .model import Model

__all__ = ["KEY", "MAX_VALUES", "AdtSelfCheckError", "SelfCheckResult", "probe_input", "make_selfcheck",
           "run_selfcheck"]

KEY = "selfcheck"
MAX_VALUES = 16
MAX_PROBE_ELEMENTS = 1 << 22  # 16 MiB of float32: a recipe may not ask for more
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64 (Steele, Lea, Flood 2014)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class AdtSelfCheckError(AdtError):
    """The ``selfcheck`` entry is malformed, or this machine's outputs differ from the exporter's."""


@dataclass
class SelfCheckResult:
    """How this machine's outputs compare with the stored ones: ``max_error`` against ``atol``
    (float16 rounding allowed on top), over ``values`` compared values."""

    values: int
    max_error: float
    atol: float
    passed: bool


def probe_input(seed: int, shape: Sequence[int]) -> np.ndarray:
    """The probe: uniform float32 values in [-1, 1), value i = top 24 bits of SplitMix64(seed + i * golden),
    computed in uint64 arithmetic: bit-identical on every platform and NumPy version."""
    n = math.prod(int(d) for d in shape)
    if not 0 < n <= MAX_PROBE_ELEMENTS:
        raise AdtSelfCheckError(f"selfcheck: probe shape {list(shape)} has {n} elements, expected 1..{MAX_PROBE_ELEMENTS}")
    with np.errstate(over="ignore"):
        z = np.uint64(int(seed) % (1 << 64)) + np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)).astype(np.float64) / float(1 << 23) - 1.0).astype(np.float32).reshape(shape)


def make_selfcheck(outputs: np.ndarray, seed: int, shape: Sequence[int], atol_rel: float = 1e-3) -> str:
    """The ``selfcheck`` metadata value for ``outputs`` (the file's outputs on ``probe_input(seed, shape)``)."""
    flat = np.asarray(outputs, dtype=np.float64).reshape(-1)
    stride = max(1, -(-flat.size // MAX_VALUES))
    kept = flat[::stride].astype("<f2")
    scale = float(np.abs(flat).max()) if flat.size else 0.0
    entry = {"v": 1, "seed": int(seed), "shape": [int(d) for d in shape], "stride": stride,
             "out": base64.b64encode(kept.tobytes()).decode("ascii"), "atol": float(f"{atol_rel * scale:.3g}")}
    return json.dumps(entry, separators=(",", ":"))


def _parse(text: str) -> tuple[int, list[int], int, np.ndarray, float]:
    try:
        entry = json.loads(text)
        seed, shape, stride, atol = int(entry["seed"]), [int(d) for d in entry["shape"]], int(entry["stride"]), \
            float(entry["atol"])
        out = np.frombuffer(base64.b64decode(entry["out"], validate=True), dtype="<f2").astype(np.float64)
        if entry.get("v") != 1:
            raise ValueError(f"version {entry.get('v')!r}, expected 1")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise AdtSelfCheckError(f"selfcheck: malformed entry ({exc})") from None
    if stride < 1 or not out.size or out.size > MAX_VALUES or not (math.isfinite(atol) and atol >= 0):
        raise AdtSelfCheckError(f"selfcheck: malformed entry (stride {stride}, {out.size} values, atol {atol})")
    return seed, shape, stride, out, atol


def run_selfcheck(model: "Model") -> SelfCheckResult | None:
    """Run ``model``'s stored self-check; None when the file has none."""
    text = model.file.metadata.get(KEY)
    if text is None:
        return None
    seed, shape, stride, expected, atol = _parse(text)
    got = np.asarray(model.run(probe_input(seed, shape)), dtype=np.float64).reshape(-1)[::stride]
    if got.size != expected.size:
        raise AdtSelfCheckError(f"selfcheck: the outputs have {got.size} checked values, the file stored {expected.size}")
    err = np.abs(got - expected)
    ok = bool(np.all(err <= atol + 2.0 ** -10 * np.abs(expected)))  # NaN compares False: fails
    return SelfCheckResult(int(expected.size), float(np.nanmax(err)) if np.isfinite(err).any() else float("inf"),
                           atol, ok)
