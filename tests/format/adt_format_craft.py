"""An independent, deliberately permissive .adt serializer for the format tests.

It follows FORMAT.md, not writer.py, so it can (a) cross-check the writer byte for byte and (b) build
files that lie about any field while keeping every other field (and the CRC) consistent.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

VECTORS = Path(__file__).resolve().parents[2] / "format_spec" / "vectors"


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return varint(len(raw)) + raw


def eg_bits(v: int) -> str:
    """Exp-Golomb order 0 of v >= 0 as a '0'/'1' string."""
    u = v + 1
    return "0" * (u.bit_length() - 1) + format(u, "b")


def zigzag(d: int) -> int:
    return 2 * d if d >= 0 else -2 * d - 1


def pack_bits(bits: str, pad: str = "0") -> bytes:
    bits = bits + pad * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def table(lengths: dict[int, int], pad: str = "0") -> bytes:
    """A stored code table from {symbol: length} (any lengths, valid or not)."""
    syms = sorted(lengths)
    bits, prev_len, prev_sym = "", 0, None
    for s in syms:
        if prev_sym is not None:
            bits += eg_bits(s - prev_sym - 1)
        bits += eg_bits(zigzag(lengths[s] - prev_len))
        prev_len, prev_sym = lengths[s], s
    return varint(syms[0]) + varint(len(syms)) + pack_bits(bits, pad)


def group(q: int, b: float, tab: int = 0, mode: int = 0, b_raw: bytes | None = None) -> bytes:
    return bytes([mode]) + varint(q) + (b_raw if b_raw is not None else struct.pack("<f", b)) + varint(tab)


def core(kind: int, dims: list[int], grp: int, order: int | None = None) -> bytes:
    order = len(dims) if order is None else order
    body = bytes([kind]) + varint(order)
    body += varint(dims[0]) if kind == 1 else b"".join(varint(d) for d in dims)
    return body + varint(grp)


def plain_param(name: str | bytes, shape: list[int], grp: int, enc: int = 0) -> bytes:
    return string(name) + varint(len(shape)) + b"".join(varint(d) for d in shape) + bytes([enc]) + varint(grp)


def tucker_param(name: str, shape: list[int], grp: int, core_idx: int, reshape: list[int]) -> bytes:
    return plain_param(name, shape, grp, enc=1) + varint(core_idx) + b"".join(varint(n) for n in reshape)


def tt_param(name: str, shape: list[int], grp: int, reshape: list[int], ranks: list[int],
             order: int | None = None) -> bytes:
    """A tensor-train parameter (encoding 2, FORMAT.md §7.3); ``order`` overrides the declared d."""
    d = len(reshape) if order is None else order
    return (plain_param(name, shape, grp, enc=2) + varint(d) + b"".join(varint(n) for n in reshape)
            + b"".join(varint(r) for r in ranks))


def tensors(groups: list[bytes], cores: list[bytes], params: list[bytes]) -> bytes:
    return b"".join(varint(len(x)) + b"".join(x) for x in (groups, cores, params))


def assemble(sections: list[tuple[int, bytes]], major: int = 1, minor: int = 0,
             lengths: list[int] | None = None, count: int | None = None, crc: bool = True) -> bytes:
    """Header + section table + bodies + CRC-32. ``lengths``/``count`` override the declared values."""
    out = bytearray(b"ADT\x1a" + bytes([major, minor]))
    out += varint(len(sections) if count is None else count)
    for i, (kind, body) in enumerate(sections):
        out += bytes([kind]) + varint(len(body) if lengths is None else lengths[i])
    for _, body in sections:
        out += body
    if crc:
        out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


def recrc(data: bytes) -> bytes:
    """Replace the last 4 bytes by the CRC-32 of everything before them."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return c.compress(data) + c.flush()


def payload(code_bits: str, pad: str = "0") -> bytes:
    return pack_bits(code_bits, pad)
