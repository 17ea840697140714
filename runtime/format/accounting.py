"""Where every byte of a .adt file goes: the one byte-accounting routine of ADT.

``adt inspect`` (its report) and the exporter (its :class:`ExportReport`) both call
:func:`byte_breakdown`, so the two can never disagree. The accounting rules:

* file = header (magic + version) + section table + every section (file order) + CRC-32 checksum;
* payload section x 8 bits = core bits + factor bits + plain-bias bits + other plain bits + padding,
  using the per-array ``bits`` the reader fills while decoding. "cores" are the Tucker/CP cores of the
  core list; a tensor-train parameter's own cores (format 2.0) are its decomposed weight like a Tucker
  parameter's factors, so they count under "factors" (no new part: reports of 1.x files are unchanged).

Both sums are checked and raise :class:`AssertionError` (explicitly, so ``python -O`` cannot skip
them) when they do not add up: that is a reader bug, never a property of the user's file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .container import ENC_PLAIN, AdtFile, SectionKind
from .limits import MAGIC

__all__ = ["MAGIC_VERSION_BYTES", "PAYLOAD_PARTS", "ByteBreakdown", "SectionBytes", "byte_breakdown", "is_bias",
           "entropy_bits"]


def entropy_bits(symbols: np.ndarray) -> float:
    """Empirical (order-0) entropy of ``symbols`` in bits per symbol; 0 for an empty array."""
    s = np.asarray(symbols).reshape(-1)
    if s.size == 0:
        return 0.0
    counts = np.bincount(s.astype(np.int64))
    p = counts[counts > 0] / s.size
    return float(-(p * np.log2(p)).sum())

#: ``b"ADT\x1a"`` + major + minor: the fixed part of the header before the section table.
MAGIC_VERSION_BYTES = len(MAGIC) + 2

#: The payload parts of :attr:`ByteBreakdown.payload_bits`, in this order.
PAYLOAD_PARTS = ("cores", "factors", "plain biases", "other plain parameters", "padding")


@dataclass(frozen=True)
class SectionBytes:
    """One row of the file accounting: a named region and its length in bytes.
    ``kind`` is the section kind for a section, ``None`` for the header, section table and checksum."""

    name: str
    kind: int | None
    bytes: int


@dataclass(frozen=True)
class ByteBreakdown:
    """The result of :func:`byte_breakdown`.

    ``sections``: header (magic, version), section table, each section in file order, checksum;
    their bytes sum to ``file_size``. ``payload_bits``: :data:`PAYLOAD_PARTS` -> bits; they sum to
    8 x the payload section's length.
    """

    file_size: int
    sections: list[SectionBytes]
    payload_bits: dict[str, int] = field(default_factory=dict)

    @property
    def payload_bytes(self) -> int:
        """Length of the payload section (its bits include the padding)."""
        return sum(self.payload_bits.values()) // 8

    def legacy_dict(self) -> dict:
        """The dict the exporter's ``byte_breakdown`` used to return (kept byte-for-byte for
        :class:`ExportReport` and the committed run records):
        ``{"sections": {"header": magic+version+section table, <section name>: length, ...,
        "checksum": 4}, "payload_split_bytes": {"cores", "factors", "other"}}``."""
        rows = self.sections
        sections = {"header": rows[0].bytes + rows[1].bytes}    # header (magic, version) + section table
        for r in rows[2:-1]:
            sections[r.name] = r.bytes
        sections["checksum"] = rows[-1].bytes
        b = self.payload_bits
        split = {"cores": b["cores"] / 8, "factors": b["factors"] / 8,
                 "other": (b["plain biases"] + b["other plain parameters"]) / 8}
        return {"sections": sections, "payload_split_bytes": split}


def is_bias(name: str) -> bool:
    """Whether a parameter name is a bias (``bias`` or ``*.bias``), for the payload split."""
    return name == "bias" or name.endswith(".bias")


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"byte accounting bug: {what}")


def byte_breakdown(f: AdtFile) -> ByteBreakdown:
    """Where the bytes of a decoded :class:`AdtFile` go (see the module docstring for the rules).

    Raises :class:`AssertionError` if the sections do not add up to the file size or the payload
    parts to the payload section: a reader bug, never a user error.
    """
    rows = [SectionBytes("header (magic, version)", None, MAGIC_VERSION_BYTES),
            SectionBytes("section table", None, f.header_bytes - MAGIC_VERSION_BYTES)]
    rows += [SectionBytes(s.name, int(s.kind), s.length) for s in f.sections]
    rows.append(SectionBytes("checksum (CRC-32)", None, f.checksum_bytes))
    total = sum(r.bytes for r in rows)
    _check(total == f.file_size, f"sections give {total} bytes, the file has {f.file_size}")

    payload = next(s for s in f.sections if s.kind == SectionKind.PAYLOAD)
    plain = [p for p in f.params if p.encoding == ENC_PLAIN]
    bits = {
        "cores": sum(c.bits for c in f.cores),
        "factors": sum(p.bits for p in f.params if p.encoding != ENC_PLAIN),   # Tucker factors and TT cores
        "plain biases": sum(p.bits for p in plain if is_bias(p.name)),
        "other plain parameters": sum(p.bits for p in plain if not is_bias(p.name)),
    }
    coded = sum(bits.values())
    _check(coded == f.payload_bits, f"payload parts give {coded} bits, the reader decoded {f.payload_bits}")
    bits["padding"] = 8 * payload.length - f.payload_bits
    _check(0 <= bits["padding"] < 8, f"payload padding of {bits['padding']} bits (expected 0..7)")
    return ByteBreakdown(file_size=f.file_size, sections=rows, payload_bits=bits)
