"""``adt demo``: the whole product in a few minutes — compress LeNet-5 with ADA-Tucker (the paper's
Table 1 preset), train briefly, export one .adt file, read it back, score it with the torch-free
runtime and show where every byte went.

torch is imported at module level so that an install without [export] gets the CLI's
"pip install 'adt[export]'" message.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch  # at module level on purpose: see the module docstring

from adt.exporter import (
    MODELS, PRESETS, TrainConfig, apply_ada_tucker, count_params, export_adt, mnist_loaders, mnist_test_set,
    qat_finetune, train,
)
from adt.runtime.format import AdtFile, byte_breakdown, read_adt
from adt.runtime.mnist import resolve_data_dir
from adt.runtime.preprocess import InputConvention
from adt.tools.errors import CommandError
from adt.tools.scoring import score_file

__all__ = ["add_arguments", "run"]

MODEL = "lenet5"
PRESET = "lenet5-ada"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", help="MNIST IDX folder (default: $ADT_DATA)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default 2: about a minute per "
                                                         "epoch on 2 CPU cores; the paper trains far longer)")
    p.add_argument("--qat-epochs", type=int, default=0, help="quantization-aware fine-tuning epochs (default 0)")
    p.add_argument("--subset", type=int, help="train on a random subset of this many images (faster, less accurate)")
    p.add_argument("--q", type=int, default=512, help="Eq. 13 levels for cores and factors (default 512, the paper's)")
    p.add_argument("--q-other", type=int, default=64, help="Eq. 13 levels for biases (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: LeNet-sized layers run faster on one thread than on two contended ones)")
    p.add_argument("-o", "--output", default="lenet5-demo.adt", metavar="FILE",
                   help="where to write the .adt file (default lenet5-demo.adt)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def where_bytes_go(f: AdtFile) -> list[tuple[str, float]]:
    """(label, bytes) rows: header, each section (payload split into cores / factors / other), checksum."""
    bd = byte_breakdown(f).legacy_dict()
    rows = []
    for name, n in bd["sections"].items():
        rows.append((name, n))
        if name == "payload":
            rows += [(f"  {k}", v) for k, v in bd["payload_split_bytes"].items()]
    return rows


def run(args: argparse.Namespace) -> int:
    if args.epochs < 0 or args.qat_epochs < 0:
        raise CommandError("--epochs and --qat-epochs must be >= 0")
    if args.subset is not None and args.subset < 1:
        raise CommandError(f"--subset must be >= 1, got {args.subset}")
    out_path = Path(args.output)
    if not out_path.parent.is_dir():
        raise CommandError(f"-o {args.output!r}: folder {str(out_path.parent)!r} does not exist")
    data_dir = resolve_data_dir(args.data)
    if args.threads:
        torch.set_num_threads(args.threads)
    say = (lambda s: None) if args.json else print
    progress = not (args.quiet or args.json)

    torch.manual_seed(args.seed)
    model = MODELS[MODEL].build()
    plan = dict(PRESETS[PRESET])
    apply_ada_tucker(model, plan, init="scratch", seed=args.seed)
    say(f"1. LeNet-5 (431,080 weights) as ADA-Tucker, preset {PRESET!r}: {count_params(model)} stored parameters")
    for name, lp in plan.items():
        say(f"     {name:6s} reshape {'x'.join(map(str, lp.reshape)):>14s}  core {'x'.join(map(str, lp.core))}")

    train_loader, _ = mnist_loaders(data_dir, batch_size=256, subset=args.subset, seed=args.seed)
    t0 = time.perf_counter()
    if args.epochs:
        say(f"2. training {args.epochs} epoch(s), Adam lr 0.01, batch 256 ...")
        train(model, train_loader, TrainConfig(epochs=args.epochs, seed=args.seed, threads=args.threads),
              progress=progress)
    qplan = None
    if args.qat_epochs:
        say(f"   quantization-aware fine-tuning, {args.qat_epochs} epoch(s) ...")
        qplan = qat_finetune(model, train_loader, epochs=args.qat_epochs, progress=progress,
                             q={"cores": args.q, "factors": args.q, "other": args.q_other}).plan
    train_s = time.perf_counter() - t0

    x, y = mnist_test_set(data_dir)
    say(f"3. quantizing (Eq. 13, Q={args.q}, biases Q={args.q_other}), Huffman coding, writing {out_path} ...")
    rep = export_adt(model, out_path, input_shape=MODELS[MODEL].input_shape, plan=qplan,
                     q={"cores": args.q, "factors": args.q, "other": args.q_other}, model_name=MODEL,
                     test_data=(x, y), metadata={"preset": PRESET, "epochs": str(args.epochs)},
                     input_convention=InputConvention.mnist())  # so `adt run FILE --mnist` / --images need no flag

    f = read_adt(out_path)  # read back and fully validated: checksum, tables, payload
    scored = score_file(out_path, x, y)
    acc, engine = scored.acc, scored.evaluator
    rows = where_bytes_go(f)
    result = {
        "file": str(out_path), "file_bytes": f.file_size, "dense_float32_bytes": f.original_float32_bytes(),
        "true_ratio": f.original_float32_bytes() / f.file_size, "paper_eq14_ratio": rep.paper_eq14_ratio,
        "stored_values": rep.stored_values, "acc_float_torch": rep.acc_float,
        "acc_quantized_torch": rep.acc_quantized, "acc_file": acc, "engine": engine,
        "bytes": {k.strip(): v for k, v in rows}, "train_seconds": round(train_s, 1),
        "epochs": args.epochs, "qat_epochs": args.qat_epochs, "seed": args.seed,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    say(f"4. scored the file itself with {engine}: test accuracy {acc:.4f} (error {100 * (1 - acc):.2f}%)")
    say(f"   torch before quantization {rep.acc_float:.4f}, after {rep.acc_quantized:.4f}")
    say(f"\nwhere the {f.file_size:,} bytes of {out_path} go:")
    for label, n in rows:
        say(f"  {label:14s} {n:9.1f}  {100 * n / f.file_size:5.1f}%")
    say(f"\ntrue ratio: {f.original_float32_bytes():,} float32 bytes / {f.file_size:,} file bytes = "
        f"{result['true_ratio']:.1f}x  (the paper's Eq. 14 formula would claim {rep.paper_eq14_ratio:.1f}x)")
    say(f"training took {train_s:.0f} s. Next: adt inspect {out_path}; adt run {out_path} --mnist DIR")
    sys.stdout.flush()
    return 0
