"""export_adt: the file the reader accepts decodes bit-exactly to the exporter's quantized values."""
import copy
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import adt.runtime as rt
from adt.exporter.errors import ExportCheckError, ModelError, PlanError
from adt.exporter.export import compact_name_map, dequantized_weights, export_adt, quantized_model
from adt.exporter.quantplan import choose_b, inventory, make_quant_plan
from adt.exporter.models import build_model
from adt.exporter.onnx_graph import with_weights
from adt.exporter.planner import LayerPlan
from adt.exporter.factorize import apply_ada_tucker, apply_scada_tucker
from adt.runtime.format import ENC_PLAIN, ENC_TUCKER, quantize, read_adt

PAPER_LENET5 = {
    "conv1": LayerPlan((25, 20), (5, 5)), "conv2": LayerPlan((50, 25, 20), (5, 5, 5)),
    "fc1": LayerPlan((40, 25, 20, 20), (5, 5, 5, 5)), "fc2": LayerPlan((25, 20, 10), (5, 5, 5)),
}
SHAPE = (1, 28, 28)


def lenet5(method="ada", plan=PAPER_LENET5, seed=0):
    torch.manual_seed(seed)
    m = build_model("lenet5")
    (apply_scada_tucker if method == "scada" else apply_ada_tucker)(m, plan, seed=seed)
    with torch.no_grad():  # non-zero biases so "other" values are not all zero
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.bias.uniform_(-0.1, 0.1)
    return m.eval()


def np_tucker(core, factors, shape):
    """Independent reference rebuild: one einsum over all modes (not the exporter's loop)."""
    d = len(factors)
    letters = "abcdefgh"
    upper = "ABCDEFGH"
    spec = letters[:d] + "," + ",".join(f"{upper[i]}{letters[i]}" for i in range(d)) + "->" + upper[:d]
    return np.einsum(spec, core.astype(np.float64), *[f.astype(np.float64) for f in factors]).reshape(shape)


def assert_file_values_equal(f, weights):
    """Every parameter the file ``f`` rebuilds (independent einsum) equals ``weights[name]``."""
    for p in f.params:
        if p.encoding == ENC_TUCKER:
            ref = np_tucker(f.core_values(p.core), [f.values(s, p.group) for s in p.factors], p.shape)
        else:
            ref = f.values(p.symbols, p.group)
        np.testing.assert_allclose(weights[p.name], ref.astype(np.float32), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["ada", "scada"])
@pytest.mark.parametrize("groups", ["single", "kind", "tensor"])
def test_file_decodes_bit_exactly(tmp_path, method, groups):
    model = lenet5(method)
    path = tmp_path / "m.adt"
    rep = export_adt(model, path, input_shape=SHAPE, q={"cores": 512, "factors": 256, "other": 64}, groups=groups,
                     rounding="floor")  # Eq. 13 exactly: what quantize() does by default
    f = read_adt(path)
    assert rep.file_bytes == os.path.getsize(path) == f.file_size
    plan = make_quant_plan(model, q={"cores": 512, "factors": 256, "other": 64}, groups=groups)
    assert len(f.groups) == len(plan.groups) == {"single": 1, "kind": 3}.get(groups, len(f.groups))
    for g, spec in zip(f.groups, plan.groups):
        assert (g.q, np.float32(g.b)) == (spec.q, np.float32(spec.b))
    # every symbol equals an independent quantize() of the model's own tensors
    cores = {}
    for name, mod in [("conv1", model.conv1), ("conv2", model.conv2), ("fc1", model.fc1), ("fc2", model.fc2)]:
        tw = mod.parametrizations.weight[0]
        p = f.param(f"{name}.weight")
        assert p.encoding == ENC_TUCKER and p.shape == tuple(mod.weight.shape)
        gq = f.groups[p.group]
        for sym, fac in zip(p.factors, tw.factors):
            np.testing.assert_array_equal(sym, quantize(fac.detach().numpy(), gq.q, gq.b))
        core = f.cores[p.core]
        cq = f.groups[core.group]
        np.testing.assert_array_equal(core.symbols, quantize(tw.core.detach().numpy(), cq.q, cq.b))
        cores[id(tw.core)] = p.core
        b = f.param(f"{name}.bias")
        assert b.encoding == ENC_PLAIN
        bq = f.groups[b.group]
        np.testing.assert_array_equal(b.symbols, quantize(mod.bias.detach().numpy(), bq.q, bq.b))
    assert len(f.cores) == len(cores) == (1 if method == "scada" else 4)
    assert {p.name for p in f.params} == {f"{n}.{k}" for n in ("conv1", "conv2", "fc1", "fc2") for k in ("weight", "bias")}


def test_scada_stores_one_core_once(tmp_path):
    model = lenet5("scada")
    rep = export_adt(model, tmp_path / "s.adt", input_shape=SHAPE)
    f = read_adt(tmp_path / "s.adt")
    assert len(f.cores) == 1 and f.cores[0].dims == (5, 5, 5, 5)
    assert all(p.core == 0 for p in f.params if p.encoding == ENC_TUCKER)
    assert f.param("conv1.weight").reshape == (25, 20, 1, 1)
    # stored values: 625 core values once + factors + biases
    tws = [m.parametrizations.weight[0] for m in (model.conv1, model.conv2, model.fc1, model.fc2)]
    expected = 625 + sum(f_.numel() for tw in tws for f_ in tw.factors) + 20 + 50 + 500 + 10
    assert rep.stored_values == expected


@pytest.mark.parametrize("method", ["ada", "scada"])
def test_dequantized_rebuild_matches_file_and_torch(tmp_path, method):
    model = lenet5(method)
    plan = make_quant_plan(model, q=128, groups="kind")
    export_adt(model, tmp_path / "m.adt", input_shape=SHAPE, plan=plan)
    f = read_adt(tmp_path / "m.adt")
    mine = dequantized_weights(model, plan)
    assert_file_values_equal(f, mine)
    # and the torch fake-quantized forward weights are the same numbers
    for name, mod in [("conv1", model.conv1), ("fc1", model.fc1)]:
        tw = mod.parametrizations.weight[0]
        inv = inventory(model)
        tw.core_quant = plan.core_spec(inv.cores[inv.tucker[f"{name}.weight"].core].name)
        tw.factor_quant = plan.param_spec(f"{name}.weight")
        np.testing.assert_allclose(tw.dense().detach().numpy(), mine[f"{name}.weight"], rtol=1e-4, atol=1e-6)
        tw.core_quant = tw.factor_quant = None


def test_runtime_graph_runs_quantized_file_like_torch(tmp_path):
    model = lenet5()
    rep = export_adt(model, tmp_path / "m.adt", input_shape=SHAPE, compact_names=True, q=256)
    f = read_adt(tmp_path / "m.adt")
    plan = make_quant_plan(model, q=256)
    mine = dequantized_weights(model, plan)
    weights = {rep.names[k]: v for k, v in mine.items()}
    x = np.random.default_rng(0).standard_normal((64, *SHAPE)).astype(np.float32)
    out = ort.InferenceSession(with_weights(f.architecture, weights), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        ref = quantized_model(model, mine)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    assert {p.name for p in f.params} == set("abcdefgh") and f.metadata["method"] == "ada"
    bare = export_adt(model, None, input_shape=SHAPE, compact_names=True, q=256, auto_metadata=False)
    assert bare.file_bytes < rep.file_bytes and "metadata" not in bare.sections


def test_deterministic_bytes(tmp_path):
    model = lenet5("scada")
    a = export_adt(model, tmp_path / "a.adt", input_shape=SHAPE, model_name="lenet5")
    b = export_adt(copy.deepcopy(model), tmp_path / "b.adt", input_shape=SHAPE, model_name="lenet5")
    assert (tmp_path / "a.adt").read_bytes() == (tmp_path / "b.adt").read_bytes()
    assert a.file_bytes == b.file_bytes


def test_report_numbers(tmp_path):
    model = lenet5()
    rep = export_adt(model, None, input_shape=SHAPE)
    assert rep.path is None
    assert rep.dense_params == 431080 and rep.dense_float32_bytes == 1724320
    assert rep.true_ratio == pytest.approx(1724320 / rep.file_bytes)
    assert rep.raw_ratio == pytest.approx(431080 / rep.stored_values)
    assert rep.paper_eq14_ratio == pytest.approx(32 * rep.raw_ratio / rep.mean_code_bits)
    assert sum(rep.sections.values()) == rep.file_bytes
    assert sum(rep.payload_split_bytes.values()) == pytest.approx(rep.payload_bits / 8)
    assert rep.acc_float is None and rep.acc_quantized is None


def test_accuracy_before_and_after(tmp_path):
    model = lenet5()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, *SHAPE)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()  # labels = the float model's own predictions
    rep = export_adt(model, None, input_shape=SHAPE, q=8, test_data=(x, y), force=True, rounding="floor")
    assert not rep.check.passed  # Q = 8 destroys this net: only force writes it
    assert rep.acc_float == 1.0
    assert 0.0 <= rep.acc_quantized < 1.0  # Q = 8 levels visibly hurts
    rep2 = export_adt(model, None, input_shape=SHAPE, q=4096, test_data=(x, y))
    assert rep2.acc_quantized > rep.acc_quantized


def test_nearest_rounding_file(tmp_path):
    """rounding="nearest": the same format, symbols = quantize(..., "nearest"), the runtime's values
    are the exporter's rebuild, and the weights are closer to the float model than Eq. 13's floor."""
    model = lenet5("scada")
    q = {"cores": 64, "factors": 32, "other": 16}
    rep = export_adt(model, tmp_path / "n.adt", input_shape=SHAPE, q=q, rounding="nearest", model_name="lenet5")
    f = read_adt(tmp_path / "n.adt")
    assert rep.rounding == "nearest" and "rounding=nearest" in f.metadata["quant"]
    tw = model.fc1.parametrizations.weight[0]
    p = f.param("fc1.weight")
    for sym, fac in zip(p.factors, tw.factors):
        g = f.groups[p.group]
        np.testing.assert_array_equal(sym, quantize(fac.detach().numpy(), g.q, g.b, "nearest"))
    plan = make_quant_plan(model, q=q, rounding="nearest")
    near = dequantized_weights(model, plan)
    floor = dequantized_weights(model, make_quant_plan(model, q=q, rounding="floor"))
    assert_file_values_equal(f, near)
    dense = {n: t.detach().numpy() for n, t in model.state_dict().items() if n in near}
    dense.update({f"{m}.weight": getattr(model, m).weight.detach().numpy() for m in ("conv1", "conv2", "fc1", "fc2")})
    err = {k: sum(float(np.abs(w[n] - dense[n]).sum()) for n in near) for k, w in (("near", near), ("floor", floor))}
    assert err["near"] < 0.75 * err["floor"]
    assert export_adt(model, None, input_shape=SHAPE, q=q).rounding == "nearest"  # the default (issue 19)
    with pytest.raises(PlanError, match="rounding"):
        make_quant_plan(model, rounding="up")


def test_b_rules_and_errors():
    v = np.array([-3.0, 0.5, 1.0, 2.0], dtype=np.float32)
    assert choose_b(v, "max") == 3.0
    assert choose_b(v, "p50") == pytest.approx(np.percentile(np.abs(v), 50))
    assert choose_b(np.zeros(4), "max") == 1.0
    with pytest.raises(PlanError):
        choose_b(v, "median")
    model = lenet5()
    with pytest.raises(PlanError):
        make_quant_plan(model, groups="layer")
    with pytest.raises(PlanError):
        make_quant_plan(model, q={"weights": 3})
    plan = make_quant_plan(model, q=64, b={"other": 0.05}, groups="kind")
    labels = {g.label: g for g in plan.groups}
    assert labels["other"].b == pytest.approx(0.05) and labels["other"].rule == "given"
    core_vals = np.concatenate([m.parametrizations.weight[0].core.detach().numpy().ravel()
                                for m in (model.conv1, model.conv2, model.fc1, model.fc2)])
    assert labels["cores"].b == np.float32(np.abs(core_vals).max())


def test_cp_and_dense_layers_export(tmp_path):
    torch.manual_seed(0)
    m = build_model("lenet300")
    apply_ada_tucker(m, {"fc1": LayerPlan((28, 28, 30, 10), (6, 6, 6, 6), cp=True),
                         "fc2": LayerPlan((30, 10, 10, 10), (3, 3, 3, 3))}, seed=0)
    m.eval()
    rep = export_adt(m, tmp_path / "c.adt", input_shape=SHAPE)
    f = read_adt(tmp_path / "c.adt")
    assert [c.kind for c in f.cores] == [1, 0]  # CORE_CP, CORE_TUCKER
    assert f.param("fc3.weight").encoding == ENC_PLAIN
    plan = make_quant_plan(m)
    mine = dequantized_weights(m, plan)
    p = f.param("fc1.weight")
    ref = np_tucker(f.core_values(p.core), [f.values(s, p.group) for s in p.factors], p.shape)
    np.testing.assert_allclose(mine["fc1.weight"], ref, rtol=1e-5, atol=1e-7)
    assert rep.dense_params == 266610


def test_compact_names():
    assert list(compact_name_map(list(range(54))).values())[:3] == ["a", "b", "c"]
    names = list(compact_name_map([str(i) for i in range(3000)]).values())
    assert len(set(names)) == 3000 and names[52] == "aa"


class _ConvBN(nn.Module):
    """The issue-19 case: conv-BN-ReLU with a residual, one stem BatchNorm variance far below the others."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.c2, self.b2 = nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)) + y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def conv_bn(seed=0):
    torch.manual_seed(seed)
    m = _ConvBN().eval()
    with torch.no_grad():
        for bn in (m.b1, m.b2):
            bn.running_var.uniform_(0.5, 2.0)
            bn.running_mean.normal_()
            bn.weight.normal_()
            bn.bias.normal_()
        m.b1.running_var[:2] = 0.0028  # quantized with the other plain values, Eq. 13 rounded these to 0
    return m


def test_batchnorm_with_a_tiny_variance_exports_correctly(tmp_path):
    m = conv_bn()
    rep = export_adt(m, tmp_path / "bn.adt", input_shape=SHAPE)  # defaults: q=512, groups by kind, floor
    assert rep.check.passed and rep.check.engine_divergence < 1e-4
    assert rep.check.divergence < 0.1 and rep.check.agreement >= 0.9
    f = read_adt(tmp_path / "bn.adt")
    names = {p.name for p in f.params}
    assert {"b1.bn_scale", "b1.bn_shift"} <= names and not any("running" in n for n in names)
    assert f.param("b1.bn_scale").shape == (32, 1, 1)
    # each scale and shift has its own quantizer: a channel's scale never shares its step with the conv weights
    labels = [g["label"] for g in rep.groups]
    assert {"b1.bn_scale", "b1.bn_shift", "b2.bn_scale", "b2.bn_shift"} <= set(labels)
    x = np.random.default_rng(1).standard_normal((8, *SHAPE)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    out = rt.load(tmp_path / "bn.adt").run(x)
    assert np.abs(out - ref).max() / np.abs(ref).max() < 0.1


@pytest.mark.parametrize("layer,shape", [(nn.BatchNorm1d(6), (6,)), (nn.BatchNorm1d(6), (6, 5)),
                                         (nn.BatchNorm2d(6, affine=False), (6, 4, 4))])
def test_batchnorm_variants_match_torch(layer, shape):
    m = nn.Sequential(layer, nn.Flatten(), nn.Linear(int(np.prod(shape)), 3)).eval()
    with torch.no_grad():
        layer.running_var.uniform_(0.01, 3.0)
        layer.running_mean.normal_()
    rep = export_adt(m, None, input_shape=shape, q=4096)
    assert rep.check.passed and rep.check.engine_divergence < 1e-4 and rep.check.divergence < 0.01


def test_batch_statistics_batchnorm_is_refused():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(),
                      nn.Linear(2 * 26 * 26, 3)).eval()
    with pytest.raises(ModelError, match="running statistics"):
        export_adt(m, None, input_shape=SHAPE)


def test_check_refuses_a_file_that_changes_the_function(tmp_path):
    m = conv_bn()
    path = tmp_path / "bad.adt"
    with pytest.raises(ExportCheckError, match="refusing to write"):
        export_adt(m, path, input_shape=SHAPE, q=2, rounding="floor")  # 2 floor levels: the function is gone
    assert not path.exists()
    rep = export_adt(m, path, input_shape=SHAPE, q=2, rounding="floor", force=True)
    assert path.exists() and not rep.check.passed and rep.check.divergence > 1.0


def test_check_catches_a_runtime_that_disagrees_with_torch(tmp_path, monkeypatch):
    import adt.runtime.model as model_mod

    run = model_mod.Model.run
    monkeypatch.setattr(model_mod.Model, "run", lambda self, x, *a, **k: run(self, x, *a, **k) * np.float32(1.001))
    with pytest.raises(ExportCheckError, match="with the file's weights"):
        export_adt(conv_bn(), tmp_path / "m.adt", input_shape=SHAPE)
    assert not (tmp_path / "m.adt").exists()


def test_plan_never_needs_more_code_tables_than_a_file_holds():
    m = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)) for _ in range(70)]).eval()
    tensor = make_quant_plan(inventory(m), groups="tensor")  # 70 x (weight, bias, scale, shift) = 280 tensors
    assert len(tensor.groups) <= 256 and "groups='tensor' needs 280" in tensor.note
    rep = export_adt(m, None, input_shape=(4,), groups="tensor")
    assert len(rep.groups) <= 256 and rep.check.passed


def test_selfcheck_is_stored_and_fails_when_the_runtime_differs(tmp_path, monkeypatch):
    from adt.runtime.selfcheck import KEY, run_selfcheck

    path = tmp_path / "s.adt"
    plain = export_adt(conv_bn(), tmp_path / "p.adt", input_shape=SHAPE)
    rep = export_adt(conv_bn(), path, input_shape=SHAPE, selfcheck=True)
    assert 0 < rep.file_bytes - plain.file_bytes < 200  # "a few bytes": the recipe and 16 float16 values
    m = rt.load(path)
    assert KEY in m.file.metadata
    res = run_selfcheck(m)
    assert res.passed and res.values == 10 and res.max_error <= res.atol + 2 ** -10 * 100
    assert run_selfcheck(rt.load(tmp_path / "p.adt")) is None  # off by default
    # a machine whose engine computes something else fails it
    import adt.runtime.model as model_mod

    run = model_mod.Model.run
    monkeypatch.setattr(model_mod.Model, "run", lambda self, x, *a, **k: run(self, x, *a, **k) * np.float32(1.05))
    assert not run_selfcheck(rt.load(path)).passed


class _Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.fc = nn.Linear(7 * 8, 3)

    def forward(self, ids):  # ids: (N, 7) token ids
        return self.fc(torch.flatten(self.emb(ids), 1))


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(6, 3)

    def forward(self, x, y):
        return torch.relu(self.a(x)) + self.b(y)


def test_integer_example_inputs_export_an_embedding(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (5, 7))
    rep = export_adt(_Embed().eval(), tmp_path / "e.adt", example_inputs=(ids,))
    assert rep.check.passed and rep.check.inputs == "the 5 example input sample(s)"
    m = rt.load(tmp_path / "e.adt")
    assert m.input_dtype == np.int64
    out = m.run(ids.numpy())
    assert out.shape == (5, 3) and rep.check.engine_divergence < 1e-4


def test_two_inputs(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(4, 4), torch.randn(4, 6)
    model = _TwoInputs().eval()
    rep = export_adt(model, tmp_path / "t.adt", example_inputs=(x, y), q=4096)
    m = rt.load(tmp_path / "t.adt")
    assert [vi.name for vi in m.inputs] == ["input", "input_1"]
    with torch.no_grad():
        ref = model(x, y).numpy()
    np.testing.assert_allclose(m.run({"input": x.numpy(), "input_1": y.numpy()}), ref, rtol=0, atol=1e-2)
    assert rep.check.passed
    with pytest.raises(ModelError, match="one float input"):
        export_adt(model, None, example_inputs=(x, y), selfcheck=True)
