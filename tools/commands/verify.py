"""``adt verify FILE.adt``: check a file end to end — checksum, full decode, rebuild of every weight,
a forward pass on a zero input (batch 1, shape from the architecture's input), and, when the exporter
stored one (``adt compress --selfcheck``), the self-check: this machine's outputs on the stored probe
against the exporter's (:mod:`adt.runtime.selfcheck`). Exit 0 with one ``OK ...`` line, or exit 1 with
one line naming the first problem."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

import adt.runtime as rt
from adt.runtime import ENGINES
from adt.runtime.format import AdtChecksumError, AdtError, read_adt
from adt.runtime.selfcheck import run_selfcheck
from adt.tools.commands.run import add_max_memory
from adt.tools.errors import CommandError
from adt.tools.inspect_report import safe_text
from adt.tools.scoring import concrete_input_shape

__all__ = ["VerifyFailure", "add_arguments", "run", "verify"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the .adt file to verify")
    parser.add_argument("--engine", choices=ENGINES, default="numpy",
                        help="engine for the forward pass (default: numpy, needs no extra)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON (for scripts)")
    add_max_memory(parser)


class VerifyFailure(CommandError):
    """The first check of :func:`verify` that failed: ``stage`` is checksum, decode, rebuild, forward or selfcheck."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def verify(path: str | Path, engine: str = "numpy", max_memory: int | None = rt.DEFAULT_MAX_MEMORY) -> dict:
    """Run every check; returns the JSON-able result. Raises :class:`VerifyFailure` at the first problem.
    NumPy's overflow warnings are silenced: non-finite weights and outputs are checked explicitly.
    ``max_memory``: the budget of :func:`adt.runtime.load` (rebuild, constant folding and the forward pass)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return _verify(path, engine, max_memory)


def _verify(path: str | Path, engine: str, max_memory: int | None = rt.DEFAULT_MAX_MEMORY) -> dict:
    checks: list[dict] = []
    # checksum + full decode (the reader checks the CRC-32 before parsing anything; it reads no more
    # than the file's size)
    try:
        f = read_adt(path)
    except AdtChecksumError as exc:
        raise VerifyFailure("checksum", str(exc)) from None
    except AdtError as exc:
        raise VerifyFailure("decode", str(exc)) from None
    checks.append({"name": "checksum", "ok": True})
    values = sum(c.stored_count for c in f.cores) + sum(p.stored_count for p in f.params)
    checks.append({"name": "decode", "ok": True, "values": values,
                   "arrays": len(f.cores) + sum(len(p.factors) or 1 for p in f.params)})

    try:
        weights = rt.rebuild_weights(f, max_memory=max_memory)
    except Exception as exc:  # any failure here is a finding about the file (or the runtime)
        raise VerifyFailure("rebuild", _one_line(exc)) from None
    for p in f.params:
        w = weights.get(p.name)
        if w is None:
            raise VerifyFailure("rebuild", f"parameter {p.name!r} was not rebuilt")
        if tuple(w.shape) != tuple(p.shape) or w.dtype != np.float32:
            raise VerifyFailure("rebuild", f"parameter {p.name!r} rebuilt as {w.dtype}{list(w.shape)}, expected float32{list(p.shape)}")
        if not np.all(np.isfinite(w)):
            raise VerifyFailure("rebuild", f"parameter {p.name!r} has non-finite values")
    checks.append({"name": "rebuild", "ok": True, "weights": len(weights),
                   "parameters": sum(int(w.size) for w in weights.values())})

    if f.architecture is None:
        checks.append({"name": "forward", "ok": True, "skipped": "the file has no architecture section"})
        return {"ok": True, "file": str(path), "checks": checks}
    try:
        model = rt.load(f, engine=engine, max_memory=max_memory)
        shape = concrete_input_shape(model)
        y = model.run(np.zeros(shape, dtype=np.float32))
    except AdtError as exc:
        raise VerifyFailure("forward", str(exc)) from None
    except Exception as exc:
        raise VerifyFailure("forward", _one_line(exc)) from None
    outputs = {k: np.asarray(v) for k, v in y.items()} if isinstance(y, dict) else {"output": np.asarray(y)}
    for name, out in outputs.items():
        if out.ndim < 1 or out.shape[0] != 1:
            raise VerifyFailure("forward", f"output {name!r} has shape {list(out.shape)}: it does not keep the batch of 1")
        if not np.all(np.isfinite(out)):
            raise VerifyFailure("forward", f"output {name!r} on a zero input has non-finite values (shape {list(out.shape)})")
    first = next(iter(outputs.values()))
    checks.append({"name": "forward", "ok": True, "engine": engine, "input_shape": list(shape),
                   "output_shape": list(first.shape), "outputs": {k: list(v.shape) for k, v in outputs.items()}})
    try:
        sc = run_selfcheck(model)
    except AdtError as exc:
        raise VerifyFailure("selfcheck", str(exc)) from None
    if sc is None:
        checks.append({"name": "selfcheck", "ok": True, "skipped": "the file stores no self-check (adt compress --selfcheck)"})
    elif not sc.passed:
        raise VerifyFailure("selfcheck", f"this machine's outputs on the stored probe differ from the exporter's by "
                                         f"{sc.max_error:.3g} (allowed {sc.atol:.3g} + float16 rounding, {sc.values} values)")
    else:
        checks.append({"name": "selfcheck", "ok": True, "values": sc.values, "max_error": sc.max_error, "atol": sc.atol})
    return {"ok": True, "file": str(path), "checks": checks}


def _summary(result: dict) -> str:
    c = {x["name"]: x for x in result["checks"]}
    fwd = c["forward"]
    fwd_text = (f"forward skipped ({fwd['skipped']})" if "skipped" in fwd else
                f"forward {'x'.join(map(str, fwd['input_shape']))} -> {'x'.join(map(str, fwd['output_shape']))} "
                f"finite ({fwd['engine']} engine)")
    sc = c.get("selfcheck")
    sc_text = "" if sc is None or "skipped" in sc else \
        f", self-check {sc['values']} values within {sc['max_error']:.2g} of the exporter's"
    return (f"OK {safe_text(result['file'], None)}: checksum, decoded {c['decode']['values']:,} values, "
            f"rebuilt {c['rebuild']['weights']} weights ({c['rebuild']['parameters']:,} parameters), {fwd_text}{sc_text}")


def run(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise CommandError(f"{args.file!r} is not a file")
    try:
        result = verify(args.file, args.engine, args.max_memory)
    except VerifyFailure as exc:
        if args.json:
            print(json.dumps({"ok": False, "file": str(args.file), "stage": exc.stage, "error": str(exc)},
                             ensure_ascii=True))
        raise CommandError(f"{safe_text(args.file, None)}: {safe_text(str(exc), 400)}") from None
    if args.json:
        sys.stdout.write(json.dumps(result, indent=1, ensure_ascii=True) + "\n")
    else:
        print(_summary(result))
    return 0
