"""The user's own model (issue 20 items 1, 5 and 7): --model specs and --model-args, whole saved models
(torch.export, TorchScript) lifted back to nn modules, checkpoints loaded with weights_only=True, the
default plan ratio, and the torchvision-structured resnet18 / mobilenet_v2 fixtures of research.zoo."""
import importlib.util
import sys
import textwrap
import uuid

import numpy as np
import pytest
import torch
from torch import nn

import adt.runtime as rt
from adt.exporter import (
    DEFAULT_RATIOS, MODELS, CheckpointError, ModelError, PlanError, apply_ada_tucker, build_model, default_target,
    export_adt, load_checkpoint, model_params, parse_model_args, plan_model, resolve_model,
)
from adt.exporter.export import quantized_model
from adt.exporter.planner import count_stored, plannable_layers
from adt.exporter.user_model import lift_exported_program
from adt.runtime.rebuild import rebuild_weights

from research import zoo

pytestmark = pytest.mark.filterwarnings("ignore")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


MYNET = """
    import torch
    from torch import nn
    from helpers import WIDTH          # a sibling module: the file's folder is on sys.path

    class MyNet(nn.Module):
        def __init__(self, num_classes=10, width=WIDTH):
            super().__init__()
            self.conv = nn.Conv2d(1, width, 3)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    def make_net(classes=3):
        return MyNet(num_classes=classes)

    def not_a_net():
        return 42
"""


@pytest.fixture
def mynet(tmp_path):
    write(tmp_path / "helpers.py", "WIDTH = 6\n")
    return write(tmp_path / "mynet.py", MYNET)


@pytest.fixture
def package(tmp_path, monkeypatch):
    """An importable package with a unique name (sys.modules caches by name across tests)."""
    name = f"umpkg_{uuid.uuid4().hex[:8]}"
    write(tmp_path / name / "__init__.py", "")
    write(tmp_path / name / "nets.py", """
        from torch import nn

        class Net(nn.Module):
            def __init__(self, hidden=8):
                super().__init__()
                self.fc1, self.fc2 = nn.Linear(4, hidden), nn.Linear(hidden, 2)

            def forward(self, x):
                return self.fc2(self.fc1(x).relu())

        INSTANCE = Net(hidden=5)
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# --------------------------------------------------------------------------------------------------
# --model-args
# --------------------------------------------------------------------------------------------------
def test_parse_model_args_reads_python_literals_and_command_line_words():
    got = parse_model_args("num_classes=10,width=0.5,name='x',flag=true, off=FALSE, none_=None, "
                           "sizes=(1, 2), tags=['a,b', 'c'], neg=-3")
    assert got == {"num_classes": 10, "width": 0.5, "name": "x", "flag": True, "off": False, "none_": None,
                   "sizes": (1, 2), "tags": ["a,b", "c"], "neg": -3}
    assert parse_model_args(None) == {} and parse_model_args("  ") == {}
    assert parse_model_args({"a": 1}) == {"a": 1}


@pytest.mark.parametrize("text, says", [
    ("10", "has no name"),
    ("a=1,a=2", "given twice"),
    ("act=relu", "quote strings"),
    ("a=1)", "key=value"),
    ("a=1)(b=2", "key=value"),
    ("**kw", "'**'"),
    ("a=[x for x in y]", "not a value"),
    ("a=1+foo()", "not a value"),
])
def test_parse_model_args_refuses_what_is_not_key_literal(text, says):
    with pytest.raises(ModelError, match="--model-args") as exc:
        parse_model_args(text)
    assert says in str(exc.value)


# --------------------------------------------------------------------------------------------------
# Spec forms
# --------------------------------------------------------------------------------------------------
def test_builtin_names_keep_working_with_shape_dataset_and_args():
    um = resolve_model("lenet5")
    assert um.source == "builtin" and um.input_shape == MODELS["lenet5"].input_shape and um.dataset == "mnist"
    assert type(um.module) is type(build_model("lenet5"))
    um7 = resolve_model("lenet5", "num_classes=7")
    assert um7.module(torch.zeros(2, 1, 28, 28)).shape == (2, 7) and um7.model_args == {"num_classes": 7}
    assert resolve_model("resnet20").input_shape == (3, 32, 32)


def test_file_spec_imports_by_path_with_sibling_imports_and_args(mynet):
    before = list(sys.path)
    um = resolve_model(f"{mynet}:MyNet", "num_classes=4,width=3")
    assert sys.path == before  # the folder was on sys.path only while importing and building
    assert um.source == "file" and um.name == "MyNet" and um.input_shape is None
    assert um.module.conv.out_channels == 3 and um.module(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    assert resolve_model(f"{mynet}:MyNet").module.conv.out_channels == 6  # WIDTH from helpers.py
    factory = resolve_model(f"{mynet}:make_net", {"classes": 5})
    assert factory.module(torch.zeros(1, 1, 8, 8)).shape == (1, 5)
    alone = resolve_model(str(mynet))  # the file's one nn.Module class
    assert type(alone.module).__name__ == "MyNet"


def test_two_files_of_the_same_name_do_not_clash(tmp_path):
    a = write(tmp_path / "a" / "model.py", "from torch import nn\nclass Net(nn.Linear):\n"
                                           "    def __init__(self):\n        super().__init__(2, 3)\n")
    b = write(tmp_path / "b" / "model.py", "from torch import nn\nclass Net(nn.Linear):\n"
                                           "    def __init__(self):\n        super().__init__(4, 5)\n")
    ma, mb = resolve_model(f"{a}:Net").module, resolve_model(f"{b}:Net").module
    assert ma.weight.shape == (3, 2) and mb.weight.shape == (5, 4)
    assert type(ma).__module__ != type(mb).__module__


def test_module_specs_colon_dotted_and_instance(package):
    um = resolve_model(f"{package}.nets:Net", "hidden=16")
    assert um.source == "module" and um.module.fc1.out_features == 16
    dotted = resolve_model(f"{package}.nets.Net")
    assert dotted.module.fc1.out_features == 8
    inst = resolve_model(f"{package}.nets:INSTANCE")
    assert inst.module.fc1.out_features == 5
    with pytest.raises(ModelError, match="module instance"):
        resolve_model(f"{package}.nets:INSTANCE", "hidden=3")


def test_module_spec_finds_a_file_in_the_current_directory(tmp_path, monkeypatch):
    name = f"cwdnet_{uuid.uuid4().hex[:8]}"
    write(tmp_path / f"{name}.py", "from torch import nn\nclass Net(nn.Linear):\n"
                                    "    def __init__(self, n=3):\n        super().__init__(2, n)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    before = list(sys.path)
    assert resolve_model(f"{name}:Net", "n=4").module.out_features == 4
    assert resolve_model(f"{name}.Net").module.out_features == 3
    assert sys.path == before


def test_research_zoo_resnet18_and_mobilenet_v2_from_their_specs():
    um = resolve_model("research.zoo:resnet18", "num_classes=10")
    with torch.no_grad():
        assert um.module.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    mb = resolve_model("research.zoo.mobilenet_v2", "num_classes=10,width_mult=0.5")
    with torch.no_grad():
        assert mb.module.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert isinstance(um.module.layer4[1].conv2, nn.Conv2d) and isinstance(mb.module.classifier[1], nn.Linear)


def test_zoo_fixtures_have_torchvisions_parameter_counts():
    # torchvision's documented sizes: resnet18 11,689,512 and mobilenet_v2 3,504,872 parameters
    assert sum(p.numel() for p in zoo.resnet18().parameters()) == 11_689_512
    assert sum(p.numel() for p in zoo.mobilenet_v2().parameters()) == 3_504_872
    with pytest.raises(ValueError, match="weights=None"):
        zoo.resnet18(weights="DEFAULT")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision not installed")
def test_zoo_fixtures_match_real_torchvision():  # runs in .venv-tv (research/torchvision/setup_venv.sh)
    try:
        import torchvision
    except Exception as exc:  # noqa: BLE001 - PyPI's CUDA torchvision fails to import on CPU torch
        pytest.skip(f"torchvision does not import: {exc}")
    for name, kw in (("resnet18", {"num_classes": 10}), ("mobilenet_v2", {"num_classes": 10, "width_mult": 0.5})):
        tv, ours = getattr(torchvision.models, name)(**kw).eval(), getattr(zoo, name)(**kw).eval()
        assert [(k, v.shape) for k, v in tv.state_dict().items()] == [(k, v.shape) for k, v in ours.state_dict().items()]
        ours.load_state_dict(tv.state_dict())
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(tv(x), ours(x))


@pytest.mark.parametrize("spec, says", [
    ("{dir}/absent.py:Net", "does not exist"),
    ("{dir}/broken.py:Net", "importing .* failed: ImportError: no helper here"),
    ("{dir}/mynet.py:MyNett", "has no 'MyNett' \\(did you mean 'MyNet'\\?\\); its nn.Module classes and callables: "
                              "make_net, not_a_net, MyNet"),
    ("{dir}/mynet.py:not_a_net", "not_a_net\\(\\.\\.\\.\\) returned a int, not a torch.nn.Module"),
    ("{dir}/mynet.py:WIDTH", "WIDTH is a int, not an nn.Module class"),
    ("{dir}/helpers.py", "defines 0 nn.Module classes"),
    ("no_such_module_xyz:Net", "no module named 'no_such_module_xyz'"),
    ("lenet6", "is unknown: give a built-in model \\(lenet5"),
    ("{dir}/mynet.py:1abc", "'1abc' after ':' is not a Python name"),
    ("{dir}/absent.pt2", "does not exist"),
])
def test_bad_specs_name_the_spec_and_what_failed(spec, says, mynet):
    write(mynet.parent / "broken.py", "raise ImportError('no helper here')\n")
    spec = spec.format(dir=mynet.parent)
    with pytest.raises(ModelError, match=says) as exc:
        resolve_model(spec)
    assert repr(spec) in str(exc.value)


def test_bad_model_args_show_the_signature(mynet):
    with pytest.raises(ModelError, match=r"does not take these arguments .*'depth'.*MyNet\(num_classes=10, width=6\)"):
        resolve_model(f"{mynet}:MyNet", "depth=3")
    with pytest.raises(ModelError, match=r"MyNet\(width='x'\) failed: TypeError"):
        resolve_model(f"{mynet}:MyNet", "width='x'")
    with pytest.raises(ModelError, match="is a module; name the model in it as research.zoo:NAME"):
        resolve_model("research.zoo")


# --------------------------------------------------------------------------------------------------
# Whole saved models
# --------------------------------------------------------------------------------------------------
class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, groups=2, bias=False)
        self.block = nn.Sequential(nn.Conv1d(16, 16, 3, padding=1), nn.ReLU())
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        x = self.block(x.flatten(2))          # [N, 16, L] through a Conv1d
        return self.fc(self.drop(x.mean(2)))


def trained_small_net() -> SmallNet:
    torch.manual_seed(0)
    m = SmallNet()
    m.train()
    with torch.no_grad():  # BatchNorm statistics away from their initial 0 / 1
        m(torch.randn(16, 3, 12, 12) * 2 + 1)
    return m.eval()


def exported(m: nn.Module, path, dynamic=True, shape=(3, 12, 12)):
    ds = ({0: torch.export.Dim("batch")},) if dynamic else None
    ep = torch.export.export(m, (torch.randn(2, *shape),), dynamic_shapes=ds)
    torch.export.save(ep, str(path))
    return ep


@pytest.fixture(scope="module")
def net_pt2(tmp_path_factory):
    """trained_small_net() exported once with a dynamic batch (each test resolves its own copy)."""
    path = tmp_path_factory.mktemp("pt2") / "net.pt2"
    exported(trained_small_net(), path)
    return path


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


def test_exported_program_is_lifted_to_nn_modules_that_compute_the_same(net_pt2):
    m = trained_small_net()
    um = resolve_model(str(net_pt2))
    g = um.module
    assert um.source == "exported-program" and um.input_shape == (3, 12, 12) and um.name == "net"
    assert g.training  # like a freshly built model
    for path, cls in (("conv1", nn.Conv2d), ("bn1", nn.BatchNorm2d), ("conv2", nn.Conv2d), ("block.0", nn.Conv1d),
                      ("fc", nn.Linear)):
        assert type(g.get_submodule(path)) is cls, path
    assert g.conv2.groups == 2 and g.conv2.stride == (2, 2) and g.conv2.bias is None
    assert plannable_layers(g, 1) == plannable_layers(m, 1)
    assert set(g.state_dict()) == set(m.state_dict())
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in g.state_dict().items())
    g.eval()
    x = torch.randn(5, 3, 12, 12)  # another batch size than the export's
    with torch.no_grad():
        assert rel_diff(m(x), g(x)) <= 1e-6


def test_lifted_batchnorm_and_dropout_follow_train_and_eval(net_pt2):
    g = resolve_model(str(net_pt2)).module
    x = torch.randn(4, 3, 12, 12)
    g.train()
    before = g.bn1.running_mean.clone()
    out1, out2 = g(x), g(x)
    assert not torch.equal(g.bn1.running_mean, before)  # train mode updates the statistics ...
    assert not torch.equal(out1, out2)                   # ... and dropout is random
    g.eval()
    frozen = g.bn1.running_mean.clone()
    with torch.no_grad():
        assert torch.equal(g(x), g(x)) and torch.equal(g.bn1.running_mean, frozen)
    loss = g.train()(x).square().mean()
    loss.backward()
    assert g.conv1.weight.grad is not None and g.fc.weight.grad is not None


def test_decomposed_exported_program_is_lifted_too(tmp_path):
    # core ATen: convolution, addmm(bias, x, t(weight)), _native_batch_norm_legit_no_training
    m = trained_small_net()
    ep = torch.export.export(m, (torch.randn(2, 3, 12, 12),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},)).run_decompositions()
    g, shape = lift_exported_program(ep)
    assert shape == (3, 12, 12)
    assert {n: type(g.get_submodule(n)) for n in ("conv1", "bn1", "conv2", "block.0", "fc")} == {
        "conv1": nn.Conv2d, "bn1": nn.BatchNorm2d, "conv2": nn.Conv2d, "block.0": nn.Conv1d, "fc": nn.Linear}
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        assert rel_diff(m(x), g.eval()(x)) <= 1e-6


def test_static_batch_program_is_accepted_when_the_graph_is_batch_free(tmp_path):
    m = trained_small_net()
    exported(m, tmp_path / "static.pt2", dynamic=False)
    g = resolve_model(str(tmp_path / "static.pt2")).module.eval()
    x = torch.randn(7, 3, 12, 12)
    with torch.no_grad():
        assert rel_diff(m(x), g(x)) <= 1e-6


def test_static_batch_program_with_a_baked_batch_size_is_refused(tmp_path):
    class Baked(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            return self.fc(x.reshape(x.shape[0], -1))  # traced with a fixed batch: reshape(x, [2, -1])

    exported(Baked().eval(), tmp_path / "baked.pt2", dynamic=False, shape=(3, 4))
    with pytest.raises(ModelError, match="fixed batch size of 2.*dynamic_shapes"):
        resolve_model(str(tmp_path / "baked.pt2"))


def test_compress_train_and_export_a_lifted_program(tmp_path, net_pt2):
    um = resolve_model(str(net_pt2))
    g = um.module
    plan = plan_model(g, 2.0)
    assert plan  # the planner sees the lifted layers
    apply_ada_tucker(g, plan, seed=0)
    zoo.train_briefly(g, torch.randn(8, 3, 12, 12))
    path = tmp_path / "net.adt"
    rep = export_adt(g, path, input_shape=um.input_shape, q=4096)
    assert rep.check.passed and path.stat().st_size == rep.file_bytes
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        ref = quantized_model(g, dict(rebuild_weights(path)))(x).numpy()
    out = rt.load(path).run(x.numpy())
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_checkpoint_of_the_original_model_loads_into_the_lifted_program(tmp_path):
    m = trained_small_net()
    exported(SmallNet().eval(), tmp_path / "fresh.pt2")  # other weights than m
    torch.save(m.state_dict(), tmp_path / "dense.pt")
    g = resolve_model(str(tmp_path / "fresh.pt2")).module.eval()
    load_checkpoint(g, tmp_path / "dense.pt")
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert rel_diff(m(x), g(x)) <= 1e-6


def test_torchscript_is_converted_and_lifted(tmp_path):
    m = trained_small_net()
    for how, ts in (("script", torch.jit.script(m)), ("trace", torch.jit.trace(m, (torch.randn(2, 3, 12, 12),)))):
        path = tmp_path / f"{how}.pt"
        torch.jit.save(ts, str(path))
        um = resolve_model(str(path), input_shape=(3, 12, 12))
        g = um.module
        assert um.source == "torchscript" and um.input_shape == (3, 12, 12)
        assert plannable_layers(g, 1) == plannable_layers(m, 1), how
        assert dict(g.named_parameters()).keys() == dict(m.named_parameters()).keys(), how
        x = torch.randn(4, 3, 12, 12)
        with torch.no_grad():
            assert rel_diff(m(x), g.eval()(x)) <= 1e-6, how


def test_torchscript_without_input_shape_or_with_untrainable_weights_is_refused(tmp_path):
    path = tmp_path / "net.ts"
    # traced, not scripted: the previous test scripts this class already, and a second torch.jit.script of
    # it failed once in a clean-clone CI run inside torch's own Conv2d compile (a TorchScript flake)
    torch.jit.save(torch.jit.trace(trained_small_net(), (torch.randn(2, 3, 12, 12),)), str(path))
    with pytest.raises(ModelError, match="TorchScript file keeps no example input"):
        resolve_model(str(path))

    class Rnn(nn.Module):  # the converter turns a scripted LSTM's weights into constants
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    torch.jit.save(torch.jit.script(Rnn().eval()), str(tmp_path / "rnn.ts"))
    with pytest.raises(ModelError, match=r"turned 4 parameters \(rnn.weight_ih_l0.*constants that would not train"):
        resolve_model(str(tmp_path / "rnn.ts"), input_shape=(5, 4))


def test_a_checkpoint_or_args_given_as_a_saved_model_are_refused(tmp_path, net_pt2):
    torch.save(build_model("lenet5").state_dict(), tmp_path / "dense.pt")
    with pytest.raises(ModelError, match="torch.save file .*--from-checkpoint"):
        resolve_model(str(tmp_path / "dense.pt"))
    with pytest.raises(ModelError, match="takes no --model-args"):
        resolve_model(str(net_pt2), "num_classes=3")
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="neither a torch.export"):
        resolve_model(str(tmp_path / "junk.pt2"))


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------
def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrap", ["raw", "model", "state_dict", "ddp", "compiled"])
def test_load_checkpoint_forms(tmp_path, wrap):
    torch.manual_seed(1)
    src = build_model("lenet5")
    sd = src.state_dict()
    obj = {"raw": sd, "model": {"model": sd, "epoch": 3, "log": [{"acc": 0.9}]}, "state_dict": {"state_dict": sd},
           "ddp": {f"module.{k}": v for k, v in sd.items()},
           "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()}}[wrap]
    torch.save(obj, tmp_path / "c.pt")
    dst = build_model("lenet5")
    got = load_checkpoint(dst, tmp_path / "c.pt")
    assert_same_weights(src, dst)
    assert got.missing == () and got.unexpected == ()
    assert got.container_key == (wrap if wrap in ("model", "state_dict") else None)
    assert got.stripped_prefix == {"ddp": "module.", "compiled": "_orig_mod."}.get(wrap, "")


def test_strict_mismatch_names_up_to_five_keys_with_counts(tmp_path):
    sd = build_model("resnet20").state_dict()
    missing = [k for k in sd if k.startswith("layers.")][:7]
    for k in missing:
        del sd[k]
    sd["head.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "c.pt")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(build_model("resnet20"), tmp_path / "c.pt")
    text = str(exc.value)
    assert f"7 missing keys ({', '.join(missing[:5])}, ... (2 more))" in text
    assert "1 unexpected key (head.weight)" in text and "ResNet20" in text


def test_non_strict_loads_the_matching_keys_and_reports_the_rest(tmp_path):
    torch.manual_seed(2)
    src = build_model("lenet5")
    sd = src.state_dict()
    del sd["fc2.bias"]
    sd["extra.weight"] = torch.ones(2)
    torch.save(sd, tmp_path / "c.pt")
    dst = build_model("lenet5")
    got = load_checkpoint(dst, tmp_path / "c.pt", strict=False)
    assert got.missing == ("fc2.bias",) and got.unexpected == ("extra.weight",)
    assert torch.equal(dst.conv1.weight, src.conv1.weight) and torch.equal(dst.fc2.weight, src.fc2.weight)


def test_shape_mismatch_is_refused_even_when_not_strict(tmp_path):
    torch.save(build_model("lenet5").state_dict(), tmp_path / "c.pt")
    small = resolve_model("lenet5", "num_classes=3").module
    for strict in (True, False):
        with pytest.raises(CheckpointError, match=r"2 shape mismatches \(fc2.weight: checkpoint \[10, 500\], "
                                                  r"model \[3, 500\], fc2.bias"):
            load_checkpoint(small, tmp_path / "c.pt", strict=strict)


class Payload:
    """Unpickling this would run code: it creates ``marker`` (the test checks that it never does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran.txt"
    torch.save({"model": build_model("lenet5").state_dict(), "hook": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="may execute code .* refused"):
        load_checkpoint(build_model("lenet5"), tmp_path / "evil.pt")
    assert not marker.exists()
    torch.save(build_model("lenet5"), tmp_path / "whole.pt")  # a pickled module, not a state_dict
    with pytest.raises(CheckpointError, match="a pickled adt.exporter.models.LeNet5.*weights_only=False"):
        load_checkpoint(build_model("lenet5"), tmp_path / "whole.pt")


def test_unreadable_or_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(build_model("lenet5"), tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read as a torch.save file"):
        load_checkpoint(build_model("lenet5"), tmp_path / "junk.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="holds a dict with keys 'epoch', 'lr', not a state_dict"):
        load_checkpoint(build_model("lenet5"), tmp_path / "meta.pt")


# --------------------------------------------------------------------------------------------------
# The default target
# --------------------------------------------------------------------------------------------------
def meets(model: nn.Module, ratio: float) -> bool:
    try:
        plan = plan_model(model, ratio)
    except PlanError:
        return False
    return bool(plan) and model_params(model, plan) <= int(count_stored(model) / ratio)


@pytest.mark.parametrize("make", [lambda: build_model("lenet5"), lambda: build_model("resnet20"),
                                  zoo.MobileNetV3, zoo.ShuffleNetV2, lambda: zoo.mobilenet_v2(num_classes=10)],
                         ids=["lenet5", "resnet20", "zoo-mobilenet_v3", "zoo-shufflenet_v2", "mobilenet_v2"])
def test_default_target_is_the_first_ratio_the_planner_meets(make):
    model = make()
    ratio = default_target(model)
    i = DEFAULT_RATIOS.index(ratio)
    assert meets(model, ratio)
    assert not any(meets(model, r) for r in DEFAULT_RATIOS[:i])


def test_default_target_is_10x_for_the_big_builtins():
    assert default_target(build_model("lenet5")) == 10.0 == DEFAULT_RATIOS[0]
    assert default_target(build_model("resnet20")) == 10.0


def test_default_target_refuses_a_model_with_nothing_to_compress():
    with pytest.raises(PlanError, match="no default target fits.*rnn \\(LSTM"):
        default_target(zoo.Recurrent(nn.LSTM))
