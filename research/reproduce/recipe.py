"""Recipe probes for issue 5: train one reproduction run with changed training knobs and log the
test accuracy of every epoch (``results/logs/recipe-*.json``). The float model only: a probe that
wins becomes a run in :mod:`research.reproduce.presets` and is exported and scored from its file.

    python -m research.reproduce.recipe lenet300-ada --epochs 60 --schedule cosine --wd 1e-4 --tag cos-wd
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from adt.runtime.format import write_atomic
from research.paths import RESULTS

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from adt.exporter import MODELS, SCHEDULES, AdtError, TrainConfigError

    from research.reproduce.presets import ALL_RUNS, TEACHERS
    from research.reproduce.train import train_run

    ap = argparse.ArgumentParser(prog="python -m research.reproduce.recipe", description=__doc__.splitlines()[0])
    ap.add_argument("run", choices=sorted(ALL_RUNS), help="the run whose model and plan are trained")
    ap.add_argument("--tag", required=True, help="name of this probe (the log is recipe-RUN-TAG-sSEED.json)")
    ap.add_argument("--model", choices=sorted(MODELS), help="built-in model instead of the run's (e.g. lenet5-relu)")
    ap.add_argument("--epochs", type=int, help="epochs (default: the run's)")
    ap.add_argument("--decay-every", type=int, help="step schedule: divide lr by 3 every N epochs")
    ap.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule")
    ap.add_argument("--lr", type=float, help="initial Adam learning rate")
    ap.add_argument("--batch", type=int, help="batch size")
    ap.add_argument("--wd", type=float, help="AdamW decoupled weight decay")
    ap.add_argument("--smooth", type=float, help="label smoothing")
    ap.add_argument("--teacher", choices=sorted(TEACHERS), help="distil from this dense teacher (trained on first use)")
    ap.add_argument("--alpha", type=float, help="distillation weight (needs a teacher; the KD rows use 0.9)")
    ap.add_argument("--temperature", type=float, help="distillation temperature (default 4)")
    ap.add_argument("--init-from", choices=sorted(TEACHERS),
                    help="start from HOSVD + HOOI of this dense teacher's trained weights instead of scratch")
    ap.add_argument("--augment", type=int, help="random-shift augmentation, max pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=None, help="MNIST IDX folder (default $ADT_DATA)")
    ap.add_argument("--subset", type=int, help="train on this many training images (smoke tests)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: the repo's results/)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint in OUT/ckpt/recipe-*.ckpt")
    args = ap.parse_args(argv)
    changes = {k: v for k, v in {"model": args.model, "epochs": args.epochs, "decay_every": args.decay_every,
                                 "schedule": args.schedule, "lr": args.lr, "batch_size": args.batch,
                                 "weight_decay": args.wd, "label_smoothing": args.smooth,
                                 "augment": args.augment, "teacher": args.teacher,
                                 "distill_alpha": args.alpha, "distill_temperature": args.temperature,
                                 "init_from": args.init_from}.items() if v is not None}
    name = f"recipe-{args.run}-{args.tag}"
    spec = replace(ALL_RUNS[args.run], name=name, **changes)
    ckpt = args.out / "ckpt" / f"{name}-s{args.seed}.ckpt"
    try:
        log = train_run(spec, args.seed, args.data, ckpt, threads=args.threads, eval_every_epoch=True,
                        subset=args.subset)
    except (AdtError, TrainConfigError) as exc:  # bad knob or missing data: one line, no traceback
        print(f"recipe: {exc}", file=sys.stderr)
        return 1
    if not args.keep:
        ckpt.unlink(missing_ok=True)
    log["changes"] = changes
    log["base_run"] = args.run
    out = args.out / "logs" / f"{name}-s{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, (json.dumps(log, indent=1) + "\n").encode())
    accs = log["test_acc_per_epoch"]
    print(f"{name} s{args.seed}: float error {100 * (1 - log['float_test_acc']):.2f}% "
          f"(best epoch {100 * (1 - max(accs)):.2f}%), last loss {log['epoch_losses'][-1]:.4f}, "
          f"{log['train_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
