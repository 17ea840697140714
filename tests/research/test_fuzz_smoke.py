"""The structure-aware fuzzer in the default test run (issue 17, item 6: fuzzing as a habit).

A fixed budget of mutated cases (seed 0; at most 45 s) runs through read, load and both engines, each
case in a child process under RLIMIT_AS = 1 GiB and a 10 s limit: no untyped exception, no case over
10 s, none over 1 GiB, no dead worker. The longer run's figures are in results/fuzz.md
(``python -m research.fuzz.adt_fuzz --seconds 1800 --workers 2 --out results/fuzz.json``).
Against the runtime before issue 17 (commit ab1e342) the same 600 cases of seed 0 gave 39 untyped
exceptions (KeyError x20, ValueError x16, AttributeError x3), so this budget does find that class.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("resource", reason="the fuzzer's children need RLIMIT_AS (POSIX)")
if not hasattr(os, "fork"):
    pytest.skip("the fuzzer forks one child per case", allow_module_level=True)

from research.fuzz import adt_fuzz  # noqa: E402
from research.paths import REPO  # noqa: E402

CASES = 500
SECONDS = 45


def test_fuzz_budget_has_no_untyped_timeout_or_over_memory(tmp_path):
    out = tmp_path / "fuzz.json"
    crashes = tmp_path / "crashes"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "research.fuzz.adt_fuzz", "--cases", str(CASES), "--seconds", str(SECONDS),
         "--seed", "0", "--workers", "2", "--out", str(out), "--crash-dir", str(crashes), "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=SECONDS + 60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads(out.read_text())
    assert (tmp_path / "fuzz.md").exists()
    failures = "\n".join(f"case {f['case']} {f['outcome']} at {f['stage']} ({f['seed_file']}, {f['mutations']}): "
                         f"{f['traceback'][-1:] if f['traceback'] else ''} -> {f['file']}" for f in fig["failures"])
    assert fig["untyped"] == 0, f"untyped exceptions:\n{failures}"
    assert fig["timeouts"] == 0, f"cases over {adt_fuzz.CASE_TIMEOUT} s:\n{failures}"
    assert fig["over_memory"] == 0, f"cases over 1 GiB:\n{failures}"
    assert fig["worker_died"] == 0, f"children that died:\n{failures}"
    assert fig["executions"] >= 100, fig["executions"]   # the budget ran (a slow machine may stop at 45 s)
    # the cases reach the engines, not only the container parser
    depth = fig["outcomes"]["depth"]
    assert depth.get("ran", 0) >= fig["executions"] // 20, depth


def test_cases_are_deterministic_and_consistently_encoded():
    seeds = adt_fuzz.load_seeds()
    a = [adt_fuzz.build_case(seeds, 7, i)[1] for i in range(40)]
    b = [adt_fuzz.build_case(adt_fuzz.load_seeds(), 7, i)[1] for i in range(40)]
    assert a == b
    # unmutated seeds re-encode to files the reader accepts (lengths, DEFLATE, payload and CRC recomputed)
    from adt.runtime.format import read_adt
    for s in seeds:
        read_adt(s.encode(np.random.default_rng(0)))


def test_outcomes_are_classified():
    from adt.runtime import AdtGraphError
    assert adt_fuzz._classify(AdtGraphError("x")) == "typed:AdtGraphError"
    assert adt_fuzz._classify(KeyError("x")) == "untyped:KeyError"
    assert adt_fuzz._classify(MemoryError()) == "over-memory"
    assert adt_fuzz.execute(b"not an adt file", with_ort=False)["numpy"] == "typed:AdtMagicError"
