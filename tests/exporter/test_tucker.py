"""TuckerWeight parametrization: dense equivalence, gradients, no dense copy, SCADA sharing, freeze,
Eq. 13 fake quantization."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn.utils import parametrize

from adt.exporter import (
    LayerPlan, ModelError, PlanError, apply_ada_tucker, apply_scada_tucker, build_model, count_params,
    fake_quant_ste, freeze, shared_cores, tucker_layers,
)
from adt.exporter.factorize import cp_to_tensor, tucker_to_tensor
from adt.exporter.fakequant import QuantSpec
from adt.runtime.format import fake_quantize

torch.set_num_threads(1)


def einsum_reference(core, factors):
    """Independent reference: one einsum over all modes (no ordering tricks)."""
    letters = "abcdefgh"
    d = core.dim()
    spec = letters[:d] + "," + ",".join(f"{chr(ord('p') + i)}{letters[i]}" for i in range(d))
    out = "".join(chr(ord("p") + i) for i in range(d))
    return torch.einsum(f"{spec}->{out}", core, *factors)


@pytest.mark.parametrize("dims,ranks", [((4, 5), (2, 3)), ((3, 4, 5), (2, 2, 3)), ((6, 1, 5, 2), (3, 1, 2, 2)),
                                        ((2, 3, 2, 3, 2), (2, 1, 2, 3, 1)), ((7, 3, 4), (7, 3, 4))])
def test_tucker_to_tensor_matches_einsum_and_tensorly(dims, ranks):
    import tensorly as tl

    g = torch.Generator().manual_seed(1)
    core = torch.randn(ranks, generator=g, dtype=torch.float64)
    factors = [torch.randn(n, k, generator=g, dtype=torch.float64) for n, k in zip(dims, ranks)]
    got = tucker_to_tensor(core, factors)
    assert got.shape == dims
    torch.testing.assert_close(got, einsum_reference(core, factors))
    ref = tl.tucker_to_tensor((core.numpy(), [f.numpy() for f in factors]))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_cp_is_tucker_with_diagonal_core():
    g = torch.Generator().manual_seed(2)
    r, dims = 3, (4, 2, 5)
    lam = torch.randn(r, generator=g, dtype=torch.float64)
    factors = [torch.randn(n, r, generator=g, dtype=torch.float64) for n in dims]
    core = torch.zeros(r, r, r, dtype=torch.float64)
    for i in range(r):
        core[i, i, i] = lam[i]
    torch.testing.assert_close(cp_to_tensor(lam, factors), tucker_to_tensor(core, factors))


LAYERS = [
    (lambda: nn.Linear(30, 20), LayerPlan((10, 6, 10), (3, 2, 4)), (5, 30)),
    (lambda: nn.Conv1d(4, 6, 3), LayerPlan((8, 9), (4, 5)), (2, 4, 11)),
    (lambda: nn.Conv2d(3, 8, 3, padding=1), LayerPlan((6, 4, 9), (3, 3, 3)), (2, 3, 7, 7)),
    (lambda: nn.Conv2d(3, 8, 3), LayerPlan((6, 4, 9), (3,), cp=True), (2, 3, 7, 7)),
]


@pytest.mark.parametrize("make,lp,xshape", LAYERS)
def test_layer_matches_dense_reference(make, lp, xshape):
    torch.manual_seed(0)
    model = nn.Sequential(make())
    cls = type(model[0])
    apply_ada_tucker(model, {"0": lp}, seed=3)
    layer = model[0]
    assert isinstance(layer, cls)  # the class (and its forward) is kept
    tw = tucker_layers(model)[0][2]
    x = torch.randn(xshape)
    w = tw.dense().detach()
    ref = {nn.Linear: lambda: F.linear(x, w, layer.bias), nn.Conv1d: lambda: F.conv1d(x, w, layer.bias),
           nn.Conv2d: lambda: F.conv2d(x, w, layer.bias, padding=layer.padding)}[cls]()
    torch.testing.assert_close(layer(x), ref)
    # the rebuilt weight is the multi-mode product, C-order reshaped
    core = tw.core.detach()
    if lp.cp:
        full = torch.zeros(lp.core)
        for i in range(lp.core[0]):
            full[(i,) * lp.order] = core[i]
        core = full
    torch.testing.assert_close(w, einsum_reference(core, [m.detach() for m in tw.factors]).reshape(w.shape))


def test_no_dense_weight_survives():
    model = build_model("lenet5")
    plan = {"conv2": LayerPlan((50, 25, 20), (5, 5, 5)), "fc1": LayerPlan((40, 25, 20, 20), (5, 5, 5, 5))}
    apply_ada_tucker(model, plan, seed=0)
    assert model.fc1.parametrizations.weight.original.numel() == 0
    assert not model.fc1.parametrizations.weight.original.requires_grad
    for name, t in model.state_dict().items():
        assert t.numel() < 25000, f"{name} keeps {t.numel()} elements"
    expected = 520 + 50 + 500 + 5010 + sum(lp.params for lp in plan.values())
    assert count_params(model) == expected
    assert sum(p.numel() for p in model.parameters()) == expected


def test_gradients_match_dense_product_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10))
    apply_ada_tucker(model, {"0": LayerPlan((5, 4, 6), (2, 3, 2))}, seed=1)
    tw = tucker_layers(model)[0][2]
    x, target = torch.randn(7, 12), torch.randn(7, 10)
    F.mse_loss(model(x), target).backward()
    got = [tw.core.grad.clone()] + [m.grad.clone() for m in tw.factors]
    # the same loss through an explicitly written dense product, on detached copies
    leaves = [tw.core.detach().clone().requires_grad_()] + [m.detach().clone().requires_grad_() for m in tw.factors]
    w = einsum_reference(leaves[0], leaves[1:]).reshape(10, 12)
    F.mse_loss(F.linear(x, w, model[0].bias.detach()), target).backward()
    for a, b in zip(got, leaves):
        torch.testing.assert_close(a, b.grad)


def test_gradcheck_float64():
    core = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    factors = [torch.randn(n, k, dtype=torch.float64, requires_grad=True) for n, k in zip((3, 4, 2), (2, 3, 2))]
    assert torch.autograd.gradcheck(lambda c, *f: tucker_to_tensor(c, list(f)), (core, *factors))


def test_scada_shares_one_core():
    model = build_model("lenet5")
    plan = {"conv1": LayerPlan((25, 20), (4, 4)), "conv2": LayerPlan((50, 25, 20), (4, 4, 4)),
            "fc1": LayerPlan((40, 25, 20, 20), (4, 4, 4, 4)), "fc2": LayerPlan((25, 20, 10), (4, 4, 4))}
    apply_scada_tucker(model, plan, seed=0)
    layers = tucker_layers(model)
    assert [n for n, _, _ in layers] == ["conv1", "conv2", "fc1", "fc2"]
    cores = shared_cores(model)
    assert len(cores) == 1 and all(tw.core is cores[0] for _, _, tw in layers)
    assert sum(1 for p in model.parameters() if p is cores[0]) == 1
    # padded modes: 1 x k factors
    assert layers[0][2].reshape == (25, 20, 1, 1) and tuple(layers[0][2].factors[3].shape) == (1, 4)
    factor_total = sum(tw.num_params(with_core=False) for _, _, tw in layers)
    assert count_params(model) == 580 + 256 + factor_total
    # Eq. 9: the shared core's gradient is the sum of every layer's contribution
    x = torch.randn(3, 1, 28, 28)
    model(x).square().sum().backward()
    total = cores[0].grad.clone()
    # the same loss with every layer's weight built from its OWN copy of the core
    per_layer = []
    for name, module, tw in layers:
        c = tw.core.detach().clone().requires_grad_()
        per_layer.append((name, c, tucker_to_tensor(c, [m.detach() for m in tw.factors]).reshape(tw.shape)))
    ws = {name: w for name, _, w in per_layer}
    h = F.max_pool2d(F.conv2d(x, ws["conv1"], model.conv1.bias), 2)
    h = F.max_pool2d(F.conv2d(h, ws["conv2"], model.conv2.bias), 2).flatten(1)
    out = F.linear(F.relu(F.linear(h, ws["fc1"], model.fc1.bias)), ws["fc2"], model.fc2.bias)
    out.square().sum().backward()
    torch.testing.assert_close(total, sum(c.grad for _, c, _ in per_layer), rtol=1e-4, atol=1e-5)


def test_scada_rejects_inconsistent_cores():
    model = build_model("lenet5")
    with pytest.raises(PlanError, match="shared core"):
        apply_scada_tucker(model, {"conv2": LayerPlan((50, 25, 20), (4, 4, 4)),
                                   "fc1": LayerPlan((40, 25, 20, 20), (4, 4, 4, 4)),
                                   "fc2": LayerPlan((25, 20, 10), (5, 5, 5))})


def test_freeze_leaves_plain_dense_weight():
    torch.manual_seed(0)
    model = build_model("lenet5")
    apply_ada_tucker(model, {"fc1": LayerPlan((40, 25, 20, 20), (3, 3, 3, 3))}, seed=0)
    x = torch.randn(2, 1, 28, 28)
    before = model(x).detach()
    freeze(model)
    assert not parametrize.is_parametrized(model.fc1)
    assert isinstance(model.fc1.weight, nn.Parameter) and model.fc1.weight.shape == (500, 800)
    assert model.fc1.weight.requires_grad
    torch.testing.assert_close(model(x), before)
    assert tucker_layers(model) == []


def test_bad_plans_raise_typed_errors():
    model = build_model("lenet5")
    with pytest.raises(PlanError, match="elements"):
        apply_ada_tucker(model, {"fc2": LayerPlan((25, 20, 11), (2, 2, 2))})
    with pytest.raises(ModelError, match="does not have"):
        apply_ada_tucker(model, {"fc9": LayerPlan((25, 20, 10), (2, 2, 2))})
    with pytest.raises(ModelError, match="MaxPool2d"):
        apply_ada_tucker(model, {"pool1": LayerPlan((25, 20, 10), (2, 2, 2))})
    with pytest.raises(PlanError, match="init"):
        apply_ada_tucker(model, {"fc2": LayerPlan((25, 20, 10), (2, 2, 2))}, init="svd")
    apply_ada_tucker(model, {"fc2": LayerPlan((25, 20, 10), (2, 2, 2))})
    with pytest.raises(ModelError, match="already"):
        apply_ada_tucker(model, {"fc2": LayerPlan((25, 20, 10), (2, 2, 2))})


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=1, max_size=40),
       st.sampled_from([1, 2, 7, 256, 512, 1500]), st.sampled_from([0.1, 1.0, 3.0, 5.0, 2.7182817]),
       st.sampled_from(["floor", "nearest"]))
def test_fake_quant_matches_runtime_bit_exactly(values, q, b, rounding):
    x = torch.tensor(values, dtype=torch.float32)
    got = fake_quant_ste(x, q, b, rounding).numpy()
    ref = fake_quantize(np.array(values, dtype=np.float32), q, b, rounding)
    assert got.dtype == ref.dtype and np.array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_fake_quant_straight_through_gradient():
    x = torch.tensor([-4.0, -1.2, 0.3, 2.9, 3.5], requires_grad=True)
    fake_quant_ste(x, 16, 3.0).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    with pytest.raises(PlanError):
        fake_quant_ste(x, 0, 3.0)
    with pytest.raises(PlanError):
        fake_quant_ste(x, 8, float("nan"))
    with pytest.raises(PlanError, match="rounding"):
        fake_quant_ste(x, 8, 3.0, "ceil")
    x.grad = None
    fake_quant_ste(x, 16, 3.0, "nearest").sum().backward()  # the same clipped straight-through gradient
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    torch.testing.assert_close(fake_quant_ste(x, np.int64(16), np.float32(3.0)), fake_quant_ste(x, 16, 3.0))


def test_deepcopy_keeps_the_shared_core_shared():
    import copy

    model = build_model("lenet5")
    apply_scada_tucker(model, {"conv2": LayerPlan((50, 25, 20), (3, 3, 3)),
                               "fc1": LayerPlan((40, 25, 20, 20), (3, 3, 3, 3))}, seed=0)
    clone = copy.deepcopy(model)
    assert len(shared_cores(clone)) == 1 and shared_cores(clone)[0] is not shared_cores(model)[0]
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(clone(x), model(x))


def test_quant_flags_apply_in_forward():
    model = nn.Sequential(nn.Linear(20, 10))
    apply_ada_tucker(model, {"0": LayerPlan((10, 4, 5), (3, 3, 3))}, seed=0)
    tw = tucker_layers(model)[0][2]
    plain = model[0].weight.detach().clone()
    tw.core_quant, tw.factor_quant = QuantSpec(8, 0.5), QuantSpec(8, 0.5)
    qc = torch.from_numpy(fake_quantize(tw.core.detach().numpy(), 8, 0.5))
    qf = [torch.from_numpy(fake_quantize(m.detach().numpy(), 8, 0.5)) for m in tw.factors]
    torch.testing.assert_close(model[0].weight, tucker_to_tensor(qc, qf).reshape(10, 20))
    assert not torch.allclose(model[0].weight, plain)
    model[0].weight.sum().backward()  # gradients still reach the real-valued parameters
    assert tw.core.grad is not None and all(m.grad is not None for m in tw.factors)


def test_scratch_init_gives_target_variance():
    torch.manual_seed(0)
    model = build_model("lenet5")
    apply_ada_tucker(model, {"fc1": LayerPlan((40, 25, 20, 20), (6, 6, 6, 6))}, seed=0)
    std = float(model.fc1.weight.detach().std())
    assert 0.5 * math.sqrt(2 / 800) < std < 1.5 * math.sqrt(2 / 800)
    model = build_model("lenet5")
    apply_scada_tucker(model, {"conv2": LayerPlan((50, 25, 20), (6, 6, 6)),
                               "fc1": LayerPlan((40, 25, 20, 20), (6, 6, 6, 6))}, scheme="glorot", seed=0)
    for layer, fan in ((model.conv2, 500 + 1250), (model.fc1, 1300)):
        assert 0.5 * math.sqrt(2 / fan) < float(layer.weight.detach().std()) < 1.5 * math.sqrt(2 / fan)
