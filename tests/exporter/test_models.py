"""Built-in models: shapes, parameter counts, and that every plannable layer takes a Tucker form."""
import pytest
import torch
from torch import nn

from adt.exporter import MODELS, ModelError, apply_ada_tucker, build_model, count_params, freeze, plan_model

torch.set_num_threads(1)


@pytest.mark.parametrize("name,params", [("lenet5", 431080), ("lenet5-relu", 431080), ("lenet300", 266610),
                                         ("resnet20", 274042)])
def test_models_shapes_and_counts(name, params):
    model = build_model(name)
    assert count_params(model) == params
    y = model(torch.randn(3, *MODELS[name].input_shape))
    assert y.shape == (3, 10)


def test_lenet5_is_caffe_lenet5():
    m = build_model("lenet5")
    assert [type(l).__name__ for l in (m.conv1, m.conv2, m.fc1, m.fc2)] == ["Conv2d", "Conv2d", "Linear", "Linear"]
    assert m.conv1.weight.shape == (20, 1, 5, 5) and m.conv2.weight.shape == (50, 20, 5, 5)
    assert m.fc1.weight.shape == (500, 800) and m.fc2.weight.shape == (10, 500)


def test_resnet20_compresses_and_freezes():
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    apply_ada_tucker(model, plan_model(model, 8.0), seed=0)
    assert isinstance(model.layers[4].conv1, nn.Conv2d)
    y = model(x)
    freeze(model)
    torch.testing.assert_close(model(x), y)


def test_unknown_model():
    with pytest.raises(ModelError, match="lenet5"):
        build_model("alexnet")
    assert set(MODELS) == {"lenet5", "lenet5-relu", "lenet300", "resnet20"}


def test_lenet5_relu_differs_only_by_conv_relus(tmp_path):
    """Same weights as lenet5; a ReLU after each conv stage; its .adt runs in the torch-free runtime."""
    from adt.exporter import export_adt
    from adt.exporter.planner import preset
    from adt.runtime import load

    torch.manual_seed(0)
    plain, relu = build_model("lenet5"), build_model("lenet5-relu")
    relu.load_state_dict(plain.state_dict())
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        h = relu.pool1(relu.conv1(x))
        assert float(h.min()) >= 0 and float(plain.pool1(plain.conv1(x)).min()) < 0
        assert not torch.allclose(relu(x), plain(x))
    apply_ada_tucker(relu, preset("lenet5-ada"), seed=0)
    relu.eval()
    export_adt(relu, tmp_path / "r.adt", input_shape=MODELS["lenet5-relu"].input_shape, q=4096)
    out = load(tmp_path / "r.adt", engine="numpy").run(x.numpy())
    with torch.no_grad():
        ref = relu(x).numpy()
    assert (out.argmax(1) == ref.argmax(1)).all()
    assert abs(out - ref).max() < 0.05 * abs(ref).max()
