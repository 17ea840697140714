"""The wheel holds the product and nothing else: adt.runtime, adt.exporter, adt.tools, and every
module of those packages in the source tree (no research code, nothing left behind)."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = {"adt/runtime": ROOT / "runtime", "adt/exporter": ROOT / "exporter", "adt/tools": ROOT / "tools"}


def test_wheel_holds_exactly_the_three_packages(tmp_path):
    pytest.importorskip("setuptools", minversion="68")
    pytest.importorskip("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("adt-*.whl")
    names = [n for n in zipfile.ZipFile(wheel).namelist() if not n.split("/")[0].endswith(".dist-info")]
    python = sorted(n for n in names if n.endswith(".py"))
    expected = sorted(f"{prefix}/{p.relative_to(folder).as_posix()}" for prefix, folder in ROOMS.items()
                      for p in folder.rglob("*.py"))
    assert python == expected
    # by folder name: "repro" as a substring would match adt/runtime/preprocess.py
    assert not [n for n in names if {"research", "reproduce"} & set(n.split("/"))]
    assert {n.split("/")[0] for n in names} == {"adt"}
