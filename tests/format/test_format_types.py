"""The format layer's types: IntEnum kinds under their old names and values, the writer's phases,
an explicit ``__all__``, and the quantizer module no longer shadowed by the function ``quantize``."""
from __future__ import annotations

import importlib
from enum import IntEnum

import numpy as np
import pytest

import adt.runtime.format as F
from adt.runtime.format import AdtWriter, AdtWriterError, read_adt
from adt.runtime.format.writer import WriterPhase

# name -> the int it had when the constants were bare ints (FORMAT.md fixes these values)
OLD_CONSTANTS = {
    "SECTION_META": 1, "SECTION_ARCH": 2, "SECTION_CODES": 3, "SECTION_TENSORS": 4, "SECTION_PAYLOAD": 5,
    "CORE_TUCKER": 0, "CORE_CP": 1, "ENC_PLAIN": 0, "ENC_TUCKER": 1, "QUANT_EQ13": 0,
    "ARCH_ONNX_DEFLATE": 0, "ARCH_ONNX_DEFLATE_DICT1": 1,
}


@pytest.mark.parametrize("name,value", sorted(OLD_CONSTANTS.items()))
def test_old_constant_names_keep_their_values(name, value):
    c = getattr(F, name)
    assert isinstance(c, IntEnum) and c == value and int(c) == value
    assert str(c) == f"{c}" == str(value)  # messages and JSON read as before
    assert getattr(importlib.import_module("adt.runtime.format.container"), name) is c


def test_reader_returns_enum_members():
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    c = w.add_core(np.ones((2, 2), np.uint16), g)
    w.add_tucker("w", (2, 2), c, [np.ones((2, 2), np.uint16)] * 2, g)
    w.add_plain("b", np.ones(2, np.uint16), g)
    f = read_adt(w.to_bytes())
    assert f.cores[0].kind is F.CoreKind.TUCKER and f.groups[0].mode is F.QuantMode.EQ13
    assert [p.encoding for p in f.params] == [F.Encoding.TUCKER, F.Encoding.PLAIN]
    assert [s.kind for s in f.sections] == [F.SectionKind.CODES, F.SectionKind.TENSORS, F.SectionKind.PAYLOAD]


def test_writer_phases_only_move_forward():
    assert list(WriterPhase) == sorted(WriterPhase) and [p.label for p in WriterPhase] == [
        "groups", "cores", "parameters", "finished"]
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    w.add_plain("b", np.ones(2, np.uint16), g)
    with pytest.raises(AdtWriterError, match="out of order, cores must be added before parameters"):
        w.add_core(np.ones(2, np.uint16), g)
    w.to_bytes()
    with pytest.raises(AdtWriterError, match="already finished"):
        w.add_group(16, 1.0)


def test_explicit_all_and_no_shadowed_submodule():
    assert all(hasattr(F, n) for n in F.__all__) and len(set(F.__all__)) == len(F.__all__)
    assert callable(F.quantize) and "quantize" in F.__all__
    q = importlib.import_module("adt.runtime.format.quantizer")
    assert F.quantize is q.quantize and F.check_quantizer is q.check_quantizer
    assert "quantizer" not in F.__all__ and "accounting" not in F.__all__  # names, not submodules
