"""The one exception hierarchy of ADT's file format.

Every failure to read or write a ``.adt`` file raises a subclass of :class:`AdtError`; the message
names what is wrong, where (section / table / byte offset) and the expected vs. actual value.
"""
from __future__ import annotations

__all__ = [
    "AdtError", "AdtArchitectureError", "AdtChecksumError", "AdtCodeTableError", "AdtLimitError",
    "AdtMagicError", "AdtMetadataError", "AdtPayloadError", "AdtQuantizationError", "AdtReadError", "AdtSectionError",
    "AdtTableError", "AdtTruncatedError", "AdtVarintError", "AdtVersionError", "AdtWriterError",
]


class AdtError(Exception):
    """Base class of every error ADT raises about a file, a model or its inputs."""


class AdtReadError(AdtError):
    """A path could not be read whole: it is missing or not a regular file, the OS refused the read,
    its bytes do not fit in memory, or it changed size while it was being read."""


class AdtTruncatedError(AdtError):
    """A read ran past the end of the file or of a section."""


class AdtMagicError(AdtError):
    """The file does not start with the ADT magic bytes."""


class AdtVersionError(AdtError):
    """The file's major version is not one this reader understands."""


class AdtChecksumError(AdtError):
    """The CRC-32 at the end of the file does not match its contents."""


class AdtSectionError(AdtError):
    """The section table is malformed: unknown, duplicate, out-of-order or mis-sized sections."""


class AdtLimitError(AdtError):
    """A field exceeds a hard limit of the spec (order, dims, counts, lengths, sizes)."""


class AdtVarintError(AdtError):
    """A variable-length integer is overlong, non-minimal or out of range."""


class AdtTableError(AdtError):
    """The tensor table (groups, cores, parameters) is inconsistent."""


class AdtCodeTableError(AdtError):
    """A Huffman code-length table is malformed or does not describe a complete prefix code."""


class AdtPayloadError(AdtError):
    """The payload bitstream does not decode to exactly the declared symbols."""


class AdtMetadataError(AdtError):
    """The metadata section is malformed (bad UTF-8, duplicate keys, ...)."""


class AdtArchitectureError(AdtError):
    """The architecture section cannot be decompressed or parsed."""


class AdtWriterError(AdtError):
    """The writer was called out of order or with values the format cannot hold."""


class AdtQuantizationError(AdtError):
    """A quantizer parameter (Q levels, bound b) is invalid."""
