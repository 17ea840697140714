"""Exporter -> .adt -> runtime, where the exporter is installed (skipped otherwise, e.g. on the device
or on the runtime branch alone): the runtime's rebuilt weights equal the exporter's own
dequantized-and-rebuilt weights to float32 rounding, and both engines match PyTorch running the
quantized model (outputs within 1e-4 relative, same predictions).

The models are Tucker-initialised (HOOI) but not trained: the check is about decoding and executing
the exported file exactly, which does not depend on training."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
export = pytest.importorskip("adt.exporter.export", reason="the exporter package is not installed here")
from adt.exporter.factorize import tucker_layers, tucker_to_tensor, cp_to_tensor  # noqa: E402
from adt.exporter.quantplan import inventory, make_quant_plan, weight_name  # noqa: E402

import adt.runtime as rt  # noqa: E402

CASES = [  # (model, preset, SCADA?, compact names?, input shape)
    ("lenet5", "lenet5-ada", False, False, (1, 28, 28)),
    ("lenet300", "lenet300-scada", True, True, (1, 28, 28)),
    ("resnet20", "resnet20-paper", False, False, (3, 32, 32)),
]


def _inputs(shape, mnist_dir) -> np.ndarray:
    if shape == (1, 28, 28) and mnist_dir is not None:
        from adt.runtime.mnist import load_mnist, normalize
        return normalize(load_mnist(mnist_dir, "test")[0][:256])
    return np.random.default_rng(0).standard_normal((64,) + shape).astype(np.float32)


@pytest.fixture(scope="module")
def mnist_or_none():
    import os
    from pathlib import Path
    p = Path(os.environ.get("ADT_DATA", Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"))
    return p if (p / "t10k-images-idx3-ubyte.gz").exists() else None


@pytest.mark.parametrize("name,preset,scada,compact,shape", CASES, ids=[c[0] for c in CASES])
def test_exported_file_runs_like_pytorch(tmp_path, mnist_or_none, name, preset, scada, compact, shape):
    from adt import exporter
    torch.manual_seed(0)
    model = exporter.build_model(name)
    (exporter.apply_scada_tucker if scada else exporter.apply_ada_tucker)(model, exporter.preset(preset))
    model.eval()
    if name == "resnet20":  # non-trivial BatchNorm statistics, so BN is really exercised
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    path = tmp_path / f"{name}.adt"
    report = export.export_adt(model, path, input_shape=shape, compact_names=compact)

    inv = inventory(model)
    plan = make_quant_plan(inv)
    deq = export.dequantized_weights(inv, plan)
    # An independent reference for the Tucker layers: torch's own rebuild (float64) of the fake-quantized
    # core and factors, the same numbers QAT trains through.
    for path_, _, tw in tucker_layers(model):
        name = weight_name(path_)
        core = plan.core_spec(inv.cores[inv.tucker[name].core].name)(tw.core.detach()).double()
        factors = [plan.param_spec(name)(f.detach()).double() for f in tw.factors]
        dense = cp_to_tensor(core, factors) if tw.cp else tucker_to_tensor(core, factors)
        deq[name] = dense.float().reshape(tw.shape).numpy()
    x = _inputs(shape, mnist_or_none)
    with torch.no_grad():
        y_torch = export.quantized_model(model, deq)(torch.from_numpy(x)).numpy()

    for engine in ("numpy", "onnxruntime"):
        if engine == "onnxruntime":
            pytest.importorskip("onnxruntime")
        m = rt.load(path, engine=engine)
        if engine == "numpy":
            stored = {report.names.get(k, k): v for k, v in deq.items()}
            assert set(m.weights) == set(stored)
            for k, w in m.weights.items():
                ref = stored[k]
                assert w.shape == ref.shape and w.dtype == np.float32
                diff = np.abs(w.view(np.int32).astype(np.int64) - ref.view(np.int32).astype(np.int64))
                assert diff.max() <= 1, (k, int(diff.max()))  # float32 rounding of the same float64 value
        y = m.run(x)
        assert y.shape == y_torch.shape
        assert np.abs(y - y_torch).max() <= 1e-4 * np.abs(y_torch).max(), engine
        assert np.array_equal(y.argmax(1), y_torch.argmax(1)), engine
