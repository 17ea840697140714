"""adt.runtime.samples: the shared LeNet-5 plan, graph and file, built without torch or onnx."""
from __future__ import annotations

from math import prod

import numpy as np

import adt.runtime as rt
from adt.runtime.format import read_adt
from adt.runtime.onnx_proto import parse_model
from adt.runtime.samples import (
    B, Q, lenet5_architecture, lenet5_file, lenet5_model, lenet5_plan, lenet5_symbols, lenet5_writer,
)


def test_plan_is_consistent():
    plan = lenet5_plan()
    assert [layer.name for layer in plan] == ["conv1", "conv2", "fc1", "fc2"]
    for layer in plan:
        assert prod(layer.reshape) == prod(layer.shape) and len(layer.reshape) == len(layer.core)
        assert layer.bias == layer.shape[0]
    # the paper's LeNet-5: 431,080 parameters
    assert sum(prod(layer.shape) + layer.bias for layer in plan) == 431_080


def test_architecture_references_every_plan_parameter():
    m = parse_model(lenet5_architecture())
    assert m.to_bytes() == lenet5_model().to_bytes() == lenet5_architecture()
    used = {i for n in m.graph.nodes for i in n.inputs}
    for layer in lenet5_plan():
        assert {layer.weight_name, layer.bias_name} <= used
    assert not m.graph.initializers  # the architecture contract: weights come from the file
    assert [v.name for v in m.graph.inputs] == ["input"] and [v.name for v in m.graph.outputs] == ["output"]


def test_file_runs_and_is_deterministic():
    data = lenet5_file(seed=0)
    assert data == lenet5_file(seed=0) and data != lenet5_file(seed=1)
    m = rt.load(data)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    y = m.run(x)
    assert y.shape == (3, 10) and np.isfinite(y).all()
    assert len(m.weights) == 8 and sum(w.size for w in m.weights.values()) == 431_080


def test_file_options():
    bare = read_adt(lenet5_file(seed=0, architecture=False))
    assert bare.architecture is None and bare.metadata == {}
    assert read_adt(lenet5_file(seed=0, metadata={"model": "x"})).metadata == {"model": "x"}
    assert len(read_adt(lenet5_file(seed=0, tables="per_group", groups="per_layer")).tables) == 4
    small = read_adt(lenet5_file(seed=0, b=0.6, architecture=False))
    assert small.groups[0].b == np.float32(0.6) and np.array_equal(small.cores[0].symbols, bare.cores[0].symbols)
    # the writer on its own gives the file without architecture or metadata
    assert lenet5_writer(lenet5_symbols(0)).to_bytes() == lenet5_file(seed=0, architecture=False)
    assert (bare.groups[0].q, bare.groups[0].b) == (Q, B)
