"""Host-side checks of the aarch64 comparison tooling (research/boards/aarch64_e2e.py and aarch64_check.sh).

The emulated run itself is not part of the default test run (it needs Debian and PyPI once and
minutes of qemu); these tests make sure its verdicts can fail: a changed symbol changes the digest,
outputs outside the tolerance or a different digest make `compare` fail.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from research.boards import aarch64_e2e as e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fallback_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arm64") / "fallback.adt"
    assert e2e.main(["fallback", str(path)]) == 0
    return path


def test_fallback_file_runs_on_both_engines(fallback_file):
    import adt.runtime as rt

    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    outs = {}
    for engine in e2e.ENGINES:
        if engine == "onnxruntime":
            pytest.importorskip("onnxruntime")
        outs[engine] = rt.load(fallback_file, engine=engine).run(x)
        assert outs[engine].shape == (3, 10)
    if len(outs) == 2:
        np.testing.assert_allclose(outs["numpy"], outs["onnxruntime"], rtol=1e-4, atol=1e-4)


def test_symbols_digest_sees_every_symbol(fallback_file):
    from adt.runtime.format import read_adt

    a, b = read_adt(fallback_file), read_adt(fallback_file)
    assert e2e.symbols_digest(a) == e2e.symbols_digest(b)
    p = next(p for p in b.params if p.factors)
    p.factors[-1][-1, -1] ^= 1
    assert e2e.symbols_digest(a) != e2e.symbols_digest(b)
    c = read_adt(fallback_file)
    bias = next(p for p in c.params if p.symbols is not None)
    bias.symbols[0] ^= 1
    assert e2e.symbols_digest(a) != e2e.symbols_digest(c)


def _infer(fallback_file, data, out_dir) -> Path:
    args = ["infer", "--file", str(fallback_file), "--data", str(data), "--n", "20", "--batch-size", "8",
            "--repeats", "1", "--engines", "numpy", "--out-dir", str(out_dir)]
    assert e2e.main(args) == 0
    return out_dir


def _compare(x86, arm, tmp_path) -> tuple[int, dict]:
    rc = e2e.main(["compare", "--x86", str(x86), "--arm", str(arm), "--json", str(tmp_path / "r.json"),
                   "--md", str(tmp_path / "r.md"), "--model-source", "test"])
    return rc, json.loads((tmp_path / "r.json").read_text())


def test_compare_passes_on_identical_runs_and_fails_outside_tolerance(fallback_file, mnist_dir, tmp_path):
    run = _infer(fallback_file, mnist_dir, tmp_path / "a")
    rc, r = _compare(run, run, tmp_path)
    assert rc == 0 and r["passed"] and r["symbols_bit_identical"]
    assert r["engines"]["numpy"]["bit_identical"] and r["engines"]["numpy"]["max_abs_diff"] == 0.0
    assert "PASS" in (tmp_path / "r.md").read_text()

    # A copy whose outputs moved by 1e-3 of the output scale: outside rtol/atol 1e-4 -> FAIL.
    bad = tmp_path / "b"
    bad.mkdir()
    arrays = dict(np.load(run / "run.npz"))
    out = arrays["out:numpy"]
    arrays["out:numpy"] = (out + 1e-3 * np.abs(out).max()).astype(np.float32)
    np.savez(bad / "run.npz", **arrays)
    (bad / "run.json").write_text((run / "run.json").read_text())
    rc, r = _compare(run, bad, tmp_path)
    assert rc == 1 and not r["passed"] and not r["engines"]["numpy"]["within_tolerance"]

    # Same outputs but a different symbol digest -> FAIL.
    meta = json.loads((run / "run.json").read_text())
    meta["symbols_sha256"] = "0" * 64
    arrays["out:numpy"] = out
    np.savez(bad / "run.npz", **arrays)
    (bad / "run.json").write_text(json.dumps(meta))
    rc, r = _compare(run, bad, tmp_path)
    assert rc == 1 and not r["symbols_bit_identical"]


def test_check_script_help_and_bad_option():
    ok = subprocess.run(["bash", str(REPO / "research/boards/aarch64_check.sh"), "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--file" in ok.stdout and "qemu" in ok.stdout
    bad = subprocess.run(["bash", str(REPO / "research/boards/aarch64_check.sh"), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr
