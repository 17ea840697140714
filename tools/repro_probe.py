"""Short probe run with per-epoch test accuracy (python -m adt.tools.repro_probe RUN AUGMENT EPOCHS DECAY_EVERY).

Used for the LeNet-300 augmentation probe in results/logs/exp300-aug.log (checkpoint goes to /tmp)."""
import sys, json
from pathlib import Path
from dataclasses import replace
from adt.tools.repro_presets import ALL_RUNS
from adt.tools.repro_train import train_run
row, aug, ep, dec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])  # noqa: E501
spec = replace(ALL_RUNS[row], epochs=ep, decay_every=dec)
log = train_run(spec, 0, "/work/shared/data/mnist", Path(f"/tmp/exp-{row}-a{aug}-e{ep}.ckpt"), threads=1, augment=aug, eval_every_epoch=True)
print(row, "aug", aug, "epochs", ep, "decay", dec, log["float_test_acc"], log["train_seconds"], log["test_acc_per_epoch"], log["epoch_losses"][-1], flush=True)
