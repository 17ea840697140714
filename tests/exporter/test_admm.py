"""ADMM training toward Tucker / TT forms (Yin et al.): projections, the penalty, and what it buys
the decomposition that follows."""
import math

import numpy as np
import pytest
import tensorly as tl
import torch
from torch import nn

from adt.exporter import LayerPlan, ModelError, PlanError, TrainConfigError, apply_ada_tucker, evaluate, tensor_loader
from adt.exporter.admm import admm_then_tt, admm_then_tucker, admm_train, project_tt, project_tucker, tt_target

torch.set_num_threads(1)

RESHAPE = (4, 8, 8, 8)


def _unfold_rank(t: np.ndarray, mode: int) -> int:
    return int(np.linalg.matrix_rank(np.moveaxis(t, mode, 0).reshape(t.shape[mode], -1), tol=1e-8))


def _seq_rank(t: np.ndarray, k: int) -> int:
    """Rank of the k-th sequential (TT) unfolding: modes 0..k-1 as rows."""
    return int(np.linalg.matrix_rank(t.reshape(math.prod(t.shape[:k]), -1), tol=1e-8))


# ---------------------------------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------------------------------
def test_tucker_projection_has_the_target_ranks_and_is_idempotent():
    w = np.random.default_rng(0).standard_normal((32, 64))
    core = (2, 3, 3, 3)
    p = project_tucker(w, RESHAPE, core)
    assert p.shape == w.shape
    t = p.reshape(RESHAPE)
    assert [_unfold_rank(t, j) for j in range(4)] == list(core)
    np.testing.assert_allclose(project_tucker(p, RESHAPE, core), p, atol=1e-10)
    # a projection never moves farther than the truncated HOSVD's error bound sqrt(d) * best
    assert 0 < np.linalg.norm(w - p) < np.linalg.norm(w)


def test_tucker_projection_is_exact_on_a_tensor_of_that_rank():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((2, 3, 3, 3))
    fs = [rng.standard_normal((n, k)) for n, k in zip(RESHAPE, g.shape)]
    t = tl.tucker_to_tensor((g, fs))
    w = torch.from_numpy(t.reshape(32, 64))  # a torch weight goes through the same path
    np.testing.assert_allclose(project_tucker(w, RESHAPE, (2, 3, 3, 3)), t.reshape(32, 64), atol=1e-10)
    # larger ranks than the tensor needs (and a rank above a mode size) are exact too
    np.testing.assert_allclose(project_tucker(w, RESHAPE, (6, 4, 5, 3)), t.reshape(32, 64), atol=1e-10)


def test_tt_projection_has_the_target_ranks_and_is_idempotent():
    w = np.random.default_rng(2).standard_normal((32, 64))
    inner = (3, 5, 3)
    p = project_tt(w, RESHAPE, inner)
    t = p.reshape(RESHAPE)
    assert [_seq_rank(t, k) for k in (1, 2, 3)] == list(inner)
    np.testing.assert_allclose(project_tt(p, RESHAPE, inner), p, atol=1e-10)
    # boundary ranks may be given too
    np.testing.assert_allclose(project_tt(w, RESHAPE, (1, 3, 5, 3, 1)), p, atol=1e-12)


def test_tt_projection_is_exact_on_a_tensor_of_that_rank_and_clamps_big_ranks():
    rng = np.random.default_rng(3)
    ranks = (1, 2, 4, 3, 1)
    cores = [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(RESHAPE)]
    t = tl.tt_to_tensor(cores)
    np.testing.assert_allclose(project_tt(t.reshape(32, 64), RESHAPE, ranks[1:-1]), t.reshape(32, 64), atol=1e-10)
    w = rng.standard_normal((32, 64))
    np.testing.assert_allclose(project_tt(w, RESHAPE, (100, 1000, 100)), w, atol=1e-10)  # full rank: identity


def test_targets_are_checked():
    with pytest.raises(PlanError):
        tt_target(((4, 8, 8, 8), (3, 5)))  # d - 1 = 3 inner ranks needed
    with pytest.raises(PlanError):
        project_tt(np.zeros((32, 64)), (4, 8, 8, 4), (2, 2, 2))  # element count
    with pytest.raises(PlanError):
        project_tucker(np.zeros((32, 64)), (4, 8, 8, 4), (2, 2, 2, 2))

    class Plan:  # any object with .reshape and .ranks is a TT target
        reshape, ranks = (4, 8, 8, 8), (2, 2, 2)
    assert tt_target(Plan()) == ((4, 8, 8, 8), (1, 2, 2, 2, 1))
    m = nn.Sequential(nn.Linear(64, 32))
    loader = tensor_loader(torch.zeros(4, 64), torch.zeros(4, dtype=torch.long), 2, True)
    with pytest.raises(PlanError):
        admm_train(m, loader, {"0": LayerPlan(RESHAPE, (2, 2, 2, 2))}, projection="cp")
    with pytest.raises(PlanError):
        admm_train(m, loader, {"0": LayerPlan(RESHAPE, (2, 2, 2, 2), cp=True)})
    with pytest.raises(ModelError):
        admm_train(m, loader, {"1": LayerPlan(RESHAPE, (2, 2, 2, 2))})
    with pytest.raises(TrainConfigError):
        admm_train(m, loader, {"0": LayerPlan(RESHAPE, (2, 2, 2, 2))}, rho=0.0)
    apply_ada_tucker(m, {"0": LayerPlan(RESHAPE, (2, 2, 2, 2))})
    with pytest.raises(ModelError):  # ADMM trains dense weights, not a parametrized one
        admm_train(m, loader, {"0": LayerPlan(RESHAPE, (2, 2, 2, 2))})


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------
PLAN = {"0": LayerPlan((8, 4, 9), (4, 3, 4)), "3": LayerPlan((32, 12, 24), (8, 6, 8))}
TT = {"0": ((8, 4, 9), (3, 4)), "3": ((32, 12, 24), (6, 8))}
KW = dict(rho=0.03, rho_growth=2.0, rho_max=10.0, epochs=8, lr=3e-3, seed=0)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10))


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 4, 6, 6, generator=g)
    y = (x.reshape(512, -1) @ torch.randn(144, 10, generator=g)).argmax(1)  # learnable labels
    return x, y


def _loader():
    x, y = _data()
    return tensor_loader(x, y, 16, True, seed=0)


@pytest.fixture(scope="module")
def runs():
    """ADMM-Tucker, ADMM-TT and plain training (rho ~ 0: no pull) of the same net, same steps."""
    out = {}
    for key, targets, projection, kw in [("tucker", PLAN, "tucker", KW), ("tt", TT, "tt", KW),
                                         ("plain", PLAN, "tucker", dict(KW, rho=1e-12, rho_growth=1.0))]:
        m = _net()
        out[key] = (m, admm_train(m, _loader(), targets, projection=projection, **kw))
    return out


@pytest.mark.parametrize("key", ["tucker", "tt"])
def test_admm_penalty_goes_down(runs, key):
    _, res = runs[key]
    assert res.updates == KW["epochs"] and len(res.epoch_losses) == KW["epochs"]
    assert res.rhos == pytest.approx([min(0.03 * 2.0 ** e, 10.0) for e in range(8)])
    for name in PLAN:
        pen, dist = res.penalty[name], res.distance[name]
        assert pen[-1] < 0.5 * pen[0], (name, pen)
        assert dist[-1] < 0.5 * dist[0], (name, dist)
    assert res.wall_time > 0


def test_plain_training_stays_far_from_the_tucker_set(runs):
    _, res = runs["plain"]
    assert min(res.distance[n][-1] for n in PLAN) > 0.3  # the comparison below is not vacuous


@pytest.mark.parametrize("key", ["tucker", "tt"])
def test_admm_net_still_learns(runs, key):
    m, res = runs[key]
    x, y = _data()
    assert res.task_losses[-1] < res.task_losses[0]
    assert evaluate(m, (x, y)) > 0.3  # chance is 0.1


def test_admm_then_hooi_error_is_far_below_plain_training(runs):
    admm_model, _ = runs["tucker"]
    plain_model, _ = runs["plain"]
    dense = {n: admm_model.get_submodule(n).weight.detach().clone() for n in PLAN}
    admm_errors = admm_then_tucker(_clone(admm_model), PLAN).init_errors
    plain_errors = admm_then_tucker(_clone(plain_model), PLAN).init_errors
    for name in PLAN:
        assert admm_errors[name] < 0.5 * plain_errors[name], (name, admm_errors, plain_errors)
        # the HOOI error is the distance the ADMM result recorded (same projection, same weights)
        assert admm_errors[name] == pytest.approx(runs["tucker"][1].distance[name][-1], rel=1e-3, abs=1e-4)
    # independent check: the parametrized layer's rebuilt weight is that close to the dense weight
    m = _clone(admm_model)
    admm_then_tucker(m, PLAN)
    for name, w in dense.items():
        err = float(torch.linalg.vector_norm(m.get_submodule(name).weight.detach() - w) / torch.linalg.vector_norm(w))
        assert err == pytest.approx(admm_errors[name], rel=1e-3, abs=1e-5)


def test_tt_projection_distance_after_admm_is_far_below_plain(runs):
    admm_model, _ = runs["tt"]
    plain_model, _ = runs["plain"]
    for name, (reshape, ranks) in TT.items():
        errs = []
        for m in (admm_model, plain_model):
            w = m.get_submodule(name).weight.detach().double().numpy()
            errs.append(np.linalg.norm(project_tt(w, reshape, ranks) - w) / np.linalg.norm(w))
        assert errs[0] < 0.5 * errs[1], (name, errs)


def test_admm_is_deterministic_and_update_every_counts_steps():
    results = []
    for _ in range(2):
        m = _net()
        res = admm_train(m, _loader(), {"3": PLAN["3"]}, epochs=2, lr=1e-2, rho=0.1, update_every=8, seed=3)
        results.append((m.get_submodule("3").weight.detach().clone(), res))
    (w1, r1), (w2, r2) = results
    assert torch.equal(w1, w2) and r1.penalty == r2.penalty and r1.train.losses == r2.train.losses
    assert r1.updates == 2 * 32 // 8  # 32 steps per epoch, an update every 8


def test_admm_then_tt_without_the_tt_module_is_a_typed_error_or_works():
    m = _net()
    try:
        import adt.exporter.tensor_train as tt_mod  # noqa: F401
        has_tt = hasattr(tt_mod, "apply_tt")
    except ImportError:
        has_tt = False
    if has_tt:
        out = admm_then_tt(m, TT, _loader(), **dict(KW, epochs=2))
        assert set(out.init_errors) == set(TT)
        for name, d in out.admm.distance.items():  # TT-SVD of the ADMM weights: the recorded distance
            assert out.init_errors[name] == pytest.approx(d[-1], rel=1e-3, abs=1e-4)
        m2 = _net()
        w = m2.get_submodule("3").weight.detach().clone()
        with pytest.raises(PlanError):  # r_1 = 40 > n_1 = 32: refused before any training
            admm_then_tt(m2, {"3": ((32, 12, 24), (40, 8))}, _loader(), **KW)
        assert torch.equal(m2.get_submodule("3").weight, w)
    else:
        w = m.get_submodule("3").weight.detach().clone()
        with pytest.raises(ModelError, match="tensor_train"):
            admm_then_tt(m, TT, _loader())
        assert torch.equal(m.get_submodule("3").weight, w)  # refused before training


def _clone(m: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(m)
