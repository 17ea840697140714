"""export_adt: the file the reader accepts decodes bit-exactly to the exporter's quantized values."""
import copy
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from adt.exporter.errors import PlanError
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
    rep = export_adt(model, path, input_shape=SHAPE, q={"cores": 512, "factors": 256, "other": 64}, groups=groups)
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
    rep = export_adt(model, None, input_shape=SHAPE, q=8, test_data=(x, y))
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
    floor = dequantized_weights(model, make_quant_plan(model, q=q))
    assert_file_values_equal(f, near)
    dense = {n: t.detach().numpy() for n, t in model.state_dict().items() if n in near}
    dense.update({f"{m}.weight": getattr(model, m).weight.detach().numpy() for m in ("conv1", "conv2", "fc1", "fc2")})
    err = {k: sum(float(np.abs(w[n] - dense[n]).sum()) for n in near) for k, w in (("near", near), ("floor", floor))}
    assert err["near"] < 0.75 * err["floor"]
    assert export_adt(model, None, input_shape=SHAPE, q=q).rounding == "floor"  # Eq. 13 stays the default
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


def test_odd_q_negative_variance_is_refused():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 26 * 26, 3)).eval()
    with torch.no_grad():
        m[1].running_var.copy_(torch.tensor([1e-6, 2.0]))
    with pytest.raises(PlanError, match="running_var"):
        export_adt(m, None, input_shape=SHAPE, q=5, groups="tensor")
    rep = export_adt(m, None, input_shape=SHAPE, q=6, groups="tensor")  # even Q: 0 is a level
    assert rep.dense_params == 2 * 9 + 2 + 4 * 2 + 3 * 2 * 26 * 26 + 3
