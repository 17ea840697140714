"""What the writer accepts, the reader reads (issue 19): random small models and export options give
files that load, and the runtime's outputs equal torch's on the file's own weights."""
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import adt.runtime as rt
from adt.exporter.export import ENGINE_TOLERANCE, export_adt
from adt.exporter.factorize import apply_ada_tucker
from adt.exporter.planner import plan_model
from adt.exporter.quantplan import GROUPINGS


@st.composite
def models(draw):
    torch.manual_seed(draw(st.integers(0, 2 ** 16)))
    c = c_in = draw(st.integers(1, 3))
    layers: list[nn.Module] = []
    for _ in range(draw(st.integers(1, 3))):
        out = draw(st.integers(2, 12))
        layers.append(nn.Conv2d(c, out, 3, padding=1, bias=draw(st.booleans())))
        if draw(st.booleans()):
            bn = nn.BatchNorm2d(out, affine=draw(st.booleans()))
            with torch.no_grad():
                bn.running_var.uniform_(1e-4, 5.0)
                bn.running_mean.normal_()
            layers.append(bn)
        layers.append(draw(st.sampled_from([nn.ReLU(), nn.ReLU6(), nn.Sigmoid(), nn.Identity()])))
        c = out
    layers += [nn.Flatten(), nn.Linear(c * 36, draw(st.integers(2, 10)))]
    m = nn.Sequential(*layers).eval()
    if draw(st.booleans()):
        apply_ada_tucker(m, plan_model(m, 2.0), seed=0)
    return m.eval(), (c_in, 6, 6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(), st.sampled_from(GROUPINGS), st.sampled_from([2, 7, 64, 512, 65536]),
       st.sampled_from(["floor", "nearest"]), st.sampled_from(["auto", "shared", "per_group"]), st.booleans())
def test_every_written_file_loads_and_matches_torch(model_and_shape, groups, q, rounding, tables, compact):
    model, shape = model_and_shape
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.adt"
        rep = export_adt(model, path, input_shape=shape, q=q, groups=groups, rounding=rounding, tables=tables,
                         compact_names=compact, force=True)  # force: q=2 may destroy the function
        assert rep.file_bytes == path.stat().st_size
        m = rt.load(path)
        assert rep.check.engine_divergence <= ENGINE_TOLERANCE  # runtime == torch on the file's weights
        x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
        assert np.all(np.isfinite(m.run(x)))
