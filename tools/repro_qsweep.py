"""Quantizer sweep WITHOUT QAT on one trained checkpoint (python -m adt.tools.repro_qsweep RUN [SEED]).

Exports in memory (no file written) with several Q / b-rule / grouping choices and prints the file size,
the section sizes and the test error of the exporter's dequantized model (equal to the file's error in
every record of results/runs). Shows how much quantization alone costs before quantization-aware training.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from adt.exporter.export import export_adt, mnist_test_set
from adt.exporter.models import INPUT_SHAPES

from .repro_presets import ALL_RUNS
from .repro_train import load_trained

SWEEP = [(512, "max", "single"), ({"cores": 128, "factors": 128, "other": 64}, "max", "kind"),
         ({"cores": 64, "factors": 64, "other": 32}, "max", "kind"), ({"cores": 64, "factors": 64, "other": 32}, "p99.9", "kind"),
         ({"cores": 32, "factors": 32, "other": 16}, "p99.9", "kind"), ({"cores": 64, "factors": 64, "other": 32}, "p99.9", "tensor"),
         ({"cores": 16, "factors": 16, "other": 8}, "p99.9", "kind")]


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    run, seed = argv[0], int(argv[1]) if len(argv) > 1 else 0
    root = Path(__file__).resolve().parent.parent / "results"
    model, _ = load_trained(ALL_RUNS[run], seed, root / "ckpt" / f"{run}-s{seed}.ckpt")
    x, y = mnist_test_set(argv[2] if len(argv) > 2 else None)
    print("| Q | b rule | groups | bytes | err quantized % | err float % | sections |\n|---|---|---|---|---|---|---|")
    for q, rule, groups in SWEEP:
        r = export_adt(model, None, input_shape=INPUT_SHAPES[ALL_RUNS[run].model], q=q,
                       groups=groups, b_rule=rule, compact_names=True, auto_metadata=False, test_data=(x, y))
        print(f"| {q} | {rule} | {groups} | {r.file_bytes} | {100 * (1 - r.acc_quantized):.2f} | "
              f"{100 * (1 - r.acc_float):.2f} | {r.sections} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
