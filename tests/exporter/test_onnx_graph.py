"""The architecture contract (COMMON.md): no weights in the graph, names, dynamic batch, runnable."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from adt.exporter.batchnorm import inference_tensors
from adt.exporter.errors import ModelError
from adt.exporter.models import MODELS, build_model
from adt.exporter.onnx_graph import (
    check_exportable,
    OPSET, architecture_bytes, frozen_copy, referenced_tensors, with_weights,
)
from adt.exporter.planner import LayerPlan
from adt.exporter.factorize import apply_ada_tucker, apply_scada_tucker

PAPER_LENET5 = {
    "conv1": LayerPlan((25, 20), (5, 5)), "conv2": LayerPlan((50, 25, 20), (5, 5, 5)),
    "fc1": LayerPlan((40, 25, 20, 20), (5, 5, 5, 5)), "fc2": LayerPlan((25, 20, 10), (5, 5, 5)),
}


def tucker_lenet5(scada=False):
    torch.manual_seed(0)
    m = build_model("lenet5")
    (apply_scada_tucker if scada else apply_ada_tucker)(m, PAPER_LENET5, seed=0)
    return m.eval()


def resnet20_with_stats():
    torch.manual_seed(1)
    m = build_model("resnet20")
    apply_ada_tucker(m, {"layers.3.conv2": LayerPlan((32, 32, 9), (4, 4, 3))}, seed=1)
    with torch.no_grad():  # non-trivial BN statistics so BN really matters in the comparison
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


def _run(arch, weights, x):
    sess = ort.InferenceSession(with_weights(arch, weights), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


@pytest.mark.parametrize("name,maker", [("lenet5", tucker_lenet5), ("lenet5-scada", lambda: tucker_lenet5(True)),
                                        ("resnet20", resnet20_with_stats)])
def test_contract_and_onnxruntime_matches_torch(name, maker):
    model = maker()
    shape = MODELS[name.split("-")[0]].input_shape
    arch = architecture_bytes(model, shape)
    proto = onnx.load_from_string(arch)
    g = proto.graph
    frozen = frozen_copy(model)
    params = inference_tensors(frozen)
    # no parameter initializers, no float initializers at all, only `input` as graph input
    assert not any(t.name in params for t in g.initializer)
    assert all(t.data_type != onnx.TensorProto.FLOAT for t in g.initializer)
    assert [i.name for i in g.input] == ["input"] and [o.name for o in g.output] == ["output"]
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert g.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim[1:]] == list(shape)
    # every stored tensor is referenced by its PyTorch name (BN as Mul/Add with its scale and shift)
    assert referenced_tensors(arch) == set(params)
    # stripped
    assert proto.producer_name == "" and proto.doc_string == "" and not proto.metadata_props
    assert not g.value_info and all(n.name == "" and n.doc_string == "" for n in g.node)
    assert all(op.version <= OPSET for op in proto.opset_import if op.domain in ("", "ai.onnx"))
    intermediate = {o for n in g.node for o in n.output} - {"output"}
    assert all(len(s) <= 3 for s in intermediate)
    if name == "resnet20":
        assert not any(n.op_type == "BatchNormalization" for n in g.node)
        assert sum(n.op_type == "Mul" and n.input[1].endswith(".bn_scale") for n in g.node) == 21
        assert sum(n.op_type == "Add" and n.input[1].endswith(".bn_shift") for n in g.node) == 21
    onnx.checker.check_model(onnx.load_from_string(with_weights(arch, {k: v.numpy() for k, v in params.items()})))
    weights = {k: v.numpy() for k, v in params.items()}
    for n in (1, 64):
        x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_run(arch, weights, x), ref, rtol=1e-4, atol=1e-4)


def test_frozen_copy_leaves_the_original_parametrized():
    model = tucker_lenet5()
    x = torch.randn(3, 1, 28, 28)
    before = model(x)
    frozen = frozen_copy(model)
    architecture_bytes(model, (1, 28, 28))
    assert torch.allclose(model(x), before) and torch.allclose(frozen(x), before, atol=1e-5)
    assert "conv1.weight" in frozen.state_dict() and "conv1.parametrizations.weight.original" in model.state_dict()


def test_fresh_batchnorm_has_no_identity_dedup():
    # a fresh BN has weight == running_var == ones: the TorchScript exporter dedups them via Identity
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 3)).eval()
    arch = architecture_bytes(m, (1, 28, 28))
    g = onnx.load_from_string(arch).graph
    assert not any(n.op_type == "Identity" for n in g.node)
    assert {"1.bn_scale", "1.bn_shift"} <= referenced_tensors(arch)
    assert not {"1.running_var", "1.weight", "1.running_mean", "1.bias"} & referenced_tensors(arch)


def test_rename_and_deterministic():
    model = tucker_lenet5()
    rename = {"conv1.weight": "a", "conv1.bias": "b"}
    arch = architecture_bytes(model, (1, 28, 28), rename)
    refs = referenced_tensors(arch)
    assert {"a", "b"} <= refs and "conv1.weight" not in refs
    assert arch == architecture_bytes(model, (1, 28, 28), rename)


class FixedBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.reshape(2, 784))


class Sigmoidal(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return torch.sigmoid(self.fc(torch.flatten(x, 1)))


def test_fixed_batch_reshape_is_refused():
    with pytest.raises(ModelError, match="batch"):
        architecture_bytes(FixedBatch(), (1, 28, 28))


def test_every_op_of_the_numpy_engine_is_accepted():
    # the exporter's list is the engine's registry, so it cannot drift (Sigmoid was refused before)
    from adt.exporter.onnx_graph import RUNTIME_OPS
    from adt.runtime.numpy_engine import OPS

    assert RUNTIME_OPS == frozenset(OPS)
    architecture_bytes(Sigmoidal(), (1, 28, 28))


def test_compact_architecture_without_default_attributes_still_runs():
    from adt.exporter.export import compact_name_map, strip_default_attributes
    from adt.exporter.onnx_graph import architecture_model

    model = resnet20_with_stats()
    names = list(inference_tensors(frozen_copy(model)))
    rename = compact_name_map(names)
    proto = architecture_model(model, (3, 32, 32), rename)
    full = len(proto.SerializeToString())
    strip_default_attributes(proto)
    arch = proto.SerializeToString()
    assert len(arch) < full
    g = proto.graph
    assert not any(a.name in ("dilations", "group") for n in g.node for a in n.attribute)
    assert any(a.name == "pads" for n in g.node if n.op_type == "Conv" for a in n.attribute)  # non-default kept
    weights = {rename[k]: v.numpy() for k, v in inference_tensors(frozen_copy(model)).items()}
    x = np.random.default_rng(3).standard_normal((5, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(arch, weights, x), ref, rtol=1e-4, atol=1e-4)


class _Det(nn.Module):
    def forward(self, x):
        return torch.linalg.det(x)


def test_check_exportable_names_the_layer_before_any_work():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), _Det()), nn.Flatten())
    with pytest.raises(ModelError, match=r"layer '1\.1' needs op 'Det'"):
        check_exportable(m, (1, 5, 5))
    check_exportable(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten()), (1, 5, 5))


def test_torch_exporter_refusal_is_one_typed_line():
    """VGG's AdaptiveAvgPool2d((7, 7)) on a 2x2 map: torch's ONNX exporter raises its own error type with
    an IR dump; ADT turns it into one ModelError line that says torch's exporter refused the op."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(), nn.Linear(196, 2))
    with pytest.raises(ModelError, match="torch's ONNX exporter refused the model.*adaptive_avg_pool2d") as info:
        check_exportable(model, (3, 2, 2))
    assert "\n" not in str(info.value)
