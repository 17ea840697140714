"""Training loop: an MNIST smoke run shows the loss falling; checkpoint + resume is exact; errors."""
import numpy as np
import pytest
import torch

from adt.exporter import (
    CheckpointError, TrainConfig, apply_ada_tucker, apply_scada_tucker, build_model, evaluate, train,
)
from adt.exporter.data import mnist_loaders, tensor_loader
from adt.exporter.planner import preset
from adt.runtime.mnist import MnistError

torch.set_num_threads(1)


def test_mnist_smoke_ada_lenet300_loss_falls(mnist_dir):
    train_loader, test_loader = mnist_loaders(mnist_dir, batch_size=128, subset=12800, test_subset=2000)
    torch.manual_seed(0)
    model = build_model("lenet300")
    apply_ada_tucker(model, preset("lenet300-ada"), seed=0)
    before = evaluate(model, test_loader)
    result = train(model, train_loader, TrainConfig(epochs=3, max_steps=300, threads=1), test_loader, progress=False)
    assert result.steps == 300 and len(result.losses) == 300
    first, last = np.mean(result.losses[:20]), np.mean(result.losses[-20:])
    assert last < 0.4 * first
    assert result.test_accuracy[-1] > 0.85 > before
    assert result.wall_time > 0


def test_mnist_smoke_scada_lenet5_loss_falls(mnist_dir):
    train_loader, _ = mnist_loaders(mnist_dir, batch_size=64, subset=2560)
    torch.manual_seed(0)
    model = build_model("lenet5")
    apply_scada_tucker(model, preset("lenet5-scada"), seed=0)
    result = train(model, train_loader, TrainConfig(epochs=1, max_steps=40, threads=1), progress=False)
    assert np.mean(result.losses[-10:]) < 0.6 * np.mean(result.losses[:5])


def _toy(seed=0, n=384):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1))
    return tensor_loader(x, y, 64, shuffle=True, seed=seed)


def test_checkpoint_resume_is_exact(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    cfg = dict(lr=0.01, batch_size=64, decay_every=1, lr_decay=3.0, seed=4)

    def fresh():
        torch.manual_seed(0)  # the biases come from the global RNG
        model = build_model("lenet300")
        apply_ada_tucker(model, preset("lenet300-ada"), seed=1)
        return model

    straight = fresh()
    full = train(straight, _toy(), TrainConfig(epochs=3, **cfg), progress=False)
    resumed = fresh()
    train(resumed, _toy(), TrainConfig(epochs=1, checkpoint=ckpt, **cfg), progress=False)
    later = fresh()  # a new process would rebuild the model, then resume
    part = train(later, _toy(), TrainConfig(epochs=3, checkpoint=ckpt, resume=True, **cfg), progress=False)
    assert part.epochs_done == 3 and part.steps == full.steps
    assert part.losses == pytest.approx(full.losses, rel=1e-5)
    assert part.lrs == pytest.approx([0.01, 0.01 / 3, 0.01 / 9])
    for a, b in zip(straight.state_dict().values(), later.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="seed"):
        train(fresh(), _toy(), TrainConfig(epochs=4, checkpoint=ckpt, resume=True, **{**cfg, "seed": 5}),
              progress=False)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(fresh(), _toy(), TrainConfig(epochs=4, checkpoint=ckpt, resume=True, **cfg), progress=False)


def test_seeded_runs_repeat():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("lenet300")
        apply_ada_tucker(model, preset("lenet300-ada"), seed=0)
        runs.append(train(model, _toy(), TrainConfig(epochs=1, max_steps=4, seed=2), progress=False).losses)
    assert runs[0] == runs[1]


def test_missing_data_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ADT_DATA", raising=False)
    with pytest.raises(MnistError, match="ADT_DATA"):
        mnist_loaders(None)
    with pytest.raises(MnistError, match="does not exist"):
        mnist_loaders(tmp_path / "nowhere")


def test_progress_output_and_threads(capsys):
    torch.manual_seed(0)
    model = build_model("lenet300")
    apply_ada_tucker(model, preset("lenet300-ada"), seed=0)
    before = torch.get_num_threads()
    try:
        result = train(model, _toy(), TrainConfig(epochs=1, threads=1), _toy(1, 128), progress=True)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "epoch 1/1: loss" in text and len(result.test_accuracy) == 1
    # the per-epoch line reports throughput and the run's ETA (0 s left after the last epoch)
    line = next(x for x in text.splitlines() if x.startswith("epoch 1/1: loss"))
    assert " img/s, ETA 0:00" in line
    assert result.images == 384 and result.images_per_second[0] > 0


@pytest.mark.parametrize("bad", [dict(epochs=-1), dict(lr=0.0), dict(batch_size=0), dict(lr_decay=0),
                                 dict(decay_every=0), dict(max_steps=0), dict(threads=0), dict(resume=True),
                                 dict(schedule="linear"), dict(weight_decay=-1e-3), dict(label_smoothing=1.0),
                                 dict(distill_alpha=1.5), dict(distill_alpha=-0.1), dict(distill_temperature=0.0)])
def test_bad_config_is_a_typed_error(bad):
    from adt.exporter import TrainConfigError

    with pytest.raises(TrainConfigError, match="TrainConfig"):
        TrainConfig(**bad)


def test_cosine_schedule_ends_near_zero_and_step_schedule_divides():
    def lrs(**cfg):
        torch.manual_seed(0)
        model = build_model("lenet300")
        apply_ada_tucker(model, preset("lenet300-ada"), seed=1)
        return train(model, _toy(n=128), TrainConfig(epochs=4, lr=0.01, **cfg), progress=False).lrs

    step = lrs(decay_every=2)
    assert step == pytest.approx([0.01, 0.01, 0.01 / 3, 0.01 / 3])
    cos = lrs(schedule="cosine")
    # per-epoch cosine from lr to 0 over 4 epochs: lr * (1 + cos(pi * e / 4)) / 2
    assert cos == pytest.approx([0.01 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)])


def test_weight_decay_shrinks_the_tucker_parameters():
    """AdamW's decoupled decay pulls core and factors towards 0 compared with plain Adam."""
    def norm_after(wd):
        torch.manual_seed(0)
        model = build_model("lenet300")
        apply_ada_tucker(model, preset("lenet300-ada"), seed=1)
        train(model, _toy(n=256), TrainConfig(epochs=2, lr=0.01, weight_decay=wd, seed=3), progress=False)
        return sum(float(p.detach().norm()) for n, p in model.named_parameters() if "parametrizations" in n)

    assert norm_after(5.0) < 0.8 * norm_after(0.0)  # 8 steps of 5% decay each


def test_label_smoothing_changes_the_loss():
    def first_loss(ls):
        torch.manual_seed(0)
        model = build_model("lenet300")
        apply_ada_tucker(model, preset("lenet300-ada"), seed=1)
        return train(model, _toy(n=64), TrainConfig(epochs=1, max_steps=1, label_smoothing=ls), progress=False).losses[0]

    assert first_loss(0.0) != pytest.approx(first_loss(0.2))


def test_distill_loss_is_ce_at_alpha_0_and_zero_when_the_student_is_the_teacher():
    from adt.exporter.fit import DistillLoss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(32, 10, generator=g), torch.randn(32, 10, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert float(DistillLoss(0.0, 4.0)(s, t, y)) == pytest.approx(float(ce))
    assert float(DistillLoss(1.0, 4.0)(t, t, y)) == pytest.approx(0.0, abs=1e-6)
    # T^2 * KL at alpha = 1, computed by hand from the softened distributions
    p, q = torch.softmax(t / 2, 1), torch.log_softmax(s / 2, 1)
    by_hand = 4 * float((p * (p.log() - q)).sum(1).mean())
    assert float(DistillLoss(1.0, 2.0)(s, t, y)) == pytest.approx(by_hand, rel=1e-5)


def test_distillation_needs_both_a_teacher_and_a_weight():
    from adt.exporter import TrainConfigError

    torch.manual_seed(0)
    model = build_model("lenet300")
    apply_ada_tucker(model, preset("lenet300-ada"), seed=0)
    with pytest.raises(TrainConfigError, match="teacher"):
        train(model, _toy(), TrainConfig(epochs=1, max_steps=1, distill_alpha=0.5), progress=False)
    with pytest.raises(TrainConfigError, match="teacher"):
        train(model, _toy(), TrainConfig(epochs=1, max_steps=1), progress=False, teacher=build_model("lenet300"))


def test_a_distilled_student_learns_the_teachers_answers():
    """With alpha = 1 the labels play no part: the student can only learn the teacher's predictions."""
    torch.manual_seed(0)
    teacher = build_model("lenet300")  # a fixed random dense net: its argmax is unrelated to the labels
    with torch.no_grad():
        teacher.fc3.weight.mul_(20)  # sharper answers (random logits are nearly flat)
    x = torch.randn(512, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = teacher(x).argmax(1)
    loader = tensor_loader(x, torch.zeros(512, dtype=torch.int64), 64, shuffle=True, seed=0)

    def agreement(model):
        with torch.no_grad():
            return float((model(x).argmax(1) == target).float().mean())

    student = build_model("lenet300")
    apply_ada_tucker(student, preset("lenet300-ada"), seed=2)
    before = agreement(student)
    train(student, loader, TrainConfig(epochs=10, distill_alpha=1.0, distill_temperature=2.0), progress=False,
          teacher=teacher)
    assert agreement(student) > max(0.45, before + 0.3)  # 0.63 from 0.04 (labels alone: 0.06)
    assert all(not p.grad for p in teacher.parameters())  # the teacher is never updated
