"""`adt compress` and `adt demo`: options documented, one-line errors, real (tiny) runs."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adt.runtime.format import ENC_TUCKER, read_adt
from adt.tools.cli import main
from adt.tools.commands import compress as cmd_compress
from adt.tools.commands import demo as cmd_demo

ADT = [sys.executable, "-m", "adt.tools.cli"]


def _cli(args, env_extra=None, drop_env=()):
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    env.update(env_extra or {})
    return subprocess.run(ADT + args, capture_output=True, text=True, env=env, timeout=120)


def _options(module):
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return [s for a in p._actions for s in a.option_strings if s not in ("-h", "--help")]


@pytest.mark.parametrize("cmd,module", [("compress", cmd_compress), ("demo", cmd_demo)])
def test_help_lists_every_option(cmd, module):
    # the sub-parser exactly as tools/cli.py builds it
    p = argparse.ArgumentParser(prog=f"adt {cmd}")
    module.add_arguments(p)
    text = p.format_help()
    opts = _options(module)
    assert len(opts) >= (25 if cmd == "compress" else 9)
    for opt in opts:
        assert opt in text, opt
    assert all(a.help for a in p._actions)


@pytest.mark.parametrize("cmd,module", [("compress", cmd_compress), ("demo", cmd_demo)])
def test_cli_help_shows_the_options(cmd, module, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in _options(module):
        assert opt in text, opt


def test_brief_options_exist():
    opts = set(_options(cmd_compress))
    for o in ("--model", "--data", "--method", "--preset", "--target", "--plan", "--init", "--from-checkpoint",
              "--epochs", "--lr", "--batch-size", "--decay-every", "--q", "--b", "--qat-epochs", "--tables",
              "--threads", "--seed", "--checkpoint", "--resume", "--subset", "-o", "--json"):
        assert o in opts, o


def _one_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_subprocess_errors_are_one_line(tmp_path, mnist_dir):
    r = _cli(["compress", "--preset", "lenet5-ada", "-o", str(tmp_path / "x.adt")], drop_env=("ADT_DATA",))
    line = _one_line(r.stderr)
    assert r.returncode == 1 and "--data" in line and "ADT_DATA" in line
    r = _cli(["compress", "--preset", "lenet5-ada", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "x.adt")])
    line = _one_line(r.stderr)
    assert r.returncode == 1 and "nope" in line
    r = _cli(["compress", "--preset", "lenet5-ada", "--epochs", "many", "-o", str(tmp_path / "x.adt")])
    line = _one_line(r.stderr)
    assert r.returncode == 2 and "--epochs" in line


@pytest.mark.parametrize("argv,needle", [
    (["--method", "cp-als"], "--method"),
    (["--groups", "layer"], "--groups"),
    (["--init", "svd"], "--init"),
    (["--tables", "many"], "--tables"),
])
def test_values_outside_the_registries_are_usage_errors(argv, needle, tmp_path, mnist_dir, capsys):
    """Options with a fixed set of values take argparse ``choices`` from the module that owns the set
    (adt.exporter.METHODS / GROUPINGS / INITS, adt.runtime.format.TABLE_POLICIES): a value
    outside it is a usage error, one line, exit status 2, listing the choices."""
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--data", str(mnist_dir), "--epochs", "0", *argv, "-o", str(tmp_path / "x.adt")])
    assert exc.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert needle in line and "invalid choice" in line
    assert not (tmp_path / "x.adt").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--preset", "nope"], "preset"),
    (["--preset", "lenet300-ada"], "lenet300"),
    (["--target", "lots"], "--target"),
    (["--target", "-3"], "--target"),
    (["--preset", "lenet5-ada", "--target", "2600"], "one of --preset, --target"),
    (["--model", "vgg"], "--model 'vgg' is unknown"),
    (["--preset", "lenet5-ada", "--q", "cores=512,weights=3"], "--q"),
    (["--preset", "lenet5-ada", "--q", "0"], "Q"),
    (["--preset", "lenet5-ada", "--b-rule", "median"], "b rule"),
    (["--preset", "lenet5-ada", "--plan", "missing.json"], "--plan"),
    (["--preset", "lenet5-ada", "--from-checkpoint", "missing.pt"], "--from-checkpoint"),
    (["--preset", "lenet5-ada", "--resume"], "--checkpoint"),
    (["--preset", "lenet5-ada", "--epochs", "-1"], "--epochs"),
    (["--target", "10"], "too small"),
    (["--preset", "lenet5-ada", "--weight-decay", "-0.1"], "--weight-decay"),
    (["--preset", "lenet5-ada", "--label-smoothing", "1"], "--label-smoothing"),
    (["--preset", "lenet5-ada", "--distill", "0.9"], "--from-checkpoint"),
    (["--preset", "lenet5-ada", "--distill", "1.5"], "--distill"),
    (["--preset", "lenet5-ada", "--temperature", "0"], "--temperature"),
    (["--preset", "lenet5-ada", "--qat-rate-weight=-1e-4"], "--qat-rate-weight"),
    (["--preset", "lenet5-ada", "--qat-rate-weight", "1e-4"], "--qat-epochs"),
])
def test_bad_options_one_line(argv, needle, tmp_path, mnist_dir, capsys):
    code = main(["compress", "--data", str(mnist_dir), "--epochs", "0", *argv, "-o", str(tmp_path / "x.adt")])
    err = capsys.readouterr().err
    assert code == 1
    assert needle in _one_line(err)
    assert not (tmp_path / "x.adt").exists()


def test_bad_output_folder(tmp_path, mnist_dir, capsys):
    code = main(["compress", "--data", str(mnist_dir), "--preset", "lenet5-ada", "--epochs", "0",
                 "-o", str(tmp_path / "no" / "x.adt")])
    assert code == 1 and "does not exist" in _one_line(capsys.readouterr().err)


def test_compress_tiny_run(tmp_path, mnist_dir, capsys):
    out = tmp_path / "s.adt"
    code = main(["compress", "--data", str(mnist_dir), "--preset", "lenet5-scada", "--epochs", "1", "--subset", "768",
                 "--batch-size", "128", "--qat-epochs", "1", "--q", "cores=256,factors=256,other=32",
                 "--rounding", "nearest", "--qat-schedule", "cosine", "--compact-names", "--threads", "2", "--checkpoint", str(tmp_path / "ck.pt"), "-o", str(out), "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    f = read_adt(out)
    assert rep["method"] == "scada" and len(f.cores) == 1
    assert rep["file_bytes"] == f.file_size == out.stat().st_size
    assert rep["train_steps"] == 6 and rep["qat_steps"] == 6
    assert 0.1 < rep["acc_quantized"] <= 1 and not f.metadata
    assert sum(p.encoding == ENC_TUCKER for p in f.params) == 4
    assert [g.q for g in f.groups] == [256, 256, 32] and rep["rounding"] == "nearest"
    assert (tmp_path / "ck.pt").is_file()


def test_compress_rate_aware_distilled_qat(tmp_path, mnist_dir, capsys):
    """--qat-rate-weight reaches QAT (the report carries the symbols' entropy per epoch, which the rate term
    lowers) and --distill's teacher teaches QAT too (a QAT from a dense checkpoint with --distill runs)."""
    import torch

    from adt.exporter.models import build_model
    torch.manual_seed(0)
    torch.save(build_model("lenet300").state_dict(), tmp_path / "dense.pt")
    code = main(["compress", "--data", str(mnist_dir), "--model", "lenet300", "--preset", "lenet300-ada", "--epochs", "0",
                 "--init", "hooi", "--from-checkpoint", str(tmp_path / "dense.pt"), "--distill", "0.9",
                 "--subset", "512", "--qat-epochs", "2", "--qat-lr", "3e-3", "--q", "64", "--qat-rate-weight", "1e-3",
                 "-o", str(tmp_path / "r.adt"), "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    bits = rep["qat_rate_bits"]
    assert len(bits) == 3 and bits[-1] < 0.97 * bits[0]
    assert rep["qat_steps"] == 4


def test_compress_with_the_lenet300_recipe(tmp_path, mnist_dir, capsys):
    """--schedule/--weight-decay/--label-smoothing reach the training loop (its checkpoint records them)."""
    import torch

    ck = tmp_path / "ck.pt"
    code = main(["compress", "--data", str(mnist_dir), "--model", "lenet300", "--preset", "lenet300-ada", "--epochs", "2",
                 "--subset", "512", "--schedule", "cosine", "--weight-decay", "0.05", "--label-smoothing", "0.1",
                 "--checkpoint", str(ck), "-o", str(tmp_path / "r.adt"), "--json"])
    assert code == 0
    state = torch.load(ck, weights_only=False)
    assert state["config"]["schedule"] == "cosine" and state["config"]["weight_decay"] == 0.05
    assert state["config"]["label_smoothing"] == 0.1
    assert state["result"]["lrs"] == [0.01, 0.005]  # cosine over 2 epochs: lr, then lr/2


def test_compress_from_dense_checkpoint_hooi(tmp_path, mnist_dir, capsys):
    import torch

    from adt.exporter.models import build_model
    torch.manual_seed(0)
    dense = build_model("lenet300")
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    out = tmp_path / "h.adt"
    code = main(["compress", "--data", str(mnist_dir), "--model", "lenet300", "--preset", "lenet300-ada",
                 "--init", "hooi", "--from-checkpoint", str(tmp_path / "dense.pt"), "--epochs", "0",
                 "-o", str(out), "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["model"] == "lenet300" and rep["dense_params"] == 266610
    # HOOI from a dense model reports test accuracy before and after; an untrained "dense" model is near chance
    init = rep["init_report"]
    assert set(init) >= {"dense", "hooi"} and 0 <= init["hooi"] <= 1
    assert init.get("near_chance") is (True if init["hooi"] < 0.15 else None)
    # the biases come from the checkpoint unchanged (up to Eq. 13 with b = max |bias|)
    f = read_adt(out)
    p = f.param("fc3.bias")
    np.testing.assert_allclose(f.values(p.symbols, p.group), dense.fc3.bias.detach().numpy(),
                               atol=2 * f.groups[p.group].b / f.groups[p.group].q)
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(3)}, bad)
    code = main(["compress", "--data", str(mnist_dir), "--model", "lenet300", "--preset", "lenet300-ada",
                 "--from-checkpoint", str(bad), "--epochs", "0", "-o", str(out)])
    assert code == 1 and "does not fit" in _one_line(capsys.readouterr().err)


def test_compress_distils_from_the_dense_checkpoint(tmp_path, mnist_dir, capsys):
    """--distill trains against the dense --from-checkpoint model; its checkpoint records alpha and T."""
    import torch

    from adt.exporter.models import build_model
    torch.manual_seed(0)
    torch.save(build_model("lenet300").state_dict(), tmp_path / "dense.pt")
    ck = tmp_path / "ck.pt"
    code = main(["compress", "--data", str(mnist_dir), "--model", "lenet300", "--preset", "lenet300-ada",
                 "--from-checkpoint", str(tmp_path / "dense.pt"), "--distill", "0.9", "--temperature", "2",
                 "--epochs", "1", "--subset", "512", "--checkpoint", str(ck), "-o", str(tmp_path / "d.adt"), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["train_steps"] == 2
    config = torch.load(ck, weights_only=False)["config"]
    assert config["distill_alpha"] == 0.9 and config["distill_temperature"] == 2.0


def test_compress_every_mnist_model_of_the_registry(tmp_path, mnist_dir, capsys):
    """The CLI consults adt.exporter.MODELS (dataset, input shape) instead of its own list: lenet5-relu,
    an MNIST model the CLI used to refuse, compresses and trains on MNIST like the others."""
    from adt.exporter import MODELS

    assert MODELS["lenet5-relu"].dataset == "mnist"
    out = tmp_path / "relu.adt"
    code = main(["compress", "--data", str(mnist_dir), "--model", "lenet5-relu", "--target", "2600", "--epochs", "1",
                 "--max-steps", "1", "--subset", "64", "-o", str(out), "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["model"] == "lenet5-relu" and rep["train_steps"] == 1
    assert read_adt(out).file_size == out.stat().st_size


def test_compress_plan_file_and_resnet_architecture(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"fc": "dense", "layers.8.conv2": {"reshape": [64, 64, 9], "core": [4, 4, 3]}}))
    out = tmp_path / "r.adt"
    code = main(["compress", "--model", "resnet20", "--target", "30.0", "--plan", str(plan), "--epochs", "0",
                 "-o", str(out), "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["plan"]["layers.8.conv2"] == {"reshape": [64, 64, 9], "core": [4, 4, 3], "cp": False}
    f = read_adt(out)
    assert f.param("fc.weight").encoding != ENC_TUCKER and f.architecture


def test_demo_tiny(tmp_path, mnist_dir, capsys):
    out = tmp_path / "d.adt"
    code = main(["demo", "--data", str(mnist_dir), "--epochs", "1", "--subset", "512", "-o", str(out), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["file_bytes"] == out.stat().st_size
    assert abs(res["acc_file"] - res["acc_quantized_torch"]) <= 2e-4  # the file scores what torch predicted
    assert res["bytes"]["payload"] == pytest.approx(sum(res["bytes"][k] for k in ("cores", "factors", "other")), abs=1)
    assert res["true_ratio"] == pytest.approx(1724320 / res["file_bytes"])


def test_compress_refuses_a_file_that_breaks_the_model_unless_forced(tmp_path, mnist_dir, capsys):
    out = tmp_path / "q2.adt"
    argv = ["compress", "--data", str(mnist_dir), "--preset", "lenet5-ada", "--epochs", "1", "--max-steps", "3",
            "--subset", "256", "--q", "2", "--rounding", "floor", "--quiet", "-o", str(out)]
    assert main(argv) == 1
    line = _one_line(capsys.readouterr().err)
    assert "refusing to write" in line and "max|diff|/max|torch|" in line and not out.exists()
    assert main(argv + ["--force", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert out.exists() and rep["check"]["passed"] is False and rep["check"]["divergence"] > 1.0


def test_compress_selfcheck_then_verify(tmp_path, mnist_dir, capsys, monkeypatch):
    out = tmp_path / "sc.adt"
    assert main(["compress", "--data", str(mnist_dir), "--preset", "lenet5-ada", "--epochs", "1", "--max-steps", "2",
                 "--subset", "256", "--selfcheck", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "check passed" in text
    assert main(["verify", str(out)]) == 0
    assert "self-check 10 values within" in capsys.readouterr().out
    import adt.runtime.model as model_mod

    run = model_mod.Model.run
    monkeypatch.setattr(model_mod.Model, "run", lambda self, x, *a, **k: run(self, x, *a, **k) * np.float32(1.1))
    assert main(["verify", str(out)]) == 1
    assert "selfcheck: this machine's outputs on the stored probe differ" in _one_line(capsys.readouterr().err)
