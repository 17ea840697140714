"""The .adt container: Eq. 13 quantizer, canonical Huffman codec, writer and reader.

Torch-free by design: this package ships to the device with the runtime.
"""
from .accounting import ByteBreakdown, SectionBytes, byte_breakdown, entropy_bits
from .container import (
    ARCH_ONNX_DEFLATE, ARCH_ONNX_DEFLATE_DICT1, CORE_CP, CORE_TUCKER, ENC_PLAIN, ENC_TT, ENC_TUCKER,
    QUANT_EQ13, REQUIRED_SECTIONS, SECTION_ARCH, SECTION_CODES, SECTION_META, SECTION_NAMES, SECTION_PAYLOAD,
    SECTION_TENSORS, AdtFile, ArchFormat, Core, CoreKind, Encoding, Param, QuantGroup, QuantMode, SectionInfo,
    SectionKind,
)
from .errors import (
    AdtArchitectureError, AdtChecksumError, AdtCodeTableError, AdtError, AdtLimitError, AdtMagicError,
    AdtMetadataError, AdtPayloadError, AdtQuantizationError, AdtReadError, AdtSectionError, AdtTableError,
    AdtTruncatedError, AdtVarintError, AdtVersionError, AdtWriterError,
)
from .huffman import HuffmanCode, code_lengths
from .quantizer import ROUNDINGS, check_quantizer, check_rounding, dequantize, fake_quantize, quantize
from .reader import read_adt
from .writer import TABLE_POLICIES, AdtWriter, write_atomic

__all__ = [
    # file model and constants
    "AdtFile", "Core", "Param", "QuantGroup", "SectionInfo",
    "ArchFormat", "CoreKind", "Encoding", "QuantMode", "SectionKind",
    "ARCH_ONNX_DEFLATE", "ARCH_ONNX_DEFLATE_DICT1", "CORE_CP", "CORE_TUCKER", "ENC_PLAIN", "ENC_TT",
    "ENC_TUCKER", "QUANT_EQ13", "REQUIRED_SECTIONS", "SECTION_ARCH", "SECTION_CODES", "SECTION_META", "SECTION_NAMES",
    "SECTION_PAYLOAD", "SECTION_TENSORS",
    # reading, writing, accounting
    "read_adt", "AdtWriter", "TABLE_POLICIES", "write_atomic", "byte_breakdown", "ByteBreakdown", "SectionBytes", "entropy_bits",
    # quantizer and codec
    "ROUNDINGS", "check_quantizer", "check_rounding", "quantize", "dequantize", "fake_quantize",
    "HuffmanCode", "code_lengths",
    # errors (AdtError is the one root)
    "AdtError", "AdtArchitectureError", "AdtChecksumError", "AdtCodeTableError", "AdtLimitError",
    "AdtMagicError", "AdtMetadataError", "AdtPayloadError", "AdtQuantizationError", "AdtReadError", "AdtSectionError",
    "AdtTableError", "AdtTruncatedError", "AdtVarintError", "AdtVersionError", "AdtWriterError",
]
