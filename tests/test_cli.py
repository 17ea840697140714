"""The `adt` dispatcher: per-command --help, one-line usage errors, python -m entry point."""
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
