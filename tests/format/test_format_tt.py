"""Tensor-train parameters (format 2.0, encoding 2) in the writer and reader: the writer's checks, the
lowest version that holds the file, round trips, payload order and the byte accounting."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adt.runtime.format import (
    ENC_TT, AdtWriter, AdtWriterError, Encoding, byte_breakdown, read_adt,
)
from adt.runtime.format import limits as L

def ONE(shape, dtype=np.int64) -> np.ndarray:
    return np.ones(shape, dtype)


def _tt_cores(reshape, ranks, rng=None, high=16):
    r = (1,) + tuple(ranks) + (1,)
    rng = rng or np.random.default_rng(0)
    return [rng.integers(0, high, (r[k], n, r[k + 1])) for k, n in enumerate(reshape)]


def test_constants():
    assert Encoding.TT == ENC_TT == 2 and str(ENC_TT) == "2"
    assert L.MAJOR_VERSION == 2 and L.READ_MAJORS == (1, 2) and L.TT_MIN_MAJOR == 2 and L.BASE_MAJOR == 1


def test_writer_writes_the_lowest_version():
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    w.add_plain("b", ONE(3, np.uint16), g)
    assert w.version == (1, 0) and w.to_bytes()[4:6] == b"\x01\x00"
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    w.add_tt("w", (4, 6), _tt_cores((2, 2, 2, 3), (2, 3, 2)), g)
    w.add_plain("b", ONE(3, np.uint16), g)
    data = w.to_bytes()
    assert w.version == (2, 0) and data[4:6] == b"\x02\x00"
    f = read_adt(data)
    assert f.version == (2, 0) and f.param("w").encoding is Encoding.TT


@pytest.mark.parametrize("cores,match", [
    ([], "1..8 cores"),
    ([ONE((1, 1, 1))] * 9, "1..8 cores"),
    ([ONE((2, 4, 1))], r"TT core 0 must be \(1, n_1, r_1\)"),                 # r_0 != 1
    ([ONE((1, 2, 2)), ONE((3, 2, 1))], r"TT core 1 must be \(2, n_2, r_2\)"),  # ranks do not chain
    ([ONE((1, 2, 2)), ONE((2, 2, 2))], "rank 1 on its right"),               # r_d != 1
    ([ONE((1, 4))], "TT core 0 must be"),                                    # not 3-D
    ([ONE((1, 0, 1)), ONE((1, 4, 1))], "TT core 0 must be"),                 # n = 0
    ([ONE((1, 2, 1)), ONE((1, 3, 1))], r"reshape \(2, 3\) has 6 elements"),
    ([ONE((1, 2, 1)) * 16, ONE((1, 2, 1))], "symbol 16 is out of range"),     # Q = 16
    ([ONE((1, 2, 1)) * -1, ONE((1, 2, 1))], "symbols must lie in"),
    ([ONE((1, 2, 1), np.float64), ONE((1, 2, 1))], "must be integers"),
])
def test_add_tt_checks(cores, match):
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    with pytest.raises(AdtWriterError, match=match) as info:
        w.add_tt("w", (4,), cores, g)
    assert "'w'" in str(info.value)


def test_add_tt_name_group_and_order_checks():
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    cores = _tt_cores((2, 2), (1,))
    with pytest.raises(AdtWriterError, match="group 1 does not exist"):
        w.add_tt("w", (4,), cores, 1)
    w.add_tt("w", (4,), cores, g)
    with pytest.raises(AdtWriterError, match="duplicate parameter name 'w'"):
        w.add_tt("w", (4,), cores, g)
    with pytest.raises(AdtWriterError, match="out of order"):
        w.add_core(ONE((2, 2), np.uint16), g)          # a TT parameter is a parameter: cores come before
    with pytest.raises(AdtWriterError, match="parameter name"):
        w.add_tt("", (4,), cores, g)


def test_add_tt_core_limit():
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    # a broadcast view: the writer sees a core of 2^28 + 2 values without the memory
    big = np.broadcast_to(np.zeros((), np.uint16), (1, 2, (1 << 27) + 1))
    with pytest.raises(AdtWriterError, match="'w': TT core 0 has 268435458 values"):
        w.add_tt("w", (4,), [big, ONE(((1 << 27) + 1, 2, 1), np.uint16)], g)


def test_payload_order_and_layout():
    """§8: each core's values in row-major order of its (r_{k-1}, n_k, r_k) array, core after core,
    between the parameters before and after."""
    rng = np.random.default_rng(3)
    cores = _tt_cores((3, 2, 4), (2, 3), rng)
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    w.add_plain("a", ONE(2, np.uint16), g)
    w.add_tt("w", (4, 6), cores, g)
    w.add_plain("b", ONE(2, np.uint16) * 3, g)
    f = read_adt(w.to_bytes())
    p = f.param("w")
    assert p.reshape == (3, 2, 4) and p.ranks == (2, 3) and p.stored_count == sum(c.size for c in cores)
    for got, want in zip(p.factors, cores, strict=True):
        assert got.dtype == np.uint16 and got.shape == want.shape and np.array_equal(got, want)
    assert f.param("b").symbols.tolist() == [3, 3]


def test_accounting_counts_tt_cores_as_factors():
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    w.add_tt("fc.weight", (4, 6), _tt_cores((2, 2, 2, 3), (2, 3, 2)), g)
    w.add_plain("fc.bias", ONE(4, np.uint16), g)
    f = read_adt(w.to_bytes())
    bd = byte_breakdown(f)
    assert bd.payload_bits["factors"] == f.param("fc.weight").bits > 0
    assert bd.payload_bits["cores"] == 0 and bd.payload_bits["plain biases"] == f.param("fc.bias").bits
    assert sum(r.bytes for r in bd.sections) == f.file_size
    legacy = bd.legacy_dict()
    assert legacy["payload_split_bytes"]["factors"] == f.param("fc.weight").bits / 8


@st.composite
def _tt_specs(draw):
    d = draw(st.integers(1, 5))
    reshape = tuple(draw(st.lists(st.integers(1, 4), min_size=d, max_size=d)))
    ranks = tuple(draw(st.lists(st.integers(1, 4), min_size=d - 1, max_size=d - 1)))
    return reshape, ranks, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(specs=st.lists(_tt_specs(), min_size=1, max_size=3), q=st.sampled_from([2, 16, 512, 65536]))
def test_round_trip(specs, q):
    import adt_spec_decoder as S
    from adt.runtime.format.archdict import ONNX_DICT_V1

    w = AdtWriter()
    g = w.add_group(q, 1.0)
    written = {}
    for i, (reshape, ranks, seed) in enumerate(specs):
        cores = _tt_cores(reshape, ranks, np.random.default_rng(seed), high=q)
        shape = (int(np.prod(reshape)),)
        w.add_tt(f"p{i}", shape, cores, g)
        written[f"p{i}"] = cores
    data = w.to_bytes()
    f = read_adt(data)
    mine = S.decode(data, ONNX_DICT_V1)   # the decoder written from FORMAT.md agrees
    for p, sp in zip(f.params, mine["params"], strict=True):
        assert p.encoding == ENC_TT and [g.tolist() for g in p.factors] == [c.tolist() for c in written[p.name]]
        assert sp["tt_cores"] == [c.reshape(-1).tolist() for c in written[p.name]]
        assert sp["reshape"] == list(p.reshape) and sp["ranks"] == list(p.ranks)
    assert mine["payload_bits"] == f.payload_bits == sum(p.bits for p in f.params)
