"""Model zoo (issue 19): each architecture family of research/zoo.py (torchvision's layer structure,
small widths) is compressed, briefly trained on random labels, exported and run by both engines; the
runtime must equal torch running the file's dequantized weights to 1e-4 of the output scale. (An op
the runtime lacks is refused up front, naming the layer: tests/exporter/test_onnx_graph.py.)"""
import numpy as np
import pytest
import torch

import adt.runtime as rt
from adt.exporter import apply_ada_tucker, export_adt, plan_model
from adt.exporter.export import quantized_model
from adt.exporter.onnx_graph import check_exportable
from adt.runtime.rebuild import rebuild_weights

from research.zoo import FAMILIES, RATIOS, train_briefly

@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_compresses_exports_and_runs_on_both_engines(name, tmp_path):
    make, example = FAMILIES[name]
    torch.manual_seed(0)
    model = make()
    (x,) = example()
    check_exportable(model.eval(), examples=(x,))  # before any work
    plan = plan_model(model, RATIOS.get(name, 2.0))
    apply_ada_tucker(model, plan, seed=0)
    train_briefly(model, torch.cat([x] * 4))
    path = tmp_path / f"{name}.adt"
    rep = export_adt(model, path, example_inputs=(x,), q=4096)
    assert rep.check.passed and rep.file_bytes == path.stat().st_size and rep.true_ratio > 1.0
    with torch.no_grad():
        ref = quantized_model(model, {t: w for t, w in rebuild_weights(path).items()})(x).numpy()
    scale = np.abs(ref).max()
    for engine in ("numpy", "onnxruntime"):
        out = rt.load(path, engine=engine).run(x.numpy())
        assert np.abs(out - ref).max() <= 1e-4 * scale, engine
