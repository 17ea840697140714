"""Initialisation from a trained dense layer (HOSVD + HOOI via tensorly) and from scratch."""
import numpy as np
import pytest
import torch
from torch import nn

from adt.exporter import (
    LayerPlan, PlanError, apply_ada_tucker, apply_scada_tucker, build_model, reconstruction_errors, tucker_layers,
)
from adt.exporter.factorize import scada_hooi_init_, target_variance
from adt.exporter.factorize import TuckerWeight

torch.set_num_threads(1)


def test_full_rank_hooi_reproduces_dense_weight_exactly():
    torch.manual_seed(0)
    model = build_model("lenet5")
    dense = {n: getattr(model, n).weight.detach().clone() for n in ("conv1", "conv2", "fc2")}
    plan = {"conv1": LayerPlan((25, 20), (25, 20)), "conv2": LayerPlan((50, 25, 20), (50, 25, 20)),
            "fc2": LayerPlan((25, 20, 10), (25, 20, 10))}
    apply_ada_tucker(model, plan, init="hooi")
    for name, w in dense.items():
        torch.testing.assert_close(getattr(model, name).weight, w, rtol=1e-5, atol=1e-6)
    errors = reconstruction_errors(model)
    assert set(errors) == set(plan) and all(e < 1e-5 for e in errors.values())


def test_core_larger_than_a_mode_is_zero_padded_and_exact():
    layer = nn.Sequential(nn.Linear(12, 6))
    w = layer[0].weight.detach().clone()
    apply_ada_tucker(layer, {"0": LayerPlan((2, 6, 6), (4, 6, 6))}, init="hooi")  # k_1 = 4 > n_1 = 2
    torch.testing.assert_close(layer[0].weight, w, rtol=1e-5, atol=1e-6)


def test_low_rank_hooi_error_matches_truncation_theory():
    torch.manual_seed(1)
    # an exactly rank-(3,3,3) tensor plus small noise is recovered to about the noise level
    g = torch.Generator().manual_seed(0)
    core = torch.randn(3, 3, 3, generator=g)
    fs = [torch.randn(n, 3, generator=g) for n in (10, 8, 5)]
    low = torch.einsum("abc,ia,jb,kc->ijk", core, *fs)
    w = (low + 1e-3 * low.std() * torch.randn(low.shape, generator=g)).reshape(40, 10)
    layer = nn.Sequential(nn.Linear(10, 40))
    with torch.no_grad():
        layer[0].weight.copy_(w)
    apply_ada_tucker(layer, {"0": LayerPlan((10, 8, 5), (3, 3, 3))}, init="hooi")
    err = reconstruction_errors(layer)["0"]
    assert err < 3e-3
    rebuilt = layer[0].weight.detach()
    assert float((rebuilt - w).norm() / w.norm()) == pytest.approx(err, rel=1e-4)


def test_hooi_beats_random_and_is_reported_per_layer():
    torch.manual_seed(0)
    model = build_model("lenet5")
    dense = model.conv2.weight.detach().double().reshape(50, 25, 20)
    apply_ada_tucker(model, {"fc2": LayerPlan((25, 20, 10), (5, 5, 5)),
                             "conv2": LayerPlan((50, 25, 20), (10, 10, 10))}, init="hooi")
    errors = reconstruction_errors(model)
    # a random dense init has no low-rank structure, so the error is large but must be < 1
    assert 0.3 < errors["fc2"] < 1.0 and 0.3 < errors["conv2"] < 1.0
    # HOSVD+HOOI beats the best fit on random orthonormal bases of the same size
    g = torch.Generator().manual_seed(0)
    qs = [torch.linalg.qr(torch.randn(n, 10, generator=g, dtype=torch.float64))[0] for n in (50, 25, 20)]
    core = torch.einsum("ijk,ia,jb,kc->abc", dense, *qs)
    rand_err = float((torch.einsum("abc,ia,jb,kc->ijk", core, *qs) - dense).norm() / dense.norm())
    assert errors["conv2"] < rand_err
    # balanced scaling: core and factor entries have the same RMS
    tw = dict((n, t) for n, _, t in tucker_layers(model))["conv2"]
    rms = [float(tw.core.detach().square().mean().sqrt())] + [float(m.detach().square().mean().sqrt()) for m in tw.factors]
    assert max(rms) / min(rms) < 1.0001


def test_cp_init_recovers_exact_cp_tensor():
    g = torch.Generator().manual_seed(3)
    fs = [torch.randn(n, 2, generator=g, dtype=torch.float64) for n in (6, 5, 4)]
    w = torch.einsum("ir,jr,kr->ijk", *fs).reshape(6, 20).float()
    layer = nn.Sequential(nn.Linear(20, 6))
    with torch.no_grad():
        layer[0].weight.copy_(w)
    apply_ada_tucker(layer, {"0": LayerPlan((6, 5, 4), (2,), cp=True)}, init="hooi")
    assert reconstruction_errors(layer)["0"] < 1e-4


def _two_layers_from_one_core():
    g = torch.Generator().manual_seed(5)
    core = torch.randn(3, 3, 3, generator=g)
    w1 = torch.einsum("abc,ia,jb,kc->ijk", core, *[torch.randn(n, 3, generator=g) for n in (8, 6, 5)])
    w2 = torch.einsum("abc,ia,jb,kc->ijk", core, *[torch.randn(n, 3, generator=g) for n in (6, 5, 4)])
    return w1.reshape(8, 30), w2.reshape(6, 20)


def test_scada_hooi_fits_a_shared_core():
    # two layers generated from ONE core: ALS must find a shared core that fits both
    w1, w2 = _two_layers_from_one_core()
    model = nn.Sequential(nn.Linear(30, 8), nn.Linear(20, 6))
    with torch.no_grad():
        model[0].weight.copy_(w1)
        model[1].weight.copy_(w2)
    apply_scada_tucker(model, {"0": LayerPlan((8, 6, 5), (3, 3, 3)), "1": LayerPlan((6, 5, 4), (3, 3, 3))},
                       init="hooi")
    errors = reconstruction_errors(model)
    assert errors["0"] < 0.05 and errors["1"] < 0.05
    assert model[0].parametrizations.weight[0].core is model[1].parametrizations.weight[0].core


def test_scada_als_error_never_increases():
    w1, w2 = _two_layers_from_one_core()
    totals = []
    for sweeps in (1, 3, 10, 40):
        core = nn.Parameter(torch.empty(3, 3, 3))
        tws = [TuckerWeight((8, 30), (8, 6, 5), core, [nn.Parameter(torch.empty(n, 3)) for n in (8, 6, 5)]),
               TuckerWeight((6, 20), (6, 5, 4), core, [nn.Parameter(torch.empty(n, 3)) for n in (6, 5, 4)])]
        errs = scada_hooi_init_(tws, [w1, w2], sweeps=sweeps)
        totals.append(errs[0] ** 2 * float(w1.square().sum()) + errs[1] ** 2 * float(w2.square().sum()))
    assert all(b <= a * (1 + 1e-6) for a, b in zip(totals, totals[1:]))
    assert totals[-1] < 0.2 * totals[0]


def test_scada_hooi_on_lenet5_reports_errors():
    torch.manual_seed(0)
    model = build_model("lenet5")
    plan = {"conv2": LayerPlan((50, 25, 20), (4, 4, 4)), "fc1": LayerPlan((40, 25, 20, 20), (4, 4, 4, 4)),
            "fc2": LayerPlan((25, 20, 10), (4, 4, 4))}
    apply_scada_tucker(model, plan, init="hooi")
    errors = reconstruction_errors(model)
    assert all(0 < e < 1.0 for e in errors.values())


def test_scratch_variance_and_schemes():
    assert target_variance((500, 800)) == pytest.approx(2 / 800)
    assert target_variance((50, 20, 5, 5), "glorot") == pytest.approx(2 / (500 + 1250))
    with pytest.raises(PlanError, match="scheme"):
        target_variance((5, 5), "xavier")
    model = build_model("lenet5")
    apply_ada_tucker(model, {"fc1": LayerPlan((40, 25, 20, 20), (5, 5, 5, 5))}, seed=7)
    a = model.fc1.weight.detach().clone()
    model2 = build_model("lenet5")
    apply_ada_tucker(model2, {"fc1": LayerPlan((40, 25, 20, 20), (5, 5, 5, 5))}, seed=7)
    torch.testing.assert_close(model2.fc1.weight, a)  # seeded: reproducible
    assert reconstruction_errors(model)["fc1"] is None  # scratch records no error
    assert np.isfinite(a.numpy()).all()


def test_init_errors_are_logged(caplog):
    import logging

    model = build_model("lenet5")
    with caplog.at_level(logging.INFO, logger="adt.exporter"):
        apply_ada_tucker(model, {"fc2": LayerPlan((25, 20, 10), (5, 5, 5))}, init="hooi")
    assert "fc2: HOOI init, relative reconstruction error" in caplog.text
