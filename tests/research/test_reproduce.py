"""Smoke test of the reproduction benchmark: a tiny run end to end (train -> export -> score -> report).

The full runs are benchmarks (results/); this only checks the pipeline on a small subset."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from adt.runtime.format import read_adt  # noqa: E402
from research.reproduce import cli as reproduce  # noqa: E402
from research.reproduce.aug import random_shift  # noqa: E402
from research.reproduce.paramcount import combos  # noqa: E402
from research.reproduce.report import recipe_label, write_report  # noqa: E402


def test_tiny_run_end_to_end(tmp_path, mnist_dir):
    rc = reproduce.main(["mnist", "--data", str(mnist_dir), "--rows", "lenet300-scada", "--epochs", "1",
                         "--subset", "512", "--test-subset", "300", "--variants", "paper,paper-rn,small", "--out", str(tmp_path)])
    assert rc == 0
    recs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    assert set(recs) == {"lenet300-scada-s0-paper", "lenet300-scada-s0-paper-rn", "lenet300-scada-s0-small"}
    for r in recs.values():
        f = read_adt((tmp_path / r["file"]).read_bytes())
        assert f.file_size == r["file_bytes"]
        assert r["true_ratio"] == pytest.approx(r["dense_float32_bytes"] / r["file_bytes"])
        assert r["stored_params"] == 3410 and r["test_images"] == 300
        # the torch-free evaluation of the FILE agrees with the exporter's own dequantized model
        assert r["err_file"] == pytest.approx(r["err_exporter_quant"], abs=100 / 300 + 1e-9)
    assert recs["lenet300-scada-s0-paper"]["groups"][0]["q"] == 1500  # the paper's LeNet-300 quantizer
    rn = recs["lenet300-scada-s0-paper-rn"]  # the same Q and b, nearest-level rounding
    assert rn["groups"] == recs["lenet300-scada-s0-paper"]["groups"] and rn["rounding"] == "nearest"
    assert recs["lenet300-scada-s0-paper"]["rounding"] == "floor"
    assert recs["lenet300-scada-s0-small"]["file_bytes"] < recs["lenet300-scada-s0-paper"]["file_bytes"]
    doc = json.loads((tmp_path / "mnist.json").read_text())
    assert "lenet300-scada/paper" in doc["summary"]
    md = (tmp_path / "mnist.md").read_text()
    assert "| lenet300-scada | small |" in md and "all:1500/b5 (nearest)" in md


def test_shift_moves_pixels_and_keeps_shape():
    import torch
    x = torch.rand(8, 1, 28, 28)
    g = torch.Generator()
    g.manual_seed(0)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape
    assert not torch.equal(x, y)
    assert float(y.min()) >= float(x.min())  # padding uses the background value


def test_paper_ratio_pins_the_preset():
    totals = {t for _, t in combos(166)}
    assert 2594 in totals and 2980 not in totals
    assert all(round(431_080 / t) == 166 for t in totals)
    assert np.isclose(431_080 / 2594, 166.18, atol=0.01)


def test_recipe_probe_logs_its_recipe_and_lands_in_the_report(tmp_path, mnist_dir):
    from research.reproduce import recipe

    rc = recipe.main(["lenet300-ada", "--tag", "t", "--epochs", "2", "--schedule", "cosine", "--wd", "0.05",
                            "--smooth", "0.1", "--subset", "1024", "--data", str(mnist_dir), "--out", str(tmp_path)])
    assert rc == 0 and not list((tmp_path / "ckpt").glob("*.ckpt"))  # checkpoint dropped unless --keep
    log = json.loads((tmp_path / "logs" / "recipe-lenet300-ada-t-s0.json").read_text())
    assert log["schedule"] == "cosine" and log["weight_decay"] == 0.05 and log["label_smoothing"] == 0.1
    assert log["epochs"] == 2 and len(log["test_acc_per_epoch"]) == 2 and log["subset"] == 1024
    assert recipe_label(log) == "cos wd0.05 ls0.1"
    (tmp_path / "runs").mkdir()
    write_report(tmp_path)
    assert "| recipe-lenet300-ada-t | lenet300-ada | 0 | cos wd0.05 ls0.1 | 2 |" in (tmp_path / "mnist.md").read_text()


def test_recipe_label_of_the_paper_schedule():
    assert recipe_label({"decay_every": 10, "lr": 0.01}) == "step/10"
    assert recipe_label({"decay_every": 3, "lr": 0.003, "model": "lenet5-relu"}) == "step/3 lr0.003 conv-ReLU"


@pytest.mark.parametrize("argv,needle", [(["--smooth", "1.0"], "label_smoothing"), (["--wd", "-1"], "weight_decay"),
                                         (["--data", "/no/such/mnist"], "/no/such/mnist")])
def test_recipe_probe_bad_input_is_one_line(argv, needle, tmp_path, mnist_dir, capsys):
    from research.reproduce import recipe

    args = ["lenet300-ada", "--tag", "bad", "--epochs", "1", "--subset", "256", "--out", str(tmp_path)]
    if "--data" not in argv:
        args += ["--data", str(mnist_dir)]
    assert recipe.main(args + argv) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "logs").exists()


def test_the_nine_2p6k_settings_are_runs_with_the_printed_counts():
    from adt.exporter import build_model, model_params
    from research.reproduce.paramcount import combo_tag
    from research.reproduce.presets import ROWS
    from research.reproduce.train import run_plan

    found = combos(166)
    assert len(found) == 9
    for cols, total in found:
        spec = ROWS[f"lenet5-ada-{combo_tag(cols)}"]
        n = model_params(build_model("lenet5"), run_plan(spec))
        # Table 7's FC2 "6d" column prints a total 4 above what its printed shapes give (120 vs 116)
        assert n == total - (4 if cols["fc2"] == "6d" else 0), spec.name
        assert round(431_080 / n) == 166
    assert run_plan(ROWS["lenet5-ada-o4545"]) == run_plan(ROWS["lenet5-ada"])  # the preset is one of them


def test_recipe_probe_with_a_teacher_trains_and_logs_it(tmp_path, mnist_dir):
    from research.reproduce import recipe

    rc = recipe.main(["lenet300-ada-kd", "--tag", "kd", "--epochs", "1", "--subset", "512",
                            "--data", str(mnist_dir), "--out", str(tmp_path)])
    assert rc == 0
    teacher_log = json.loads((tmp_path / "logs" / "train-lenet300-dense-s0.json").read_text())
    assert teacher_log["stored_params"] == 266_610 and teacher_log["teacher"] is None
    assert (tmp_path / "ckpt" / "lenet300-dense-s0.ckpt").exists()  # reused by every student seed
    log = json.loads((tmp_path / "logs" / "recipe-lenet300-ada-kd-kd-s0.json").read_text())
    assert log["teacher"] == "lenet300-dense" and log["distill_alpha"] == 0.9 and log["stored_params"] == 4096
    assert log["teacher_float_test_acc"] == teacher_log["float_test_acc"]  # which teacher taught it
    assert recipe_label(log) == "cos wd0.05 ls0.1 KD a0.9 T4"
    assert recipe.main(["lenet300-ada", "--tag", "x", "--alpha", "0.5", "--epochs", "1", "--subset", "256",
                              "--data", str(mnist_dir), "--out", str(tmp_path)]) == 1  # a weight without a teacher


def test_a_dense_lenet5_teaches_lenet300_across_architectures(tmp_path, mnist_dir):
    from research.reproduce import recipe

    rc = recipe.main(["lenet300-ada-kd5", "--tag", "x", "--epochs", "1", "--subset", "256",
                            "--data", str(mnist_dir), "--out", str(tmp_path)])
    assert rc == 0
    log = json.loads((tmp_path / "logs" / "recipe-lenet300-ada-kd5-x-s0.json").read_text())
    assert log["teacher"] == "lenet5-dense" and log["model"] == "lenet300" and log["stored_params"] == 4096
    teacher_log = json.loads((tmp_path / "logs" / "train-lenet5-dense-s0.json").read_text())
    assert teacher_log["stored_params"] == 431_080 and log["teacher_float_test_acc"] == teacher_log["float_test_acc"]
    assert recipe_label(log) == "cos wd0.05 ls0.1 KD a0.9 T4 from lenet5-dense"


def test_a_distilling_qat_variant_on_a_run_without_a_teacher_is_one_line(tmp_path, mnist_dir):
    from research.reproduce.export import export_run

    with pytest.raises(SystemExit, match="has no teacher"):
        export_run("lenet300-ada", 0, "kind-qat-lo-kd", tmp_path / "none.ckpt", tmp_path, str(mnist_dir))


def test_hooi_init_from_the_dense_teacher(tmp_path, mnist_dir):
    """init_from: the run starts from HOSVD + HOOI of the trained dense teacher, not from scratch."""
    import torch

    from research.reproduce import recipe
    from research.reproduce.presets import ROWS
    from research.reproduce.train import build_run_model

    torch.manual_seed(0)
    dense = build_run_model(replace_spec(ROWS["lenet300-ada"], method="dense"), 0)
    hooi = build_run_model(ROWS["lenet300-ada"], 0, dense)
    scratch = build_run_model(ROWS["lenet300-ada"], 0)
    for name in ("fc1", "fc2", "fc3"):
        w = getattr(dense, name).weight.detach()
        rel = {k: float((getattr(m, name).weight.detach() - w).norm() / w.norm()) for k, m in
               (("hooi", hooi), ("scratch", scratch))}
        assert rel["hooi"] < 1.0 < rel["scratch"], (name, rel)  # a projection of W vs an unrelated init
    rc = recipe.main(["lenet300-ada", "--tag", "hooi", "--epochs", "1", "--subset", "512", "--init-from",
                            "lenet300-dense", "--data", str(mnist_dir), "--out", str(tmp_path)])
    assert rc == 0
    log = json.loads((tmp_path / "logs" / "recipe-lenet300-ada-hooi-s0.json").read_text())
    assert log["init_from"] == "lenet300-dense" and recipe_label(log).endswith("HOOI init")


def replace_spec(spec, **kw):
    from dataclasses import replace

    return replace(spec, **kw)


def test_rounding_sweep_writes_its_table(tmp_path, mnist_dir, capsys):
    from research.reproduce import rounding

    assert rounding.main(["lenet300-scada", "--data", str(mnist_dir), "--out", str(tmp_path)]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert reproduce.main(["mnist", "--data", str(mnist_dir), "--rows", "lenet300-scada", "--epochs", "1",
                           "--subset", "512", "--stage", "train", "--out", str(tmp_path)]) == 0
    assert rounding.main(["lenet300-scada", "--data", str(mnist_dir), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "logs" / "rounding-lenet300-scada-s0.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and ln[2].isdigit() or ln.startswith("| paper")]
    assert len(rows) == 4 + 5 and "| paper Q=1500 b=5.0 |" in md


def test_target_check_is_exact_at_the_paper_error():
    from research.reproduce.report import _targets

    s = {"dense_float32_bytes": 1_724_320, "bytes_median": 2100, "bytes_min": 2090,
         "err_file_median": 100 * (1 - 0.9882), "err_file_best": 100 * (1 - 0.9883)}  # 1.18%: float noise above
    assert _targets("lenet5-scada", s) == "median: MET; best: MET"
    s["err_file_median"] = 1.19
    assert _targets("lenet5-scada", s).startswith("median: missed (error +0.01 pt)")


def test_default_rows_export_the_paper_quantizer_and_their_best_variant():
    from research.reproduce.export import resolve_variant
    from research.reproduce.presets import DEFAULT_ROWS, default_variants

    for row in DEFAULT_ROWS:
        names = default_variants(row)
        assert names[0] == "paper" and len(names) == 2
        assert all(resolve_variant(row, n).name == n for n in names)  # every default is a known variant
    assert default_variants("lenet5-ada") == ["paper", "kind-qat"]


def test_warm_start_from_a_committed_file(tmp_path, mnist_dir, monkeypatch):
    """A variant with warm_start begins from the dequantized values of the row's earlier file (issue 22: no
    float checkpoint is committed): the model carries exactly the file's weights, and a rate-aware QAT from
    there is exported and scored like any variant."""
    from adt.exporter.factorize import frozen_copy
    from adt.exporter.quantplan import inventory
    from adt.runtime.rebuild import rebuild_weights
    from research.reproduce.export import model_from_file
    from research.reproduce.presets import VARIANTS, ExportVariant

    rc = reproduce.main(["mnist", "--data", str(mnist_dir), "--rows", "lenet300-scada", "--epochs", "1",
                         "--subset", "512", "--test-subset", "300", "--variants", "paper", "--out", str(tmp_path),
                         "--stage", "train"])
    assert rc == 0
    rc = reproduce.main(["mnist", "--data", str(mnist_dir), "--rows", "lenet300-scada", "--test-subset", "300",
                         "--variants", "paper", "--out", str(tmp_path), "--stage", "export"])
    assert rc == 0
    start = tmp_path / "adt" / "lenet300-scada-s0-paper.adt"
    model = model_from_file("lenet300-scada", 0, start)
    state = frozen_copy(model).state_dict()
    weights = list(rebuild_weights(start).values())  # in table order, as the inventory lists the names
    dense = [state[k] for k in inventory(model).order]
    assert [tuple(w.shape) for w in weights] == [tuple(t.shape) for t in dense]
    for w, t in zip(weights, dense):
        np.testing.assert_allclose(t.numpy(), w, rtol=1e-5, atol=1e-6)

    (tmp_path / "ckpt" / "lenet300-scada-s0.ckpt").unlink()  # the warm start needs no checkpoint
    monkeypatch.setitem(VARIANTS, "ws-test", ExportVariant("ws-test", q=64, groups="kind", rounding="nearest",
                                                           qat_epochs=1, qat_lr=1e-3, warm_start="paper",
                                                           rate_weight=1e-3))
    rc = reproduce.main(["mnist", "--data", str(mnist_dir), "--rows", "lenet300-scada", "--subset", "512",
                         "--test-subset", "300", "--variants", "ws-test", "--out", str(tmp_path), "--stage", "export"])
    assert rc == 0
    paper = json.loads((tmp_path / "runs" / "lenet300-scada-s0-paper.json").read_text())
    rec = json.loads((tmp_path / "runs" / "lenet300-scada-s0-ws-test.json").read_text())
    assert rec["err_start_file"] == pytest.approx(paper["err_file"], abs=1e-9)
    assert rec["err_float"] == paper["err_float"] and rec["warm_start_file"] == "adt/lenet300-scada-s0-paper.adt"
    assert len(rec["rate_bits_per_epoch"]) == 2 and rec["qat_steps"] == 2
    assert read_adt(tmp_path / rec["file"]).file_size == rec["file_bytes"]
