"""Bounds-checked byte reading and the varint (unsigned LEB128) encoding used everywhere."""
from __future__ import annotations

import struct

from .errors import AdtError, AdtLimitError, AdtSectionError, AdtTableError, AdtTruncatedError, AdtVarintError
from .limits import MAX_VARINT_BYTES

__all__ = ["Cursor", "encode_leb128", "encode_string", "encode_varint", "read_exact"]

_F32 = struct.Struct("<f")


def read_exact(buf: bytes | memoryview, offset: int, n: int, what: str) -> bytes:
    """Return ``buf[offset:offset+n]``, or raise if fewer than ``n`` bytes remain.

    Every read of a .adt file goes through here, so a truncated or lying file fails with
    :class:`AdtTruncatedError` naming the field instead of an IndexError or a short slice.
    """
    if n < 0 or offset < 0 or offset + n > len(buf):
        raise AdtTruncatedError(
            f"{what}: need {n} bytes at offset {offset}, only {max(0, len(buf) - offset)} available"
        )
    return bytes(buf[offset:offset + n])


def encode_leb128(value: int) -> bytes:
    """Unsigned LEB128 of any ``value >= 0``: 7 bits per byte, least significant group first, high bit
    = more follows. No range check: :func:`encode_varint` applies the .adt limit, the ONNX writer
    (``adt.runtime.onnx_proto``) the protobuf one; this is the one encoder both use."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_varint(value: int) -> bytes:
    """A .adt varint: unsigned LEB128 of a value in ``[0, 2**63)`` (at most MAX_VARINT_BYTES bytes)."""
    if value < 0 or value >= 1 << (7 * MAX_VARINT_BYTES):
        raise AdtVarintError(f"varint value {value} out of range [0, 2**63)")
    return encode_leb128(value)


class Cursor:
    """A read position inside one region (a section) of the file, with the region's name for errors."""

    def __init__(self, buf: bytes | memoryview, start: int, end: int, where: str):
        self.buf = buf
        self.pos = start
        self.end = end
        self.where = where

    def remaining(self) -> int:
        return self.end - self.pos

    def _bounded(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise AdtTruncatedError(
                f"{self.where}: {what} needs {n} bytes at offset {self.pos}, "
                f"only {self.end - self.pos} left in the section"
            )

    def bytes(self, n: int, what: str) -> bytes:
        self._bounded(n, what)
        data = read_exact(self.buf, self.pos, n, f"{self.where}: {what}")
        self.pos += n
        return data

    def view(self, n: int, what: str) -> memoryview:
        """Like :meth:`bytes`, but a zero-copy view (for the payload, the one large read)."""
        self._bounded(n, what)
        if self.pos + n > len(self.buf):
            read_exact(self.buf, self.pos, n, f"{self.where}: {what}")   # raises AdtTruncatedError
        data = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return data

    def u8(self, what: str) -> int:
        pos = self.pos
        if pos < self.end and pos < len(self.buf):     # fast path: one byte, no slice (a file's headers
            self.pos = pos + 1                         # are read byte by byte)
            return self.buf[pos]
        return self.bytes(1, what)[0]

    def f32(self, what: str) -> float:
        pos = self.pos
        if pos + 4 <= self.end and pos + 4 <= len(self.buf):
            self.pos = pos + 4
            return _F32.unpack_from(self.buf, pos)[0]
        return _F32.unpack(self.bytes(4, what))[0]

    def varint(self, what: str, limit: int | None = None, minimum: int = 0) -> int:
        """Read a minimal-length LEB128 varint and check ``minimum <= value <= limit``."""
        start = self.pos
        # Fast path: a one-byte varint in range (most counts and indices); anything else (longer,
        # out of range, truncated) takes the full path below, which names the field in its error.
        if start < self.end and start < len(self.buf):
            value = self.buf[start]
            if value < 0x80 and value >= minimum and (limit is None or value <= limit):
                self.pos = start + 1
                return value
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.u8(what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise AdtVarintError(f"{self.where}: {what} at offset {start} is not minimally encoded")
                break
        else:
            raise AdtVarintError(
                f"{self.where}: {what} at offset {start} is longer than {MAX_VARINT_BYTES} bytes"
            )
        if value < minimum or (limit is not None and value > limit):
            raise AdtLimitError(
                f"{self.where}: {what} = {value} at offset {start}, expected {minimum}..{limit}"
            )
        return value

    def string(self, what: str, max_bytes: int, error: type[AdtError] = AdtTableError) -> str:
        """A varint byte length then that many bytes of UTF-8."""
        n = self.varint(f"{what} length", limit=max_bytes)
        raw = self.bytes(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{self.where}: {what} at offset {self.pos - n} is not valid UTF-8 ({exc.reason})") from None

    def expect_end(self) -> None:
        if self.pos != self.end:
            raise AdtSectionError(
                f"{self.where}: {self.end - self.pos} unused bytes at offset {self.pos} (section must be consumed exactly)"
            )


def encode_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return encode_varint(len(raw)) + raw
