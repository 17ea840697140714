"""The in-memory form of a .adt file: what the writer is given and what the reader returns.

Field meanings follow FORMAT.md ("Tensor table"). Symbols are uint16 arrays of Eq. 13 levels;
:meth:`AdtFile.values` turns them into float32.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

from .huffman import HuffmanCode
from .quantize import dequantize

# Section kinds (FORMAT.md "Section table"); ids < 64 are required-to-understand, 64..127 optional.
SECTION_META = 1
SECTION_ARCH = 2
SECTION_CODES = 3
SECTION_TENSORS = 4
SECTION_PAYLOAD = 5
SECTION_NAMES = {
    SECTION_META: "metadata",
    SECTION_ARCH: "architecture",
    SECTION_CODES: "code tables",
    SECTION_TENSORS: "tensor table",
    SECTION_PAYLOAD: "payload",
}
REQUIRED_SECTIONS = (SECTION_CODES, SECTION_TENSORS, SECTION_PAYLOAD)

CORE_TUCKER = 0
CORE_CP = 1
ENC_PLAIN = 0
ENC_TUCKER = 1
QUANT_EQ13 = 0
ARCH_ONNX_DEFLATE = 0          # ONNX ModelProto, raw DEFLATE
ARCH_ONNX_DEFLATE_DICT1 = 1    # ONNX ModelProto, raw DEFLATE with the ADT-ONNX-1 preset dictionary


@dataclass(frozen=True)
class QuantGroup:
    """One Eq. 13 quantizer (Q levels, bound b) and the code table its symbols use."""

    q: int
    b: float
    table: int
    mode: int = QUANT_EQ13


@dataclass
class Core:
    """A Tucker core. ``kind`` is CORE_TUCKER (dense, ``symbols.shape == dims``) or CORE_CP
    (superdiagonal: ``dims == (r,)*order`` and only the diagonal, ``symbols.shape == (r,)``, is stored)."""

    kind: int
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
    """One named model parameter: stored plain (quantized dense) or as Tucker factors of a core."""

    name: str
    shape: tuple[int, ...]
    encoding: int
    group: int
    symbols: np.ndarray | None = None                    # plain: the values, shape == self.shape
    core: int | None = None                              # tucker: index into AdtFile.cores
    factors: list[np.ndarray] = field(default_factory=list)  # tucker: (n_i, k_i) symbol matrices
    bits: int = 0                                        # payload bits of this parameter (reader)

    @property
    def reshape(self) -> tuple[int, ...] | None:
        return tuple(int(f.shape[0]) for f in self.factors) if self.encoding == ENC_TUCKER else None

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
    kind: int
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
