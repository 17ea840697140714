"""The method registry behind ``adt compress --method``: every method plans, counts and applies
consistently, the size search works for each, and TT layers train through the file's quantizer."""
import numpy as np
import pytest
import torch

from adt.exporter import METHOD_NAMES, PlanError, build_model, count_params, get_method
from adt.exporter.export import dequantized_weights, export_adt, quantized_model, structural_method
from adt.exporter.qat import disable_fake_quant, enable_fake_quant
from adt.exporter.quantplan import inventory, make_quant_plan
from adt.exporter.size_budget import plan_for_size
from adt.exporter.tensor_train import TTPlan, tt_layers
from adt.runtime.format import read_adt

torch.set_num_threads(1)


def test_the_registry_names_the_seven_methods_and_refuses_others():
    assert METHOD_NAMES == ("ada", "scada", "cp", "mtd", "tt", "admm-tucker", "admm-tt")
    assert {get_method(n).needs_dense for n in ("mtd", "admm-tucker", "admm-tt")} == {True}
    assert not any(get_method(n).needs_dense for n in ("ada", "scada", "cp", "tt"))
    with pytest.raises(PlanError, match="admm-tt"):
        get_method("hooi")


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_plan_counts_what_apply_stores_and_is_never_bigger_than_dense(name):
    method = get_method(name)
    model = build_model("lenet5")
    dense = count_params(model)
    plan = method.plan(model, 20.0)
    small = method.smallest(model)
    assert plan and small
    predicted = method.stored(model, plan)
    assert method.stored(model, small) < predicted < dense
    for layer, lp in plan.items():
        own = lp.factor_params if method.scada else lp.params  # SCADA's core is shared: counted once
        assert own < lp.numel, layer                     # a factored layer is smaller than its weight
        assert isinstance(lp, TTPlan) == (method.kind == "tt")
        assert getattr(lp, "cp", False) == (method.kind == "cp")
    method.apply(model, plan, seed=0)
    assert count_params(model) == predicted              # the plan's count is what the model stores
    kinds = {"tucker": {"ada", "scada"}, "cp": {"cp"}, "mixed": {"ada"}, "tt": {"tt"}}[method.kind]
    assert structural_method(inventory(model)) in kinds  # mtd's sizing plan is its ADA plan


def test_cp_layers_fit_inside_the_ada_plans_budgets():
    model = build_model("lenet5")
    ada, cp = get_method("ada").plan(model, 30.0), get_method("cp").plan(model, 30.0)
    assert set(cp) <= set(ada)
    for layer, lp in cp.items():
        assert lp.reshape == ada[layer].reshape and lp.params <= ada[layer].params
        assert lp.params + sum(lp.reshape) + 1 > ada[layer].params  # the largest rank that fits


@pytest.mark.parametrize("name", ["cp", "tt"])
def test_the_size_search_plans_every_method_under_the_budget(name):
    model = build_model("lenet300")
    plan, est = plan_for_size(model, 12_000, method=name, input_shape=(784,))
    assert est.estimated_bytes <= 12_000 and est.ratio > 0.9
    assert all(isinstance(lp, TTPlan) == (name == "tt") for lp in plan.values())
    assert est.stored_values == get_method(name).stored(model, plan)


def test_tt_fake_quant_forward_is_the_files_weights(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet300")
    method = get_method("tt")
    method.apply(model, method.plan(model, 30.0), seed=0)
    plan = make_quant_plan(model, q={"factors": 16, "other": 64})
    x = torch.randn(8, 784)
    with torch.no_grad():
        float_out = model(x)
        enable_fake_quant(model, plan)
        assert all(tt.quant is not None for _, _, tt in tt_layers(model))
        fq_out = model(x)
        ref = quantized_model(model, dequantized_weights(model, plan))(x)
        disable_fake_quant(model)
        back = model(x)
    torch.testing.assert_close(fq_out, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(fq_out, float_out, atol=1e-3)  # 16 levels change the output
    torch.testing.assert_close(back, float_out)
    # the exported file's weights are the fake-quantized ones
    export_adt(model, tmp_path / "tt.adt", input_shape=(784,), plan=plan)
    import adt.runtime as rt
    got = rt.load(tmp_path / "tt.adt").run(x.numpy())
    np.testing.assert_allclose(got, fq_out.numpy(), rtol=1e-4, atol=1e-4 * float(fq_out.abs().max()))
    assert read_adt(tmp_path / "tt.adt").version == (2, 0)
