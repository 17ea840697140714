"""Whole-file property: any model the writer accepts reads back to exactly the same symbols, under
every table policy, with deterministic bytes."""
from __future__ import annotations

from math import prod

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adt_spec_decoder as S
from adt.runtime.format import CORE_CP, ENC_PLAIN, AdtWriter, dequantize, read_adt

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def models(draw):
    """A random model description: groups, cores (Tucker or CP), plain and Tucker parameters."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = [(draw(st.sampled_from([1, 2, 16, 512, 1500, 65536])), draw(st.floats(0.01, 10.0)))
              for _ in range(draw(st.integers(1, 3)))]

    def syms(shape, g):
        q = groups[g][0]
        centre, spread = rng.integers(0, q), max(1.0, q * rng.uniform(0.001, 0.2))
        return np.clip(np.round(rng.laplace(centre, spread, size=shape)), 0, q - 1).astype(np.uint16)

    cores = []
    for _ in range(draw(st.integers(0, 3))):
        g = draw(st.integers(0, len(groups) - 1))
        order = draw(st.integers(1, 4))
        if draw(st.booleans()):
            r = draw(st.integers(1, 4))
            cores.append(("cp", (r,) * order, g, syms((r,), g)))
        else:
            dims = tuple(draw(st.integers(1, 3)) for _ in range(order))
            cores.append(("tucker", dims, g, syms(dims, g)))
    params = []
    for i in range(draw(st.integers(0 if cores else 1, 4))):
        g = draw(st.integers(0, len(groups) - 1))
        if cores and draw(st.booleans()):
            c = draw(st.integers(0, len(cores) - 1))
            reshape = [draw(st.integers(1, 5)) for _ in cores[c][1]]
            factors = [syms((n, k), g) for n, k in zip(reshape, cores[c][1])]
            shape = (prod(reshape),) if draw(st.booleans()) else tuple(reshape)
            params.append(("tucker", f"p{i}.weight", shape, g, c, factors))
        else:
            shape = tuple(draw(st.integers(1, 6)) for _ in range(draw(st.integers(0, 3))))
            params.append(("plain", f"p{i}.bias", shape, g, None, syms(shape, g)))
    used = {c[2] for c in cores} | {p[3] for p in params}
    # every group must code at least one symbol: drop the unused ones by giving them a parameter
    for g in range(len(groups)):
        if g not in used:
            params.append(("plain", f"fill{g}", (1,), g, None, syms((1,), g)))
    return groups, cores, params


def write(model, tables: str) -> bytes:
    groups, cores, params = model
    w = AdtWriter(tables=tables)
    w.add_metadata("producer", "hypothesis")
    for q, b in groups:
        w.add_group(q, b)
    for kind, dims, g, s in cores:
        w.add_core(s, g, cp_order=len(dims) if kind == "cp" else None)
    for kind, name, shape, g, c, data in params:
        if kind == "plain":
            w.add_plain(name, data, g)
        else:
            w.add_tucker(name, shape, c, data, g)
    return w.to_bytes()


@SETTINGS
@given(models())
def test_model_round_trip(model):
    groups, cores, params = model
    datas = {t: write(model, t) for t in ("shared", "per_group", "auto")}
    assert write(model, "auto") == datas["auto"]
    assert len(datas["auto"]) == min(len(datas["shared"]), len(datas["per_group"]))
    for data in datas.values():
        f = read_adt(data)
        assert f.metadata == {"producer": "hypothesis"}
        assert [(g.q, g.b) for g in f.groups] == [(q, float(np.float32(b))) for q, b in groups]
        assert len(f.cores) == len(cores)
        for i, ((kind, dims, g, s), core) in enumerate(zip(cores, f.cores)):
            assert core.dims == dims and core.group == g and (core.kind == CORE_CP) == (kind == "cp")
            assert np.array_equal(core.symbols.reshape(-1), s.reshape(-1))
            dense = f.core_values(i)
            assert dense.shape == dims and dense.dtype == np.float32
        assert [p.name for p in f.params] == [p[1] for p in params]
        for (kind, name, shape, g, c, arr), p in zip(params, f.params):
            assert p.shape == shape and p.group == g
            if kind == "plain":
                assert p.encoding == ENC_PLAIN and np.array_equal(p.symbols, arr)
                q, b = groups[g]
                assert np.array_equal(f.values(p.symbols, g), dequantize(arr, q, b))
            else:
                assert p.core == c and len(p.factors) == len(arr)
                assert all(np.array_equal(a, e) for a, e in zip(p.factors, arr))
        bits = sum(c.bits for c in f.cores) + sum(p.bits for p in f.params)
        assert bits == f.payload_bits and (bits + 7) // 8 == f.sections[-1].length
        # the decoder written from FORMAT.md alone agrees
        spec = S.decode(data, b"")
        assert [c["symbols"] for c in spec["cores"]] == [c.symbols.reshape(-1).tolist() for c in f.cores]
        for sp, p in zip(spec["params"], f.params, strict=True):
            got = sp["symbols"] if p.encoding == ENC_PLAIN else [x for m in sp["factors"] for x in m]
            want = p.symbols.reshape(-1).tolist() if p.encoding == ENC_PLAIN else [
                x for m in p.factors for x in m.reshape(-1).tolist()]
            assert got == want
