"""Quantizer sweep WITHOUT QAT on one trained checkpoint (python -m research.reproduce.qsweep RUN [SEED]).

Exports in memory (no file written) with several Q / b-rule / grouping choices and prints the file size,
the section sizes and the test error of the exporter's dequantized model (equal to the file's error in
every record of results/runs). Shows how much quantization alone costs before quantization-aware training.
"""
from __future__ import annotations

import sys

import torch

from adt.exporter import MODELS, export_adt, mnist_test_set
from research.paths import RESULTS
from research.reproduce.presets import ALL_RUNS
from research.reproduce.train import load_trained

__all__ = ["SWEEP", "main"]

SWEEP = [(512, "max", "single"), ({"cores": 128, "factors": 128, "other": 64}, "max", "kind"),
         ({"cores": 64, "factors": 64, "other": 32}, "max", "kind"), ({"cores": 64, "factors": 64, "other": 32}, "p99.9", "kind"),
         ({"cores": 32, "factors": 32, "other": 16}, "p99.9", "kind"), ({"cores": 64, "factors": 64, "other": 32}, "p99.9", "tensor"),
         ({"cores": 16, "factors": 16, "other": 8}, "p99.9", "kind")]


def main(argv: list[str]) -> None:
    """``argv``: RUN [SEED [DATA_DIR]]; the run's checkpoint must be in results/ckpt/."""
    torch.set_num_threads(1)
    run, seed = argv[0], int(argv[1]) if len(argv) > 1 else 0
    model, _ = load_trained(ALL_RUNS[run], seed, RESULTS / "ckpt" / f"{run}-s{seed}.ckpt")
    x, y = mnist_test_set(argv[2] if len(argv) > 2 else None)
    print("| Q | b rule | groups | bytes | err quantized % | err float % | sections |\n|---|---|---|---|---|---|---|")
    for q, rule, groups in SWEEP:
        r = export_adt(model, None, input_shape=MODELS[ALL_RUNS[run].model].input_shape, q=q,
                       groups=groups, b_rule=rule, compact_names=True, auto_metadata=False, test_data=(x, y))
        print(f"| {q} | {rule} | {groups} | {r.file_bytes} | {100 * (1 - r.acc_quantized):.2f} | "
              f"{100 * (1 - r.acc_float):.2f} | {r.sections} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
