"""BatchNorm in the exporter: the stored affine form and the recalibration after compression."""
import numpy as np
import pytest
import torch
from torch import nn

from adt.exporter.batchnorm import affine_tensors, inference_tensors, recalibrate_batchnorm_
from adt.exporter.errors import ModelError
from adt.exporter.factorize import apply_ada_tucker, frozen_copy
from adt.exporter.planner import LayerPlan


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout(0.5),
                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def test_affine_form_equals_eval_batchnorm():
    m = _net().eval()
    with torch.no_grad():
        for bn in (m[1], m[5]):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.001, 4.0)
            bn.weight.normal_()
            bn.bias.normal_()
    aff = affine_tensors(m)
    x = torch.randn(5, 16, 4, 4, dtype=torch.float64)
    y = m[1].double()(x)
    ref = x * aff["1.bn_scale"].double() + aff["1.bn_shift"].double()
    assert torch.allclose(y, ref, rtol=1e-6, atol=1e-6)
    names = list(inference_tensors(frozen_copy(m)))
    assert names.index("1.bn_scale") == names.index("0.bias") + 1 and not any("running" in n for n in names)


def test_recalibration_gives_the_exact_statistics_of_the_compressed_activations():
    m = _net()
    apply_ada_tucker(m, {"4": LayerPlan((16, 16, 9), (4, 4, 3))}, init="hooi")  # changes what bn 5 sees
    rng = np.random.default_rng(0)
    data = [(torch.from_numpy(rng.standard_normal((8, 3, 6, 6)).astype(np.float32)), torch.zeros(8)) for _ in range(5)]
    assert recalibrate_batchnorm_(m, data, batches=4) == 4
    assert m[1].training and m[3].training and m[1].momentum == 0.1  # modes (train, as built) and momentum restored
    # torch's rule (as swa_utils.update_bn): during the pass every BatchNorm normalizes with its batch's
    # statistics, and the running ones become the plain average over the batches
    means, variances = [], []
    with torch.no_grad():
        for x, _ in data[:4]:
            a = m[0](x)
            a = (a - a.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(a.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
            a = a * m[1].weight.view(1, -1, 1, 1) + m[1].bias.view(1, -1, 1, 1)
            a = m[4](m[2](a))  # dropout off
            means.append(a.mean(dim=(0, 2, 3)))
            variances.append(a.var(dim=(0, 2, 3), unbiased=True))
    mean, var = torch.stack(means).mean(0), torch.stack(variances).mean(0)
    assert torch.allclose(m[5].running_mean, mean, atol=1e-5)
    assert torch.allclose(m[5].running_var, var, rtol=1e-4, atol=1e-5)


def test_recalibration_needs_data():
    with pytest.raises(ModelError, match="no batches"):
        recalibrate_batchnorm_(_net(), [], batches=3)
