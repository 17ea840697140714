"""The hostile-but-valid corpus (issue 17, item 6): one test per class of tests/runtime/hostile/.

Each file is loaded and run (batch 1) in a child process under RLIMIT_AS = 1 GiB with a 10 s
subprocess timeout (not a timing assertion: a child that is still working after 10 s is killed and
the test fails). It must run, or raise the typed ``AdtError`` its class allows; a bare exception, a
MemoryError, a crash or the timeout fails. The amplifiers must be refused by a budget decided before
the work (``AdtBudgetError``, or the parser's caps for the architecture floods), not by running out
of memory half-way: a board without RLIMIT_AS would be killed instead. The committed files are
checked against their generator (``make_hostile.py --check``).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from runtime_models import python_child

resource = pytest.importorskip("resource", reason="RLIMIT_AS needs the resource module (POSIX)")

HOSTILE = Path(__file__).resolve().parent / "hostile"
LIMIT_BYTES = 1 << 30
# Emulated boards (research/boards/board_check.sh) run 20-50x slower and scale the limit with ADT_TIMEOUT_SCALE.
TIMEOUT_S = 10 * float(os.environ.get("ADT_TIMEOUT_SCALE", "1"))

_spec = importlib.util.spec_from_file_location("make_hostile", HOSTILE / "make_hostile.py")
make_hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_hostile)

BUDGET = {"AdtBudgetError"}
PARSE_CAP = {"AdtBudgetError", "AdtLimitError", "AdtArchitectureError"}
# class -> (the typed errors it may raise, whether it may also run, the engine)
EXPECTED: dict[str, tuple[set[str], bool, str]] = {
    "tucker_amplifier": (BUDGET, True, "numpy"),
    "zero_broadcast": (BUDGET, True, "numpy"),
    "concat_doublings": (BUDGET, True, "numpy"),
    "maxpool_loop": (BUDGET, True, "numpy"),
    "conv_pads": (BUDGET, True, "numpy"),
    "arch_64mib": (PARSE_CAP, True, "numpy"),
    "node_flood": (PARSE_CAP, True, "numpy"),
    "many_params": (BUDGET, True, "numpy"),
    "ort_loop": ({"AdtUnsupportedOpError", "AdtBudgetError"}, True, "onnxruntime"),
    "ort_loop_numpy": ({"AdtUnsupportedOpError"}, False, "numpy"),
    "zero_d_param": (set(), True, "numpy"),
    "input_twice": (set(), True, "numpy"),
    "ghost_output": ({"AdtGraphError"}, False, "numpy"),
    "empty_input_name": ({"AdtGraphError"}, False, "numpy"),
    "init_65_dims": ({"AdtArchitectureError"}, False, "numpy"),
    "init_huge_dims": ({"AdtArchitectureError"}, False, "numpy"),
}

# what the first output element must be where a class must run: 1 * 0.5 and 1 * 1 + 0.5
VALUES = {"zero_d_param": 0.5, "input_twice": 1.5}

_CHILD = """
import json, sys, traceback
import numpy as np
import adt.runtime as rt
from adt.runtime.onnx_proto import DTYPES
path, engine = sys.argv[1], sys.argv[2]
out = {}
try:
    m = rt.load(path, engine=engine)
    out["stage"] = "run"
    feeds = {}
    for vi in m.inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in (vi.shape or [1])]
        dt = DTYPES.get(vi.elem_type, np.dtype("float32")).newbyteorder("=")
        feeds[vi.name] = np.ones(shape, dt)
    if m.architecture is not None:
        y = m.run(feeds)
        y = next(iter(y.values())) if isinstance(y, dict) else y
        out["first"] = float(np.asarray(y).reshape(-1)[0]) if np.size(y) else None
    out["outcome"] = "ok"
except rt.AdtError as exc:
    out["outcome"] = type(exc).__name__
    out["message"] = str(exc)[:500]
except BaseException as exc:
    out["outcome"] = "untyped:" + type(exc).__name__
    out["traceback"] = traceback.format_exc()[-3000:]
print("RESULT " + json.dumps(out))
"""


def _run(path: Path, engine: str) -> dict:
    prelude = f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({LIMIT_BYTES}, {LIMIT_BYTES}))
        sys.argv = ["hostile", {str(path)!r}, {engine!r}]
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        out = python_child(prelude, _CHILD, env=env, timeout=TIMEOUT_S)
    except Exception as exc:   # subprocess.TimeoutExpired: the child is killed
        if type(exc).__name__ == "TimeoutExpired":
            pytest.fail(f"{path.name} ({engine}): still running after {TIMEOUT_S} s (killed)")
        raise
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, (f"{path.name} ({engine}): the child died (exit {out.returncode}) without a result:\n"
                   f"{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _outcome(name: str, path: Path) -> str:
    """Run ``path`` in a limited child; return its outcome ("ok" or the error class) after checking that
    it is typed and, for a file that runs, that its first output is the expected value."""
    engine = EXPECTED[name][2]
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    res = _run(path, engine)
    outcome = res["outcome"]
    detail = res.get("traceback") or res.get("message") or ""
    assert not outcome.startswith("untyped"), f"{name}: untyped exception\n{detail}"
    if outcome == "ok" and name in VALUES:  # the weight symbols are 192 of Q = 256, b = 1: 0.5; the input is ones
        assert res["first"] == VALUES[name], res
    return outcome


def _accepted(name: str) -> set[str]:
    allowed, ok_allowed, _ = EXPECTED[name]
    return set(allowed) | ({"ok"} if ok_allowed else set())


@pytest.mark.parametrize("name", sorted(make_hostile.COMMITTED))
def test_hostile_committed(name):
    assert _outcome(name, HOSTILE / f"{name}.adt") in _accepted(name)


def test_hostile_ort_loop_numpy_engine():
    """The NumPy engine refuses the Loop (an op it does not implement) at load."""
    assert _outcome("ort_loop_numpy", HOSTILE / "ort_loop.adt") in _accepted("ort_loop_numpy")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "many_params" else n
                                  for n in sorted(make_hostile.ON_THE_FLY)])
def test_hostile_on_the_fly(name, tmp_path):
    path = tmp_path / f"{name}.adt"
    path.write_bytes(make_hostile.ON_THE_FLY[name]())
    assert _outcome(name, path) in _accepted(name)


def test_committed_files_match_the_generator():
    """Every committed file is what make_hostile.py builds (the architecture's DEFLATE may differ
    under another zlib: then the inflated bytes must still match)."""
    from adt.runtime.format import read_adt

    for name, build in make_hostile.COMMITTED.items():
        data = build()
        committed = (HOSTILE / f"{name}.adt").read_bytes()
        if data != committed:
            a, b = read_adt(data), read_adt(committed)
            assert (a.architecture, a.metadata) == (b.architecture, b.metadata), name
        assert len(committed) < 200_000, name


def test_classes_are_covered():
    assert set(make_hostile.COMMITTED) | set(make_hostile.ON_THE_FLY) | {"ort_loop_numpy"} == set(EXPECTED)
