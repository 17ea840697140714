"""inspect / verify on real exporter output (LeNet-5, ADA and SCADA). Runs where the exporter (and
torch) is installed; skipped in a runtime-only checkout."""
from __future__ import annotations

import json
import subprocess

import pytest

from cli_helpers import CLI


@pytest.fixture(scope="module", params=["ada", "scada"])
def exported(request, tmp_path_factory):
    torch = pytest.importorskip("torch")
    exporter = pytest.importorskip("adt.exporter")

    torch.manual_seed(0)
    scada = request.param == "scada"
    model = exporter.build_model("lenet5")
    plan = exporter.plan_model(model, 2600, scada=scada)
    (exporter.apply_scada_tucker if scada else exporter.apply_ada_tucker)(model, plan)
    path = tmp_path_factory.mktemp("exp") / f"lenet5_{request.param}.adt"
    exporter.export_adt(model, path, input_shape=(1, 28, 28))
    return request.param, path


def test_inspect_accounting_on_exported_lenet5(exported):
    method, path = exported
    from tools_adt_files import mixed_file  # noqa: F401  (same folder helpers are importable)
    from test_inspect import check_accounting

    r = check_accounting(path.read_bytes())
    assert r["totals"]["parameters"] == 431_080
    methods = {row["method"] for row in r["layers"] if row["name"].endswith(".weight")}
    assert methods == ({"SCADA shared core"} if method == "scada" else {"ADA"})
    assert r["paper"]["equation"] == ("Eq. 12 (SCADA-Tucker)" if method == "scada" else "Eq. 11 (ADA-Tucker)")
    assert any(row["name"] == "architecture" for row in r["sections"])


def test_verify_and_inspect_cli_on_exported_lenet5(exported, tmp_path):
    _, path = exported
    out = subprocess.run(CLI + ["verify", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "forward 1x1x28x28 -> 1x10" in out.stdout
    out = subprocess.run(CLI + ["inspect", str(path), "--json", "--plot", str(tmp_path / "p.png")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert sum(row["bytes"] for row in json.loads(out.stdout)["sections"]) == path.stat().st_size
    assert (tmp_path / "p.png").stat().st_size > 5000
