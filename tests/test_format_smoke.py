"""Smoke tests of the container round trip (the full format suite lives in tests/format/)."""
import numpy as np

from adt.runtime.format import AdtWriter, dequantize, quantize, read_adt


def test_round_trip_tucker_and_plain():
    rng = np.random.default_rng(0)
    w = AdtWriter()
    w.add_metadata("producer", "test")
    g = w.add_group(512, 3.0)
    core = quantize(rng.normal(size=(5, 5)), 512, 3.0)
    c = w.add_core(core, g)
    m1, m2 = quantize(rng.normal(size=(25, 5)), 512, 3.0), quantize(rng.normal(size=(20, 5)), 512, 3.0)
    w.add_tucker("w", (20, 1, 5, 5), c, [m1, m2], g)
    bias = quantize(rng.normal(size=20), 512, 3.0)
    w.add_plain("b", bias, g)
    f = read_adt(w.to_bytes())
    assert f.metadata == {"producer": "test"}
    assert np.array_equal(f.cores[0].symbols, core)
    assert np.array_equal(f.param("w").factors[0], m1) and np.array_equal(f.param("w").factors[1], m2)
    assert np.array_equal(f.param("b").symbols, bias)
    assert f.param("w").reshape == (25, 20)
    assert f.file_size == sum(s.length for s in f.sections) + f.header_bytes + 4


def test_eq13_top_of_range_maps_to_last_level():
    s = quantize(np.array([-3.0, 0.0, 3.0, 100.0]), 512, 3.0)
    assert s.tolist() == [0, 256, 511, 511]
    assert dequantize(s, 512, 3.0)[1] == 0.0
