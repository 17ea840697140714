"""Tensor-train parameters in the runtime (format 2.0): the rebuild equals a straightforward einsum,
the merge order is the cheapest one (against a brute force over all orders), the last merge's blocks
are bit-identical to the whole product, the memory budget bounds the traced peak and refuses hostile
files before allocating, and a TT file loads and runs on both engines."""
from __future__ import annotations

from functools import lru_cache
from math import prod

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adt.runtime as rt
from adt.runtime.errors import AdtBudgetError
from adt.runtime.format import AdtTableError, AdtWriter, read_adt
from adt.runtime.rebuild import (
    DEFAULT_MAX_MEMORY, check_rebuild_budget, rebuild_plan, rebuild_weights, tt_contraction_order, tt_into,
    tt_to_tensor,
)

from runtime_models import make_tt_adt, rebuild_with_traced_peak, refused_before_allocating, tt_mlp


def _cores(reshape, ranks, rng, dtype=np.float64):
    r = (1,) + tuple(ranks) + (1,)
    return [rng.standard_normal((r[k], n, r[k + 1])).astype(dtype) for k, n in enumerate(reshape)]


def _einsum(cores) -> np.ndarray:
    d = len(cores)
    rk, md = "ABCDEFGHI"[:d + 1], "abcdefgh"[:d]
    spec = ",".join(rk[k] + md[k] + rk[k + 1] for k in range(d)) + "->" + rk[0] + md + rk[d]
    return np.einsum(spec, *(np.asarray(g, np.float64) for g in cores))[0, ..., 0]


def _left_to_right(cores) -> np.ndarray:
    t = np.asarray(cores[0], np.float64)
    for g in cores[1:]:
        t = np.tensordot(t, np.asarray(g, np.float64), axes=([t.ndim - 1], [0]))
    return t[0, ..., 0]


def _ulps(a: np.ndarray, b: np.ndarray) -> int:
    ia, ib = a.view(np.int32).astype(np.int64), b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return int(np.abs(ia - ib).max()) if a.size else 0


TT_SPECS = st.integers(1, 6).flatmap(lambda d: st.tuples(
    st.lists(st.integers(1, 5), min_size=d, max_size=d), st.lists(st.integers(1, 5), min_size=d - 1, max_size=d - 1),
    st.integers(0, 2**32 - 1)))


# -- the rebuild equals the formula ------------------------------------------------------------------
@settings(max_examples=120, deadline=None)
@given(spec=TT_SPECS)
def test_tt_to_tensor_equals_einsum_and_left_to_right(spec):
    reshape, ranks, seed = spec
    cores = _cores(reshape, ranks, np.random.default_rng(seed))
    got = tt_to_tensor(cores)
    assert got.dtype == np.float64 and got.shape == tuple(reshape)
    np.testing.assert_allclose(got, _einsum(cores), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, _left_to_right(cores), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(spec=TT_SPECS, chunk=st.sampled_from([8, 64, 1 << 20]))
def test_tt_into_blocks_are_bit_identical_to_the_whole_product(spec, chunk):
    reshape, ranks, seed = spec
    cores = _cores(reshape, ranks, np.random.default_rng(seed), np.float32)
    out = np.empty(tuple(reshape), np.float32)
    tt_into(cores, out, tt_contraction_order(tuple(reshape), tuple(ranks), chunk))
    assert np.array_equal(out, tt_to_tensor(cores).astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(specs=st.lists(TT_SPECS, min_size=1, max_size=3))
def test_file_rebuild_equals_a_float64_einsum_to_float32_rounding(specs):
    w = AdtWriter()
    g = w.add_group(256, 1.0)
    for i, (reshape, ranks, seed) in enumerate(specs):
        r = (1,) + tuple(ranks) + (1,)
        rng = np.random.default_rng(seed)
        w.add_tt(f"p{i}", (prod(reshape),), [rng.integers(0, 256, (r[k], n, r[k + 1])) for k, n in enumerate(reshape)], g)
    f = read_adt(w.to_bytes())
    weights = rebuild_weights(f)
    for p in f.params:
        ref = _einsum([f.values(c, p.group) for c in p.factors]).reshape(p.shape).astype(np.float32)
        got = weights[p.name]
        assert got.dtype == np.float32 and got.shape == p.shape and got.flags.c_contiguous
        assert _ulps(got, ref) <= 1


def test_bad_core_chain_is_a_table_error():
    rng = np.random.default_rng(0)
    with pytest.raises(AdtTableError, match="core 1 has shape"):
        tt_to_tensor([rng.random((1, 2, 2)), rng.random((3, 2, 1))])
    with pytest.raises(AdtTableError, match="last core"):
        tt_to_tensor([rng.random((1, 2, 2))])
    with pytest.raises(AdtTableError, match="ranks"):
        tt_contraction_order((2, 2), ())


# -- the cheapest order --------------------------------------------------------------------------------
def _brute_force(n, r) -> int:
    """The least multiply-adds over every parenthesization of the chain (no DP table shared with the code)."""
    @lru_cache(maxsize=None)
    def best(a, c):
        if a == c:
            return 0
        return min(best(a, b) + best(b + 1, c) + r[a] * prod(n[a:b + 1]) * r[b + 1] * prod(n[b + 1:c + 1]) * r[c + 1]
                   for b in range(a, c))
    return best(0, len(n) - 1)


def _cost_of(merges, n, r) -> int:
    return sum(r[a] * prod(n[a:b + 1]) * r[b + 1] * prod(n[b + 1:c + 1]) * r[c + 1] for a, b, c in merges)


@settings(max_examples=200, deadline=None)
@given(spec=TT_SPECS)
def test_contraction_order_is_optimal(spec):
    reshape, ranks, _ = spec
    n, r = tuple(reshape), (1,) + tuple(ranks) + (1,)
    order = tt_contraction_order(n, tuple(ranks))
    assert order.cost == _brute_force(n, r) == _cost_of(order.merges, n, r)
    # a valid schedule: d - 1 merges, each of two segments already made, ending with the whole train
    made = {(k, k) for k in range(len(n))}
    for a, b, c in order.merges:
        assert (a, b) in made and (b + 1, c) in made
        made -= {(a, b), (b + 1, c)}
        made.add((a, c))
    assert made == {(0, len(n) - 1)} and len(order.merges) == len(n) - 1


def test_cheapest_order_avoids_the_big_intermediate():
    # left to right would hold a (1, 65536, 512) float64 intermediate (256 MiB); the DP merges the
    # two rank-1 halves and never holds more than a 256-vector
    n, ranks = (1, 256, 256, 1), (512, 1, 512)
    order = tt_contraction_order(n, ranks)
    assert set(order.merges) == {(0, 0, 1), (2, 2, 3), (0, 1, 3)}
    assert order.largest == 256 and order.cost < _cost_of([(0, 0, 1), (0, 1, 2), (0, 2, 3)], n, (1,) + ranks + (1,))


# -- memory budget ---------------------------------------------------------------------------------
def tt_amplifier(n: int = 16, d: int = 7) -> bytes:
    """Rank-1 cores of n values each: a parameter of n**d elements from a file of a few dozen bytes."""
    w = AdtWriter()
    g = w.add_group(2, 1.0)
    w.add_tt("amp", (n ** d,), [np.ones((1, n, 1), np.uint16)] * d, g)
    return w.to_bytes()


def test_crafted_tt_amplifier_is_refused_at_once():
    data = tt_amplifier()                     # 16**7 = 2**28 elements: 1 GiB of float32
    assert len(data) < 100
    seconds, peak = refused_before_allocating(data, r"parameter 'amp'.*GiB.*max_memory=256\.00 MiB", AdtBudgetError)
    assert seconds < 2.0 and peak < 4 << 20
    with pytest.raises(AdtBudgetError, match="'amp'"):
        rebuild_weights(data)


def test_large_ranks_count_their_intermediates():
    # cores (1, 1, 16), (16, 4096, 16), (16, 1, 1): every order holds a (1, 4096, 16) or (16, 4096, 1)
    # intermediate (512 KiB of float64) beside the 4096-element weight
    w = AdtWriter()
    g = w.add_group(2, 1.0)
    w.add_tt("w", (4096,), [np.ones((1, 1, 16), np.uint16), np.ones((16, 4096, 16), np.uint16),
                            np.ones((16, 1, 1), np.uint16)], g)
    f = read_adt(w.to_bytes())
    cost = rebuild_plan(f).params[0]
    assert cost.intermediate == 4096 * 16 * 8 and cost.tt.largest == 4096 * 16
    assert cost.peak > 16 * 4096 * 16 * (4 + 8) + 4096 * 16 * 8   # the cores (float32 + float64) and the intermediate
    with pytest.raises(AdtBudgetError, match=r"parameter 'w'.*largest float64 intermediate 512\.00 KiB"):
        check_rebuild_budget(f, 8 << 20)
    assert check_rebuild_budget(f).peak < DEFAULT_MAX_MEMORY
    assert not rebuild_weights(f)["w"].any()   # symbol 1 of Q = 2 is the value 0.0


CASES = {
    "wide": ((784, 300), (28, 28, 15, 20), (8, 12, 8)),
    "long": ((6 ** 8,), (6,) * 8, (3,) * 7),
    "ranks-over-dims": ((100, 100), (10, 10, 10, 10), (10, 60, 10)),
    "one-core": ((500, 500), (250000,), ()),
    "big-output": ((1024, 1024), (32, 32, 32, 32), (4, 16, 4)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_estimate_bounds_the_traced_peak(case):
    shape, reshape, ranks = CASES[case]
    w = AdtWriter()
    g = w.add_group(256, 1.0)
    r = (1,) + ranks + (1,)
    rng = np.random.default_rng(1)
    w.add_tt("w", shape, [rng.integers(0, 256, (r[k], n, r[k + 1])) for k, n in enumerate(reshape)], g)
    w.add_plain("b", rng.integers(0, 256, shape[:1]), g)
    plan, weights, peak = rebuild_with_traced_peak(read_adt(w.to_bytes()))
    assert plan.kept == sum(x.nbytes for x in weights.values())
    assert plan.peak >= peak, (plan.peak, peak)
    assert plan.peak <= 2.5 * peak + (1 << 20), (plan.peak, peak)


# -- load and run on both engines --------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["numpy", "onnxruntime"])
def test_tt_file_runs_on_both_engines(engine):
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    model, specs = tt_mlp()
    data = make_tt_adt(model, specs)
    f = read_adt(data)
    assert f.version == (2, 0) and any(p.encoding == 2 for p in f.params)
    m = rt.load(data, engine=engine)
    # the dense reference: every weight from the formula (an einsum), the network in NumPy
    ref_w = {}
    for p in f.params:
        if p.encoding == 2:
            ref_w[p.name] = _einsum([f.values(c, p.group) for c in p.factors]).reshape(p.shape).astype(np.float32)
        else:
            ref_w[p.name] = f.values(p.symbols, p.group)
    for name, wgt in ref_w.items():
        assert _ulps(m.weights[name], wgt) <= 1, name
    x = np.random.default_rng(5).standard_normal((16, 1, 28, 28)).astype(np.float32)
    h = x.reshape(16, -1).astype(np.float64) @ ref_w["fc1.weight"].T.astype(np.float64) + ref_w["fc1.bias"]
    h = np.maximum(h, 0) @ ref_w["fc2.weight"].T.astype(np.float64) + ref_w["fc2.bias"]
    y = m.run(x)
    assert y.shape == (16, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y, h, rtol=1e-4, atol=1e-4 * np.abs(h).max())
