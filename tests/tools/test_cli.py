"""The `adt` dispatcher: per-command --help, one-line usage errors, python -m entry point, lazy imports."""
import json
import subprocess
import sys

import pytest

from adt.tools.cli import COMMANDS, main


@pytest.mark.parametrize("cmd", ["run", "inspect", "verify", "bench", "to-onnx"])
def test_device_side_help_lists_command_options(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: adt {cmd}") and "--json" in out


def test_unknown_command_and_bad_option_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["inspect", "--no-such-option", "x.adt"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adt inspect: error:")


def test_python_m_entry_point_gives_one_line_errors(tmp_path):
    bad = tmp_path / "bad.adt"
    bad.write_bytes(b"not an adt file at all")
    r = subprocess.run([sys.executable, "-m", "adt.tools.cli", "inspect", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert set(COMMANDS) >= {"run", "inspect", "verify", "bench", "to-onnx", "compress", "demo"}


_BLOCK = """
import json, sys
BLOCKED = ("torch", "onnx", "onnxruntime", "onnxscript", "tensorly", "matplotlib")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Block())
"""


def test_device_side_commands_and_public_functions_need_no_torch_or_onnx():
    """The torch-free commands and the public report functions import none of the optional packages;
    a command that needs torch says which extra to install, in one line."""
    code = _BLOCK + """
import importlib
for name in ("run", "inspect", "verify", "bench", "to_onnx"):
    importlib.import_module("adt.tools.commands." + name)
from adt.tools import bench, build_report, score_file  # noqa: F401
loaded = sorted(k for k in sys.modules if k.split(".")[0] in BLOCKED)
from adt.tools.cli import main
status = main(["compress", "--help"])
print(json.dumps({"loaded": loaded, "status": status}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"loaded": [], "status": 1}
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adt compress: error:") and "adt[export]" in err[0]


def test_commands_do_not_import_the_dispatcher():
    """adt.tools.commands.* -> adt.tools.errors, never adt.tools.cli (which imports the commands)."""
    import ast
    from pathlib import Path

    import adt.tools.commands as commands

    for path in Path(commands.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "adt.tools.cli" not in imported, path.name
    assert {name for name in COMMANDS} == {"demo", "compress", "run", "inspect", "verify", "bench", "to-onnx"}
    for command in COMMANDS.values():
        assert (Path(commands.__file__).parent / f"{command.module}.py").is_file(), command


def test_public_functions_are_documented():
    """What research scripts import from adt.tools: every name resolves, and every function or class
    has a docstring and type hints (no private names needed from outside)."""
    import inspect

    import adt.tools as tools

    for name in tools.__all__:
        obj = getattr(tools, name)
        assert not name.startswith("_")
        if callable(obj):
            assert inspect.getdoc(obj), name
        if inspect.isfunction(obj):
            hints = inspect.signature(obj)
            assert hints.return_annotation is not inspect.Signature.empty, name
            assert all(p.annotation is not inspect.Parameter.empty for p in hints.parameters.values()), name
