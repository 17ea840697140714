"""byte_breakdown: the one byte-accounting routine (used by `adt inspect` and the exporter's report)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import adt_format_craft as C
from adt.runtime.format import (
    ENC_PLAIN, SECTION_PAYLOAD, AdtWriter, ByteBreakdown, SectionBytes, byte_breakdown, quantize, read_adt,
)
from adt.runtime.format.accounting import MAGIC_VERSION_BYTES, PAYLOAD_PARTS

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "results" / "runs"
VECTOR_FILES = sorted(C.VECTORS.glob("*.adt"))


def _mixed_file() -> bytes:
    """A file with every payload part: a core, factors, a plain bias, a plain weight, metadata."""
    rng = np.random.default_rng(1)
    w = AdtWriter()
    w.add_metadata("producer", "test")
    g = w.add_group(64, 2.0)
    c = w.add_core(quantize(rng.normal(size=(3, 3)), 64, 2.0), g)
    w.add_tucker("fc.weight", (8, 5), c, [quantize(rng.normal(size=(8, 3)), 64, 2.0),
                                         quantize(rng.normal(size=(5, 3)), 64, 2.0)], g)
    w.add_plain("fc.bias", quantize(rng.normal(size=8), 64, 2.0), g)
    w.add_plain("emb", quantize(rng.normal(size=(3, 4)), 64, 2.0), g)
    return w.to_bytes()


def _old_inspect_rows(f) -> list[tuple[str, int | None, int]]:
    """`adt inspect`'s "bytes per section" before byte_breakdown existed (tools/inspect_report.py)."""
    rows = [("header (magic, version)", None, 6), ("section table", None, f.header_bytes - 6)]
    rows += [(s.name, s.kind, s.length) for s in f.sections]
    rows.append(("checksum (CRC-32)", None, f.checksum_bytes))
    return rows


def _old_inspect_payload(f) -> dict[str, int]:
    """`adt inspect`'s "payload split" in bits before byte_breakdown existed."""
    bias = lambda n: n == "bias" or n.endswith(".bias")  # noqa: E731
    payload = next(s for s in f.sections if s.kind == SECTION_PAYLOAD)
    return {
        "cores": sum(c.bits for c in f.cores),
        "factors": sum(p.bits for p in f.params if p.encoding != ENC_PLAIN),
        "plain biases": sum(p.bits for p in f.params if p.encoding == ENC_PLAIN and bias(p.name)),
        "other plain parameters": sum(p.bits for p in f.params if p.encoding == ENC_PLAIN and not bias(p.name)),
        "padding": 8 * payload.length - f.payload_bits,
    }


def _old_exporter_dict(f) -> dict:
    """The exporter's byte_breakdown before this module (exporter/export.py), key order included."""
    sections = {"header": f.header_bytes}
    for s in f.sections:
        sections[s.name] = s.length
    sections["checksum"] = f.checksum_bytes
    core = sum(c.bits for c in f.cores)
    factor = sum(p.bits for p in f.params if p.encoding != ENC_PLAIN)
    other = sum(p.bits for p in f.params if p.encoding == ENC_PLAIN)
    return {"sections": sections, "payload_split_bytes": {"cores": core / 8, "factors": factor / 8, "other": other / 8}}


SOURCES = [pytest.param(p.read_bytes(), id=p.stem) for p in VECTOR_FILES] + [pytest.param(_mixed_file(), id="mixed")]


@pytest.mark.parametrize("data", SOURCES)
def test_rows_sum_to_the_file_and_match_inspect(data):
    f = read_adt(data)
    bd = byte_breakdown(f)
    assert isinstance(bd, ByteBreakdown) and all(isinstance(r, SectionBytes) for r in bd.sections)
    assert [(r.name, r.kind, r.bytes) for r in bd.sections] == _old_inspect_rows(f)
    assert sum(r.bytes for r in bd.sections) == len(data) == bd.file_size
    assert bd.sections[0].bytes == MAGIC_VERSION_BYTES


@pytest.mark.parametrize("data", SOURCES)
def test_payload_bits_match_inspect(data):
    f = read_adt(data)
    bd = byte_breakdown(f)
    assert tuple(bd.payload_bits) == PAYLOAD_PARTS
    assert bd.payload_bits == _old_inspect_payload(f)
    payload = next(s for s in f.sections if s.kind == SECTION_PAYLOAD)
    assert sum(bd.payload_bits.values()) == 8 * payload.length
    assert bd.payload_bytes == payload.length


@pytest.mark.parametrize("data", SOURCES)
def test_legacy_dict_is_the_exporters_old_dict(data):
    f = read_adt(data)
    legacy = byte_breakdown(f).legacy_dict()
    old = _old_exporter_dict(f)
    assert legacy == old
    assert list(legacy["sections"]) == list(old["sections"])   # same key order (JSON records keep it)
    assert list(legacy["payload_split_bytes"]) == ["cores", "factors", "other"]


def test_mixed_file_has_every_part():
    bd = byte_breakdown(read_adt(_mixed_file()))
    assert all(bd.payload_bits[k] > 0 for k in ("cores", "factors", "plain biases", "other plain parameters"))
    assert [r.name for r in bd.sections][2:-1] == ["metadata", "code tables", "tensor table", "payload"]


def test_accounting_bug_is_an_assertion():
    f = read_adt(_mixed_file())
    with pytest.raises(AssertionError, match="sections give"):
        byte_breakdown(replace(f, file_size=f.file_size + 1))
    f = read_adt(_mixed_file())
    f.cores[0].bits += 1
    with pytest.raises(AssertionError, match="payload parts"):
        byte_breakdown(f)


def _run_records() -> list[tuple[str, dict]]:
    """(name, record) of every results/runs/*.json that holds the exporter's byte breakdown."""
    if not RUNS.is_dir():
        return []
    out = []
    for p in sorted(RUNS.glob("*.json")):
        rec = json.loads(p.read_text())
        if "sections" in rec and "payload_split_bytes" in rec and "file" in rec:
            out.append((p.stem, rec))
    return out


RECORDS = _run_records()


@pytest.mark.skipif(not RECORDS, reason="no results/runs/*.json records with a byte breakdown in this checkout")
def test_legacy_dict_reproduces_every_committed_run_record():
    """Every committed run record's "sections" / "payload_split_bytes" (written by the exporter's old
    byte_breakdown) is what legacy_dict() gives for the committed file it names."""
    checked = 0
    for name, rec in RECORDS:
        path = REPO / "results" / rec["file"]
        if not path.exists():
            continue
        legacy = byte_breakdown(read_adt(path)).legacy_dict()
        assert legacy == {"sections": rec["sections"], "payload_split_bytes": rec["payload_split_bytes"]}, name
        checked += 1
    if not checked:
        pytest.skip("no run record names a .adt file present in this checkout")
