"""Reading and rebuilding many small parameters in linear time (issue 17, "linear-time pieces"; the
figures are in results/many_params.md). No timings here: the fast paths are checked against the
slow references they replaced, and the per-stream work is checked by counting calls.

* The payload reader decodes consecutive streams of one group in one call (a run); forcing runs of
  one stream (``_RUN_SYMBOLS = 1``) is exactly the old per-stream reader, the reference.
* :func:`contraction_order` sorts modes by a closed-form key; the subset DP it replaced
  (``_contraction_order_dp``) is the reference (tests/runtime/test_rebuild.py checks optimality
  against brute force).
* A parameter's factors are dequantized in one call; one ``AdtFile.values`` per factor is the reference."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adt.runtime.format import AdtError, AdtWriter, read_adt, reader
from adt.runtime.format.huffman import HuffmanCode
from adt.runtime.rebuild import _contraction_order_dp, contraction_order, cp_to_tensor, iter_weights, tucker_to_tensor


QS = (16, 5, 200, 1)


def many_params_file(n: int, seed: int = 0, groups: int = 3, shared_core: bool = False, tables: str = "auto") -> bytes:
    """``n`` small parameters in ``groups`` interleaved groups (Q = 16, 5, 200, 1): plain ones, Tucker
    ones of order 1..8 with 1-2 rows per factor (cores shared or not) and CP ones."""
    rng = np.random.default_rng(seed)
    w = AdtWriter(tables=tables)
    gs = [w.add_group(q, 1.0) for q in QS[:groups]]
    cores = []
    for i in range(1 if shared_core else 12):
        g = gs[i % len(gs)]
        q = QS[i % len(gs)]
        if i % 4 == 3:
            cores.append((w.add_core(rng.integers(0, q, size=3), g, cp_order=1 + i % 5), g, q))
        else:
            dims = tuple(int(x) for x in rng.integers(1, 3, size=1 + i % 8))
            cores.append((w.add_core(rng.integers(0, q, size=dims), g), g, q))
    for i in range(n):
        if i % 5 == 0:
            g = gs[i % len(gs)]
            q = QS[i % len(gs)]
            w.add_plain(f"p{i}", rng.integers(0, q, size=tuple(rng.integers(1, 4, size=i % 3))), g)
            continue
        ci, g, q = cores[i % len(cores)]
        dims = w._cores[ci].dims
        sizes = [int(x) for x in rng.integers(1, 3, size=len(dims))]
        w.add_tucker(f"p{i}", (int(np.prod(sizes)),), ci,
                     [rng.integers(0, q, size=(s, k)) for s, k in zip(sizes, dims)], g)
    return w.to_bytes()


def _per_stream(data: bytes):
    old = reader._RUN_SYMBOLS
    reader._RUN_SYMBOLS = 1            # every run is one stream: the reader before runs existed
    try:
        return read_adt(data)
    finally:
        reader._RUN_SYMBOLS = old


def _same_file(a, b) -> int:
    """Assert two decodes of one file are the same; return how many parameters were compared."""
    assert a.payload_bits == b.payload_bits
    assert len(a.cores) == len(b.cores) and len(a.params) == len(b.params)
    for x, y in zip(a.cores, b.cores):
        assert x.bits == y.bits and x.symbols.shape == y.symbols.shape and np.array_equal(x.symbols, y.symbols)
    for x, y in zip(a.params, b.params):
        assert x.bits == y.bits and x.name == y.name
        if x.symbols is not None:
            assert x.symbols.shape == y.symbols.shape and np.array_equal(x.symbols, y.symbols)
        assert len(x.factors) == len(y.factors)
        for m, r in zip(x.factors, y.factors):
            assert m.shape == r.shape and m.dtype == r.dtype and np.array_equal(m, r)
    return len(a.params)


@pytest.mark.parametrize("shared", [False, True])
def test_runs_decode_the_same_symbols_and_bits_as_one_stream_at_a_time(shared):
    data = many_params_file(300, shared_core=shared)
    assert _same_file(read_adt(data), _per_stream(data)) == 300


def test_a_run_is_one_decode_call(monkeypatch):
    # one group, 400 parameters of 8 factors: one decode for the cores, one for all 3,200 factors
    # (the reader used to make 3,200 calls; the count no longer grows with the number of parameters)
    calls = []
    orig = HuffmanCode.decode_symbols   # what decode calls too

    def counting(self, *args, **kw):
        calls.append(1)
        return orig(self, *args, **kw)

    rng = np.random.default_rng(1)
    w = AdtWriter()
    g = w.add_group(16, 1.0)
    c = w.add_core(rng.integers(0, 16, size=(1, 2, 1, 2, 1, 2, 1, 2)), g)
    for i in range(400):
        w.add_tucker(f"p{i}", (256,), c, [rng.integers(0, 16, size=(2, k)) for k in (1, 2, 1, 2, 1, 2, 1, 2)], g)
    data = w.to_bytes()
    monkeypatch.setattr(HuffmanCode, "decode_symbols", counting)
    read_adt(data)
    assert len(calls) == 1       # the core and every factor: one group, consecutive in the payload


def _mutate_payload(data: bytes, seed: int) -> bytes:
    """Flip a few payload bits and fix the CRC, so the reader's payload checks are reached."""
    rng = np.random.default_rng(seed)
    f = read_adt(data)
    sec = [s for s in f.sections if s.name == "payload"][0]
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        at = sec.offset + int(rng.integers(0, sec.length))
        buf[at] ^= 1 << int(rng.integers(0, 8))
    buf[-4:] = (zlib.crc32(bytes(buf[:-4])) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(buf)


@given(st.integers(0, 10_000), st.sampled_from([0, 1]))
@settings(max_examples=60, deadline=None)
def test_a_corrupted_run_fails_exactly_as_one_stream_at_a_time(seed, base):
    # BASES[0]: one table shared by groups of Q = 5, 16 and 200, so a flipped bit can give a symbol
    # >= Q in the middle of a run; BASES[1]: a table per group and a one-symbol code (Q = 1), where
    # a flipped bit is an invalid code in the middle of a run
    data = _mutate_payload(BASES[base], seed)
    outcomes = []
    for read in (read_adt, _per_stream):
        try:
            outcomes.append(read(data))
        except AdtError as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    if isinstance(outcomes[0], str) or isinstance(outcomes[1], str):
        assert outcomes[0] == outcomes[1]       # the same error, naming the same stream
    else:
        _same_file(*outcomes)


BASES = [many_params_file(60, seed=3, tables="shared"), many_params_file(60, seed=4, groups=4, tables="per_group")]


@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_closed_form_contraction_order_is_the_dp_order(dims):
    core = tuple(k for k, _ in dims)
    sizes = tuple(n for _, n in dims)
    assert contraction_order(core, sizes) == _contraction_order_dp(core, sizes)


def test_closed_form_contraction_order_on_every_order_8_shape_of_ones_and_twos():
    # the shapes of the many-parameter benchmark, every tie included
    for a in range(0, 256, 3):
        core = tuple(1 + (a >> i & 1) for i in range(8))
        for b in range(0, 256, 17):
            sizes = tuple(1 + (b >> i & 1) for i in range(8))
            assert contraction_order(core, sizes) == _contraction_order_dp(core, sizes)


def test_rebuilt_weights_equal_the_per_factor_reference():
    f = read_adt(many_params_file(200, seed=5))
    for p, (name, w) in zip(f.params, iter_weights(f, None)):
        assert name == p.name
        if p.symbols is not None:
            ref = np.asarray(f.values(p.symbols, p.group), np.float32).reshape(p.shape)
        else:
            c = f.cores[p.core]
            core = np.asarray(f.values(c.symbols, c.group), np.float32)
            factors = [f.values(m, p.group) for m in p.factors]   # one call per factor
            dense = (cp_to_tensor(core, factors) if c.kind == 1 else
                     tucker_to_tensor(core, factors, _contraction_order_dp(c.dims, tuple(m.shape[0] for m in p.factors))))
            ref = dense.astype(np.float32).reshape(p.shape)
        assert w.dtype == ref.dtype and w.shape == ref.shape and w.tobytes() == ref.tobytes()
