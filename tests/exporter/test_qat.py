"""Quantization-aware fine-tuning: the forward pass uses exactly the file's values."""
import numpy as np
import pytest
import torch
from torch import nn

from adt.exporter.errors import PlanError
from adt.exporter.export import dequantized_weights, export_adt, quantized_model
from adt.exporter.quantplan import make_quant_plan
from adt.exporter.models import build_model
from adt.exporter.planner import LayerPlan
from adt.exporter.qat import disable_fake_quant, enable_fake_quant, qat_finetune
from adt.exporter.factorize import apply_scada_tucker
from adt.runtime.format import read_adt

PLAN = {
    "conv1": LayerPlan((25, 20), (5, 5)), "conv2": LayerPlan((50, 25, 20), (5, 5, 5)),
    "fc1": LayerPlan((40, 25, 20, 20), (5, 5, 5, 5)), "fc2": LayerPlan((25, 20, 10), (5, 5, 5)),
}


def model():
    torch.manual_seed(0)
    m = build_model("lenet5")
    apply_scada_tucker(m, PLAN, seed=0)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.bias.uniform_(-0.1, 0.1)
    return m.eval()


@pytest.mark.parametrize("rounding", ["floor", "nearest"])
def test_fake_quant_forward_equals_the_exported_values(rounding):
    m = model()
    plan = make_quant_plan(m, q={"cores": 64, "factors": 32, "other": 16}, rounding=rounding)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        float_out = m(x)
        enable_fake_quant(m, plan)
        fq_out = m(x)
        ref = quantized_model(m, dequantized_weights(m, plan))(x)
        disable_fake_quant(m)
        back = m(x)
    torch.testing.assert_close(fq_out, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(fq_out, float_out, atol=1e-3)  # coarse Q changes the output
    torch.testing.assert_close(back, float_out)                # and disabling restores the float model
    assert "conv1.bias" in dict(m.named_parameters())          # plain parametrizations removed


def test_qat_trains_latent_values_and_export_uses_its_plan(tmp_path):
    m = model()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    before = m.fc1.parametrizations.weight[0].core.detach().clone()
    res = qat_finetune(m, loader, epochs=3, lr=1e-2, progress=False, q=64, groups="kind")
    assert res.steps == 12 and all(np.isfinite(res.losses))
    assert np.mean(res.losses[-4:]) < np.mean(res.losses[:4])  # it memorises 64 random samples
    assert not torch.equal(before, m.fc1.parametrizations.weight[0].core.detach())
    rep = export_adt(m, tmp_path / "q.adt", input_shape=(1, 28, 28), plan=res.plan, test_data=(x.numpy(), y.numpy()))
    f = read_adt(tmp_path / "q.adt")
    assert [(g.q, np.float32(g.b)) for g in f.groups] == [(g.q, np.float32(g.b)) for g in res.plan.groups]
    # accuracy after export == accuracy of the QAT forward pass
    enable_fake_quant(m, res.plan)
    with torch.no_grad():
        acc_fq = float((m(x).argmax(1) == y).float().mean())
    disable_fake_quant(m)
    assert rep.acc_quantized == acc_fq


def test_qat_cosine_schedule_anneals_to_zero_and_bad_schedule_is_refused():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    const = qat_finetune(model(), loader, epochs=2, lr=1e-2, progress=False, q=64)
    assert const.last_lr == pytest.approx(1e-2)
    cos = qat_finetune(model(), loader, epochs=2, lr=1e-2, progress=False, q=64, schedule="cosine", rounding="nearest")
    # 8 steps, T_max 8: the last step runs at lr 0.01 * (1 + cos(7 pi / 8)) / 2
    assert cos.steps == 8 and cos.last_lr == pytest.approx(1e-2 * (1 + np.cos(7 * np.pi / 8)) / 2)
    assert cos.plan.rounding == "nearest"
    with pytest.raises(PlanError, match="schedule"):
        qat_finetune(model(), loader, epochs=1, progress=False, schedule="step")


def test_qat_label_smoothing_is_the_loss_it_trains():
    """With label smoothing the first QAT loss is the smoothed cross-entropy of the quantized model."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    first = {}
    for ls in (0.0, 0.3):
        m = model()
        plan = make_quant_plan(m, q=64, groups="kind")
        enable_fake_quant(m, plan)
        with torch.no_grad():
            want = float(nn.CrossEntropyLoss(label_smoothing=ls)(m(x), y))
        disable_fake_quant(m)
        res = qat_finetune(m, [(x, y)], plan=plan, epochs=1, lr=1e-3, progress=False, label_smoothing=ls)
        first[ls] = res.losses[0]
        assert res.losses[0] == pytest.approx(want, rel=1e-5)
    assert first[0.0] != pytest.approx(first[0.3])


def test_qat_with_a_teacher_uses_the_distillation_loss():
    """The first QAT loss with a teacher is the DistillLoss of the fake-quantized student, not plain CE."""
    from adt.exporter.fit import DistillLoss

    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    y = torch.arange(16) % 10
    loader = [(x, y)]
    torch.manual_seed(1)
    teacher = build_model("lenet5").requires_grad_(False)
    plain = qat_finetune(model(), loader, epochs=1, progress=False, q=64)
    m = model()
    res = qat_finetune(m, loader, epochs=1, lr=1e-12, progress=False, q=64, teacher=teacher,
                       distill_alpha=0.5, distill_temperature=2.0)
    enable_fake_quant(m, res.plan)  # lr ~0: the weights are the ones the loss saw
    with torch.no_grad():
        expected = float(DistillLoss(0.5, 2.0)(m(x), teacher(x), y))
    disable_fake_quant(m)
    assert res.losses[0] == pytest.approx(expected, rel=1e-4)
    assert res.losses[0] != pytest.approx(plain.losses[0], rel=1e-3)


def test_qat_progress_shows_throughput_and_eta(capsys):
    """The bar's postfix (refreshed every QAT step) and the per-epoch line carry images/s and the ETA."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(48, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (48,), generator=gen)
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
    res = qat_finetune(model(), loader, epochs=2, lr=1e-3, progress=True, q=64, device="cpu", amp="off")
    out = capsys.readouterr()
    text = out.out + out.err
    assert "img_s=" in text and "eta=" in text
    lines = [s for s in text.splitlines() if s.startswith("qat epoch ")]
    assert [s.split(":")[0] for s in lines] == ["qat epoch 1/2", "qat epoch 2/2"]
    assert all(" img/s, ETA " in s for s in lines) and lines[-1].endswith("ETA 0:00")
    assert res.images == 2 * 48 and len(res.images_per_second) == 2


def test_export_check_of_a_qat_model_compares_with_the_function_it_was_trained_as(tmp_path):
    """ExportOptions.qat: the check's reference is the fake-quantized model QAT trained, not the latent floats.
    A coarse Q moves the latent model's outputs far more than a tiny tolerance allows (refused without
    qat=True); the file equals the trained function to float rounding (passes with qat=True)."""
    from adt.exporter.errors import ExportCheckError

    m = model()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    res = qat_finetune(m, [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)], epochs=2, lr=1e-2,
                       progress=False, q=16, groups="kind", rounding="nearest")
    with pytest.raises(ExportCheckError, match="float model"):
        export_adt(m, tmp_path / "a.adt", input_shape=(1, 28, 28), plan=res.plan, check_tolerance=1e-3)
    assert not (tmp_path / "a.adt").exists()
    rep = export_adt(m, tmp_path / "b.adt", input_shape=(1, 28, 28), plan=res.plan, qat=True, check_tolerance=1e-3)
    assert rep.check.passed and rep.check.divergence < 1e-4 and "QAT" in rep.check.reference
    with pytest.raises(PlanError, match="plan"):
        export_adt(m, tmp_path / "c.adt", input_shape=(1, 28, 28), qat=True)
