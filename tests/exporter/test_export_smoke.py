"""CI smoke test on real MNIST: a few hundred steps on a subset, loss falls, the file decodes and scores."""
import numpy as np
import torch

from adt.exporter.data import mnist_loaders, mnist_test_set
from adt.exporter.export import export_adt
from adt.exporter.models import build_model
from adt.exporter.planner import PRESETS
from adt.exporter.fit import TrainConfig, train
from adt.exporter.factorize import apply_ada_tucker
from adt.runtime.format import read_adt
import adt.runtime as rt


def test_mnist_smoke(tmp_path, mnist_dir):
    torch.manual_seed(0)
    model = build_model("lenet5")
    apply_ada_tucker(model, dict(PRESETS["lenet5-ada"]), seed=0)
    train_loader, _ = mnist_loaders(mnist_dir, batch_size=64, subset=6400, seed=0)
    res = train(model, train_loader, TrainConfig(epochs=3, lr=0.01, batch_size=64, max_steps=250, seed=0),
                progress=False)
    assert res.steps == 250
    first, last = np.mean(res.losses[:25]), np.mean(res.losses[-25:])
    assert last < 0.5 * first, (first, last)
    x, y = mnist_test_set(mnist_dir)
    x, y = x[:2000], y[:2000]
    path = tmp_path / "smoke.adt"
    rep = export_adt(model, path, input_shape=(1, 28, 28), q={"cores": 512, "factors": 512, "other": 64},
                     test_data=(x, y), model_name="lenet5")
    f = read_adt(path)
    assert f.file_size == rep.file_bytes and len(f.cores) == 4 and f.architecture
    assert rep.acc_float > 0.8 and rep.acc_quantized > 0.8
    acc = float((rt.load(path).run(x).argmax(axis=1) == y).mean())  # scored from the file alone
    assert abs(acc - rep.acc_quantized) <= 1e-3
