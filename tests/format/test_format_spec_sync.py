"""FORMAT.md and the code agree: the limits table, the empty-file size and the worked example."""
from __future__ import annotations

import re

import adt_format_craft as C
from adt.runtime.format import limits as L

SPEC = (C.VECTORS.parent / "FORMAT.md").read_text()


def _limits_table() -> dict[str, str]:
    section = SPEC.split("## 11. Limits", 1)[1].split("## 12.", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and not set(cells[0]) <= set("-"):
            rows[cells[0]] = cells[1]
    return rows


def _pow(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def test_limits_table_matches_limits_py():
    rows = _limits_table()
    expect = {
        "sections": str(L.MAX_SECTIONS),
        "body of a non-payload section": _pow(L.MAX_SECTION_BYTES),
        "payload body": _pow(L.MAX_PAYLOAD_BYTES),
        "metadata entries": str(L.MAX_META_ENTRIES),
        "metadata key": f"1..{L.MAX_META_KEY_BYTES}",
        "metadata value": str(L.MAX_META_VALUE_BYTES),
        "code tables": str(L.MAX_TABLES),
        "code length": f"1..{L.MAX_CODE_LENGTH}",
        "groups": str(L.MAX_GROUPS),
        "Q": f"1..{L.MAX_Q}",
        "cores": str(L.MAX_CORES),
        "parameters": str(L.MAX_PARAMS),
        "parameter name": f"1..{L.MAX_NAME_BYTES}",
        "elements of one parameter": _pow(L.MAX_TENSOR_ELEMENTS),
        "elements of all parameters": _pow(L.MAX_TOTAL_ELEMENTS),
        "stored values of one core": _pow(L.MAX_TENSOR_ELEMENTS),
        "varint length": str(L.MAX_VARINT_BYTES),
        "Exp-Golomb code in a table": str(L.MAX_EG_LEADING_ZEROS),
    }
    for what, text in expect.items():
        assert what in rows, f"FORMAT.md limits table has no row {what!r}"
        assert text in rows[what], f"FORMAT.md says {rows[what]!r} for {what!r}, limits.py says {text}"
    arch = rows["architecture, inflated"]
    assert _pow(L.MAX_ARCH_BYTES) in arch and str(L.MAX_DEFLATE_RATIO) in arch
    assert f"{L.MAX_ORDER}" in rows["order of a core, ndim of a shape"]
    assert "2^31-1" in rows["any dimension (shape, core dims, CP rank, reshape)"] and L.MAX_DIM == 2**31 - 1
    assert f"1..{L.MAX_ORDER}" in rows["TT order (cores of a tensor train)"] and "2^31-1" in rows["TT rank"]
    assert _pow(L.MAX_TENSOR_ELEMENTS) in rows["stored values of one TT core, and of a TT parameter's cores together"]


def test_empty_file_size_and_version_stated():
    size = len((C.VECTORS / "empty.adt").read_bytes())
    assert f"**{size} bytes**" in SPEC
    assert f"version **{L.MAJOR_VERSION}.{L.MINOR_VERSION}**" in SPEC
    # the majors a reader implements, and the version a TT parameter needs
    assert L.READ_MAJORS == (1, 2) and "majors **1 and 2**" in SPEC and "major version, u8: 1 or 2" in SPEC
    assert L.TT_MIN_MAJOR == 2 and "needs version 2.0" in SPEC and L.BASE_MAJOR == 1


def test_worked_example_bytes_match_the_vector():
    data = (C.VECTORS / "plain.adt").read_bytes()
    block = SPEC.split("## 15. Worked example", 1)[1].split("## 16.", 1)[0]
    listed = bytearray()
    for line in block.splitlines():
        m = re.match(r"^\s*(\d+)\s{2,}((?:[0-9a-f]{2} )*[0-9a-f]{2})\s{2,}", line)
        if m:
            assert int(m.group(1)) == len(listed), f"offset {m.group(1)} out of sequence"
            listed += bytes.fromhex(m.group(2))
    assert bytes(listed) == data


def test_arch_dictionary_hash_is_in_the_spec():
    import hashlib

    from adt.runtime.format.archdict import ONNX_DICT_V1, ONNX_DICT_V1_SHA256

    assert hashlib.sha256(ONNX_DICT_V1).hexdigest() == ONNX_DICT_V1_SHA256
    assert ONNX_DICT_V1_SHA256 in SPEC and f"{len(ONNX_DICT_V1)} bytes" in SPEC
