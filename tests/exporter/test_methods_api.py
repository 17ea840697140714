"""Every method through the API on a user's own model (not a built-in): plan, prepare (ADMM / MTD's
choice), apply, fine-tune, export; the file holds the method's layers and runs on the runtime."""
import numpy as np
import pytest
import torch
from torch import nn

import adt.runtime as rt
from adt.exporter import METHOD_NAMES, TrainConfig, export_adt, get_method, train
from adt.exporter.data import tensor_loader
from adt.runtime.format import read_adt

torch.set_num_threads(1)


class UserNet(nn.Module):
    """A small user model: conv + BatchNorm + ReLU6, pooling, two linears with GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(256, 64)
        self.fc2 = nn.Linear(64, 5)

    def forward(self, x):
        x = self.pool(self.act(self.bn(self.conv(x))))
        return self.fc2(nn.functional.gelu(self.fc1(x.flatten(1))))


def _data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0].mean((1, 2)) > 0).long()
    return x, y


def _stored_kinds(path):
    f = read_adt(path)
    return f, {p.name: f.kind(p) for p in f.params if f.kind(p) != "plain"}


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_each_method_compresses_a_user_model_through_the_api(name, tmp_path):
    method = get_method(name)
    torch.manual_seed(0)
    model = UserNet()
    x, y = _data()
    loader = tensor_loader(x, y, 32, shuffle=True)
    if method.needs_dense:
        train(model, loader, TrainConfig(epochs=1, lr=0.01, threads=1), progress=False)
    plan = method.plan(model, 4.0)
    assert set(plan) == {"conv", "fc1", "fc2"} or set(plan) == {"fc1", "fc2"} or set(plan) <= {"conv", "fc1", "fc2"}
    plan, report = method.prepare(model, plan, loader, mtd_proxy="taylor", admm_epochs=1, rho=0.3,
                                  admm_update_every=2)
    assert (report is None) == (not method.needs_dense)
    method.apply(model, plan, seed=0)
    train(model, loader, TrainConfig(epochs=1, lr=0.01, threads=1), progress=False)
    out = tmp_path / f"{name}.adt"
    rep = export_adt(model, out, input_shape=(3, 8, 8), q=2048, method=name)
    assert rep.check.passed
    f, kinds = _stored_kinds(out)
    assert {k.rsplit(".", 1)[0] for k in kinds} == set(plan) and f.metadata["method"] == name
    expected = {"tucker": {"tucker"}, "cp": {"cp"}, "tt": {"tt"}, "mixed": {"tucker", "cp"}}[method.kind]
    assert set(kinds.values()) <= expected
    if name == "mtd":
        assert {f"{k}.weight": v for k, v in report.choices.items()} == kinds
    assert f.version == ((2, 0) if method.kind == "tt" else (1, 0))
    model.eval()
    with torch.no_grad():
        ref = model(x[:8]).numpy()
    got = rt.load(out).run(x[:8].numpy())
    # the file is the quantized model: close to torch, the same decisions on nearly all samples
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()


def test_prepare_needs_data_for_admm():
    from adt.exporter import PlanError

    model = UserNet()
    method = get_method("admm-tt")
    with pytest.raises(PlanError, match="training data"):
        method.prepare(model, method.plan(model, 4.0), None)
