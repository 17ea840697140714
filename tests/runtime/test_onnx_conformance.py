"""ONNX's own node test cases through the NumPy engine (issue 19: the conformance anchor).

Every case of ``onnx.backend.test.case.node.collect_testcases()`` whose ops the engine registers, at
model opset <= 17 (or a later model opset whose op definitions are those of opset <= 17, or that is
a valid opset-17 model once its import says so: see research/benchmarks/onnx_conformance.py), must
match ONNX's expected outputs, unless it is listed in KNOWN_FAILURES with its reason; a listed case
must still fail, so the list cannot go stale. ``python -m research.benchmarks.onnx_conformance``
writes the same outcome to results/onnx_node_tests.md|json.
"""
from __future__ import annotations

import pytest

pytest.importorskip("onnx")

from research.benchmarks import onnx_conformance as conformance  # noqa: E402

_BF16 = "bfloat16 data: no NumPy dtype, and not a type the runtime's ONNX reader accepts"
_TRAIN_BN = "training-mode BatchNormalization (running-statistics outputs): the engine runs inference only"
_MASK = "Dropout's mask output: the engine runs inference only (Dropout is the identity)"
_TRAIN_DROPOUT = ("Dropout with training_mode=True (random dropping): the engine runs inference only and returns "
                  "the input (it should refuse: asked of numpy_engine's owner)")

#: case name -> why the NumPy engine does not pass it (each must still fail: see the test below)
KNOWN_FAILURES: dict[str, str] = {
    "test_batchnorm_example_training_mode": _TRAIN_BN,
    "test_batchnorm_epsilon_training_mode": _TRAIN_BN,
    "test_cast_FLOAT_to_BFLOAT16": "Cast to bfloat16: NumPy has no bfloat16 (refused, AdtUnsupportedOpError)",
    "test_cast_BFLOAT16_to_FLOAT": _BF16,
    "test_castlike_FLOAT_to_BFLOAT16": _BF16,
    "test_castlike_BFLOAT16_to_FLOAT": _BF16,
    "test_dropout_default_mask": _MASK,
    "test_dropout_default_mask_ratio": _MASK,
    "test_training_dropout_default_mask": _MASK,
    "test_training_dropout_mask": _MASK,
    "test_training_dropout_zero_ratio_mask": _MASK,
    "test_training_dropout_default": _TRAIN_DROPOUT,
    "test_training_dropout": _TRAIN_DROPOUT,
    "test_identity_sequence": "a sequence input: the engine runs tensors only",
    "test_identity_opt": "an optional(sequence) input: the engine runs tensors only",
    "test_maxpool_2d_uint8": "MaxPool on uint8: the engine pads with -inf, which an integer type cannot hold",
    "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool's Indices output is not implemented",
    "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool's Indices output is not implemented",
}


@pytest.fixture(scope="module")
def outcomes():
    """{case name: (case, outcome)} for every claimed case (about 10 s: collect_testcases builds
    every case of the installed onnx)."""
    cases, _ = conformance.collect()
    return {c.name: (c, conformance.run_case(c)) for c in cases}


def test_every_claimed_case_passes_or_is_a_known_failure(outcomes):
    unexpected = {n: o.reason for n, (c, o) in outcomes.items() if not o.passed and n not in KNOWN_FAILURES}
    assert not unexpected, "\n".join(f"{n}: {r}" for n, r in sorted(unexpected.items()))


def test_known_failures_still_fail(outcomes):
    gone = [n for n in KNOWN_FAILURES if n not in outcomes]
    assert not gone, f"KNOWN_FAILURES entries that are no longer claimed cases: {gone}"
    fixed = [n for n in KNOWN_FAILURES if outcomes[n][1].passed]
    assert not fixed, f"KNOWN_FAILURES entries that pass now (remove them): {fixed}"


def test_failures_are_typed(outcomes):
    """A refused case fails with an AdtError (or a stated data limitation), never a raw exception."""
    untyped = {n: o.reason for n, (c, o) in outcomes.items() if o.reason.startswith("UNTYPED")}
    assert not untyped, untyped


@pytest.mark.parametrize("op", ["Abs", "Cast", "CastLike", "ConstantOfShape", "Equal", "Erf", "Exp", "Expand",
                                "HardSigmoid", "HardSwish", "LayerNormalization", "Log", "Max", "Min", "Mod", "Neg",
                                "Pad", "Pow", "Range", "ReduceMax", "ReduceSum", "Slice", "Split", "Sqrt", "Where",
                                "LSTM", "GRU", "ReduceMin", "ReduceProd", "ArgMax", "ArgMin", "Not", "And", "Or",
                                "Xor", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Sum", "Reciprocal",
                                "Floor", "Ceil", "Sin", "Cos", "PRelu", "Elu", "Softplus", "Tile",
                                "Conv", "MaxPool", "Gemm", "Softmax"])
def test_the_claimed_ops_have_passing_cases(outcomes, op):
    """Guards the collection itself: an op the engine claims, with cases in this onnx, keeps passing
    ones (a filter bug or an onnx upgrade would otherwise empty the anchor silently)."""
    passed = [n for n, (c, o) in outcomes.items() if o.passed and c.op == op]
    assert passed, f"no passing ONNX node test case for {op}"


def test_the_committed_pass_list_still_passes(outcomes):
    """results/onnx_node_tests.json (written by research/benchmarks/onnx_conformance.py) is the
    committed pass list: with the same onnx version, every case it lists passes now."""
    import json
    from pathlib import Path

    import onnx

    path = Path(__file__).resolve().parents[2] / "results" / "onnx_node_tests.json"
    if not path.exists():
        pytest.skip("no committed results/onnx_node_tests.json")
    committed = json.loads(path.read_text())
    if committed.get("onnx") != onnx.__version__:
        pytest.skip(f"the pass list is of onnx {committed.get('onnx')}, this is {onnx.__version__}")
    regressed = [n for n in committed["passed_cases"] if n not in outcomes or not outcomes[n][1].passed]
    assert not regressed, f"cases of the committed pass list that fail now: {regressed}"
