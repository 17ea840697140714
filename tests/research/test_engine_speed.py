"""The benchmark networks build, load and agree with ONNX Runtime, and the engine benchmark writes the
results shape the board report reads (no timing is asserted)."""
from __future__ import annotations

import json
from math import prod

import numpy as np
import pytest

import adt.runtime as rt
from research.benchmarks import engine_speed, nets


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_net_runs_and_matches_onnxruntime(name):
    ort = pytest.importorskip("onnxruntime")
    builder, shape = nets.NETS[name]
    data = builder(size=32) if name == "mobilenetv2" else builder()
    m = rt.load(data)
    x = np.random.default_rng(0).standard_normal((2, shape[0], 32, 32)).astype(np.float32)
    y = m.run(x)
    ref = ort.InferenceSession(m.onnx_bytes(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert y.shape == ref.shape and np.isfinite(y).all()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    ops = {n.op_type for n in m.architecture.graph.nodes}
    assert {"Conv", "BatchNormalization", "Add", "GlobalAveragePool", "Gemm"} <= ops


def test_wrn_28_10_uses_the_scale_benchmarks_names_and_shapes():
    from research.benchmarks.wrn_scale import wrn_28_10_spec
    f = rt.load(nets.wrn_28_10(), engine=None)
    tucker, plain = wrn_28_10_spec()
    want = {name: tuple(shape) for name, shape, *_ in tucker} | {name: tuple(shape) for name, shape in plain}
    assert {n: tuple(w.shape) for n, w in f.weights.items()} == want
    assert sum(prod(s) for s in want.values()) == 36_497_146


def test_benchmark_writes_rows_and_targets(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "speed.json"
    result = engine_speed.main(["--nets", "lenet5", "--threads", "1", "--budget", "0.01", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["table"] == result["table"] and len(saved["table"]) == 2  # batch 1 and 64
    for row, target in zip(saved["table"], saved["targets"]):
        assert row["net"] == "lenet5" and row["threads"] == "1" and row["rel_err"] < 1e-4
        assert target["limit"] == 2.0 and target["met"] == (row["ratio"] <= 2.0)
        assert target["id"] == f"engine_lenet5_b{row['batch']}_1thread"
        assert row["profile_ms"]  # where the time goes
    assert "loadavg_before" in saved and "machine" in saved and "command" in saved
    assert "| lenet5 |" in out.with_suffix(".md").read_text()
