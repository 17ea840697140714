"""The file self-check (adt.runtime.selfcheck): a platform-independent probe, typed errors on bad entries."""
import json

import numpy as np
import pytest

import adt.runtime as rt
from adt.runtime.format import AdtError
from adt.runtime.samples import lenet5_architecture, lenet5_symbols, lenet5_writer
from adt.runtime.selfcheck import (
    KEY, MAX_VALUES, AdtSelfCheckError, make_selfcheck, probe_input, run_selfcheck,
)


def test_probe_is_splitmix64():
    # SplitMix64 with state 0: first outputs 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4 (reference values)
    x = probe_input(0, (2,))
    expected = np.array([0xE220A8 / 2 ** 23 - 1, 0x6E789E / 2 ** 23 - 1], dtype=np.float32)
    assert x.dtype == np.float32 and np.array_equal(x, expected)
    assert np.array_equal(probe_input(7, (1, 3, 4)), probe_input(7, (12,)).reshape(1, 3, 4))
    assert not np.array_equal(probe_input(7, (12,)), probe_input(8, (12,)))


def _writer():
    w = lenet5_writer(lenet5_symbols(0), b=0.6)
    w.set_architecture(lenet5_architecture())
    return w


def _with_selfcheck(value):
    w = _writer()
    w.add_metadata(KEY, value)
    return rt.load(w.to_bytes())


def test_selfcheck_round_trip_and_mismatch():
    m = rt.load(_writer().to_bytes())
    shape = (1, 1, 28, 28)
    out = m.run(probe_input(3, shape))
    good = _with_selfcheck(make_selfcheck(out, 3, shape))
    res = run_selfcheck(good)
    assert res.passed and res.values == min(out.size, MAX_VALUES)
    bad = _with_selfcheck(make_selfcheck(out + 0.1 * np.abs(out).max(), 3, shape))
    assert not run_selfcheck(bad).passed
    assert run_selfcheck(m) is None


@pytest.mark.parametrize("value", [
    "not json", json.dumps({"v": 2, "seed": 0, "shape": [1, 1, 28, 28], "stride": 1, "out": "AAA=", "atol": 0}),
    json.dumps({"v": 1, "seed": 0, "shape": [1, 1, 28, 28], "stride": 1, "out": "!!", "atol": 0}),
    json.dumps({"v": 1, "seed": 0, "shape": [1, 1, 28, 28], "stride": 0, "out": "AAA=", "atol": 0}),
    json.dumps({"v": 1, "seed": 0, "shape": [1 << 20, 1 << 20], "stride": 1, "out": "AAA=", "atol": 0}),
])
def test_malformed_entries_are_typed_errors(value):
    m = _with_selfcheck(value)
    with pytest.raises(AdtSelfCheckError) as exc:
        run_selfcheck(m)
    assert isinstance(exc.value, AdtError) and "selfcheck" in str(exc.value)
