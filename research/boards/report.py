"""Assemble results/boards.md and results/boards.json from the committed results files.

    python -m research.boards.report [--results results]

Reads every ``results/*.json`` with a top-level ``"targets"`` list (one entry per issue target:
``{"id", "target", "measured", "unit", "limit", "met", "detail"}``) and writes one table of all of them
(met or MISSED, with the file each comes from), then three sections:

* emulated boards: the board checks of ``research/boards/board_check.sh`` (arm64.json,
  armv7l-bookworm.json, armv7l-trixie.json): Debian suite and package versions, numpy/bitarray, the
  emulated pytest summary, MNIST images with predictions equal to x86, decoded-symbol hashes equal;
* peak memory per model: the targets of the memory results files (``memory*.json``, ``cold_start.json``,
  ``wrn_scale.json``) and their ``"table"`` rows;
* NumPy engine vs ONNX Runtime: ``engine_speed.json``'s ``"table"`` rows, else its targets.

Nothing is computed here: every figure is copied from a results file, and a file that is absent is
listed as "not measured". Files whose ``"targets"`` are not a list (an older shape) are named, not read.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["BOARDS", "MEMORY_FILES", "ENGINE_FILE", "collect", "render", "build_report", "main"]

REPO = Path(__file__).resolve().parents[2]
OUTPUT = "boards"                       # results/boards.md + results/boards.json (never read back)
# (results file stem, board, Debian suite, the command that produces it)
BOARDS = (
    ("arm64", "aarch64 (arm64)", "bookworm",
     "bash research/boards/board_check.sh --arch arm64 --suite bookworm --file results/adt/lenet5-ada-s0-paper.adt"),
    ("armv7l-bookworm", "armv7l (armhf)", "bookworm",
     "bash research/boards/board_check.sh --arch armhf --suite bookworm --file results/adt/lenet5-ada-s0-paper.adt"),
    ("armv7l-trixie", "armv7l (armhf)", "trixie",
     "bash research/boards/board_check.sh --arch armhf --suite trixie --file results/adt/lenet5-ada-s0-paper.adt"),
)
MEMORY_FILES = ("memory*.json", "cold_start.json", "wrn_scale.json")
ENGINE_FILE = "engine_speed.json"


def _load(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def collect(results: Path) -> tuple[list[dict], list[str]]:
    """Every target of every results file (each with its "source" file name), and the names of the
    files whose "targets" are in another shape than a list."""
    targets: list[dict] = []
    other: list[str] = []
    for path in sorted(results.glob("*.json")):
        if path.stem == OUTPUT:
            continue
        data = _load(path)
        if data is None or "targets" not in data:
            continue
        if not isinstance(data["targets"], list):
            other.append(path.name)
            continue
        for t in data["targets"]:
            if isinstance(t, dict):
                targets.append({**t, "source": path.name})
    return targets, other


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _met(t: dict) -> str:
    return "met" if t.get("met") is True else ("**MISSED**" if t.get("met") is False else "not judged")


def _targets_table(targets: list[dict], source: bool = True) -> list[str]:
    head = "| id | target | measured | limit | status |" + (" source |" if source else "")
    lines = [head, "|" + " --- |" * (5 + source)]
    for t in targets:
        measured = _fmt(t.get("measured")) + (f" {t['unit']}" if t.get("unit") else "")
        detail = f" ({_fmt(t['detail'])})" if t.get("detail") else ""
        row = (f"| {_fmt(t.get('id'))} | {_fmt(t.get('target'))} | {measured}{detail} | {_fmt(t.get('limit'))} "
               f"| {_met(t)} |")
        lines.append(row + (f" {t['source']} |" if source else ""))
    return lines


def _rows_table(rows: list[dict]) -> list[str]:
    """A list of flat dicts as a Markdown table, columns in order of first appearance."""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return lines


def _board_section(results: Path) -> tuple[list[str], list[dict]]:
    lines = ["## Emulated boards (qemu-user, Debian's own numpy and bitarray)", "",
             "| board | Debian | python / numpy / bitarray | emulated tests | MNIST predictions equal to x86 "
             "| decoded symbols equal (SHA-256) | file | source |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    summary = []
    for stem, board, suite, command in BOARDS:
        data = _load(results / f"{stem}.json")
        if data is None or "board" not in data:
            # an arm64.json from before board_check.sh (no "board" key) is not this check's result
            lines.append(f"| {board} | {suite} | not measured | not measured | not measured | not measured | - "
                         f"| {stem}.json |")
            summary.append({"file": f"{stem}.json", "board": board, "suite": suite, "measured": False,
                            "command": command})
            continue
        emu = data.get("emulation") or {}
        env = (data.get("environment") or {}).get("board", {})
        ver = env.get("versions", {})
        pk = emu.get("debian_packages") or {}
        numpy_e = (data.get("engines") or {}).get("numpy", {})
        tests = data.get("tests") or {}
        equal = numpy_e.get("images_equal")
        n = data.get("n_images")
        debs = ", ".join(f"{k} {v}" for k, v in pk.items() if k in ("python3-numpy", "python3-bitarray"))
        lines.append(
            f"| {board} | {_fmt(emu.get('debian', suite))}{'; ' + debs if debs else ''} "
            f"| {_fmt(ver.get('python'))} / {_fmt(ver.get('numpy'))} / {_fmt(ver.get('bitarray'))} "
            f"| {_fmt(tests.get('summary', 'not run'))} | {_fmt(equal)} / {_fmt(n)} "
            f"| {_fmt(data.get('symbols_bit_identical'))} | {_fmt(Path(str(data.get('file', '-'))).name)} | {stem}.json |")
        summary.append({"file": f"{stem}.json", "board": board, "suite": suite, "measured": True,
                        "debian": emu.get("debian"), "debian_packages": pk, "versions": ver,
                        "tests": tests.get("summary"), "tests_exit_code": tests.get("exit_code"),
                        "images_equal": equal, "n_images": n,
                        "symbols_equal": data.get("symbols_bit_identical"), "model": data.get("file"),
                        "date_utc": data.get("date_utc"), "command": data.get("command") or command})
    lines += ["", "Emulated timings say nothing about a real board's speed; each board is re-run by its "
              "command (research/boards/README.md)."]
    return lines, summary


def _file_section(title: str, paths: list[Path], what: str) -> tuple[list[str], list[dict]]:
    lines = [f"## {title}", ""]
    found = []
    for path in paths:
        data = _load(path)
        if data is None:
            continue
        found.append({"file": path.name})
        lines.append(f"From `results/{path.name}`:")
        lines.append("")
        rows = data.get("table")
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            lines += _rows_table(rows) + [""]
            found[-1]["table_rows"] = len(rows)
        targets = data.get("targets")
        if isinstance(targets, list) and targets:
            lines += _targets_table([t for t in targets if isinstance(t, dict)], source=False) + [""]
            found[-1]["targets"] = len(targets)
        elif not (isinstance(rows, list) and rows):
            lines += ["(no \"table\" rows and no \"targets\" list in this file)", ""]
    if not found:
        lines += [f"{what}: not measured (no results file).", ""]
    return lines, found


def build_report(results: Path) -> tuple[str, dict]:
    """The Markdown text and the JSON object of the report on ``results``."""
    targets, other = collect(results)
    md = ["# Boards, memory and engine speed: every measured target", "",
          f"Generated {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by `python -m research.boards.report` "
          "from the results files named in each row; nothing here is measured by the report itself.", "",
          "## All targets", ""]
    if targets:
        met = sum(t.get("met") is True for t in targets)
        missed = sum(t.get("met") is False for t in targets)
        md += [f"{len(targets)} targets: {met} met, {missed} missed.", ""] + _targets_table(targets)
    else:
        md.append("No results file has a \"targets\" list: not measured.")
    if other:
        md += ["", "Files with \"targets\" in an older shape (not a list), not collected: "
               + ", ".join(f"`{o}`" for o in other) + "."]
    md.append("")
    board_lines, boards = _board_section(results)
    md += board_lines + [""]
    mem_paths = sorted({p for pat in MEMORY_FILES for p in results.glob(pat)})
    mem_lines, memory = _file_section("Peak memory per model", mem_paths, "Peak memory")
    md += mem_lines
    eng_lines, engine = _file_section("NumPy engine vs ONNX Runtime (dense model from `adt to-onnx`)",
                                      [results / ENGINE_FILE], "NumPy engine vs ONNX Runtime")
    md += eng_lines
    report = {
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m research.boards.report",
        "targets": targets,
        "targets_met": sum(t.get("met") is True for t in targets),
        "targets_missed": sum(t.get("met") is False for t in targets),
        "files_with_other_target_shapes": other,
        "boards": boards,
        "memory_files": memory,
        "engine_speed_files": engine,
    }
    return "\n".join(md).rstrip() + "\n", report


def render(results: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write boards.md and boards.json into ``out_dir`` (default: ``results``); return their paths."""
    from adt.runtime.format import write_atomic

    out_dir = out_dir or results
    text, report = build_report(results)
    md, js = out_dir / f"{OUTPUT}.md", out_dir / f"{OUTPUT}.json"
    write_atomic(md, text.encode())
    write_atomic(js, (json.dumps(report, indent=2) + "\n").encode())
    return md, js


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m research.boards.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=REPO / "results", help="results folder (default: <repo>/results)")
    p.add_argument("--out-dir", type=Path, default=None, help="where boards.md/.json go (default: --results)")
    args = p.parse_args(argv)
    md, js = render(args.results, args.out_dir)
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
