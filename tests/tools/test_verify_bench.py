"""adt verify (passes a good file, names the first problem of a bad one in one line) and adt bench
(runs on a small file quickly; --json parses)."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from adt.runtime.format import read_adt

from cli_helpers import adt, assert_one_line_error
from tools_adt_files import mixed_file, tiny_model_file


def recrc(data: bytearray) -> bytes:
    """Fix the CRC-32 so that a deliberate corruption gets past the checksum."""
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.adt"
    path.write_bytes(tiny_model_file())
    return path


def test_verify_good_file(tiny):
    out = adt("verify", tiny)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK ") and len(out.stdout.strip().splitlines()) == 1
    assert "forward 1x1x4x4 -> 1x3" in out.stdout
    out = adt("verify", tiny, "--json")
    r = json.loads(out.stdout)
    assert r["ok"] and [c["name"] for c in r["checks"]] == ["checksum", "decode", "rebuild", "forward", "selfcheck"]
    assert r["checks"][2]["parameters"] == 8 * 16 + 8 + 3 * 8 + 3
    assert "skipped" in r["checks"][4]  # the file stores no self-check


def test_verify_file_without_architecture(tmp_path):
    path = tmp_path / "m.adt"
    path.write_bytes(mixed_file())
    out = adt("verify", path)
    assert out.returncode == 0, out.stderr
    assert "forward skipped" in out.stdout


def test_verify_catches_a_flipped_bit(tiny):
    data = bytearray(tiny.read_bytes())
    data[len(data) - 10] ^= 0x01
    tiny.write_bytes(bytes(data))
    line = assert_one_line_error(adt("verify", tiny), "verify")
    assert "checksum:" in line and "CRC-32" in line


def test_verify_catches_bad_payload_with_valid_crc(tiny):
    f = read_adt(tiny.read_bytes())
    payload = next(s for s in f.sections if s.name == "payload")
    data = bytearray(tiny.read_bytes())
    assert f.payload_bits % 8, "the fixture must have padding bits"
    data[payload.offset + payload.length - 1] |= 0x01  # a padding bit set: invalid, CRC made valid
    tiny.write_bytes(recrc(data))
    line = assert_one_line_error(adt("verify", tiny), "verify")
    assert "decode:" in line and "payload" in line


def test_verify_catches_an_unrunnable_architecture(tmp_path):
    from onnx import TensorProto, helper

    from adt.runtime.format import AdtWriter
    nodes = [helper.make_node("Flatten", ["input"], ["a"], axis=1),
             helper.make_node("Gemm", ["a", "w"], ["b"], transB=1),
             helper.make_node("Hardmax", ["b"], ["output"])]  # not an op the numpy engine runs
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    w = AdtWriter()
    w.set_architecture(model.SerializeToString())
    gi = w.add_group(16, 1.0)
    w.add_plain("w", np.arange(8, dtype=np.uint16).reshape(2, 4), gi)
    path = tmp_path / "hardmax.adt"
    w.write(path)
    line = assert_one_line_error(adt("verify", path), "verify")
    assert "forward:" in line and "Hardmax" in line


def test_verify_missing_file(tmp_path):
    assert_one_line_error(adt("verify", tmp_path / "nope.adt"), "verify")


def test_bench_small_file_json(tiny):
    out = adt("bench", tiny, "--repeats", "2", "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["file_bytes"] == tiny.stat().st_size and r["input_shape"] == [1, 4, 4]
    for key in ("numpy", "onnxruntime", "dense_onnxruntime"):
        e = r["engines"][key]
        assert 0 < e["cold_start_s"] and 0 < e["batch1_s"] and 0 < e["batch64_s"], (key, e)
        assert 0 < e["load_s"] and 0 < e["first_run_s"], (key, e)
    assert set(r["ratios_vs_dense"]) == {f"{e}_{k}_vs_dense" for e in ("numpy", "onnxruntime")
                                        for k in ("cold_start", "batch1", "batch64")}
    mem = r["memory"]
    assert 0 <= mem["peak_bytes"] <= mem["run_peak_bytes"] and mem["method"]
    assert "first batch-1 run" in mem["run_covers"]
    assert mem["run_over_dense_float32"] == mem["run_peak_bytes"] / r["dense_float32_bytes"]
    out = adt("bench", tiny, "--repeats", "1", "--no-memory", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "dense .onnx + ORT" in out.stdout and "vs the dense baseline" in out.stdout


def test_peak_memory_of_load_and_first_run_is_plausible(tmp_path):
    """LeNet-5 (1.7 MB of float32 weights): the load's peak holds at least the weights, the run's
    peak (same process, from before the load) is at least the load's, and neither is wild."""
    from adt.runtime.samples import lenet5_file
    from adt.tools.benchmark import input_shape_of, peak_memory

    path = tmp_path / "lenet5.adt"
    path.write_bytes(lenet5_file(seed=0))
    dense = read_adt(path).original_float32_bytes()
    assert input_shape_of(path) == (1, 1, 28, 28)
    mem = peak_memory(path)
    # the weights must become resident (memory the imports freed may be reused: not all of it is new)
    assert dense // 2 <= mem["peak_bytes"] <= mem["run_peak_bytes"] < 4 * dense + (64 << 20), (mem, dense)
    if mem["method"].startswith("Linux VmHWM"):
        # the load alone: the weights plus a few MiB of decode and rebuild temporaries
        assert mem["peak_bytes"] < dense + (16 << 20), (mem, dense)


def test_peak_memory_of_a_weights_only_file_is_the_load_alone(tmp_path):
    from adt.tools.benchmark import input_shape_of, peak_memory

    path = tmp_path / "w.adt"
    path.write_bytes(mixed_file())
    assert input_shape_of(path) is None
    mem = peak_memory(path)
    assert mem["peak_bytes"] >= 0 and "run_peak_bytes" not in mem and "run_covers" not in mem


def test_bench_threads_runs_in_a_limited_child(tiny):
    out = adt("bench", tiny, "--repeats", "1", "--threads", "1", "--no-memory", "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["threads"] == 1 and r["memory"] is None
    assert r["engines"]["numpy"]["batch64_s"] > 0
    line = assert_one_line_error(adt("bench", tiny, "--threads", "0"), "bench")
    assert "--threads" in line


def test_bench_obeys_max_memory(tiny):
    # every load of the benchmark (in this process and in the --threads child) takes the limit
    for extra in ((), ("--threads", "1")):
        line = assert_one_line_error(adt("bench", tiny, "--repeats", "1", "--no-memory", "--max-memory", "16",
                                         *extra), "bench")
        assert "max_memory=16 bytes" in line, line
    out = adt("bench", tiny, "--repeats", "1", "--no-memory", "--max-memory", "none", "--json", timeout=120)
    assert out.returncode == 0, out.stderr


def test_bench_needs_an_architecture(tmp_path):
    path = tmp_path / "m.adt"
    path.write_bytes(mixed_file())
    line = assert_one_line_error(adt("bench", path, "--repeats", "1"), "bench")
    assert "no architecture" in line
    assert_one_line_error(adt("bench", path, "--repeats", "0"), "bench")


@pytest.mark.parametrize("cmd", ["inspect", "verify", "bench"])
def test_every_option_has_help(cmd):
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"adt.tools.commands.{cmd}").add_arguments(parser)
    for action in parser._actions:
        assert action.help, (cmd, action.dest)


def _huge_file(tucker: bool) -> bytes:
    """The tiny MLP with b = 3e38: a Tucker product (or the forward pass) overflows float32."""
    from adt.runtime.format import AdtWriter

    from tools_adt_files import tiny_onnx
    w = AdtWriter()
    w.set_architecture(tiny_onnx())
    g = w.add_group(4, 3e38)
    top = np.full
    if tucker:
        c = w.add_core(top((2, 2), 3, np.uint16), g)
        w.add_tucker("fc1.weight", (8, 16), c, [top((8, 2), 3, np.uint16), top((16, 2), 3, np.uint16)], g)
    else:
        w.add_plain("fc1.weight", top((8, 16), 3, np.uint16), g)
    w.add_plain("fc1.bias", top(8, 3, np.uint16), g)
    w.add_plain("fc2.weight", top((3, 8), 3, np.uint16), g)
    w.add_plain("fc2.bias", top(3, 3, np.uint16), g)
    return w.to_bytes()


def test_verify_catches_non_finite_weights_and_outputs(tmp_path):
    path = tmp_path / "huge.adt"
    path.write_bytes(_huge_file(tucker=True))
    line = assert_one_line_error(adt("verify", path), "verify")
    assert "rebuild:" in line and "fc1.weight" in line and "non-finite" in line
    path.write_bytes(_huge_file(tucker=False))
    # A zero input still meets the biases: relu(fc1.bias) = 1.5e38, and fc2 sums 8 of them times 1.5e38.
    line = assert_one_line_error(adt("verify", path), "verify")
    assert "forward:" in line and "non-finite" in line
