"""The research scripts run from the repository root as ``python -m research.…`` (research/ is not
installed), their --help works without data, and nothing in research/ edits sys.path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# (module, a word its --help must show); modules that need torch or onnx only to import are skipped
# when those are missing.
MODULES = [
    ("research.reproduce", "mnist"),
    ("research.reproduce.recipe", "--tag"),
    ("research.reproduce.rounding", "--data"),
    ("research.reproduce.probe", "decay_every"),
    ("research.benchmarks.bench_lenet", "--threads"),
    ("research.benchmarks.wrn_scale", "--models"),
    ("research.benchmarks.huffman_bench", "--sizes"),
    ("research.benchmarks.crosscheck_torch_runtime", "--data"),
    ("research.boards.aarch64_e2e", "fallback"),
    ("research.benchmarks.many_params", "--sizes"),
    ("research.fuzz.adt_fuzz", "--seconds"),
    ("research.benchmarks.memory", "--models"),
    ("research.benchmarks.engine_speed", "--nets"),
    ("research.benchmarks.onnx_conformance", "--out"),
    ("research.benchmarks.model_zoo", "--ratio"),
    ("research.benchmarks.bn_mnist", "--finetune-epochs"),
    ("research.benchmarks.mode_groupings", "--ratios"),
    ("research.boards.report", "--results"),
    ("research.benchmarks.target_size", "--budgets"),
    ("research.benchmarks.admm_mnist", "--rho"),
    ("research.torchvision.families", "--ratio"),
    ("research.benchmarks.methods", "--admm-update-every"),
    ("research.reproduce.pareto", "--results"),
]
NEEDS_TORCH = {"research.reproduce.recipe", "research.reproduce.rounding", "research.reproduce.probe",
               "research.benchmarks.crosscheck_torch_runtime", "research.benchmarks.model_zoo",
               "research.benchmarks.bn_mnist", "research.benchmarks.mode_groupings",
               "research.benchmarks.target_size", "research.benchmarks.admm_mnist"}


@pytest.mark.parametrize("module,word", MODULES)
def test_help_from_the_repository_root(module, word):
    if module in NEEDS_TORCH:
        pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"python -m {module}" in out.stdout and word in out.stdout


def test_no_sys_path_edits_in_research():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "research").rglob("*.py")
                 if "sys.path" in p.read_text(encoding="utf-8")]
    assert offenders == []
