"""Mixed Tensor Decomposition (issue 21 item 1): per-layer Tucker-or-CP choice at the same budget,
applied, trained briefly and exported; the runtime must equal torch running the file's weights."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import adt.runtime as rt
from adt.exporter import LayerPlan, PlanError, export_adt, plan_model, plan_table
from adt.exporter.export import quantized_model
from adt.exporter.factorize import tucker_layers
from adt.exporter.mtd import apply_mtd, cp_plan_for_budget, plan_mtd
from adt.runtime.rebuild import rebuild_weights


class Two(nn.Module):
    """Two Linear layers of 8000 weights (reshaped 20x20x20), whose weights the tests set."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(400, 20)
        self.b = nn.Linear(20, 400)
        self.out = nn.Linear(400, 10)

    def forward(self, x):
        return self.out(torch.relu(self.b(torch.relu(self.a(x)))))


def _cp_tensor(rng, dims, r):
    fs = [rng.standard_normal((n, r)) for n in dims]
    return np.einsum("ir,jr,kr->ijk", *fs)


def _tucker_tensor(rng, dims, k):
    core = rng.standard_normal(k)
    fs = [np.linalg.qr(rng.standard_normal((n, kk)))[0] for n, kk in zip(dims, k)]
    return np.einsum("abc,ia,jb,kc->ijk", core, *fs)


def test_cp_plan_is_the_largest_rank_within_the_tucker_budget():
    for name, lp in plan_model(_lenet5(), 60.0).items():
        cp = cp_plan_for_budget(lp.reshape, lp.params)
        assert cp is not None and cp.cp and cp.reshape == lp.reshape, name
        r = cp.core[0]
        assert cp.params == (sum(lp.reshape) + 1) * r <= lp.params, name
        assert LayerPlan(lp.reshape, (r + 1,), cp=True).params > lp.params, name
    assert cp_plan_for_budget((20, 20, 20), 60) is None  # rank 1 costs 61


def _lenet5():
    from adt.exporter import build_model
    torch.manual_seed(0)
    return build_model("lenet5")


def test_exact_cp_layer_gets_cp_and_exact_tucker_layer_gets_tucker():
    rng = np.random.default_rng(0)
    m = Two()
    dims = (20, 20, 20)
    with torch.no_grad():
        # a: exactly CP rank 9; the same budget (576) buys only a 6x6x6 Tucker core (multilinear rank 9
        # needs a 9x9x9 one), so Tucker cannot fit it
        m.a.weight.copy_(torch.from_numpy(_cp_tensor(rng, dims, 9).reshape(20, 400)))
        # b: exactly Tucker with a generic 3x3x3 core (CP rank 5 > the 3 its budget buys); the
        # weights are float32, so "exact" means ~1e-7 relative
        m.b.weight.copy_(torch.from_numpy(_tucker_tensor(rng, dims, (3, 3, 3)).reshape(400, 20)))
    base = {"a": LayerPlan(dims, (6, 6, 6)), "b": LayerPlan(dims, (3, 3, 3))}
    assert cp_plan_for_budget(dims, base["a"].params).core[0] == 9
    plan, rep = plan_mtd(m, base)
    a, b = rep.layers["a"], rep.layers["b"]
    assert a.choice == "cp" and plan["a"].cp and plan["a"].core[0] == 9
    assert a.cp_score < 1e-4 and a.tucker_score > 0.1
    assert b.choice == "tucker" and not plan["b"].cp and plan["b"].core == (3, 3, 3)
    assert b.tucker_score < 1e-6 and b.cp_score > 0.01
    assert a.cp_params <= a.tucker_params and b.cp_params <= b.tucker_params
    # cross-check the proxy's errors (tensorly rebuild in NumPy) against the applied layers' own
    # errors (TuckerWeight's torch rebuild of the same HOOI / CP-ALS fit)
    apply_mtd(m, plan, init="hooi")
    for name, _, tw in tucker_layers(m):
        assert tw.cp == (name == "a")
        assert math.isclose(tw.init_error, rep.layers[name].cp_error if tw.cp else rep.layers[name].tucker_error,
                            rel_tol=1e-3, abs_tol=1e-6), name
    rows = {r["layer"]: r for r in plan_table(m, plan)}
    assert rows["a"]["method"] == "cp" and rows["b"]["method"] == "tucker"


def test_taylor_proxy_runs_and_is_finite():
    torch.manual_seed(0)
    m = Two()
    data = [(torch.randn(16, 400), torch.randint(0, 10, (16,))) for _ in range(3)]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    plan, rep = plan_mtd(m, 8.0, data=data, proxy="taylor", batches=2)
    assert set(plan) == set(rep.layers) and plan
    for r in rep.layers.values():
        assert math.isfinite(r.tucker_score) and r.tucker_score >= 0
        assert r.cp_score is None or (math.isfinite(r.cp_score) and r.cp_score >= 0)
        assert 0 < r.sensitivity <= 1
        assert plan[r.layer].cp == (r.choice == "cp")
    assert math.isclose(sum(r.sensitivity for r in rep.layers.values()), 1.0, rel_tol=1e-9)
    # an independent Taylor estimate of one layer: 0.5 * mean_b (g_b . (W_hat - W))^2
    name = next(iter(rep.layers))
    mod = m.get_submodule(name)
    r = rep.layers[name]
    import tensorly as tl
    from adt.exporter.decompose import tucker_hooi
    t = mod.weight.detach().double().numpy().reshape(r.tucker.reshape)
    d = torch.from_numpy(tl.tucker_to_tensor(tucker_hooi(t, r.tucker.core)) - t).reshape(mod.weight.shape)
    vals = []
    for x, y in data[:2]:
        mod.weight.requires_grad_(True)
        g, = torch.autograd.grad(nn.functional.cross_entropy(m.eval()(x), y), [mod.weight])
        vals.append(float((g.double() * d).sum()) ** 2)
    assert math.isclose(r.tucker_score, 0.5 * np.mean(vals), rel_tol=1e-4)
    for k, v in m.state_dict().items():  # the model is left as it was
        assert torch.equal(v, before[k]), k
    with pytest.raises(PlanError, match="needs data"):
        plan_mtd(m, 8.0, proxy="taylor")


def test_reconstruction_proxy_weighted_by_data_keeps_the_choice():
    torch.manual_seed(1)
    m = Two()
    data = [(torch.randn(8, 400), torch.randint(0, 10, (8,))) for _ in range(2)]
    _, plain = plan_mtd(m, 8.0)
    _, weighted = plan_mtd(m, 8.0, data=data)
    for n, r in plain.layers.items():
        w = weighted.layers[n]
        assert w.choice == r.choice
        assert math.isclose(w.tucker_score, r.tucker_error * w.sensitivity, rel_tol=1e-9)


def test_mixed_lenet5_trains_exports_and_runtime_matches_torch(tmp_path):
    from adt.exporter import TrainConfig, tensor_loader, train
    m = _lenet5()
    base = plan_model(m, 40.0)
    # force a mix whatever the proxy picks: the two conv layers CP, the rest Tucker
    plan = {n: (cp_plan_for_budget(lp.reshape, lp.params) if n.startswith("conv") else lp)
            for n, lp in base.items()}
    assert any(p.cp for p in plan.values()) and not all(p.cp for p in plan.values())
    apply_mtd(m, plan, init="scratch", seed=0)
    x = torch.randn(32, 1, 28, 28)
    y = torch.randint(0, 10, (32,))
    train(m, tensor_loader(x, y, batch_size=16, shuffle=True), TrainConfig(epochs=1, lr=1e-3))
    path = tmp_path / "mtd.adt"
    rep = export_adt(m.eval(), path, input_shape=(1, 28, 28), q=4096)
    assert rep.file_bytes == path.stat().st_size and rep.true_ratio > 1.0
    kinds = {n: tw.cp for n, _, tw in tucker_layers(m)}
    assert kinds == {n: p.cp for n, p in plan.items()}
    xs = x[:4]
    with torch.no_grad():
        ref = quantized_model(m, dict(rebuild_weights(path)))(xs).numpy()
        dense = m(xs).numpy()
    scale = np.abs(ref).max()
    assert np.abs(dense - ref).max() <= 0.2 * scale  # q=4096 keeps torch's own model close
    for engine in ("numpy", "onnxruntime"):
        out = rt.load(path, engine=engine).run(xs.numpy())
        assert np.abs(out - ref).max() <= 1e-4 * scale, engine


def test_finetune_proxy_scores_the_loss_with_only_that_layer_decomposed():
    import copy

    import tensorly as tl
    from adt.exporter.decompose import tucker_hooi
    torch.manual_seed(2)
    m = Two()
    data = [(torch.randn(16, 400), torch.randint(0, 10, (16,))) for _ in range(3)]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    # steps=0: the score is the loss of the model with that one layer swapped for its fit
    _, rep0 = plan_mtd(m, 8.0, data=data, proxy="finetune", steps=0, batches=2)
    name, r = next(iter(rep0.layers.items()))
    ref = copy.deepcopy(m).eval()
    mod = ref.get_submodule(name)
    t = mod.weight.detach().double().numpy().reshape(r.tucker.reshape)
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(tl.tucker_to_tensor(tucker_hooi(t, r.tucker.core))).reshape(mod.weight.shape))
        want = np.mean([float(nn.functional.cross_entropy(ref(x), y)) for x, y in data[:2]])
    assert math.isclose(r.tucker_score, want, rel_tol=1e-4)
    # a few steps of fine-tuning lower the training loss of both candidates
    plan, rep = plan_mtd(m, 8.0, data=data, proxy="finetune", steps=5, lr=1e-2, batches=2)
    for n, r in rep.layers.items():
        assert math.isfinite(r.tucker_score) and r.tucker_score < rep0.layers[n].tucker_score
        assert r.cp_score is None or r.cp_score < rep0.layers[n].cp_score
        assert plan[n].cp == (r.choice == "cp")
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_balance_cp_keeps_the_product_and_equalizes_each_term():
    import tensorly as tl

    from adt.exporter import decompose

    rng = np.random.default_rng(0)
    t = rng.standard_normal((8, 9, 10))
    w, f = decompose.cp_als(t, 6)
    w2, f2 = decompose.balance_cp(w, f)
    np.testing.assert_allclose(tl.cp_to_tensor((w2, f2)), tl.cp_to_tensor((w, f)), atol=1e-12)
    assert np.abs(w).max() > 10 * np.abs(w2).max()          # ALS put each term's scale in its weight
    for fi in f2:                                           # now weight and columns share one RMS per term
        np.testing.assert_allclose(np.sqrt(np.mean(fi ** 2, axis=0)), np.abs(w2), rtol=1e-10)
