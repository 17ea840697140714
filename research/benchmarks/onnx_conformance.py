"""ONNX's own node test cases through the NumPy engine: the conformance anchor (issue 19, part 3).

``onnx.backend.test.case.node.collect_testcases()`` generates every node test case of the installed
``onnx`` (model, inputs, expected outputs). A case is *claimed* when every node of its graph is an
op of the default domain that the NumPy engine registers (:data:`adt.runtime.numpy_engine.OPS`) and
its model imports the default domain at opset <= 17, the runtime's contract (FORMAT.md). Many ops
have cases only at the latest opset although their definition has not changed since opset <= 17
(Relu, Conv, MaxPool, ...): a case of a later model opset is claimed too when, for every op of its
graph, the definition in force at that opset dates from opset <= 17 (``since_version``), so the
case tests opset-17 semantics. Other later-opset cases (an op re-defined after opset 17, mostly to
admit new types: bfloat16, float8, int4) are claimed as "redeclared" when the model, its
default-domain import set to opset 17, passes ``onnx.checker.check_model(full_check=True)``: the
case is then a valid opset-17 model (same inputs, attributes and types) and its expected outputs
hold for the opset-17 definition unless the semantics changed (such a case would fail and be
listed). The three groups are counted apart (``scope``: "opset", "same_definition",
"redeclared"); the rest (``later_definition``) are counted and not run. Each claimed case runs
through :class:`~adt.runtime.numpy_engine.NumpyEngine` built from the case's model as
:mod:`adt.runtime.onnx_proto` parses it (its inputs become the feeds) and is compared with the
expected outputs: same count, shape and dtype, values within rtol 1e-4 / atol 1e-5 (1e-3 for
float16), integers and bools exactly.

``tests/runtime/test_onnx_conformance.py`` asserts the outcome (every claimed case passes or is a
KNOWN_FAILURES entry that still fails); ``python -m research.benchmarks.onnx_conformance`` writes
``results/onnx_node_tests.json`` and ``.md``: per op, cases claimed / passed / known failures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MAX_OPSET", "Case", "Outcome", "collect", "main", "run_case", "summarize"]

MAX_OPSET = 17  # the runtime's contract (FORMAT.md)
RTOL, ATOL = 1e-4, 1e-5
RTOL16, ATOL16 = 1e-3, 1e-3  # float16 outputs: a float16 ulp is ~1e-3


@dataclass
class Case:
    """One ONNX node test case: its name, the op it tests, the model's default-domain opset, the
    scope ("opset": model opset <= 17; "same_definition": later model opset, every op defined as at
    opset <= 17; "redeclared": valid at opset 17 once its import says so), the ops of its graph,
    the serialized model (redeclared: as run) and its data sets ``[(inputs, outputs)]``."""
    name: str
    op: str
    opset: int | None
    scope: str
    ops: tuple[str, ...]
    model: bytes
    input_names: list[str]
    data_sets: list = field(repr=False)


@dataclass
class Outcome:
    name: str
    passed: bool
    reason: str = ""   # why it failed: the error's type and first line, or the mismatch


def _opset(model) -> int | None:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def _defined_since(op: str, opset: int) -> int:
    """The opset that introduced the definition of ``op`` in force at ``opset`` (a large number when
    onnx does not know it)."""
    from onnx import defs

    try:
        return int(defs.get_schema(op, opset, "").since_version)
    except Exception:  # noqa: BLE001 - onnx raises SchemaError for unknown ops/versions
        return 1 << 30


def _redeclared(model, max_opset: int):
    """``model`` with its default-domain import set to ``max_opset`` when the result is a valid model
    (full check: schemas, attributes, types, shape inference), else None."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = max_opset
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception:  # noqa: BLE001 - ValidationError, InferenceError: not an opset-17 model
        return None
    return m


def collect(max_opset: int = MAX_OPSET) -> tuple[list[Case], dict]:
    """The claimed cases (see the module docstring) and counts: ``{"all" (node cases), "claimed",
    "opset", "same_definition", "redeclared" (the three scopes), "later_definition" (engine ops, but
    not a valid opset-17 model), "unclaimed" (ops the engine does not register, or no default-domain
    opset), "later_definition_by_op" ({op: count})}``."""
    from onnx.backend.test.case.node import collect_testcases

    from adt.runtime.numpy_engine import OPS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' own overflow warnings (Cast cases)
        cases = collect_testcases()
    single_op: dict[str, str] = {}
    infos = []
    for c in cases:
        if c.kind != "node":
            continue
        nodes = list(c.model.graph.node)
        ops = tuple(n.op_type for n in nodes)
        default = all(n.domain in ("", "ai.onnx") for n in nodes)
        if len(nodes) == 1:
            single_op[c.name] = nodes[0].op_type
        infos.append((c, ops, default))
    claimed = []
    counts = {"all": len(infos), "claimed": 0, "opset": 0, "same_definition": 0, "redeclared": 0,
              "later_definition": 0, "unclaimed": 0}
    later: dict[str, int] = {}
    for c, ops, default in infos:
        opset = _opset(c.model)
        if not ops or not default or any(op not in OPS for op in ops) or opset is None:
            counts["unclaimed"] += 1
            continue
        model = c.model
        if opset <= max_opset:
            scope = "opset"
        elif all(_defined_since(op, opset) <= max_opset for op in set(ops)):
            scope = "same_definition"
        else:
            model = _redeclared(c.model, max_opset)
            scope = "redeclared"
        # an expanded (function body) case counts for the op it expands
        base = re.sub(r"_expanded(_ver\d+)?$", "", c.name)
        op = single_op.get(c.name) or (f"{single_op[base]} (expanded)" if base in single_op else None) \
            or (ops[0] if len(set(ops)) == 1 else "+".join(sorted(set(ops))))
        if model is None:
            counts["later_definition"] += 1
            later[op] = later.get(op, 0) + 1
            continue
        counts[scope] += 1
        inits = {t.name for t in c.model.graph.initializer}
        names = [i.name for i in c.model.graph.input if i.name not in inits]
        claimed.append(Case(c.name, op, opset, scope, ops, model.SerializeToString(), names, list(c.data_sets)))
        counts["claimed"] += 1
    counts["later_definition_by_op"] = dict(sorted(later.items()))
    return claimed, counts


def _compare(got: np.ndarray, want: np.ndarray) -> str:
    """'' when ``got`` matches ``want`` (shape, dtype, values), else what differs."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"shape {list(got.shape)} != expected {list(want.shape)}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} != expected {want.dtype}"
    if want.dtype.kind in "fc":
        rtol, atol = (RTOL16, ATOL16) if want.dtype == np.float16 else (RTOL, ATOL)
        a, b = got.astype(np.float64), want.astype(np.float64)
        bad = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return (f"{int(bad.sum())} of {bad.size} values differ (first at flat index {i}: "
                    f"{a.reshape(-1)[i]!r} vs {b.reshape(-1)[i]!r})")
        return ""
    if not np.array_equal(got, want):
        return f"{int((got != want).sum())} of {want.size} values differ"
    return ""


def _array(a):
    """A data set entry as a NumPy array where it is a tensor (a TensorProto for types NumPy lacks or
    a NumPy scalar for a 0-d value); sequences and optionals stay as they are."""
    if isinstance(a, np.generic):
        return np.asarray(a)
    if type(a).__name__ == "TensorProto":
        from onnx import numpy_helper

        return numpy_helper.to_array(a)
    return a


def run_case(case: Case) -> Outcome:
    """Run ``case`` through the NumPy engine: passed, or why not (an AdtError's type and message, an
    untyped exception marked UNTYPED, or the first mismatch)."""
    from adt.runtime.format import AdtError
    from adt.runtime.numpy_engine import NumpyEngine
    from adt.runtime.onnx_proto import DTYPES, parse_model

    try:
        engine = NumpyEngine(parse_model(case.model), {})
        for k, (inputs, outputs) in enumerate(case.data_sets):
            inputs, outputs = [_array(a) for a in inputs], [_array(a) for a in outputs]
            if not all(isinstance(a, np.ndarray) for a in inputs + outputs):
                return Outcome(case.name, False, "a sequence or optional input/output (the engine runs tensors only)")
            odd = sorted({str(a.dtype) for a in inputs + outputs} - {str(d) for d in DTYPES.values()})
            if odd:
                return Outcome(case.name, False, f"data of dtype {', '.join(odd)} (not an ONNX type the runtime reads)")
            if len(inputs) != len(case.input_names):
                return Outcome(case.name, False, f"data set {k}: {len(inputs)} inputs for {len(case.input_names)} "
                                                 "graph inputs")
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a NumPy warning inside an op is a finding too
                got = engine.run(dict(zip(case.input_names, inputs)))
            if len(got) != len(outputs):
                return Outcome(case.name, False, f"{len(got)} outputs, expected {len(outputs)}")
            for j, (g, w) in enumerate(zip(got, outputs)):
                diff = _compare(g, w)
                if diff:
                    return Outcome(case.name, False, f"output {j}: {diff}")
    except AdtError as exc:
        return Outcome(case.name, False, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    except Exception as exc:  # noqa: BLE001 - reported (and failed by the test) as untyped
        first = str(exc).splitlines()[0] if str(exc) else ""
        return Outcome(case.name, False, f"UNTYPED {type(exc).__name__}: {first}")
    return Outcome(case.name, True)


def summarize(cases: list[Case], outcomes: list[Outcome], known: dict[str, str],
              not_run: dict[str, int] | None = None) -> dict:
    """Per op: cases (by scope), passed, known failures (name: reason), unexpected outcomes, and
    ``not_run``: its cases with a definition newer than opset 17."""
    per_op: dict[str, dict] = {}

    def entry(op):
        return per_op.setdefault(op, {"op": op, "cases": 0, "cases_opset": 0, "cases_same_definition": 0,
                                      "cases_redeclared": 0, "passed": 0, "known_failures": {}, "unexpected": {},
                                      "not_run_later_definition": 0})
    for op, n in (not_run or {}).items():
        entry(op)["not_run_later_definition"] = n
    for c, o in zip(cases, outcomes):
        e = entry(c.op)
        e["cases"] += 1
        e["cases_" + c.scope] += 1
        if o.passed:
            e["passed"] += 1
            if c.name in known:
                e["unexpected"][c.name] = "passes, but is listed in KNOWN_FAILURES"
        elif c.name in known:
            e["known_failures"][c.name] = known[c.name]
        else:
            e["unexpected"][c.name] = o.reason
    return {k: per_op[k] for k in sorted(per_op)}


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.benchmarks.onnx_conformance", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="folder for onnx_node_tests.json/.md")
    args = ap.parse_args(argv)
    import onnx

    from tests.runtime.test_onnx_conformance import KNOWN_FAILURES

    load_before = _loadavg()
    t0 = time.perf_counter()
    cases, counts = collect()
    t1 = time.perf_counter()
    outcomes = [run_case(c) for c in cases]
    t2 = time.perf_counter()
    per_op = summarize(cases, outcomes, KNOWN_FAILURES, counts["later_definition_by_op"])
    passed = sum(o.passed for o in outcomes)
    known = sum(len(e["known_failures"]) for e in per_op.values())
    unexpected = {n: r for e in per_op.values() for n, r in e["unexpected"].items()}
    met = not unexpected
    out = {
        "onnx": onnx.__version__,
        "max_opset": MAX_OPSET,
        "tolerance": {"rtol": RTOL, "atol": ATOL, "float16": {"rtol": RTOL16, "atol": ATOL16}},
        "counts": {**counts, "passed": passed, "known_failures": known, "unexpected": len(unexpected)},
        "targets": [{
            "id": "onnx_node_tests",
            "target": f"every node test case of every claimed op at opset <= {MAX_OPSET} passes or is a listed known "
                      "failure",
            "measured": passed, "unit": "cases passed", "limit": len(cases) - known, "met": met,
            "detail": f"{passed} passed, {known} known failures, {len(unexpected)} unexpected, of {len(cases)} claimed "
                      f"cases over {len(per_op)} ops (onnx {onnx.__version__}; scopes: {counts['opset']} at model "
                      f"opset <= "
                      f"{MAX_OPSET}, {counts['same_definition']} later but same definition, {counts['redeclared']} "
                      f"redeclared at {MAX_OPSET}; {counts['later_definition']} cases of engine ops with a later "
                      "definition are not run)",
        }],
        "per_op": list(per_op.values()),
        "passed_cases": sorted(o.name for o in outcomes if o.passed),
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "seconds": {"collect": round(t1 - t0, 1), "run": round(t2 - t1, 1)},
        "loadavg_before": load_before, "loadavg_after": _loadavg(),
        "command": "python -m research.benchmarks.onnx_conformance",
    }
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "onnx_node_tests.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        "# ONNX node test cases through the NumPy engine",
        "",
        f"`{out['command']}` (onnx {onnx.__version__}, numpy {np.__version__}). A case of "
        "`onnx.backend.test.case.node.collect_testcases()` is claimed when every op of its graph is one the NumPy "
        f"engine registers and either its model's default-domain opset is <= {MAX_OPSET} (scope 'opset'), or the "
        f"definitions of its ops in force at the model's opset date from opset <= {MAX_OPSET} ('same definition'), or "
        f"the model with its import set to opset {MAX_OPSET} passes onnx.checker's full check ('redeclared': a "
        f"valid opset-{MAX_OPSET} model; most ops were re-versioned after {MAX_OPSET} only to admit new types). "
        "An expanded case (a function op's body) counts as '<op> (expanded)'. Outputs must match in count, shape "
        f"and dtype, values within rtol {RTOL} / atol {ATOL} "
        f"(float16: {RTOL16} / {ATOL16}), integers and bools exactly. Known failures are listed with their reason in "
        "tests/runtime/test_onnx_conformance.py (KNOWN_FAILURES); the test checks that they still fail.",
        "",
        f"**{passed} passed, {known} known failures, {len(unexpected)} unexpected** of {len(cases)} claimed cases; "
        f"by scope: {counts['opset']} at model opset <= {MAX_OPSET}, {counts['same_definition']} at a later model "
        "opset "
        f"whose op definitions date from <= {MAX_OPSET}, {counts['redeclared']} valid as opset-{MAX_OPSET} models once "
        f"redeclared; not run: {counts['later_definition']} cases of engine ops defined after opset {MAX_OPSET}, "
        f"{counts['unclaimed']} cases of other ops; {counts['all']} node cases in all. "
        f"Target met: {'yes' if met else 'NO'}.",
        "",
        f"| op | cases | at opset <= {MAX_OPSET} | same definition | redeclared | passed | known failures | "
        f"not run (defined after {MAX_OPSET}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in per_op.values():
        lines.append(f"| {e['op']} | {e['cases']} | {e['cases_opset']} | {e['cases_same_definition']} | "
                     f"{e['cases_redeclared']} | {e['passed']} | {len(e['known_failures'])} | "
                     f"{e['not_run_later_definition']} |")
    lines += ["", "## Known failures", ""]
    for e in per_op.values():
        for n, r in e["known_failures"].items():
            lines.append(f"- `{n}` ({e['op']}): {r}")
    if unexpected:
        lines += ["", "## Unexpected", ""] + [f"- `{n}`: {r}" for n, r in unexpected.items()]
    lines += ["", "## Passed cases", "", ", ".join(f"`{n}`" for n in out["passed_cases"]), ""]
    (folder / "onnx_node_tests.md").write_text("\n".join(lines))
    print(out["targets"][0]["detail"])
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
