"""The base install (numpy + bitarray) is enough: in a subprocess where importing torch, onnx or
onnxruntime raises ImportError, adt.runtime loads a file, runs the NumPy engine, and `adt run` works."""
from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np

from adt.runtime.samples import lenet5_file
from runtime_models import python_child

BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = ("torch", "onnx", "onnxruntime", "onnxscript", "tensorly")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
""")


def _child(code: str) -> subprocess.CompletedProcess:
    return python_child(BLOCKER, code, timeout=120)


def test_numpy_engine_runs_with_torch_onnx_onnxruntime_blocked(tmp_path):
    import adt.runtime as rt
    path = tmp_path / "lenet.adt"
    path.write_bytes(lenet5_file(seed=0))
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = rt.load(path).run(x)

    out = _child(f"""
        import json, numpy as np
        try:
            import onnx
            raise SystemExit("the blocker does not work")
        except ImportError:
            pass
        import adt.runtime as rt
        m = rt.load({str(path)!r})
        y = m.run(np.load({str(tmp_path / 'x.npy')!r}))
        np.save({str(tmp_path / 'y.npy')!r}, y)
        try:
            rt.load({str(path)!r}, engine="onnxruntime")
            ort = "loaded?!"
        except rt.AdtEngineError as exc:
            ort = str(exc)
        m.to_onnx({str(tmp_path / 'dense.onnx')!r})  # the dense model needs no onnx package either
        loaded = sorted(k for k in sys.modules if k.split(".")[0] in BLOCKED)
        print(json.dumps({{"ort": ort, "loaded": loaded}}))
    """)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["loaded"] == []
    assert "needs the onnxruntime package" in info["ort"]
    assert np.array_equal(np.load(tmp_path / "y.npy"), expected)
    assert (tmp_path / "dense.onnx").read_bytes() == rt.load(path).onnx_bytes()


def test_adt_run_cli_with_optional_packages_blocked(tmp_path):
    path = tmp_path / "lenet.adt"
    path.write_bytes(lenet5_file(seed=0))
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 28, 28), np.float32))
    out = _child(f"""
        from adt.tools.cli import main
        raise SystemExit(main(["run", {str(path)!r}, "--input", {str(tmp_path / 'x.npy')!r}, "--json"]))
    """)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["output_shape"] == [2, 10] and result["engine"] == "numpy"
