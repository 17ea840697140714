"""The scale benchmark's model specs match the paper (Table 13, 36.5M parameters) and the script
runs end to end on LeNet-5."""
from __future__ import annotations

import json
from math import prod

import pytest

from research.benchmarks import wrn_scale


def test_wrn_spec_matches_table_13():
    w = wrn_scale
    tucker, plain = w.wrn_28_10_spec()
    assert len(tucker) == 24
    total = sum(prod(s) for _, s, *_ in tucker) + sum(prod(s) for _, s in plain)
    assert 36.4e6 < total < 36.6e6  # "36.5M" (Table 3)
    # Table 13's #(Param.) column, in K, rounded as the paper prints it.
    expected_k = [4] + [22] * 7 + [55] + [67] * 7 + [108] + [163] * 7
    for (name, shape, reshape, core), k in zip(tucker, expected_k):
        assert prod(reshape) == prod(shape), name
        stored = prod(core) + sum(n * c for n, c in zip(reshape, core))
        assert abs(stored / 1000 - k) < 1, (name, stored, k)  # the paper prints 67,520 as 67K


def test_lenet_spec_is_431k():
    w = wrn_scale
    tucker, plain = w.lenet5_spec()
    assert sum(prod(s) for _, s, *_ in tucker) + sum(prod(s) for _, s in plain) == 431_080


def test_scale_script_runs_on_lenet5(tmp_path):
    pytest.importorskip("adt.runtime.rebuild")
    w = wrn_scale
    out = tmp_path / "scale.json"
    assert w.main(["--models", "lenet5", "--repeats", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["models"][0]
    assert r["model"] == "lenet5" and r["parameters"] == 431_080
    assert r["dense_float32_bytes"] == 4 * 431_080
    assert r["peak_rss_bytes"] > 0 and r["load_rebuild_s"] > 0 and r["file_bytes"] < r["dense_float32_bytes"] / 100
