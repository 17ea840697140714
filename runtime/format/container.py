"""The in-memory form of a .adt file: what the writer is given and what the reader returns.

Field meanings follow FORMAT.md ("Tensor table"). Symbols are uint16 arrays of Eq. 13 levels;
:meth:`AdtFile.values` turns them into float32.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from math import prod

import numpy as np

from .huffman import HuffmanCode
from .quantizer import dequantize

__all__ = [
    "AdtFile", "ArchFormat", "Core", "CoreKind", "Encoding", "Param", "QuantGroup", "QuantMode",
    "SectionInfo", "SectionKind", "ARCH_ONNX_DEFLATE", "ARCH_ONNX_DEFLATE_DICT1", "CORE_CP", "CORE_TUCKER",
    "ENC_PLAIN", "ENC_TT", "ENC_TUCKER", "QUANT_EQ13", "REQUIRED_SECTIONS", "SECTION_ARCH", "SECTION_CODES",
    "SECTION_META", "SECTION_NAMES", "SECTION_PAYLOAD", "SECTION_TENSORS",
]

class _Kind(IntEnum):
    """An IntEnum that prints as its number (``str``/``format`` as ``int``) on every Python >= 3.10,
    so error messages read the same as when these were bare ints."""

    __str__ = int.__repr__
    __format__ = int.__format__


class SectionKind(_Kind):
    """Section kinds (FORMAT.md "Section table"); ids < 64 are required-to-understand, 64..127 optional."""

    META = 1
    ARCH = 2
    CODES = 3
    TENSORS = 4
    PAYLOAD = 5


class CoreKind(_Kind):
    """How a core is stored: dense Tucker, or CP (superdiagonal: only the diagonal is stored)."""

    TUCKER = 0
    CP = 1


class Encoding(_Kind):
    """How a parameter is stored: plain (quantized dense values), as Tucker factors of a core, or
    (from format version 2.0 on) as the cores of a tensor train."""

    PLAIN = 0
    TUCKER = 1
    TT = 2


class QuantMode(_Kind):
    """Quantizer modes of a group; the format has one, the paper's Eq. 13."""

    EQ13 = 0


class ArchFormat(_Kind):
    """Encodings of the architecture section."""

    ONNX_DEFLATE = 0          # ONNX ModelProto, raw DEFLATE
    ONNX_DEFLATE_DICT1 = 1    # ONNX ModelProto, raw DEFLATE with the ADT-ONNX-1 preset dictionary


# The flat names every caller has used; they are the enum members themselves.
SECTION_META = SectionKind.META
SECTION_ARCH = SectionKind.ARCH
SECTION_CODES = SectionKind.CODES
SECTION_TENSORS = SectionKind.TENSORS
SECTION_PAYLOAD = SectionKind.PAYLOAD
SECTION_NAMES = {
    SECTION_META: "metadata",
    SECTION_ARCH: "architecture",
    SECTION_CODES: "code tables",
    SECTION_TENSORS: "tensor table",
    SECTION_PAYLOAD: "payload",
}
REQUIRED_SECTIONS = (SECTION_CODES, SECTION_TENSORS, SECTION_PAYLOAD)

CORE_TUCKER = CoreKind.TUCKER
CORE_CP = CoreKind.CP
ENC_PLAIN = Encoding.PLAIN
ENC_TUCKER = Encoding.TUCKER
ENC_TT = Encoding.TT
QUANT_EQ13 = QuantMode.EQ13
ARCH_ONNX_DEFLATE = ArchFormat.ONNX_DEFLATE
ARCH_ONNX_DEFLATE_DICT1 = ArchFormat.ONNX_DEFLATE_DICT1


@dataclass(frozen=True)
class QuantGroup:
    """One Eq. 13 quantizer (Q levels, bound b) and the code table its symbols use."""

    q: int
    b: float
    table: int
    mode: QuantMode = QUANT_EQ13


@dataclass
class Core:
    """A Tucker core. ``kind`` is CORE_TUCKER (dense, ``symbols.shape == dims``) or CORE_CP
    (superdiagonal: ``dims == (r,)*order`` and only the diagonal, ``symbols.shape == (r,)``, is stored)."""

    kind: CoreKind
    dims: tuple[int, ...]
    group: int
    symbols: np.ndarray
    bits: int = 0  # payload bits of this core (filled by the reader)

    @property
    def order(self) -> int:
        return len(self.dims)

    @property
    def stored_count(self) -> int:
        return self.dims[0] if self.kind == CORE_CP else prod(self.dims)


@dataclass
class Param:
    """One named model parameter: stored plain (quantized dense), as Tucker factors of a core, or as
    a tensor train (TT): ``factors`` then holds the d TT cores, symbol arrays of shape
    ``(r_{k-1}, n_k, r_k)`` with ``r_0 = r_d = 1``, and ``core`` is None."""

    name: str
    shape: tuple[int, ...]
    encoding: Encoding
    group: int
    symbols: np.ndarray | None = None                    # plain: the values, shape == self.shape
    core: int | None = None                              # tucker: index into AdtFile.cores
    factors: list[np.ndarray] = field(default_factory=list)  # tucker: (n_i, k_i) matrices; TT: (r, n, r) cores
    bits: int = 0                                        # payload bits of this parameter (reader)

    @property
    def reshape(self) -> tuple[int, ...] | None:
        """The dims ``(n_1..n_d)`` the parameter is rebuilt in before its reshape to ``shape``."""
        if self.encoding == ENC_TUCKER:
            return tuple(int(f.shape[0]) for f in self.factors)
        if self.encoding == ENC_TT:
            return tuple(int(f.shape[1]) for f in self.factors)
        return None

    @property
    def ranks(self) -> tuple[int, ...] | None:
        """A TT parameter's ranks ``(r_1..r_{d-1})`` (``r_0 = r_d = 1`` are implicit); None otherwise."""
        if self.encoding != ENC_TT:
            return None
        return tuple(int(f.shape[2]) for f in self.factors[:-1])

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def stored_count(self) -> int:
        if self.encoding == ENC_PLAIN:
            return self.numel
        return sum(int(f.size) for f in self.factors)


@dataclass
class SectionInfo:
    """Where one section's body lies in the file. ``kind`` is a :class:`SectionKind` member, or a
    plain int for an optional extension section (64..127) this reader does not know."""

    kind: SectionKind | int
    offset: int
    length: int

    @property
    def name(self) -> str:
        return SECTION_NAMES.get(self.kind, f"extension {self.kind}")


@dataclass
class AdtFile:
    """A decoded .adt file (symbols decoded, nothing rebuilt yet)."""

    version: tuple[int, int]
    metadata: dict[str, str]
    architecture: bytes | None          # decompressed ONNX ModelProto bytes, if the file has one
    tables: list[HuffmanCode]
    groups: list[QuantGroup]
    cores: list[Core]
    params: list[Param]
    sections: list[SectionInfo] = field(default_factory=list)
    file_size: int = 0
    header_bytes: int = 0               # magic, version and section table
    checksum_bytes: int = 4
    payload_bits: int = 0

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def kind(self, p: Param) -> str:
        """How ``p`` is stored: ``"plain"``, ``"tucker"`` (dense core), ``"cp"`` (diagonal core) or ``"tt"``."""
        if p.encoding == ENC_PLAIN:
            return "plain"
        if p.encoding == ENC_TT:
            return "tt"
        return "cp" if self.cores[p.core].kind == CORE_CP else "tucker"

    def values(self, symbols: np.ndarray, group: int) -> np.ndarray:
        """Dequantize symbols of ``group`` to float32 (FORMAT.md "Dequantization")."""
        g = self.groups[group]
        return dequantize(symbols, g.q, g.b)

    def core_values(self, index: int) -> np.ndarray:
        """The dense float32 core (a CP core is expanded to its superdiagonal tensor)."""
        core = self.cores[index]
        vals = self.values(core.symbols, core.group)
        if core.kind == CORE_CP:
            dense = np.zeros(core.dims, dtype=np.float32)
            idx = np.arange(core.dims[0])
            dense[(idx,) * core.order] = vals
            return dense
        return vals

    def original_float32_bytes(self) -> int:
        """Bytes of every parameter as a dense float32 tensor: the baseline of the true ratio."""
        return 4 * sum(p.numel for p in self.params)
