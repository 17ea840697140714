"""rebuild_weights / tucker_to_tensor: equal to an independent float64 rebuild to float32 rounding,
the cheapest contraction order, SCADA cores decoded once, CP cores without the r^d core."""
from __future__ import annotations

import itertools
from math import prod

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adt.runtime.format import ENC_PLAIN, AdtWriter, read_adt
from adt.runtime.rebuild import (
    _iter_weights, contraction_order, cp_to_tensor, iter_weights, rebuild_weights, tucker_into, tucker_schedule,
    tucker_to_tensor,
)

from runtime_models import float64_rebuild, lenet5, make_adt, mlp, resblock


def _ulps(a: np.ndarray, b: np.ndarray) -> int:
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    # map the sign-magnitude float order onto integers so that adjacent floats differ by 1
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return int(np.abs(ia - ib).max()) if a.size else 0


@pytest.mark.parametrize("builder", [lenet5, mlp, resblock])
def test_rebuild_equals_float64_einsum_to_float32_rounding(builder):
    model, specs = builder()
    data = make_adt(model, specs)
    got = rebuild_weights(read_adt(data))
    ref = float64_rebuild(data)
    assert list(got) == list(ref)  # table order
    for name, w in got.items():
        assert w.dtype == np.float32 and w.shape == ref[name].shape and w.flags.c_contiguous
        # both sides are float64 rounded once to float32: at most one ulp apart where the float64
        # sums differ in their last bits (in practice identical)
        assert _ulps(w, ref[name]) <= 1, name


def test_rebuild_accepts_path_bytes_and_file(tmp_path):
    model, specs = mlp()
    data = make_adt(model, specs)
    p = tmp_path / "m.adt"
    p.write_bytes(data)
    a, b, c = rebuild_weights(data), rebuild_weights(p), rebuild_weights(read_adt(str(p)))
    for k in a:
        assert np.array_equal(a[k], b[k]) and np.array_equal(a[k], c[k])


def test_shared_core_is_dequantized_once(monkeypatch):
    """Two parameters on one SCADA core: the core's symbols go through values() once."""
    model, specs = resblock()
    f = read_adt(make_adt(model, specs))
    shared = {p.core for p in f.params if p.name in ("conv1.weight", "conv2.weight")}
    assert len(shared) == 1
    core_symbols = f.cores[shared.pop()].symbols
    calls = []
    orig = f.values
    monkeypatch.setattr(f, "values", lambda s, g: (calls.append(s is core_symbols), orig(s, g))[1])
    list(iter_weights(f))
    assert sum(calls) == 1


def test_iter_weights_is_lazy():
    model, specs = lenet5()
    it = iter_weights(read_adt(make_adt(model, specs)))
    name, w = next(it)
    assert name == "conv1.weight" and w.shape == (20, 1, 5, 5)


def _brute_force_cost(core, sizes, order):
    cur = list(core)
    cost = 0
    for i in order:
        cost += prod(cur) * sizes[i]
        cur[i] = sizes[i]
    return cost


@given(st.lists(st.tuples(st.integers(1, 12), st.integers(1, 40)), min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_contraction_order_is_optimal(dims):
    core = tuple(k for k, _ in dims)
    sizes = tuple(n for _, n in dims)
    order = contraction_order(core, sizes)
    assert sorted(order) == list(range(len(dims)))
    best = min(_brute_force_cost(core, sizes, p) for p in itertools.permutations(range(len(dims))))
    assert _brute_force_cost(core, sizes, order) == best


def test_contraction_order_shrinking_mode_first():
    # mode 2 shrinks 50 -> 2: contracting it first makes the rest cheap
    assert contraction_order((10, 10, 50), (100, 100, 2))[0] == 2


@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 9)), min_size=1, max_size=4), st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_tucker_to_tensor_matches_einsum(dims, seed):
    rng = np.random.default_rng(seed)
    core = rng.standard_normal([k for k, _ in dims])
    factors = [rng.standard_normal((n, k)) for k, n in dims]
    d = len(dims)
    spec = "ijkl"[:d] + "," + ",".join(a + r for a, r in zip("abcd", "ijkl"[:d])) + "->" + "abcd"[:d]
    np.testing.assert_allclose(tucker_to_tensor(core, factors), np.einsum(spec, core, *factors), rtol=1e-12, atol=1e-12)


def test_cp_to_tensor_matches_superdiagonal_tucker():
    rng = np.random.default_rng(3)
    r = 4
    g = rng.standard_normal(r)
    factors = [rng.standard_normal((n, r)) for n in (3, 5, 2)]
    dense = np.zeros((r, r, r))
    dense[np.arange(r), np.arange(r), np.arange(r)] = g
    np.testing.assert_allclose(cp_to_tensor(g, factors), tucker_to_tensor(dense, factors), rtol=1e-12, atol=1e-12)


def test_factor_shape_mismatch_is_a_table_error():
    from adt.runtime.format import AdtTableError
    with pytest.raises(AdtTableError, match="factor 1"):
        tucker_to_tensor(np.zeros((2, 3)), [np.zeros((4, 2)), np.zeros((5, 2))])


def test_weights_only_file():
    rng = np.random.default_rng(0)
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    w.add_plain("a", rng.integers(0, 16, (3, 4)).astype(np.uint16), g)
    f = read_adt(w.to_bytes())
    out = rebuild_weights(f)
    assert np.array_equal(out["a"], f.values(f.params[0].symbols, 0))


def test_rebuild_memory_is_dense_weights_plus_one_layer():
    """tracemalloc (NumPy reports its buffers to it): the peak of rebuild_weights stays within the
    dense float32 result plus a few times the largest layer (its float64 temporaries)."""
    import tracemalloc
    rng = np.random.default_rng(0)
    w = AdtWriter()
    g = w.add_group(256, 1.0)
    shapes = [(256, 1024), (512, 512), (128, 2048), (300, 700)]
    cores = [w.add_core(rng.integers(0, 256, (8, 8, 8)).astype(np.uint16), g) for _ in shapes]
    for i, (shape, c) in enumerate(zip(shapes, cores)):
        reshape = (shape[0], 32, shape[1] // 32) if shape[1] % 32 == 0 else (shape[0], 7, 100)
        w.add_tucker(f"w{i}", shape, c, [rng.integers(0, 256, (n, 8)).astype(np.uint16) for n in reshape], g)
    f = read_adt(w.to_bytes())
    dense = 4 * sum(prod(s) for s in shapes)
    largest = 4 * max(prod(s) for s in shapes)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = rebuild_weights(f)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert sum(v.nbytes for v in out.values()) == dense
    # one layer's float64 temporaries: its last mode product (2x its float32 size) plus that
    # product's smaller input; holding every layer's temporaries would need > 2x dense
    assert peak <= dense + 2.5 * largest + (1 << 18), (peak, dense, largest)


# -- the chunked rebuild: bit-identical, bounded temporaries, symbols released ----------------------
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 30)), min_size=1, max_size=5),
       st.sampled_from([64, 1024, 1 << 14]), st.integers(0, 2 ** 31))
@settings(max_examples=150, deadline=None)
def test_chunked_tucker_is_bit_identical_to_the_whole_product(dims, chunk, seed):
    """Every chunk is the same float64 dot products (a GEMM with fewer rows or columns), rounded once:
    the float32 bits equal tucker_to_tensor's, whatever the chunking."""
    core, sizes = tuple(k for k, _ in dims), tuple(n for _, n in dims)
    rng = np.random.default_rng(seed)
    g = rng.laplace(size=core).astype(np.float32)
    factors = [rng.laplace(size=(n, k)).astype(np.float32) for n, k in zip(sizes, core)]
    want = tucker_to_tensor(g, factors).astype(np.float32)
    schedule = tucker_schedule(core, sizes, chunk, whole_bytes=0)
    got = tucker_into(g, factors, np.empty(sizes, np.float32), schedule)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), schedule


def test_chunked_schedule_bounds_the_float64_temporaries():
    """A 640x640x3x3 conv as WRN-28-10 stores it: 29.5 MB of float64 unchunked, a few MB chunked,
    and the schedule's figure bounds what tucker_into really allocates (tracemalloc)."""
    import tracemalloc
    core, sizes = (20, 20, 20, 20), (48, 48, 40, 40)
    rng = np.random.default_rng(0)
    g = rng.standard_normal(core).astype(np.float32)
    factors = [rng.standard_normal((n, k)).astype(np.float32) for n, k in zip(sizes, core)]
    schedule = tucker_schedule(core, sizes)
    assert schedule.chunks > 1 and schedule.work < 4 << 20 and schedule.largest <= 2 << 20
    out = np.empty(sizes, np.float32)
    f64 = 8 * sum(n * k for n, k in zip(sizes, core))
    tracemalloc.start()
    try:
        tucker_into(g, factors, out, schedule)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= schedule.work + f64 + (64 << 10), (peak, schedule.work)
    assert np.array_equal(out, tucker_to_tensor(g, factors).astype(np.float32))


def test_symbols_are_released_only_for_a_file_the_rebuild_read_itself():
    data = make_adt(*lenet5())
    f = read_adt(data)
    list(iter_weights(f))                       # an AdtFile passed in is left as it is
    assert all(p.symbols is not None for p in f.params if p.encoding == ENC_PLAIN)
    assert all(c.symbols is not None for c in f.cores)
    ref = rebuild_weights(f)
    seen = {}
    for name, w in _iter_weights(f, None, release=True):
        seen[name] = w
    assert all(np.array_equal(seen[k], ref[k]) for k in ref)
    assert all(p.symbols is None for p in f.params if p.encoding == ENC_PLAIN)
    assert all(c.symbols is None for c in f.cores)
    assert all(p.factors for p in f.params if p.encoding != ENC_PLAIN)   # factors (tiny) stay: shapes keep their meaning
