"""The .adt container: Eq. 13 quantizer, canonical Huffman codec, writer and reader.

Torch-free by design: this package ships to the device with the runtime.
"""
from .container import (
    CORE_CP, CORE_TUCKER, ENC_PLAIN, ENC_TUCKER, AdtFile, Core, Param, QuantGroup, SectionInfo,
)
from .errors import (
    AdtArchitectureError, AdtChecksumError, AdtCodeTableError, AdtError, AdtLimitError, AdtMagicError,
    AdtMetadataError, AdtPayloadError, AdtQuantizationError, AdtSectionError, AdtTableError,
    AdtTruncatedError, AdtVarintError, AdtVersionError, AdtWriterError,
)
from .huffman import HuffmanCode, code_lengths
from .quantize import ROUNDINGS, dequantize, fake_quantize, quantize
from .reader import read_adt
from .writer import AdtWriter, write_atomic

__all__ = [name for name in dir() if not name.startswith("_")]
