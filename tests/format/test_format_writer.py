"""The writer: state-machine order, argument checks, determinism, table policies, atomic writes."""
from __future__ import annotations

import os

import numpy as np
import pytest

from adt.runtime.format import AdtWriter, AdtWriterError, read_adt, write_atomic
from adt.runtime.format import limits as L

S = np.array([1, 2, 3], dtype=np.uint16)


def _writer_with_group(**kw) -> tuple[AdtWriter, int]:
    w = AdtWriter(**kw)
    return w, w.add_group(16, 1.0)


def test_order_groups_cores_params():
    w, g = _writer_with_group()
    w.add_plain("a", S, g)
    with pytest.raises(AdtWriterError, match="out of order"):
        w.add_group(4, 1.0)
    with pytest.raises(AdtWriterError, match="out of order"):
        w.add_core(S, g)
    w2, g2 = _writer_with_group()
    w2.add_core(np.ones((2, 2), np.uint16), g2)
    with pytest.raises(AdtWriterError, match="out of order"):
        w2.add_group(4, 1.0)


def test_finished_writer_refuses_everything():
    w, g = _writer_with_group()
    w.add_plain("a", S, g)
    data = w.to_bytes()
    assert w.to_bytes() is data                       # idempotent
    for call in (lambda: w.add_plain("b", S, g), lambda: w.add_group(4, 1.0), lambda: w.add_core(S, g),
                 lambda: w.add_metadata("k", "v"), lambda: w.set_architecture(b"x")):
        with pytest.raises(AdtWriterError, match="finished"):
            call()


@pytest.mark.parametrize("call", [
    lambda w, g: w.add_plain("a", S, g + 1),                               # no such group
    lambda w, g: w.add_plain("a", S, -1),
    lambda w, g: w.add_plain("", S, g),                                    # empty name
    lambda w, g: w.add_plain("n" * (L.MAX_NAME_BYTES + 1), S, g),
    lambda w, g: w.add_plain("a", np.array([16], np.uint16), g),           # symbol >= Q
    lambda w, g: w.add_plain("a", np.array([-1]), g),                      # negative
    lambda w, g: w.add_plain("a", np.array([0.5]), g),                     # not integers
    lambda w, g: w.add_plain("a", np.zeros((2, 0), np.uint16), g),         # zero dim
    lambda w, g: w.add_plain("a", np.zeros((1,) * 9, np.uint16), g),       # ndim 9
    lambda w, g: w.add_core(np.zeros((2, 0), np.uint16), g),
    lambda w, g: w.add_core(np.zeros((1,) * 9, np.uint16), g),
    lambda w, g: w.add_core(np.array([16], np.uint16), g),                 # symbol >= Q
    lambda w, g: w.add_core(np.zeros((2, 2), np.uint16), g, cp_order=2),   # CP needs a 1-D diagonal
    lambda w, g: w.add_core(S, g, cp_order=9),
    lambda w, g: w.add_tucker("a", (4,), 0, [S], g),                       # no such core
    lambda w, g: w.add_group(0, 1.0),
    lambda w, g: w.add_group(4, float("nan")),
    lambda w, g: w.add_metadata("", "v"),
    lambda w, g: w.add_metadata("k" * (L.MAX_META_KEY_BYTES + 1), "v"),
    lambda w, g: w.add_metadata("k", "v" * (L.MAX_META_VALUE_BYTES + 1)),
])
def test_bad_arguments(call):
    w, g = _writer_with_group()
    with pytest.raises(AdtWriterError):
        call(w, g)


def test_bad_tucker_factors():
    w, g = _writer_with_group()
    c = w.add_core(np.ones((2, 3), np.uint16), g)
    m1, m2 = np.ones((4, 2), np.uint16), np.ones((5, 3), np.uint16)
    for factors, shape in [([m1], (20,)), ([m1, m2.T], (20,)), ([m1, m2], (21,)), ([m1, m2[:, :2]], (20,)),
                           ([m1, np.ones((0, 3), np.uint16)], (1,)), ([m1, m2 + 20], (20,))]:
        with pytest.raises(AdtWriterError):
            w.add_tucker("a", shape, c, factors, g)
    w.add_tucker("a", (20,), c, [m1, m2], g)
    with pytest.raises(AdtWriterError, match="duplicate"):
        w.add_tucker("a", (20,), c, [m1, m2], g)


def test_group_without_values_is_an_error():
    w, g = _writer_with_group()
    w.add_group(4, 1.0)
    with pytest.raises(AdtWriterError, match="group 1"):
        w.add_plain("a", S, g) or w.to_bytes()
    w2 = AdtWriter()
    w2.add_group(4, 1.0)
    with pytest.raises(AdtWriterError):
        w2.to_bytes()


def test_bad_policy():
    with pytest.raises(AdtWriterError):
        AdtWriter(tables="both")


def _model(tables: str) -> AdtWriter:
    rng = np.random.default_rng(3)
    w = AdtWriter(tables=tables)
    w.add_metadata("producer", "test")
    g0, g1 = w.add_group(512, 3.0), w.add_group(16, 1.0)
    c = w.add_core(rng.integers(200, 300, (3, 3)).astype(np.uint16), g0)
    w.add_tucker("w", (6, 5), c, [rng.integers(0, 512, (6, 3)).astype(np.uint16),
                                  rng.integers(0, 512, (5, 3)).astype(np.uint16)], g0)
    w.add_plain("b", rng.integers(0, 16, (40,)).astype(np.uint16), g1)
    return w


def test_deterministic_bytes():
    assert _model("auto").to_bytes() == _model("auto").to_bytes()


def test_table_policies():
    shared, per_group, auto = _model("shared"), _model("per_group"), _model("auto")
    a, b, c = shared.to_bytes(), per_group.to_bytes(), auto.to_bytes()
    fa, fb = read_adt(a), read_adt(b)
    assert len(fa.tables) == 1 and [g.table for g in fa.groups] == [0, 0]
    assert len(fb.tables) == 2 and [g.table for g in fb.groups] == [0, 1]
    assert c == min(a, b, key=len) and auto.chosen_policy in ("shared", "per_group")
    for f in (fa, fb):                                  # same symbols either way
        assert np.array_equal(f.param("b").symbols, fa.param("b").symbols)


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    path = tmp_path / "m.adt"
    n = _model("auto").write(path)
    assert path.stat().st_size == n and read_adt(path).metadata == {"producer": "test"}
    assert sorted(os.listdir(tmp_path)) == ["m.adt"]


def test_write_atomic_failure_keeps_old_file(tmp_path):
    path = tmp_path / "f.bin"
    write_atomic(path, b"old")

    with pytest.raises(TypeError):
        write_atomic(path, object())  # type: ignore[arg-type]
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["f.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_write_atomic_gives_umask_permissions_and_keeps_an_existing_files(tmp_path):
    old_mask = os.umask(0o027)
    try:
        fresh = tmp_path / "new.adt"
        write_atomic(fresh, b"x")
        assert fresh.stat().st_mode & 0o777 == 0o640  # like open(): 0o666 & ~umask, not mkstemp's 0o600
        kept = tmp_path / "kept.adt"
        kept.write_bytes(b"old")
        kept.chmod(0o604)
        write_atomic(kept, b"new")
        assert kept.stat().st_mode & 0o777 == 0o604 and kept.read_bytes() == b"new"
    finally:
        os.umask(old_mask)


def test_architecture_format_is_the_smaller_one():
    from adt.runtime.format.archdict import ONNX_DICT_V1

    for arch, fmt in ((ONNX_DICT_V1[:500], 1), (np.random.default_rng(0).bytes(300), 0), (b"", 0)):
        w, g = _writer_with_group()
        w.set_architecture(arch)
        w.add_plain("a", S, g)
        f = read_adt(w.to_bytes())
        body = w.to_bytes()[f.sections[0].offset:]
        assert f.architecture == arch and f.sections[0].kind == 2 and body[0] == fmt


def _many_groups(n: int, tables: str) -> AdtWriter:
    w = AdtWriter(tables=tables)
    for _ in range(n):
        w.add_group(4, 1.0)
    for g in range(n):
        w.add_plain(f"p{g}", np.array([g % 4, (g + 1) % 4], dtype=np.uint16), g)
    return w


def test_more_groups_than_tables_use_one_shared_table():
    # per_group would need one table per group: the reader refuses more than MAX_TABLES tables
    n = L.MAX_TABLES + 1
    w = _many_groups(n, "auto")
    f = read_adt(w.to_bytes())
    assert w.chosen_policy == "shared" and len(f.tables) == 1 and len(f.groups) == n
    assert [p.symbols.tolist() for p in f.params] == [[g % 4, (g + 1) % 4] for g in range(n)]
    with pytest.raises(AdtWriterError, match=rf"tables='per_group': {n} groups need {n} code tables, a file holds at most {L.MAX_TABLES}"):
        _many_groups(n, "per_group").to_bytes()
    # at the limit, per_group is still written and read back
    f = read_adt(_many_groups(L.MAX_TABLES, "per_group").to_bytes())
    assert len(f.tables) == L.MAX_TABLES
