"""Data-parallel training: 2 CPU processes (gloo) started by torchrun train the same weights as one
process on the same global batches and seed; checkpoints resume across world sizes; device and
mixed-precision options.

The 2-process run goes through the path the CLI takes under ``torchrun ... adt compress``:
``python -m torch.distributed.run --standalone --nproc_per_node 2 THIS_FILE OUT`` runs :func:`_worker`
in each process (``distributed.init`` -> ``train`` / ``qat_finetune`` -> ``distributed.shutdown``).

Tolerance of the DDP-vs-one-process comparison: |a - b| <= 1e-6 + 1e-5 |b| on every weight after 21
Adam steps, and 1e-5 relative on every step's loss. The two runs compute the same sums in a different
order (two half-batch gradients averaged by gloo vs one full-batch gradient; the loss as a sum of two
weighted halves), so they agree to float32 rounding per step (~1e-7 relative), which Adam's division
by sqrt(v) magnifies for elements whose gradient is near zero. Measured here: 2.6e-7 worst absolute
weight difference (weights of order 0.1-1), 2.1e-7 worst relative loss difference.
"""
from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from adt.exporter import CheckpointError, TrainConfig, TrainConfigError, apply_ada_tucker, distributed, qat_finetune, train
from adt.exporter.data import tensor_loader
from adt.exporter.distributed import DistEnv
from adt.exporter.planner import LayerPlan

CFG = dict(lr=0.01, batch_size=32, decay_every=1, lr_decay=3.0, seed=3, device="cpu", amp="off")
N = 201  # 6 global batches of 32 and a last one of 9: split 4 / 5 over 2 ranks (uneven shares)
RTOL, ATOL = 1e-5, 1e-6


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3)
        self.fc1 = nn.Linear(216, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


def tiny() -> nn.Module:
    """The same seeded Tucker-parametrized net in every process."""
    torch.manual_seed(0)
    model = Tiny()
    plan = {"conv": LayerPlan((6, 9), (3, 3)), "fc1": LayerPlan((8, 4, 12, 18), (3, 3, 3, 3))}
    return apply_ada_tucker(model, plan, seed=1)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, 1, 8, 8, generator=g)
    return x, x.flatten(1)[:, :10].argmax(1)


def loader():
    x, y = data()
    return tensor_loader(x, y, CFG["batch_size"], shuffle=True, seed=CFG["seed"])


def eval_loader():
    x, y = data()
    return tensor_loader(x[:100], y[:100], 50, shuffle=False)


def tiny_batches():
    """A global batch of 32, then one of a single sample: rank 1's slice of it is empty."""
    x, y = data()
    return [(x[:32], y[:32]), (x[32:33], y[32:33])]


def _worker(out: Path) -> None:
    rank = int(os.environ["RANK"])
    log = open(out / f"log{rank}.txt", "w", buffering=1)
    sys.stdout = sys.stderr = log
    faulthandler.enable(log)  # a crash in torch's C++ shows this rank's Python stack in its log
    env = distributed.init("cpu")
    assert env.world_size == 2 and env.rank == rank and distributed.is_main() == (rank == 0)

    seen = []  # the samples this rank's model was trained on

    def dump(name, model, res):
        torch.save({"state": model.state_dict(), "losses": res.losses, "seen": sum(seen),
                    "acc": getattr(res, "test_accuracy", None), "device": str(next(model.parameters()).device)},
                   out / f"{name}{rank}.pt")
        seen.clear()

    model = tiny()
    model.register_forward_pre_hook(lambda m, i: seen.append(len(i[0])) if m.training else None)
    dump("A", model, train(model, loader(), TrainConfig(epochs=3, **CFG), test_loader=eval_loader()))
    model = tiny()
    train(model, loader(), TrainConfig(epochs=1, checkpoint=out / "ddp.ckpt", **CFG), progress=False)
    model = tiny()
    dump("C", model, train(model, loader(), TrainConfig(epochs=3, checkpoint=out / "single.ckpt", resume=True,
                                                        **CFG), progress=False))
    model = tiny()
    dump("D", model, qat_finetune(model, loader(), epochs=1, lr=1e-2, q=64, device="cpu", amp="off",
                                  progress=False))
    model = tiny()
    dump("E", model, train(model, tiny_batches(), TrainConfig(epochs=1, **CFG), progress=False))
    try:  # only rank 0 reads the checkpoint: every rank must raise its error, none may hang
        train(tiny(), loader(), TrainConfig(epochs=2, checkpoint=out / "bad.ckpt", resume=True, **CFG),
              progress=False)
    except CheckpointError as exc:
        (out / f"F{rank}.txt").write_text(str(exc))
    distributed.shutdown()  # the log stays open: faulthandler writes there if the exit crashes


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One torchrun launch of 2 gloo processes running every job of :func:`_worker`, after a
    single-process 1-epoch checkpoint for the 2-process run to resume from."""
    out = tmp_path_factory.mktemp("ddp")
    torch.set_num_threads(1)
    train(tiny(), loader(), TrainConfig(epochs=1, checkpoint=out / "single.ckpt", **CFG), progress=False)
    (out / "bad.ckpt").write_bytes(b"not a checkpoint")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve()), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    logs = "".join(p.read_text() for p in sorted(out.glob("log*.txt")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs[-3000:]
    return out


def _load(out: Path, name: str, rank: int = 0) -> dict:
    return torch.load(out / f"{name}{rank}.pt", weights_only=True)


def _assert_same_weights(got: dict, want: dict, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert got.keys() == want.keys()
    worst = max(float(((got[k] - want[k]).abs() / (want[k].abs() + atol)).max()) for k in want if want[k].numel())
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=rtol, atol=atol,
                                   msg=lambda m: f"{k}: {m} (worst relative difference {worst:.2e})")


def _reference(epochs: int = 3):
    torch.set_num_threads(1)
    model = tiny()
    return model, train(model, loader(), TrainConfig(epochs=epochs, **CFG), test_loader=eval_loader(),
                        progress=False)


def test_two_processes_train_the_weights_of_one(ddp_run):
    ref, ref_res = _reference()
    a0, a1 = _load(ddp_run, "A", 0), _load(ddp_run, "A", 1)
    assert len(a0["losses"]) == len(ref_res.losses) == 3 * 7  # global steps, not per-rank ones
    assert a0["losses"] == pytest.approx(ref_res.losses, rel=1e-5)
    _assert_same_weights(a0["state"], ref.state_dict())
    assert a0["device"] == "cpu"
    # every rank applied the same averaged gradient: the ranks hold bit-identical models and results
    for k in a0["state"]:
        assert torch.equal(a0["state"][k], a1["state"][k]), k
    assert a0["losses"] == a1["losses"]
    # ... having trained on half of every global batch each (rank 0: 16 of 32 and 4 of the last 9)
    assert (a0["seen"], a1["seen"]) == (3 * (6 * 16 + 4), 3 * (6 * 16 + 5))
    # sharded evaluation sums the ranks' counts: the accuracy of the whole test set, on every rank
    assert a0["acc"] == a1["acc"] and len(a0["acc"]) == 3
    assert all(abs(a - b) <= 1 / 100 for a, b in zip(a0["acc"], ref_res.test_accuracy))
    # the single-process losses really changed the weights (the comparison is not of two inits)
    assert not torch.allclose(ref.state_dict()["fc2.weight"], tiny().state_dict()["fc2.weight"], atol=1e-3)


def test_resume_across_world_sizes(ddp_run):
    ref, ref_res = _reference()
    # 1 epoch on 2 processes, then epochs 2-3 on 1 process == 3 epochs on 1 process
    later = tiny()
    res = train(later, loader(), TrainConfig(epochs=3, checkpoint=ddp_run / "ddp.ckpt", resume=True, **CFG),
                progress=False)
    assert res.steps == ref_res.steps and res.epochs_done == 3
    assert res.losses == pytest.approx(ref_res.losses, rel=1e-5)
    _assert_same_weights(later.state_dict(), ref.state_dict())
    # 1 epoch on 1 process (made before the launch), then epochs 2-3 on 2 processes
    c0 = _load(ddp_run, "C")
    assert c0["losses"] == pytest.approx(ref_res.losses, rel=1e-5)
    _assert_same_weights(c0["state"], ref.state_dict())


def test_two_process_qat_equals_one(ddp_run):
    torch.set_num_threads(1)
    model = tiny()
    res = qat_finetune(model, loader(), epochs=1, lr=1e-2, q=64, device="cpu", amp="off", progress=False)
    d0 = _load(ddp_run, "D")
    assert len(d0["losses"]) == res.steps == 7
    assert d0["losses"] == pytest.approx(res.losses, rel=1e-5)
    _assert_same_weights(d0["state"], model.state_dict())  # fake quantization removed on every rank
    assert d0["device"] == "cpu"


def test_a_global_batch_smaller_than_the_world(ddp_run):
    torch.set_num_threads(1)
    model = tiny()
    res = train(model, tiny_batches(), TrainConfig(epochs=1, **CFG), progress=False)
    e0, e1 = _load(ddp_run, "E", 0), _load(ddp_run, "E", 1)
    assert e0["losses"] == pytest.approx(res.losses, rel=1e-5)
    _assert_same_weights(e0["state"], model.state_dict())
    for k in e0["state"]:
        assert torch.equal(e0["state"][k], e1["state"][k]), k


def test_a_bad_checkpoint_fails_on_every_rank(ddp_run):
    errors = [(ddp_run / f"F{r}.txt").read_text() for r in (0, 1)]
    assert errors[0] == errors[1] and "cannot resume from" in errors[0] and "bad.ckpt" in errors[0]


def test_only_rank_0_prints_progress_with_throughput_and_eta(ddp_run):
    main, other = (ddp_run / "log0.txt").read_text(), (ddp_run / "log1.txt").read_text()
    assert "epoch 3/3: loss" in main and "img/s" in main and "ETA" in main and "test acc" in main
    assert "x 2 processes" in main
    assert "epoch" not in other


# --------------------------------------------------------------------------------------------------
# In one process: sharding, the torchrun environment, device and precision options
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_partition_the_batch_and_weights_make_the_global_mean(world):
    rng = np.random.default_rng(world)
    for n in (1, 2, 3, 9, 32, 33):
        per_sample = rng.random(n)
        parts = [distributed.shard(n, DistEnv(r, world)) for r in range(world)]
        assert [p[0] for p in parts] == [0] + [p[1] for p in parts[:-1]] and parts[-1][1] == n
        assert max(p[1] - p[0] for p in parts) - min(p[1] - p[0] for p in parts) <= 1
        # DDP averages the ranks' gradients: sum_r weight_r * mean_r / W must be the mean over all n
        avg = sum(w * per_sample[a:b].mean() for a, b, w in parts if b > a) / world
        assert avg == pytest.approx(per_sample.mean(), rel=1e-12)


def test_torchrun_environment_is_read_and_checked(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.torchrun_env() is None
    assert distributed.init("cpu") == DistEnv() and distributed.is_main()  # outside torchrun: joins nothing
    distributed.barrier()
    distributed.shutdown()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.torchrun_env() == DistEnv(1, 4, 1, 2)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(TrainConfigError, match="RANK=4, WORLD_SIZE=4"):
        distributed.torchrun_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(TrainConfigError, match="RANK must be an integer"):
        distributed.torchrun_env()


def test_global_batch_must_divide_by_the_world_size(monkeypatch):
    monkeypatch.setattr(distributed, "current", lambda: DistEnv(0, 3))
    with pytest.raises(TrainConfigError, match="32 samples over 3 processes"):
        train(tiny(), loader(), TrainConfig(epochs=1, **CFG), progress=False)


def test_device_options():
    assert distributed.resolve_device("cpu") == torch.device("cpu")
    auto = distributed.resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:", "CPU", "cuda:x"):
        with pytest.raises(TrainConfigError, match="device must be auto, cpu, cuda or cuda:N"):
            TrainConfig(device=bad)
    for bad_amp in ("half", 1, None):
        with pytest.raises(TrainConfigError, match="amp must be one of"):
            TrainConfig(amp=bad_amp)
    assert TrainConfig(amp=True).amp == "on" and TrainConfig(amp=False).amp == "off"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_is_refused_with_a_typed_error_where_there_is_none():
    for spec in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(TrainConfigError, match="CUDA is not available"):
            distributed.resolve_device(spec)
    model = tiny()
    with pytest.raises(TrainConfigError, match="'cuda' but CUDA is not available"):
        train(model, loader(), TrainConfig(epochs=1, **{**CFG, "device": "cuda"}), progress=False)
    with pytest.raises(TrainConfigError, match="CUDA is not available"):
        qat_finetune(model, loader(), epochs=1, q=64, device="cuda", progress=False)
    # "auto" trains here on the CPU and hands back a CPU model
    res = train(model, loader(), TrainConfig(epochs=1, max_steps=2, **{**CFG, "device": "auto", "amp": "auto"}),
                progress=False)
    assert res.steps == 2 and next(model.parameters()).device.type == "cpu"


def test_amp_resolution_on_the_cpu():
    cpu = torch.device("cpu")
    assert not distributed.resolve_amp("auto", cpu).enabled  # off by default on the CPU
    assert not distributed.resolve_amp(False, cpu).enabled
    for asked in (True, "on", "bf16"):
        got = distributed.resolve_amp(asked, cpu)
        assert got.dtype == torch.bfloat16 and not got.scaler and str(got) == "bf16"
    with pytest.raises(TrainConfigError, match="fp16' needs CUDA"):
        distributed.resolve_amp("fp16", cpu)


def test_bf16_autocast_on_the_cpu_trains_in_bf16_and_returns_float32():
    """amp=True on the CPU: the layers compute in bf16 (seen by a hook) from Tucker weights rebuilt in
    float32, the loss still falls, and the model comes back with float32 parameters."""
    seen, rebuilt = [], []

    def run(amp):
        model = tiny()
        hooks = [model.fc2.register_forward_hook(lambda m, i, o: seen.append((amp, o.dtype))),
                 model.fc1.register_forward_pre_hook(lambda m, i: rebuilt.append(m.weight.dtype))]
        res = train(model, loader(), TrainConfig(epochs=2, **{**CFG, "amp": amp}), progress=False)
        for h in hooks:
            h.remove()
        return model, res

    m16, r16 = run(True)
    m32, r32 = run(False)
    assert {d for a, d in seen if a is True} == {torch.bfloat16}
    assert {d for a, d in seen if a is False} == {torch.float32}
    assert set(rebuilt) == {torch.float32}  # the Tucker rebuild ran outside autocast
    assert not any("forward" in vars(m) for m in m16.modules())  # the float32 wrappers were removed
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in m16.parameters())
    assert np.mean(r16.losses[-3:]) < np.mean(r16.losses[:3])
    # bf16 keeps ~3 significant digits: close to the float32 run's first loss, not equal to it
    assert r16.losses[0] == pytest.approx(r32.losses[0], rel=2e-2) and r16.losses[0] != r32.losses[0]


def test_the_fake_quantizer_stays_float32_under_autocast_and_qat_runs_with_amp():
    from adt.exporter.fakequant import fake_quant_ste

    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 0.3
    plain = fake_quant_ste(x, 64, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = fake_quant_ste(x, 64, 0.5)
    assert under.dtype == torch.float32 and torch.equal(under, plain)
    model = tiny()
    res = qat_finetune(model, loader(), epochs=1, lr=1e-3, q=64, device="cpu", amp=True, progress=False)
    assert res.steps == 7 and all(np.isfinite(res.losses)) and res.images == N
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert "fc2.bias" in dict(model.named_parameters())  # fake quantization removed


def test_epoch_stats_and_eta_format():
    from adt.exporter.fit import EpochStats, format_seconds

    assert format_seconds(None) == "?" and format_seconds(59.6) == "1:00" and format_seconds(3725) == "1:02:05"
    stats = EpochStats(0, 0.5, 0.01, 7, 201, 2.0, 10.0)
    assert stats.images_per_second == pytest.approx(100.5)
    res = train(tiny(), loader(), TrainConfig(epochs=2, **CFG), progress=False)
    assert res.images == 2 * N and len(res.images_per_second) == 2 and min(res.images_per_second) > 0


if __name__ == "__main__":  # run by torchrun from the ddp_run fixture
    _worker(Path(sys.argv[1]))
