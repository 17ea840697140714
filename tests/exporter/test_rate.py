"""Rate-aware QAT: the soft-histogram bit estimate, and training that trades bits for loss."""
import numpy as np
import pytest
import torch
from torch import nn

from adt.exporter.errors import PlanError
from adt.exporter.export import export_adt
from adt.exporter.factorize import apply_ada_tucker, apply_scada_tucker
from adt.exporter.models import build_model
from adt.exporter.planner import LayerPlan
from adt.exporter.qat import enable_fake_quant, qat_finetune
from adt.exporter.quantplan import inventory, make_quant_plan
from adt.exporter.rate import RateEstimate, soft_entropy_bits
from adt.runtime.format import quantize, read_adt

PLAN = {
    "conv1": LayerPlan((25, 20), (5, 5)), "conv2": LayerPlan((50, 25, 20), (5, 5, 5)),
    "fc1": LayerPlan((40, 25, 20, 20), (5, 5, 5, 5)), "fc2": LayerPlan((25, 20, 10), (5, 5, 5)),
}


def lenet(scada: bool = False) -> nn.Module:
    torch.manual_seed(0)
    m = build_model("lenet5")
    (apply_scada_tucker if scada else apply_ada_tucker)(m, PLAN, seed=0)
    return m.eval()


def hard_entropy_bits(x: np.ndarray, q: int, b: float) -> float:
    sym = quantize(x, q, b, "nearest")
    p = np.bincount(sym.astype(np.int64), minlength=q) / x.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * x.size)


@pytest.mark.parametrize("q", [16, 64])
def test_soft_entropy_approaches_the_symbols_entropy_as_the_temperature_falls(q):
    gen = torch.Generator().manual_seed(q)
    x = torch.randn(3000, generator=gen, dtype=torch.float64) * 0.3
    b = float(x.abs().max())
    exact = hard_entropy_bits(x.numpy(), q, b)
    errors = [abs(float(soft_entropy_bits(x, q, b, t)) - exact) / exact for t in (0.5, 0.2, 0.05)]
    assert errors[-1] < 0.01            # a cold soft histogram is the hard one
    assert errors[0] > errors[-1]       # and the warm one is smoothed (it is an estimate, not a copy)


def test_soft_entropy_gradient_moves_values_towards_crowded_levels():
    q, b = 16, 1.0
    step = 2 * b / q
    # 40 values on the level 0.0, one value just off the level above 0: bits fall as it joins the crowd
    x = torch.cat([torch.zeros(40, dtype=torch.float64), torch.tensor([0.6 * step], dtype=torch.float64)])
    x.requires_grad_(True)
    soft_entropy_bits(x, q, b, 0.5).backward()
    assert x.grad[-1] > 0               # descending the gradient moves the lone value down towards 0


def test_rate_estimate_covers_every_trained_stored_value_once():
    for scada in (False, True):
        m = lenet(scada)
        plan = make_quant_plan(m, q={"cores": 64, "factors": 32, "other": 16}, rounding="nearest")
        inv = inventory(m)
        stored = sum(c.tensor.numel() for c in inv.cores)
        stored += sum(m_.numel() for st in inv.tucker.values() for m_ in st.weight.factors)
        stored += sum(t.numel() for t in inv.plain.values())
        assert RateEstimate(m, plan).count == stored
        enable_fake_quant(m, plan)  # the plain values behind their fake quantizers are still found
        assert RateEstimate(m, plan).count == stored


def test_hard_bits_equal_the_entropy_of_the_exported_symbols(tmp_path):
    m = lenet()
    plan = make_quant_plan(m, q={"cores": 64, "factors": 32, "other": 16}, rounding="nearest")
    est = RateEstimate(m, plan).hard_bits()
    export_adt(m, tmp_path / "m.adt", input_shape=(1, 28, 28), plan=plan)
    f = read_adt(tmp_path / "m.adt")
    per_group: dict[int, list[np.ndarray]] = {}
    for i, c in enumerate(f.cores):
        per_group.setdefault(c.group, []).append(c.symbols.reshape(-1))
    for p in f.params:
        arrays = p.factors if p.symbols is None else [p.symbols]
        per_group.setdefault(p.group, []).extend(a.reshape(-1) for a in arrays)
    total = 0.0
    for g, arrays in per_group.items():
        s = np.concatenate(arrays).astype(np.int64)
        pr = np.bincount(s) / s.size
        pr = pr[pr > 0]
        total += float(-(pr * np.log2(pr)).sum() * s.size)
    assert est == pytest.approx(total, rel=1e-9)
    assert f.payload_bits >= total  # a prefix code pays at least the entropy


def _loader():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (128,), generator=gen)
    return [(x[i:i + 32], y[i:i + 32]) for i in range(0, 128, 32)]


def test_rate_aware_qat_writes_a_smaller_file_than_plain_qat(tmp_path):
    loader = _loader()
    sizes = {}
    for weight in (0.0, 1e-3):
        m = lenet()
        res = qat_finetune(m, loader, epochs=3, lr=3e-3, progress=False, q=64, groups="kind", rounding="nearest",
                           rate_weight=weight)
        if weight:
            assert len(res.rate_bits) == 4 and res.rate_bits[-1] < res.rate_bits[0]
        else:
            assert res.rate_bits == []
        export_adt(m, tmp_path / f"{weight}.adt", input_shape=(1, 28, 28), plan=res.plan)
        sizes[weight] = read_adt(tmp_path / f"{weight}.adt").payload_bits
    assert sizes[1e-3] < 0.9 * sizes[0.0]


def test_bad_rate_settings_are_refused():
    with pytest.raises(PlanError):
        qat_finetune(lenet(), _loader(), epochs=1, progress=False, q=64, rate_weight=-1.0)
    with pytest.raises(PlanError):
        soft_entropy_bits(torch.zeros(3), 16, 1.0, 0.0)
    with pytest.raises(PlanError):
        RateEstimate(lenet(), make_quant_plan(lenet(), q=64), temperature=-0.5)
