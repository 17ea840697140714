"""Short probe run with per-epoch test accuracy and random-shift augmentation.

    python -m research.reproduce.probe RUN AUGMENT EPOCHS DECAY_EVERY --data DIR [--ckpt-dir DIR]

Used for the LeNet-300 augmentation probe of results/NOTES.md row 4 (its output is
results/logs/exp300-aug.log). The checkpoint is scratch (default: the system's temporary folder).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from research.reproduce.presets import ALL_RUNS
from research.reproduce.train import train_run

__all__ = ["probe", "main"]


def probe(run: str, augment: int, epochs: int, decay_every: int, data_dir: str | None,
          ckpt_dir: str | Path | None = None) -> dict[str, Any]:
    """Train ``run`` (seed 0, one thread) for ``epochs`` with the step schedule dividing the lr every
    ``decay_every`` epochs and random shifts of up to ``augment`` pixels; return the training log
    (with ``test_acc_per_epoch``)."""
    spec = replace(ALL_RUNS[run], epochs=epochs, decay_every=decay_every)
    ckpt = Path(ckpt_dir or tempfile.gettempdir()) / f"exp-{run}-a{augment}-e{epochs}.ckpt"
    return train_run(spec, 0, data_dir, ckpt, threads=1, augment=augment, eval_every_epoch=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.reproduce.probe", description=__doc__.splitlines()[0])
    ap.add_argument("run", choices=sorted(ALL_RUNS), help="the run whose model, plan and recipe are trained")
    ap.add_argument("augment", type=int, help="random-shift augmentation, max pixels (0 = none)")
    ap.add_argument("epochs", type=int, help="training epochs")
    ap.add_argument("decay_every", type=int, help="divide the learning rate by 3 every N epochs")
    ap.add_argument("--data", help="MNIST IDX folder (default $ADT_DATA)")
    ap.add_argument("--ckpt-dir", help="where the scratch checkpoint goes (default: the temporary folder)")
    args = ap.parse_args(argv)
    log = probe(args.run, args.augment, args.epochs, args.decay_every, args.data, args.ckpt_dir)
    print(args.run, "aug", args.augment, "epochs", args.epochs, "decay", args.decay_every, log["float_test_acc"],
          log["train_seconds"], log["test_acc_per_epoch"], log["epoch_losses"][-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
