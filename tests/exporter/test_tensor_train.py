"""Tensor-train weights: the rebuild against an independent einsum, TT-SVD exactness, TT layers against
dense layers, planner value counts, init variance, training, and the export to a format 2.0 file."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from adt.exporter import (
    ModelError, PlanError, TrainConfig, TTPlan, TTWeight, apply_tt, build_model, count_params, export_adt,
    plan_model_tt, plan_tt, train, tt_layers, tt_model_params, tt_plan_table,
)
from adt.exporter.data import tensor_loader
from adt.exporter.tensor_train import tt_contraction_cost, tt_max_ranks, tt_to_tensor

torch.set_num_threads(1)


def np_tt(cores):
    """Independent reference: one np.einsum over all cores (no left-to-right loop, no reshapes)."""
    d = len(cores)
    bonds = "abcdefghij"
    modes = "pqrstuvwxy"
    spec = ",".join(f"{bonds[k]}{modes[k]}{bonds[k + 1]}" for k in range(d))
    out = np.einsum(f"{spec}->{bonds[0]}{modes[:d]}{bonds[d]}", *[np.asarray(c, dtype=np.float64) for c in cores])
    return out[0, ..., 0]


def random_cores(reshape, ranks, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(ranks[k], n, ranks[k + 1], generator=g, dtype=torch.float64) for k, n in enumerate(reshape)]


CASES = [((4, 5), (1, 3, 1)), ((3, 4, 5), (1, 2, 3, 1)), ((2, 3, 2, 3, 2), (1, 2, 3, 3, 2, 1)),
         ((6, 1, 5, 2), (1, 2, 2, 2, 1)), ((7,), (1, 1))]


@pytest.mark.parametrize("reshape,ranks", CASES)
def test_to_tensor_matches_numpy_einsum(reshape, ranks):
    cores = random_cores(reshape, ranks)
    tw = TTWeight((math.prod(reshape),), reshape, [nn.Parameter(c) for c in cores])
    assert tw.ranks == ranks
    got = tw.to_tensor().detach().numpy()
    np.testing.assert_allclose(got, np_tt([c.numpy() for c in cores]).reshape(-1), rtol=1e-12, atol=1e-12)
    assert tw.num_params() == TTPlan(reshape, ranks).params == sum(c.numel() for c in cores)


@pytest.mark.parametrize("reshape,ranks", CASES + [((40, 25, 25), (1, 3, 4, 1)), ((5, 6, 7), (1, 5, 2, 1))])
def test_both_sweeps_match_numpy_einsum_and_the_cheaper_one_is_taken(reshape, ranks):
    cores = random_cores(reshape, ranks, seed=5)
    ref = np_tt([c.numpy() for c in cores])
    for from_left in (True, False):
        np.testing.assert_allclose(tt_to_tensor(cores, from_left).numpy(), ref, rtol=1e-12, atol=1e-12)
    left, right = tt_contraction_cost(reshape, ranks, True), tt_contraction_cost(reshape, ranks, False)
    # the final product alone: N * r_(d-1) from the left, N * r_1 from the right
    n = math.prod(reshape)
    if len(reshape) >= 2:
        assert left >= n * ranks[-2] and right >= n * ranks[1]
    # the default sweep is the cheaper one (bit-identical to it in float32), the left on a tie
    c32 = [c.float() for c in cores]
    assert torch.equal(tt_to_tensor(c32), tt_to_tensor(c32, left <= right))
    if len(reshape) == 3:  # the whole count by hand for three cores
        n1, n2, n3 = reshape
        assert left == n1 * ranks[1] * n2 * ranks[2] + n1 * n2 * ranks[2] * n3
        assert right == n3 * ranks[2] * n2 * ranks[1] + n3 * n2 * ranks[1] * n1


def test_tensorly_agrees_with_the_rebuild():
    import tensorly as tl

    cores = random_cores((3, 4, 5, 2), (1, 3, 4, 2, 1), seed=3)
    ref = tl.tt_to_tensor([c.numpy() for c in cores])
    np.testing.assert_allclose(tt_to_tensor(cores).numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reshape,ranks", [((4, 5, 6), (1, 2, 3, 1)), ((5, 4, 3, 6), (1, 3, 4, 2, 1)),
                                           ((8, 8), (1, 3, 1))])
def test_tt_svd_recovers_an_exact_tt_tensor(reshape, ranks):
    cores = random_cores(reshape, ranks, seed=7)
    w = torch.from_numpy(np_tt([c.numpy() for c in cores])).reshape(math.prod(reshape[:1]), -1)
    tw = TTWeight.from_tensor(w, reshape, ranks)
    assert tw.init_error < 1e-5
    rebuilt = tw.to_tensor().detach()
    assert torch.linalg.vector_norm(rebuilt - w) / torch.linalg.vector_norm(w) < 1e-5
    # one rank lower cannot be exact for generic cores
    lower = tuple(max(1, r - 1) if 0 < k < len(ranks) - 1 else r for k, r in enumerate(ranks))
    assert TTWeight.from_tensor(w, reshape, lower).init_error > 1e-3


@pytest.mark.parametrize("reshape", [(4, 5, 6), (2, 3, 2, 3, 2), (10, 12)])
def test_tt_svd_at_full_ranks_is_exact(reshape):
    g = torch.Generator().manual_seed(11)
    w = torch.randn(math.prod(reshape), generator=g, dtype=torch.float64)
    full = tt_max_ranks(reshape)
    tw = TTWeight.from_tensor(w, reshape, full)
    assert tw.ranks == full
    assert tw.init_error < 1e-10
    np.testing.assert_allclose(tw.to_tensor().detach().numpy(), w.numpy(), rtol=1e-9, atol=1e-12)
    # ... and the full ranks store more values than the tensor: the planner's never-bigger rule matters
    assert TTPlan(reshape, full).params >= math.prod(reshape)


LAYERS = [
    (lambda: nn.Linear(60, 40), (2, 60), (8, 5, 60), (1, 5, 4, 1)),
    (lambda: nn.Conv2d(6, 8, 3, padding=1), (2, 6, 7, 7), (8, 6, 9), (1, 4, 3, 1)),
    (lambda: nn.Conv1d(4, 10, 5), (3, 4, 20), (10, 4, 5), (1, 3, 4, 1)),
]


@pytest.mark.parametrize("make,x_shape,reshape,ranks", LAYERS)
def test_tt_layer_equals_dense_layer_with_the_rebuilt_weight(make, x_shape, reshape, ranks):
    torch.manual_seed(0)
    layer = make().double()
    dense = make().double()
    dense.load_state_dict(layer.state_dict())
    apply_tt(layer, {"": TTPlan(reshape, ranks)}, seed=1)
    tw = tt_layers(layer)[0][2]
    # the dense twin gets the weight from the independent einsum of the cores, not from the TT module
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(np_tt([c.detach().numpy() for c in tw.cores])).reshape(dense.weight.shape))
    x = torch.randn(x_shape, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense(x))
    # no dense copy is stored: the placeholder is empty and the cores are all there is
    assert layer.parametrizations.weight.original.numel() == 0
    assert count_params(layer) == tw.num_params() + layer.bias.numel()


def test_svd_init_keeps_the_function_at_full_ranks_and_records_errors():
    torch.manual_seed(0)
    layer = nn.Linear(24, 10).double()
    x = torch.randn(5, 24, dtype=torch.float64)
    ref = layer(x).detach()
    reshape = (10, 4, 6)
    apply_tt(layer, {"": TTPlan(reshape, tt_max_ranks(reshape))}, init="svd")
    torch.testing.assert_close(layer(x), ref)
    assert tt_layers(layer)[0][2].init_error < 1e-10
    low = nn.Linear(24, 10).double()
    apply_tt(low, {"": TTPlan(reshape, (1, 2, 2, 1))}, init="svd")
    tw = tt_layers(low)[0][2]
    assert 0.05 < tw.init_error < 1.0  # a random weight has no low TT rank: truncation loses a lot


def test_scratch_init_gives_the_rebuilt_weight_kaiming_variance():
    g = torch.Generator().manual_seed(0)
    shape = (300, 784)
    tw = TTWeight.new(shape, (28, 21, 20, 20), (1, 6, 6, 6, 1), generator=g, dtype=torch.float64)
    w = tw.to_tensor().detach()
    var = float(w.var())
    assert abs(float(w.mean())) < 0.01
    assert 0.7 * (2 / 784) < var < 1.3 * (2 / 784)
    glorot = TTWeight.new(shape, (28, 21, 20, 20), (1, 6, 6, 6, 1), scheme="glorot", generator=g,
                          dtype=torch.float64).to_tensor().detach()
    assert 0.7 * (2 / 1084) < float(glorot.var()) < 1.3 * (2 / 1084)


def test_seeded_scratch_init_is_reproducible():
    a, b = build_model("lenet300"), build_model("lenet300")
    plan = plan_model_tt(a, 10.0)
    apply_tt(a, plan, seed=4)
    apply_tt(b, plan, seed=4)
    for (_, _, ta), (_, _, tb) in zip(tt_layers(a), tt_layers(b)):
        for ca, cb in zip(ta.cores, tb.cores):
            assert torch.equal(ca, cb)


# --------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,target", [("lenet5", 2600), ("lenet5", 20.0), ("lenet300", 4101), ("lenet300", 40.0)])
def test_plan_counts_match_the_stored_parameters(name, target):
    model = build_model(name)
    dense_total = count_params(model)
    plan = plan_model_tt(model, target)
    assert plan
    predicted = tt_model_params(model, plan)
    limit = target if isinstance(target, int) else int(dense_total / target)
    assert predicted <= limit
    assert predicted > 0.9 * limit  # the top-up spends the budget
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules() if n in plan}
    for n, tp in plan.items():
        assert tp.params < math.prod(shapes[n])  # never bigger than dense
        assert tp.ranks == tuple(min(r, c) for r, c in zip(tp.ranks, tt_max_ranks(tp.reshape)))
    rows = tt_plan_table(model, plan)
    assert [r["layer"] for r in rows] == list(plan)
    apply_tt(model, plan, seed=0)
    assert count_params(model) == predicted
    assert sum(tw.num_params() for _, _, tw in tt_layers(model)) == sum(tp.params for tp in plan.values())


def test_targets_that_do_not_compress_are_refused():
    model = build_model("lenet300")
    total = count_params(model)
    for bad in (1.0, 0.5, total, total + 10, float("nan")):
        with pytest.raises(PlanError):
            plan_model_tt(model, bad)
    with pytest.raises(PlanError, match="too small"):
        plan_model_tt(model, 500)  # the biases alone are 410 values
    with pytest.raises(PlanError):
        plan_tt((40, 60), 1.0)
    with pytest.raises(PlanError, match="too small"):
        plan_tt((40, 60), 10)


def test_plans_are_never_bigger_than_dense():
    model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 16))
    plan = plan_model_tt(model, 1.05)  # a mild target: the small layer's TT form gets near its dense size
    assert set(plan) == {"0", "2"}
    for tp in plan.values():
        assert tp.params < tp.numel
    assert tt_model_params(model, plan) <= int(count_params(model) / 1.05)
    # a budget above the weight's size is capped: full TT ranks of a 20 x 16 x 10 tensor store 3700 > 3200
    tp = plan_tt((16, 200), 10 ** 6)
    assert tp.params < 3200
    assert TTPlan(tp.reshape, tt_max_ranks(tp.reshape)).params > 3200


def test_overrides_fix_layers_and_dense_keeps_them():
    model = build_model("lenet5")
    fixed = TTPlan((32, 25, 25, 20), (1, 3, 3, 3, 1))
    plan = plan_model_tt(model, 3000, {"fc1": fixed, "conv1": "dense", "fc2": {"reshape": [25, 20, 10], "ranks": [2, 2]}})
    assert "conv1" not in plan
    assert plan["fc1"] == fixed
    assert plan["fc2"].ranks == (1, 2, 2, 1)
    assert tt_model_params(model, plan) <= 3000
    with pytest.raises(PlanError, match="exceed"):
        TTPlan((4, 5), (1, 6, 1))  # a 4 x 5 matrix has rank <= 4
    with pytest.raises(PlanError):
        plan_model_tt(model, 3000, {"fc1": TTPlan((40, 25, 20, 10), (1, 2, 2, 2, 1)), "conv1": "dense"})  # wrong size
    with pytest.raises(PlanError):
        plan_model_tt(model, 3000, {"nope": 100})


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.integers(2, 60), st.integers(1, 9), st.integers(5, 4000))
def test_plan_tt_fits_its_budget_and_uses_proper_ranks(rows, cols, kernel, budget):
    shape = (rows, cols, kernel) if kernel > 1 else (rows, cols)
    n = math.prod(shape)
    try:
        tp = plan_tt(shape, budget)
    except PlanError:
        return  # a prime count or a budget below rank 1
    assert tp.numel == n
    assert tp.params <= min(budget, n - 1)
    TTPlan(tp.reshape, tp.ranks)  # proper: constructing it again does not raise


# --------------------------------------------------------------------------------------------------
# Training and export
# --------------------------------------------------------------------------------------------------
def test_training_a_tt_model_reduces_the_loss():
    torch.manual_seed(0)
    x = torch.randn(512, 64)
    teacher = nn.Linear(64, 4)
    y = teacher(x).argmax(1)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 4))
    plan = plan_model_tt(model, 4.0, min_numel=1000)
    assert set(plan) == {"0"}
    apply_tt(model, plan, seed=0)
    before = [c.detach().clone() for c in tt_layers(model)[0][2].cores]
    result = train(model, tensor_loader(x, y, 64, shuffle=True), TrainConfig(epochs=6, lr=0.01, threads=1),
                   progress=False)
    first, last = np.mean(result.losses[:8]), np.mean(result.losses[-8:])
    assert last < 0.6 * first
    after = tt_layers(model)[0][2].cores
    assert all(not torch.equal(b, a) for b, a in zip(before, after))  # every core trained


@pytest.mark.parametrize("engine", ["numpy", "onnxruntime"])
def test_a_tt_model_exports_to_a_version_2_file_the_runtime_runs(tmp_path, engine):
    """The file stores each TT layer as a TT parameter (FORMAT.md 2.0): the runtime's rebuild of the
    file's cores is the torch model with those quantized values, on both engines; Tucker files stay 1.0."""
    import adt.runtime as rt
    from adt.exporter.export import dequantized_weights, quantized_model
    from adt.exporter.quantplan import make_quant_plan
    from adt.runtime.format import ENC_TT, read_adt

    torch.manual_seed(0)
    model = build_model("lenet5")
    plan = plan_model_tt(model, 20.0)
    apply_tt(model, plan, seed=0)
    out = tmp_path / "tt.adt"
    rep = export_adt(model, out, input_shape=(1, 28, 28), q=4096)
    assert rep.check.passed
    f = read_adt(out)
    assert f.version == (2, 0) and f.metadata["method"] == "tt"
    tt_params = {p.name: p for p in f.params if p.encoding == ENC_TT}
    assert set(tt_params) == {f"{name}.weight" for name in plan}
    for name, tp in plan.items():
        p = tt_params[f"{name}.weight"]
        assert p.reshape == tp.reshape and p.ranks == tp.ranks[1:-1]
        assert [g.shape for g in p.factors] == [tuple(cs) for cs in tp.core_shapes]
    assert rep.stored_values == count_params(model)
    x = torch.randn(4, 1, 28, 28)
    qplan = make_quant_plan(model, q=4096)
    with torch.no_grad():
        expected = quantized_model(model, dequantized_weights(model, qplan))(x).numpy()
    got = rt.load(out, engine=engine).run(x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    # without TT layers nothing changes: the file is still a 1.0 file (old runtimes read it)
    dense = tmp_path / "dense.adt"
    export_adt(build_model("lenet300"), dense, input_shape=(784,))
    assert read_adt(dense).version == (1, 0)


def test_apply_tt_checks_the_whole_plan_before_changing_anything():
    model = build_model("lenet300")
    with pytest.raises(PlanError):
        apply_tt(model, {"fc1": TTPlan((28, 21, 20, 20), (1, 2, 2, 2, 1)), "fc2": TTPlan((10, 10), (1, 2, 1))})
    assert not tt_layers(model)  # fc2's bad plan left fc1 untouched too
    with pytest.raises(ModelError):
        apply_tt(model, {"nope": TTPlan((10, 10), (1, 2, 1))})
    with pytest.raises(PlanError):
        apply_tt(model, {}, init="hooi")


def test_state_dict_round_trip_and_frozen_copy():
    from adt.exporter.factorize import frozen_copy

    a, b = build_model("lenet5"), build_model("lenet5")
    plan = plan_model_tt(a, 20.0)
    apply_tt(a, plan, seed=1)
    apply_tt(b, plan, seed=2)
    x = torch.randn(3, 1, 28, 28)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())  # what a training checkpoint resume does
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    frozen = frozen_copy(a)  # dense weights baked in: the same function, no TT layers left
    assert not tt_layers(frozen) and tt_layers(a)
    torch.testing.assert_close(frozen(x), a.eval()(x), rtol=1e-5, atol=1e-6)
