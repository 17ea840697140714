"""format_spec/vectors: every vector decodes to its expected arrays exactly; regenerating gives the
same bytes (golden test); the independent serializer of the tests reproduces the writer's bytes."""
from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest

import adt_format_craft as C
from adt.runtime.format import CORE_CP, ENC_PLAIN, ENC_TT, read_adt
from adt.runtime.rebuild import rebuild_weights

NAMES = ["empty", "plain", "tucker_bias_meta", "scada_shared", "cp", "per_group", "arch", "tt"]


def _generator():
    spec = importlib.util.spec_from_file_location("adt_vectors_generate", C.VECTORS / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vector_set_is_complete():
    assert sorted(p.stem for p in C.VECTORS.glob("*.adt")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_vector_decodes_to_expected_arrays(name):
    f = read_adt(C.VECTORS / f"{name}.adt")
    desc = json.loads((C.VECTORS / f"{name}.json").read_text())
    with np.load(C.VECTORS / f"{name}.npz") as npz:
        exp = {k: npz[k] for k in npz.files}

    assert f.file_size == desc["file_bytes"]
    assert f.metadata == desc["metadata"]
    if desc["architecture"] is None:
        assert f.architecture is None
    else:
        assert len(f.architecture) == desc["architecture"]["bytes"]
        assert hashlib.sha256(f.architecture).hexdigest() == desc["architecture"]["sha256"]
    assert [(g.q, g.b) for g in f.groups] == [(g["q"], g["b"]) for g in desc["groups"]]
    assert len(f.tables) == desc["tables"]
    assert [(s.kind, s.offset, s.length) for s in f.sections] == [
        (s["kind"], s["offset"], s["length"]) for s in desc["sections"]]
    assert f.payload_bits == desc["payload_bits"]

    seen = set()
    assert len(f.cores) == len(desc["cores"])
    for i, (c, d) in enumerate(zip(f.cores, desc["cores"])):
        assert (c.kind == CORE_CP) == (d["kind"] == "cp") and list(c.dims) == d["dims"] and c.group == d["group"]
        for key, got in ((f"core{i}_symbols", c.symbols.reshape(-1)), (f"core{i}_values", f.core_values(i))):
            want = exp[key].reshape(-1) if key.endswith("symbols") else exp[key]
            assert got.dtype == want.dtype and np.array_equal(got, want), key
            seen.add(key)
    assert [p.name for p in f.params] == [d["name"] for d in desc["params"]]
    weights = rebuild_weights(f)
    for i, (p, d) in enumerate(zip(f.params, desc["params"])):
        assert list(p.shape) == d["shape"] and p.group == d["group"]
        if p.encoding == ENC_PLAIN:
            assert d["encoding"] == "plain"
            pairs = [(f"param{i}_symbols", p.symbols), (f"param{i}_values", f.values(p.symbols, p.group))]
        elif p.encoding == ENC_TT:
            assert d["encoding"] == "tt" and p.core is None
            assert list(p.reshape) == d["reshape"] and list(p.ranks) == d["ranks"]
            pairs = [(f"param{i}_weight", weights[p.name])]   # FORMAT.md §10, exact (see generate.py)
            for j, g in enumerate(p.factors):
                pairs += [(f"param{i}_core{j}_symbols", g), (f"param{i}_core{j}_values", f.values(g, p.group))]
        else:
            assert d["encoding"] == "tucker" and p.core == d["core"] and list(p.reshape) == d["reshape"]
            pairs = []
            for j, m in enumerate(p.factors):
                pairs += [(f"param{i}_factor{j}_symbols", m), (f"param{i}_factor{j}_values", f.values(m, p.group))]
        for key, got in pairs:
            want = exp[key]
            # exact: same dtype, same shape, same bits
            assert got.dtype == want.dtype and got.shape == want.shape, key
            assert got.tobytes() == want.tobytes(), key
            seen.add(key)
    assert seen == set(exp), "every expected array is checked"


def test_golden_bytes():
    """Regenerating the vectors with today's writer gives exactly the committed files. (A vector with
    an architecture section is compared byte for byte only under the zlib build that wrote it, as
    recorded in its .json: DEFLATE output may differ between zlib versions.)"""
    import zlib

    gen = _generator()
    for fname, data in gen.outputs().items():
        stem = fname.rsplit(".", 1)[0]
        recorded = json.loads((C.VECTORS / f"{stem}.json").read_text()).get("zlib")
        if recorded is not None and recorded != zlib.ZLIB_RUNTIME_VERSION:
            continue
        committed = (C.VECTORS / fname).read_bytes()
        assert data == committed, f"{fname} changed: the writer's output is not what the vectors pin down"


def test_empty_file_is_21_bytes():
    data = (C.VECTORS / "empty.adt").read_bytes()
    assert len(data) == 21
    # magic, version 1.0, 3 sections: code tables (1 byte), tensor table (3 bytes), payload (0 bytes)
    assert data == C.assemble([(3, b"\x00"), (4, b"\x00\x00\x00"), (5, b"")])


def test_independent_serializer_matches_writer_on_plain_vector():
    """FORMAT.md's worked example, rebuilt from the spec alone."""
    lengths = {1: 2, 2: 1, 3: 2}                       # counts 1, 2, 1 -> Huffman lengths 2, 1, 2
    codes = C.varint(1) + C.table(lengths)
    tens = C.tensors([C.group(4, 1.0)], [], [C.plain_param("x", [4], 0)])
    # canonical codes: symbol 2 -> 0, symbol 1 -> 10, symbol 3 -> 11; data 1 2 2 3
    pay = C.payload("10" + "0" + "0" + "11")
    data = C.assemble([(3, codes), (4, tens), (5, pay)])
    assert data == (C.VECTORS / "plain.adt").read_bytes()


def test_tiny_onnx_in_arch_vector_parses():
    onnx = pytest.importorskip("onnx")
    f = read_adt(C.VECTORS / "arch.adt")
    m = onnx.load_from_string(f.architecture)
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["output"]
    assert [n.op_type for n in m.graph.node] == ["Add"] and list(m.graph.node[0].input) == ["input", "w"]
    assert not m.graph.initializer


@pytest.mark.parametrize("name", NAMES)
def test_spec_decoder_agrees_with_reader(name):
    """A decoder written from FORMAT.md alone (tests/format/adt_spec_decoder.py) gives the same
    metadata, architecture, structure, symbols and float32 bits as the reference reader."""
    import struct

    import adt_spec_decoder as S
    from adt.runtime.format.archdict import ONNX_DICT_V1

    data = (C.VECTORS / f"{name}.adt").read_bytes()
    mine, f = S.decode(data, ONNX_DICT_V1), read_adt(data)
    assert mine["metadata"] == f.metadata and mine["architecture"] == f.architecture
    assert mine["payload_bits"] == f.payload_bits
    assert [(g["q"], g["b"], g["table"]) for g in mine["groups"]] == [(g.q, g.b, g.table) for g in f.groups]

    def f32bits(values):
        return [struct.pack("<f", v) for v in values]

    for c, ref in zip(mine["cores"], f.cores, strict=True):
        assert c["dims"] == list(ref.dims) and c["symbols"] == ref.symbols.reshape(-1).tolist()
        assert f32bits(c["values"]) == [v.tobytes() for v in f.values(ref.symbols, ref.group).reshape(-1)]
    for p, ref in zip(mine["params"], f.params, strict=True):
        assert p["name"] == ref.name and p["shape"] == list(ref.shape)
        if p["encoding"] == 0:
            assert p["symbols"] == ref.symbols.reshape(-1).tolist()
            assert f32bits(p["values"]) == [v.tobytes() for v in f.values(ref.symbols, ref.group).reshape(-1)]
        elif p["encoding"] == 2:
            assert ref.encoding == ENC_TT and mine["major"] == f.version[0] == 2
            assert p["reshape"] == list(ref.reshape) and p["ranks"] == list(ref.ranks)
            for gs, gv, g in zip(p["tt_cores"], p["tt_core_values"], ref.factors, strict=True):
                assert gs == g.reshape(-1).tolist()
                assert f32bits(gv) == [v.tobytes() for v in f.values(g, ref.group).reshape(-1)]
            # the weight, rebuilt left to right from the spec's formula, against the runtime's order
            assert f32bits(p["weight"]) == [v.tobytes() for v in rebuild_weights(f)[ref.name].reshape(-1)]
        else:
            assert p["reshape"] == list(ref.reshape)
            for fs, fv, m in zip(p["factors"], p["factor_values"], ref.factors, strict=True):
                assert fs == m.reshape(-1).tolist()
                assert f32bits(fv) == [v.tobytes() for v in f.values(m, ref.group).reshape(-1)]
