"""research/boards/report.py on synthetic results: every target collected with its file, met and
MISSED rendered as such, absent files shown as "not measured", other target shapes named, never read."""
from __future__ import annotations

import json

from research.boards import report


def _write(folder, name, obj):
    (folder / name).write_text(json.dumps(obj))


def test_report_renders_targets_boards_and_missing_files(tmp_path):
    _write(tmp_path, "engine_speed.json", {
        "targets": [
            {"id": "engine_lenet5_b1_1thread", "target": "<= 2.0x ONNX Runtime", "measured": 1.7, "unit": "x",
             "limit": 2.0, "met": True, "detail": "numpy 3.1 ms vs ORT 1.8 ms"},
            {"id": "engine_mobilenetv2_b64_1thread", "target": "<= 2.0x ONNX Runtime", "measured": 2.6,
             "unit": "x", "limit": 2.0, "met": False},
        ],
        "table": [{"model": "LeNet-5", "batch": 1, "ratio": 1.7}, {"model": "MobileNetV2", "batch": 64, "ratio": 2.6}],
    })
    _write(tmp_path, "wrn_scale.json", {"targets": {"peak_over_dense": 2.0}})          # older shape
    _write(tmp_path, "armv7l-trixie.json", {
        "board": "armv7l-trixie", "n_images": 10000, "symbols_bit_identical": True, "file": "/x/m.adt",
        "emulation": {"debian": "trixie (python3.13 3.13.5-2)", "debian_packages": {"python3-numpy": "1:2.2.4"}},
        "environment": {"board": {"versions": {"python": "3.13.5", "numpy": "2.2.4", "bitarray": "2.9.2"}}},
        "engines": {"numpy": {"images_equal": 10000}},
        "tests": {"summary": "500 passed, 40 skipped", "exit_code": 0},
        "targets": [{"id": "armv7l_trixie_mnist_10000", "target": "predictions identical to x86",
                     "measured": 10000, "unit": "images equal", "limit": 10000, "met": True}],
    })
    _write(tmp_path, "boards.json", {"targets": [{"id": "stale", "met": True}]})    # the report's own output
    (tmp_path / "broken.json").write_text("{not json")

    md_path, js_path = report.render(tmp_path)
    md, js = md_path.read_text(), json.loads(js_path.read_text())

    ids = [t["id"] for t in js["targets"]]
    assert sorted(ids) == ["armv7l_trixie_mnist_10000", "engine_lenet5_b1_1thread", "engine_mobilenetv2_b64_1thread"]
    assert {t["id"]: t["source"] for t in js["targets"]}["engine_lenet5_b1_1thread"] == "engine_speed.json"
    assert js["targets_met"] == 2 and js["targets_missed"] == 1
    assert js["files_with_other_target_shapes"] == ["wrn_scale.json"]
    row = next(line for line in md.splitlines() if line.startswith("| engine_mobilenetv2_b64_1thread"))
    assert "**MISSED**" in row and "2.6 x" in row and "engine_speed.json" in row
    row = next(line for line in md.splitlines() if line.startswith("| engine_lenet5_b1_1thread"))
    assert "| met |" in row and "numpy 3.1 ms vs ORT 1.8 ms" in row

    boards = {b["file"]: b for b in js["boards"]}
    assert boards["armv7l-trixie.json"]["measured"] and boards["armv7l-trixie.json"]["images_equal"] == 10000
    assert not boards["arm64.json"]["measured"] and not boards["armv7l-bookworm.json"]["measured"]
    trixie = next(line for line in md.splitlines() if "| trixie" in line or "trixie (python3.13" in line)
    assert "10000 / 10000" in trixie and "500 passed, 40 skipped" in trixie and "2.2.4" in trixie
    bookworm_rows = [line for line in md.splitlines() if line.startswith("| armv7l (armhf) | bookworm")]
    assert bookworm_rows and "not measured" in bookworm_rows[0]

    # the engine table's rows are rendered as they are; no memory file but wrn_scale's (no rows, no list)
    assert "| model | batch | ratio |" in md and "| MobileNetV2 | 64 | 2.6 |" in md
    assert js["engine_speed_files"] == [{"file": "engine_speed.json", "table_rows": 2, "targets": 2}]


def test_report_with_no_results_says_not_measured(tmp_path):
    md_path, js_path = report.render(tmp_path)
    md, js = md_path.read_text(), json.loads(js_path.read_text())
    assert js["targets"] == [] and js["memory_files"] == [] and js["engine_speed_files"] == []
    assert "Peak memory: not measured" in md and "NumPy engine vs ONNX Runtime: not measured" in md
    assert md.count("not measured") >= 3 + 2
