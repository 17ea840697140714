"""A user's conv-BN-ReLU-residual net on MNIST through the exporter (issue 19's BatchNorm case).

    .venv/bin/python -m research.benchmarks.bn_mnist [--epochs 1] [--out results/bn_mnist.json]

1. Trains ``ConvBnNet`` (stem conv-BN-ReLU, two residual conv-BN-ReLU blocks, global average pool,
   linear; about 19k values) for ``--epochs`` on the 60,000 MNIST training images (Adam, lr 0.003,
   cosine schedule).
2. ``dense``: exports it with the defaults (Q = 512, groups by kind, nearest-level rounding; no Tucker
   layer) and scores float model and file on the 10,000 test images; ``dense_floor`` the same with the
   paper's Eq. 13 floor (which moves every value down by half a step on average). ``old_bn_scheme`` scores what the
   exporter stored before issue 19: the four BatchNorm statistics quantized with the "other" group's
   Q and b (rounded like the file), evaluated in torch; the smallest variance and its quantized value
   are recorded.
3. ``ada_hooi``: ADA-Tucker at ``--ratio`` with HOOI from the trained weights: test accuracy after
   HOOI, after BatchNorm recalibration (20 batches), after ``--finetune-epochs`` of training, and of
   the exported file.
Writes results/bn_mnist.json and .md, with a "targets" entry: file accuracy within 0.5 points of the
float model (dense export).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adt.exporter import TrainConfig, apply_ada_tucker, evaluate, export_adt, mnist_loaders, plan_model, train
from adt.exporter.batchnorm import batchnorm_layers, recalibrate_batchnorm_
from adt.runtime.format import dequantize, quantize, write_atomic
from research.paths import RESULTS

__all__ = ["ConvBnNet", "trained_convbn", "old_scheme_accuracy", "main"]


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class ConvBnNet(nn.Module):
    """stem conv(1->32, stride 2)-BN-ReLU, two residual blocks of 32 channels, GAP, linear(32->10)."""

    input_shape = (1, 28, 28)

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32)
        self.block1, self.block2 = _Block(32), _Block(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block2(self.block1(torch.relu(self.bn(self.stem(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def trained_convbn(epochs: int, data: str | None = None):
    """(model, train_loader, test_loader): ``ConvBnNet`` trained for ``epochs`` on MNIST (seed 0, Adam lr
    0.003, cosine schedule, batch 128), in eval mode."""
    torch.manual_seed(0)
    train_loader, test_loader = mnist_loaders(data, batch_size=128, seed=0)
    model = ConvBnNet()
    train(model, train_loader, TrainConfig(epochs=epochs, lr=0.003, batch_size=128, schedule="cosine"), progress=False)
    return model.eval(), train_loader, test_loader


def old_scheme_accuracy(model: nn.Module, test, q: int = 512) -> dict:
    """Accuracy when the four BatchNorm statistics are quantized with every other plain value under one
    (Q, b) (the "other" group of the pre-issue-19 exporter, floor rounding): what its files computed."""
    m = copy.deepcopy(model).eval()
    stats = {f"{bn.path}.{s}": getattr(bn.module, s) for bn in batchnorm_layers(m)
             for s in ("weight", "bias", "running_mean", "running_var")}
    others = [t for name, t in m.state_dict().items() if t.is_floating_point() and "conv" not in name
              and "stem.weight" not in name] + list(stats.values())
    b = float(max(float(t.detach().abs().max()) for t in others))
    smallest = float(min(float(bn.module.running_var.min()) for bn in batchnorm_layers(m)))
    with torch.no_grad():
        for t in stats.values():
            t.copy_(torch.from_numpy(dequantize(quantize(t.numpy(), q, b), q, b)).reshape(t.shape))
    quantized_smallest = float(min(float(bn.module.running_var.min()) for bn in batchnorm_layers(m)))
    return {"q": q, "b": b, "smallest_running_var": smallest, "quantized": quantized_smallest,
            "accuracy": evaluate(m, test)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2, help="training epochs of the float model (default 2)")
    ap.add_argument("--ratio", type=float, default=4.0, help="ADA-Tucker compression ratio for the HOOI run (default 4)")
    ap.add_argument("--finetune-epochs", type=int, default=1, help="training after HOOI (default 1)")
    ap.add_argument("--data", help="MNIST folder (default $ADT_DATA)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bn_mnist.json", help="results JSON (the .md beside it)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, train_loader, test_loader = trained_convbn(args.epochs, args.data)
    tmp = args.out.parent / "bn_mnist.adt.tmp"
    res: dict = {"benchmark": "research/benchmarks/bn_mnist.py", "command": " ".join(["python -m research.benchmarks.bn_mnist"] + (argv or [])),
                 "machine": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                             "cpus": os.cpu_count()}, "epochs": args.epochs}
    rep = export_adt(model, tmp, test_data=test_loader)
    res["dense"] = {"acc_float": rep.acc_float, "acc_file": _file_accuracy(tmp, test_loader),
                    "file_bytes": rep.file_bytes, "true_ratio": rep.true_ratio, "check": rep.check.__dict__}
    rep = export_adt(model, tmp, test_data=test_loader, rounding="floor", force=True)
    res["dense_floor"] = {"acc_float": rep.acc_float, "acc_file": _file_accuracy(tmp, test_loader),
                            "file_bytes": rep.file_bytes, "true_ratio": rep.true_ratio, "check": rep.check.__dict__}
    res["old_bn_scheme"] = old_scheme_accuracy(model, test_loader)

    ada = copy.deepcopy(model)
    plan = plan_model(ada, args.ratio)
    apply_ada_tucker(ada, plan, init="hooi")
    hooi = {"ratio": args.ratio, "after_hooi": evaluate(ada, test_loader)}
    recalibrate_batchnorm_(ada, train_loader, batches=20)
    hooi["after_bn_recalibration"] = evaluate(ada, test_loader)
    if args.finetune_epochs:
        train(ada, train_loader, TrainConfig(epochs=args.finetune_epochs, lr=0.001, batch_size=128), progress=False)
        ada.eval()
        hooi["after_finetune"] = evaluate(ada, test_loader)
    rep = export_adt(ada, tmp, test_data=test_loader)
    hooi.update(acc_float=rep.acc_float, acc_file=_file_accuracy(tmp, test_loader), file_bytes=rep.file_bytes,
                true_ratio=rep.true_ratio, check=rep.check.__dict__)
    res["ada_hooi"] = hooi
    tmp.unlink(missing_ok=True)
    gap = 100 * abs(res["dense"]["acc_float"] - res["dense"]["acc_file"])
    res["targets"] = [{"id": "bn_mnist_file_accuracy", "target": "file accuracy within 0.5 pt of the float model "
                       "(default export)", "measured": round(gap, 3), "unit": "points", "limit": 0.5, "met": bool(gap <= 0.5),
                       "detail": f"float {res['dense']['acc_float']:.4f}, file {res['dense']['acc_file']:.4f} "
                                 f"(pre-issue-19 BN storage: {res['old_bn_scheme']['accuracy']:.4f})"}]
    res["seconds"] = round(time.time() - t0, 1)
    write_atomic(args.out, (json.dumps(res, indent=1) + "\n").encode())
    write_atomic(args.out.with_suffix(".md"), _render(res).encode())
    print(_render(res))
    return 0


def _file_accuracy(path: Path, test_loader) -> float:
    """Accuracy of the file run by the runtime's NumPy engine on the whole test loader."""
    import adt.runtime as rt

    m = rt.load(path)
    correct = total = 0
    for x, y in test_loader:
        correct += int((m.run(x.numpy()).argmax(1) == y.numpy()).sum())
        total += len(y)
    return correct / total


def _render(r: dict) -> str:
    d, n, o, h = r["dense"], r["dense_floor"], r["old_bn_scheme"], r["ada_hooi"]
    lines = [
        "# A conv-BN-ReLU-residual net on MNIST through the exporter (issue 19)", "",
        f"Written by `{r['command']}`; {r['epochs']} training epoch(s), 10,000 test images, file accuracy from the "
        f"runtime's NumPy engine ({r['seconds']:.0f} s in all).", "",
        "| export | float model | file | file bytes | true ratio |", "|---|---|---|---|---|",
        f"| dense, defaults (BN as scale/shift, nearest rounding) | {d['acc_float']:.4f} | {d['acc_file']:.4f} | {d['file_bytes']:,} | {d['true_ratio']:.2f}x |",
        f"| dense, Eq. 13 floor rounding | {n['acc_float']:.4f} | {n['acc_file']:.4f} | {n['file_bytes']:,} | {n['true_ratio']:.2f}x |",
        f"| ADA-Tucker {h['ratio']:g}x, HOOI + recalibration + fine-tune | {h['acc_float']:.4f} | {h['acc_file']:.4f} | "
        f"{h['file_bytes']:,} | {h['true_ratio']:.2f}x |", "",
        f"Before issue 19 the exporter quantized the four BatchNorm statistics with the other plain values "
        f"(Q={o['q']}, b={o['b']:.3g}): the smallest running variance {o['smallest_running_var']:.4g} became "
        f"{o['quantized']:.4g} and test accuracy {o['accuracy']:.4f}.", "",
        f"HOOI from the trained weights at {h['ratio']:g}x: {h['after_hooi']:.4f} after HOOI, "
        f"{h['after_bn_recalibration']:.4f} after BatchNorm recalibration (20 batches)"
        + (f", {h['after_finetune']:.4f} after fine-tuning" if "after_finetune" in h else "") + ".", "",
        "| target | measured | met |", "|---|---|---|",
    ]
    lines += [f"| {t['target']} | {t['measured']} {t['unit']} | {'met' if t['met'] else 'MISSED'} |" for t in r["targets"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
