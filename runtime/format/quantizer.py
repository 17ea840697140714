"""The paper's Eq. 13 quantizer, as FORMAT.md ("Dequantization") pins it down.

    w_q = -b + floor((clip(w, -b, b) + b) * Q / (2b)) * 2b / Q

The integer ``s = floor(...)`` is the stored symbol. Eq. 13 gives ``s = Q`` exactly at ``w = b``;
ADT clamps that one case to ``Q - 1`` so that there are exactly Q levels and the alphabet is
``0 .. Q-1``. Decoders compute ``-b + s * (2b / Q)`` in IEEE double and round once to float32,
so every implementation reproduces the same float32 bits.

The decoder fixes only the GRID of levels ``-b + s * 2b/Q``; which symbol a writer picks is the
writer's choice (FORMAT.md section 9). ``rounding="floor"`` is Eq. 13 exactly (a value lands on the
level at or below it: error in [0, 2b/Q), mean -b/Q). ``rounding="nearest"`` picks the closest level
(``floor(t + 1/2)``: error within +-b/Q, no bias): same grid, same decoder, same file format, a
smaller error at the same Q; ADT uses it where accuracy per byte matters.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import AdtQuantizationError
from .limits import MAX_Q

__all__ = ["ROUNDINGS", "check_quantizer", "check_rounding", "dequantize", "fake_quantize", "quantize"]

#: How a writer picks a symbol: "floor" (the paper's Eq. 13) or "nearest" (the closest level).
ROUNDINGS = ("floor", "nearest")


def check_quantizer(q: int, b: float) -> None:
    """Raise :class:`AdtQuantizationError` unless ``1 <= q <= MAX_Q`` and ``b`` is a finite float32 > 0."""
    if not isinstance(q, (int, np.integer)) or not 1 <= int(q) <= MAX_Q:
        raise AdtQuantizationError(f"Q must be an integer in 1..{MAX_Q}, got {q!r}")
    b32 = float(np.float32(b))
    if not (math.isfinite(b32) and b32 > 0):
        raise AdtQuantizationError(f"b must be a finite positive float32, got {b!r}")


def check_rounding(rounding: str) -> None:
    """Raise :class:`AdtQuantizationError` unless ``rounding`` is one of :data:`ROUNDINGS`."""
    if rounding not in ROUNDINGS:
        raise AdtQuantizationError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def quantize(values: np.ndarray, q: int, b: float, rounding: str = "floor") -> np.ndarray:
    """Map real values to Eq. 13 symbols (uint16, ``0 <= s < q``). ``b`` is rounded to float32 first,
    because that is what the file stores. ``rounding``: "floor" (Eq. 13) or "nearest" level."""
    check_quantizer(q, b)
    check_rounding(rounding)
    b64 = float(np.float32(b))
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise AdtQuantizationError("cannot quantize NaN or infinite values")
    t = (np.clip(v, -b64, b64) + b64) * q / (2.0 * b64)
    s = np.floor(t + 0.5) if rounding == "nearest" else np.floor(t)
    return np.minimum(s, q - 1).astype(np.uint16)


def dequantize(symbols: np.ndarray, q: int, b: float) -> np.ndarray:
    """Symbols back to float32 values: ``float32(-b + s * (2b/Q))`` computed in double."""
    check_quantizer(q, b)
    b64 = float(np.float32(b))
    s = np.asarray(symbols, dtype=np.float64)
    return (-b64 + s * (2.0 * b64 / q)).astype(np.float32)


def fake_quantize(values: np.ndarray, q: int, b: float, rounding: str = "floor") -> np.ndarray:
    """``dequantize(quantize(values))``: what a value becomes after a round trip through the file."""
    return dequantize(quantize(values, q, b, rounding), q, b)
