"""Loading by path under an address-space limit (issue 17, item 0: bounded reads).

The reader used to ask for ``MAX_FILE_BYTES + 1`` (5 GiB) before reading any file, so under
``RLIMIT_AS`` a 39-byte file failed with a bare ``MemoryError`` (``OverflowError`` on 32-bit). Now it
reads exactly the file's size. Each check runs in a child process whose limit is set before numpy is
imported; ``OPENBLAS_NUM_THREADS=1`` keeps OpenBLAS from reserving a buffer per core at import.

A bare ``import numpy, bitarray`` needs about 96 MiB of address space here (64 MiB fails in OpenBLAS);
256 MiB is the limit the issue asks for, a 512 MiB board's budget with room to spare.
"""
from __future__ import annotations

import json
import os
from math import prod
from pathlib import Path

import numpy as np
import pytest

from adt.runtime.format import AdtWriter
from adt.runtime.samples import RESNET18_PARAMS, lenet5_file, resnet18_shapes
from runtime_models import python_child

resource = pytest.importorskip("resource", reason="RLIMIT_AS needs the resource module (POSIX)")

LIMIT_MIB = 256


def _child(code: str, limit_mib: int = LIMIT_MIB) -> dict:
    """Run ``code`` under RLIMIT_AS = ``limit_mib`` MiB (set before numpy is imported); it prints one
    JSON line, which is returned. Any failure in the child fails the test with its stderr."""
    prelude = f"""
        import resource
        _lim = {limit_mib} << 20
        resource.setrlimit(resource.RLIMIT_AS, (_lim, _lim))
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = python_child(prelude, code, env=env)
    assert out.returncode == 0, f"child failed under RLIMIT_AS={limit_mib} MiB:\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _resnet18_file(path: Path) -> int:
    """A ResNet-18-sized file: every parameter plain, Laplacian symbols, Q = 256 (about 7 MB)."""
    rng = np.random.default_rng(0)
    w = AdtWriter(tables="shared")
    g = w.add_group(256, 3.0)
    for name, shape in resnet18_shapes():
        w.add_plain(name, np.clip(np.rint(rng.laplace(127.5, 6.0, size=shape)), 0, 255).astype(np.uint16), g)
    return w.write(path)


def test_resnet18_shapes_are_resnet18():
    assert sum(prod(s) for _, s in resnet18_shapes()) == RESNET18_PARAMS


def test_lenet5_loads_and_runs_by_path_under_rlimit_as(tmp_path):
    import adt.runtime as rt

    path = tmp_path / "lenet5.adt"
    path.write_bytes(lenet5_file(seed=0))
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = rt.load(path).run(x)

    got = _child(f"""
        import json, numpy as np
        import adt.runtime as rt
        m = rt.load({str(path)!r})
        y = m.run(np.load({str(tmp_path / 'x.npy')!r}))
        print(json.dumps({{"y": y.tolist()}}))
    """)
    # one BLAS thread in the child, several here: the sums may round differently
    np.testing.assert_allclose(np.asarray(got["y"], np.float32), expected, rtol=1e-5, atol=1e-3)


def test_tiny_file_gives_its_own_error_not_memory_error_under_rlimit_as(tmp_path):
    """A 39-byte non-.adt file: the reader's own error, not MemoryError from a 5 GiB buffer."""
    path = tmp_path / "junk.adt"
    path.write_bytes(b"x" * 39)
    got = _child(f"""
        import json
        from adt.runtime.format import AdtError, read_adt
        try:
            read_adt({str(path)!r})
            r = "read"
        except AdtError as exc:
            r = type(exc).__name__
        print(json.dumps({{"r": r}}))
    """)
    assert got == {"r": "AdtMagicError"}


def test_resnet18_sized_file_reads_and_rebuilds_by_path_under_rlimit_as(tmp_path):
    path = tmp_path / "resnet18.adt"
    size = _resnet18_file(path)
    assert size > 5_000_000
    got = _child(f"""
        import json
        import adt.runtime as rt
        from adt.runtime.format import read_adt
        f = read_adt({str(path)!r})
        n = sum(p.numel for p in f.params)
        size = f.file_size
        del f
        m = rt.load({str(path)!r})          # no architecture: the weights only
        w = sum(a.size for a in m.weights.values())
        print(json.dumps({{"n": n, "size": size, "w": w}}))
    """)
    assert got == {"n": RESNET18_PARAMS, "size": size, "w": RESNET18_PARAMS}


def test_memory_error_while_preparing_or_running_is_typed(monkeypatch):
    """A MemoryError from an allocation the budget allowed (the machine has less free memory than
    max_memory) leaves load and run as an AdtError with one line, never as MemoryError."""
    import adt.runtime as rt
    from adt.runtime import numpy_engine
    from adt.runtime.errors import AdtBudgetError, AdtExecutionError

    data = lenet5_file(seed=0)
    m = rt.load(data)

    def oom(*args, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(m._runner, "run", oom)
    with pytest.raises(AdtExecutionError, match="out of memory while running the model") as exc:
        m.run(np.zeros((1, 1, 28, 28), np.float32))
    assert "\n" not in str(exc.value)
    monkeypatch.setattr(numpy_engine, "NumpyEngine", oom)
    with pytest.raises(AdtBudgetError, match=r"out of memory while preparing the numpy engine \(the weights take "
                                             r"1\.64 MiB") as exc:
        rt.load(data)
    assert "\n" not in str(exc.value)


def test_wrn_sized_file_under_rlimit_as_gives_typed_errors_only(tmp_path):
    """WRN-28-10's shapes (36.5M weights, 139 MiB as float32), weights only, by path under address-space
    limits from too small to enough: each child either loads or raises an AdtError, never MemoryError.
    Where the limit is enforced (qemu-user ignores a guest's RLIMIT_AS: each child probes it with a
    bytearray 64 MiB over it) both sides must be reached; elsewhere only the typed-error property is checked."""
    rng = np.random.default_rng(0)
    w = AdtWriter()
    g = w.add_group(256, 1.0)
    cores = [w.add_core(rng.integers(0, 256, (20, 20, 20, 20)).astype(np.uint16), g) for _ in range(10)]
    for i, c in enumerate(cores):
        w.add_tucker(f"conv{i}.weight", (640, 640, 3, 3), c,
                     [rng.integers(0, 256, (n, 20)).astype(np.uint16) for n in (48, 48, 40, 40)], g)
    path = tmp_path / "big.adt"
    w.write(path)
    outcomes, enforced = [], []
    for limit in (160, 640):
        prelude = f"""
            import resource
            _lim = {limit} << 20
            resource.setrlimit(resource.RLIMIT_AS, (_lim, _lim))
        """
        out = python_child(prelude, f"""
            import json
            try:
                _probe = bytearray(({limit} + 64) << 20)   # more than the limit: refused if it is enforced
                enforced = False
                del _probe
            except MemoryError:
                enforced = True
            try:   # numpy itself may not fit under the limit on an emulated or 32-bit board: not ours
                import numpy as np
                import adt.runtime as rt
                from adt.runtime.format import AdtError
                np.ones((64, 64)) @ np.ones((64, 64))  # OpenBLAS takes its buffer now (it exits if it cannot)
            except BaseException as exc:
                print(json.dumps({{"r": ["setup", type(exc).__name__], "enforced": enforced}}))
                raise SystemExit(0)
            print("SETUP_OK", flush=True)
            try:
                m = rt.load({str(path)!r}, max_memory=None)
                r = ["ok", sum(a.size for a in m.weights.values())]
            except AdtError as exc:
                r = [type(exc).__name__, str(exc)]
            print(json.dumps({{"r": r, "enforced": enforced}}))
        """, env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
        if out.returncode != 0 and "SETUP_OK" not in out.stdout:
            continue  # OpenBLAS could not take its buffer under this limit and exited: the setup, not ours
        if out.returncode != 0 and "OpenBLAS error: Memory allocation" in out.stderr:
            # OpenBLAS exits the process when it cannot allocate a work buffer inside a product: no Python
            # code can catch that (a known limit, stated in the README's board section); the load did not
            # hand a MemoryError to the caller either
            outcomes.append("blas-exit")
            enforced.append(True)
            continue
        assert out.returncode == 0, f"child failed under RLIMIT_AS={limit} MiB:\n{out.stderr[-3000:]}"
        got = json.loads(out.stdout.strip().splitlines()[-1])
        outcome = got["r"][0]
        enforced.append(got["enforced"])
        if outcome == "setup":
            continue
        assert outcome in ("ok", "AdtBudgetError", "AdtReadError"), (limit, got)
        if outcome == "ok":
            assert got["r"][1] == 10 * 640 * 640 * 9
        else:
            assert "\n" not in got["r"][1]
        outcomes.append(outcome)
    if all(enforced) and len(outcomes) == 2:   # both sides of the limit were reached
        assert outcomes[0] != "ok" and outcomes[1] == "ok", outcomes
    assert outcomes and outcomes[-1] != "blas-exit", outcomes  # with room to spare (640 MiB) it must succeed
