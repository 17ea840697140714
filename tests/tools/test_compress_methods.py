"""`adt compress --method mtd|tt|admm-tt|admm-tucker|cp`: tiny real runs through the CLI, the file's
layers are what the method says, and `adt inspect` names the method per layer."""
import json

import pytest

from adt.runtime.format import read_adt
from adt.tools.cli import main

TINY = ["--model", "lenet300", "--subset", "256", "--batch-size", "64", "--seed", "0", "--quiet", "--json",
        "--q", "1024"]


def _run(capsys, argv):
    code = main(["compress", *argv])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def _kinds(path):
    f = read_adt(path)
    return f, {p.name: f.kind(p) for p in f.params if f.kind(p) != "plain"}


def test_tt_writes_tt_parameters_and_inspect_names_them(tmp_path, mnist_dir, capsys):
    out = tmp_path / "tt.adt"
    rep = _run(capsys, [*TINY, "--data", str(mnist_dir), "--method", "tt", "--target", "30.0", "--epochs", "1",
                        "-o", str(out)])
    f, kinds = _kinds(out)
    assert f.version == (2, 0) and f.metadata["method"] == "tt"
    assert set(kinds.values()) == {"tt"} and set(rep["layer_kinds"].values()) == {"tt"}
    assert {f"{k}.weight" for k in rep["plan"]} == set(kinds)
    assert all("ranks" in v for v in rep["plan"].values())
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert ".adt version 2.0" in text
    tt_rows = [ln for ln in text.splitlines() if ln.startswith("fc") and ".weight" in ln]
    assert tt_rows and all(" TT " in ln and "r=" in ln for ln in tt_rows)


def test_mtd_chooses_per_layer_on_the_trained_dense_model(tmp_path, mnist_dir, capsys):
    out = tmp_path / "mtd.adt"
    rep = _run(capsys, [*TINY, "--data", str(mnist_dir), "--method", "mtd", "--dense-epochs", "1",
                        "--mtd-proxy", "reconstruction", "--target", "30.0", "--epochs", "1", "-o", str(out)])
    f, kinds = _kinds(out)
    choices = rep["method_report"]["choices"]
    assert set(choices) == set(rep["plan"]) and set(choices.values()) <= {"tucker", "cp"}
    assert {f"{k}.weight": v for k, v in choices.items()} == kinds  # the file holds what MTD chose
    assert f.metadata["method"] == "mtd" and rep["dense_training"]["epochs"] == 1
    assert f.version == (1, 0)  # Tucker and CP need no format 2.0


@pytest.mark.parametrize("method,kind,version", [("admm-tt", "tt", (2, 0)), ("admm-tucker", "tucker", (1, 0))])
def test_admm_trains_the_dense_model_toward_the_ranks_then_decomposes(tmp_path, mnist_dir, capsys, method, kind,
                                                                       version):
    out = tmp_path / f"{method}.adt"
    rep = _run(capsys, [*TINY, "--data", str(mnist_dir), "--method", method, "--dense-epochs", "1",
                        "--admm-epochs", "2", "--target", "30.0", "--epochs", "1", "-o", str(out)])
    f, kinds = _kinds(out)
    assert set(kinds.values()) == {kind} and f.version == version and f.metadata["method"] == method
    admm = rep["method_report"]
    assert admm["admm_epochs"] == 2 and len(admm["rho"]) == 2 and admm["rho"][1] == 2 * admm["rho"][0]
    assert set(admm["distance"]) == set(rep["plan"])


def test_cp_at_a_target_size_lands_in_the_window(tmp_path, mnist_dir, capsys):
    out = tmp_path / "cp.adt"
    rep = _run(capsys, [*TINY, "--data", str(mnist_dir), "--method", "cp", "--target-size", "12KB", "--epochs", "1",
                        "-o", str(out)])
    f, kinds = _kinds(out)
    assert set(kinds.values()) == {"cp"} and f.metadata["method"] == "cp"
    assert 0.97 * 12_000 <= out.stat().st_size <= 12_000 and rep["target_size"]["in_window"]


@pytest.mark.parametrize("argv,needle", [
    (["--method", "mtd"], "--from-checkpoint"),
    (["--method", "admm-tt"], "--dense-epochs"),
    (["--method", "tt", "--preset", "lenet5-ada"], "--preset"),
    (["--method", "admm-tucker", "--dense-epochs", "1", "--rho", "0"], "--rho"),
])
def test_method_misuse_is_one_line_before_any_work(tmp_path, mnist_dir, capsys, argv, needle):
    out = tmp_path / "x.adt"
    code = main(["compress", "--data", str(mnist_dir), "--subset", "64", "--quiet", *argv, "-o", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 1 and len(err) == 1 and needle in err[0]
    assert not out.exists()
