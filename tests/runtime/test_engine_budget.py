"""The NumPy engine's execution budget (issue 17, item 1 "Run"): every intermediate shape is inferred
from the graph and the input shapes before anything is computed, and checked against ``max_memory``
(each intermediate alone, and the peak of live intermediates under the free-after-last-use
schedule). Constant folding at load goes through the same check. Refusals are AdtBudgetError naming
the node, the shape and the limit, raised before the work: ``tracemalloc`` (which sees NumPy's
allocations) bounds what was allocated on the way.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import adt.runtime as rt
from adt.runtime.errors import AdtBudgetError, AdtExecutionError
from adt.runtime.numpy_engine import NumpyEngine
from adt.runtime.onnx_proto import INT64, OnnxModel, Tensor, ValueInfo, make_node
from runtime_models import _io, _model

MiB = 1 << 20


def _adt(model: OnnxModel) -> bytes:
    w = rt.format.AdtWriter()
    w.set_architecture(model.to_bytes())
    return w.to_bytes()


def _init(name, array) -> Tensor:
    return Tensor.from_array(np.asarray(array), name)


def _peak_bytes(fn):
    """(peak bytes traced while ``fn`` runs, the AdtBudgetError it must raise)."""
    tracemalloc.start()
    try:
        with pytest.raises(AdtBudgetError) as info:
            fn()
        return tracemalloc.get_traced_memory()[1], info
    finally:
        tracemalloc.stop()


# -- constant folding at load -----------------------------------------------------------------------
def test_folding_a_broadcast_of_small_constants_is_refused_before_it_is_computed():
    # (16384, 1) + (1, 16384) zeros: 1 GiB of float32 from two 64 KiB initializers
    model = _model([make_node("Add", ["a", "b"], ["big"], name="bcast"), make_node("Add", ["input", "big"], ["output"])],
                   [_io("input", ["N", 1])], [_io("output", None)],
                   [_init("a", np.zeros((16384, 1), np.float32)), _init("b", np.zeros((1, 16384), np.float32))])
    data = _adt(model)
    peak, info = _peak_bytes(lambda: rt.load(data))
    assert peak < 8 * MiB
    msg = str(info.value)
    assert "Add node 'bcast'" in msg and "[16384, 16384]" in msg and "max_memory=256.00 MiB" in msg
    assert "1.00 GiB" in msg


def test_folding_twenty_concat_doublings_is_refused_before_the_limit_is_reached():
    # 80 float32 (320 bytes) doubled 20 times: 320 MiB for the last one, 640 MiB kept in all
    nodes, prev = [], "x0"
    for i in range(20):
        nodes.append(make_node("Concat", [prev, prev], [f"x{i + 1}"], axis=0, name=f"cat{i + 1}"))
        prev = f"x{i + 1}"
    nodes.append(make_node("Add", ["input", "x20"], ["output"]))
    model = _model(nodes, [_io("input", [1])], [_io("output", None)], [_init("x0", np.zeros(80, np.float32))])
    data = _adt(model)
    limit = 16 * MiB
    peak, info = _peak_bytes(lambda: rt.load(data, max_memory=limit))
    assert peak < limit + 2 * MiB
    assert "Concat node 'cat" in str(info.value) and "max_memory=16.00 MiB" in str(info.value)
    # the default: every folded constant is kept, so x1..x18 (160 MiB) + x19 (160 MiB) is over 256 MiB
    with pytest.raises(AdtBudgetError, match=r"Concat node 'cat19': constant folding at load.*320\.00 MiB.*"
                                             r"max_memory=256\.00 MiB"):
        rt.load(data)


def test_small_constant_folding_still_runs():
    model = _model([make_node("Concat", ["c", "c"], ["cc"], axis=0), make_node("Add", ["input", "cc"], ["output"])],
                   [_io("input", ["N", 4])], [_io("output", None)], [_init("c", np.ones(2, np.float32))])
    m = rt.load(_adt(model))
    np.testing.assert_array_equal(m(np.zeros((3, 4), np.float32)), np.ones((3, 4), np.float32))


# -- running --------------------------------------------------------------------------------------
def _bcast_model() -> OnnxModel:
    # input (N, 1) * row (1, 4096): N x 4096 float32
    return _model([make_node("Mul", ["input", "row"], ["wide"], name="spread"), make_node("Relu", ["wide"], ["output"])],
                  [_io("input", ["N", 1])], [_io("output", None)], [_init("row", np.ones((1, 4096), np.float32))])


def test_an_intermediate_over_the_limit_is_refused_before_the_run_naming_node_shape_and_limit():
    m = rt.load(_adt(_bcast_model()), max_memory=8 * MiB)
    assert m(np.ones((4, 1), np.float32)).shape == (4, 4096)
    x = np.ones((1024, 1), np.float32)  # 16 MiB for 'wide'
    peak, info = _peak_bytes(lambda: m(x))
    assert peak < 1 * MiB
    assert str(info.value).startswith("Mul node 'spread': output 'wide' of shape [1024, 4096] (float32) would need "
                                      "16.00 MiB (16,777,216 bytes), over the limit max_memory=8.00 MiB")
    assert rt.load(_adt(_bcast_model()), max_memory=None)(x).shape == (1024, 4096)


def test_the_peak_of_live_intermediates_is_checked_not_only_each_one():
    # x, r = Relu(x), s = Add(x, r): three live tensors of 4 MiB each while Add runs
    model = _model([make_node("Relu", ["input"], ["r"]), make_node("Add", ["input", "r"], ["s"], name="sum"),
                    make_node("Relu", ["s"], ["output"])], [_io("input", ["N", 1024])], [_io("output", None)])
    x = np.ones((1024, 1024), np.float32)
    with pytest.raises(AdtBudgetError, match=r"Add node 'sum': running the graph, the live intermediates.*"
                                             r"'s' of shape \[1024, 1024\].*12\.00 MiB.*max_memory=10\.00 MiB"):
        rt.load(_adt(model), max_memory=10 * MiB)(x)
    eng = rt.load(_adt(model), max_memory=12 * MiB)._runner
    eng.run({"input": x})
    plan = eng.plan({"input": x})
    assert plan.peak == 12 * MiB and plan.peak_node.name == "sum" and plan.dynamic_from is None


def test_plans_are_cached_by_input_shape():
    eng = rt.load(_adt(_bcast_model()))._runner
    a = eng.plan({"input": np.ones((2, 1), np.float32)})
    assert eng.plan({"input": np.zeros((2, 1), np.float32)}) is a
    assert eng.plan({"input": np.zeros((3, 1), np.float32)}) is not a


def test_the_input_itself_counts():
    m = rt.load(_adt(_bcast_model()), max_memory=1 * MiB)
    with pytest.raises(AdtBudgetError, match=r"input 'input' of shape \[524288, 1\].*2\.00 MiB.*max_memory=1\.00 MiB"):
        m(np.ones((512 * 1024, 1), np.float32))


def test_conv_padding_counts_as_work_space():
    # a 1x1x8x8 input padded by 500 on each side: the padded copy is 3.9 MiB, the output 3.9 MiB
    node = make_node("Conv", ["input", "w"], ["output"], pads=[500, 500, 500, 500], name="padconv")
    model = _model([node], [_io("input", [1, 1, 8, 8])], [_io("output", None)],
                   [_init("w", np.ones((1, 1, 1, 1), np.float32))])
    eng = NumpyEngine(model, {}, max_memory=None)
    plan = eng.plan({"input": ((1, 1, 8, 8), np.float32)})
    out = 1008 * 1008 * 4
    assert plan.peak >= 256 + out + out  # input + output + padded copy
    with pytest.raises(AdtBudgetError, match=r"Conv node 'padconv'.*\[1, 1, 1008, 1008\]"):
        NumpyEngine(model, {}, max_memory=6 * MiB).run({"input": np.ones((1, 1, 8, 8), np.float32)})


def test_shapes_that_do_not_fit_are_found_before_running_and_name_the_node():
    model = _model([make_node("Relu", ["input"], ["r"]), make_node("MatMul", ["r", "w"], ["output"], name="mm")],
                   [_io("input", ["N", 3])], [_io("output", None)], [_init("w", np.ones((4, 2), np.float32))])
    eng = NumpyEngine(model, {})
    with pytest.raises(AdtExecutionError, match=r"MatMul node 'mm' failed on inputs of shapes \[\[2, 3\], \[4, 2\]\]"):
        eng.plan({"input": ((2, 3), np.float32)})


def test_shape_arithmetic_is_inferred_through_shape_gather_concat_reshape():
    # Flatten by hand: Reshape(x, Concat(Gather(Shape(x), 0), [-1])), as torch exports it
    nodes = [make_node("Shape", ["input"], ["s"]),
             make_node("Gather", ["s", "zero"], ["n"], axis=0),
             make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             make_node("Reshape", ["input", "target"], ["output"])]
    inits = [_init("zero", np.array(0, np.int64)), _init("ax0", np.array([0], np.int64)),
             _init("minus1", np.array([-1], np.int64))]
    eng = NumpyEngine(_model(nodes, [_io("input", ["N", 2, 3])], [_io("output", None)], inits), {})
    plan = eng.plan({"input": ((5, 2, 3), np.float32)})
    assert plan.dynamic_from is None
    assert eng.run({"input": np.ones((5, 2, 3), np.float32)})[0].shape == (5, 6)


def test_a_shape_only_the_run_knows_is_checked_at_run_time_before_the_op():
    # the Reshape target is a graph input: its value is known only when the run starts
    nodes = [make_node("Reshape", ["input", "target"], ["col"], name="rs"),
             make_node("Mul", ["col", "row"], ["output"], name="spread")]
    model = _model(nodes, [_io("input", ["N"]), ValueInfo("target", INT64, [2])], [_io("output", None)],
                   [_init("row", np.ones((1, 4096), np.float32))])
    eng = NumpyEngine(model, {}, max_memory=8 * MiB)
    x = np.ones(1024, np.float32)
    t = np.array([-1, 1], np.int64)
    plan = eng.plan({"input": x, "target": t})
    assert plan.dynamic_from == 0
    assert eng.run({"input": x[:8], "target": t})[0].shape == (8, 4096)
    peak, info = _peak_bytes(lambda: eng.run({"input": x, "target": t}))
    assert peak < 1 * MiB
    assert "Mul node 'spread': output 'output' of shape [1024, 4096]" in str(info.value)


def test_lenet5_batch_of_256_peak_is_an_upper_bound_of_what_the_run_allocates():
    from adt.runtime.samples import lenet5_file
    m = rt.load(lenet5_file())
    x = np.zeros((256, 1, 28, 28), np.float32)
    plan = m._runner.plan({m.input_name: x})
    assert plan.peak == 20643840  # 19.69 MiB, the figure load's docstring cites
    tracemalloc.start()
    try:
        y = m(x)
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.shape == (256, 10)
    # NumPy's own small buffers and Python objects (a few KiB) are not counted
    assert traced <= plan.peak + (64 << 10)


def test_model_run_refuses_an_input_over_the_limit_before_copying_it():
    m = rt.load(_adt(_bcast_model()), max_memory=1 * MiB)
    x = np.ones((1 << 20, 2), np.float32)[:, :1]  # 4 MiB, not contiguous: a run would copy it first
    peak, info = _peak_bytes(lambda: m(x))
    assert peak < 1 * MiB
    assert str(info.value).startswith("input 'input' of shape [1048576, 1] (float32) takes 4.00 MiB")
