"""Where training runs: the device, mixed precision, and multi-process data parallel training.

**Device** (``TrainConfig.device``, ``--device``): ``"auto"`` (CUDA when ``torch.cuda.is_available()``,
else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Asking for CUDA where there is none is a
:class:`~adt.exporter.errors.TrainConfigError`. Training moves the model and every batch there and
hands the model back on the CPU (export runs on the CPU).

**Mixed precision** (``TrainConfig.amp``, ``--amp``; see :data:`AMP_MODES`): autocast of the forward
pass and the loss, the parameters and optimizer state staying float32.

* ``"auto"``: on CUDA bf16 autocast where the GPU supports bf16 (Ampere and later), else fp16 autocast
  with a ``GradScaler`` (loss scaling keeps small fp16 gradients from flushing to zero); on the CPU off
  (bf16 autocast on a CPU without bf16 units is slower than float32, and changes the numbers).
* ``"on"`` / ``True``: as ``"auto"`` on CUDA; bf16 autocast on the CPU.
* ``"off"`` / ``False``: float32 throughout.
* ``"bf16"`` / ``"fp16"``: that autocast dtype (fp16 with a ``GradScaler``; fp16 is CUDA only).

Parametrizations run outside autocast (:func:`float32_parametrizations`): the Tucker rebuild of a
weight from its core and factors, and the Eq. 13 fake quantizers of QAT, compute in float32 (the
rebuild's chained products would otherwise mix bf16 and float32 operands, and its weight would lose
precision before the layer uses it). So the weight a layer receives is exactly the float32 weight the
file decodes to; the convolutions and matrix products that use it run in bf16/fp16, so under AMP the
QAT forward pass is close to, not bit-equal to, the file's; the export check measures the file in
float32.

**Data parallel** (PyTorch's own ``DistributedDataParallel``), started by torchrun::

    torchrun --no-python --nproc_per_node 4 adt compress ...     # one machine, 4 processes
    torchrun --nproc_per_node 4 -m adt.tools.cli compress ...    # the same, through the module
    # on each of 2 machines (same command; rendezvous at HOST):
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:29500 --no-python adt compress ...

:func:`init` joins the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``): NCCL on CUDA, gloo on the CPU; process ``LOCAL_RANK`` takes
``cuda:LOCAL_RANK``. Every process builds the same seeded model and sees the same seeded order of
GLOBAL batches (``--batch-size``, divisible by the world size); each takes its contiguous slice of
every global batch (:func:`shard`) and scales its mean loss by its share, so that DDP's gradient
average is exactly the single-process gradient of the global batch (also for an uneven last batch).
A run is therefore the same training whatever the world size, up to float summation order, and a
checkpoint (unwrapped model, optimizer, scheduler, epoch and step) resumes on any world size. Only
rank 0 (:func:`is_main`) prints progress and writes checkpoints and the file; :func:`shutdown` waits
for every rank and leaves the group.

BatchNorm under DDP is plain (not ``SyncBatchNorm``, which PyTorch supports on GPUs only): each rank
normalises its slice with the slice's own statistics, and the running statistics are rank 0's (DDP
broadcasts rank 0's buffers before every forward pass, and training broadcasts them once more at the
end of every epoch). A model with BatchNorm therefore trains slightly differently from one process;
a model without it trains the same. Dropout draws from each rank's own RNG stream.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from .errors import TrainConfigError

__all__ = [
    "AMP_MODES", "DistEnv", "Precision", "normalize_amp", "torchrun_env", "init", "current", "is_main", "barrier",
    "shutdown", "session", "resolve_device", "resolve_amp", "float32_parametrizations", "shard", "wrap", "all_sum",
    "broadcast_buffers", "broadcast_object",
]

#: ``TrainConfig.amp`` values (``True``/``False`` mean ``"on"``/``"off"``).
AMP_MODES = ("auto", "on", "off", "bf16", "fp16")
_KEPT_WORK: list = []  # see shutdown()
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a data-parallel run (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        """True when gradients are averaged across more than one process."""
        return self.world_size > 1


def _env_int(name: str, default: int | None = None) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise TrainConfigError(f"environment variable {name} must be an integer, got {text!r}") from None


def torchrun_env() -> DistEnv | None:
    """The torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``), or
    None when this process was not started by torchrun (no ``RANK``/``WORLD_SIZE``)."""
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if rank is None or world is None:
        return None
    local = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    assert local is not None and local_world is not None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise TrainConfigError(f"torchrun environment is inconsistent: RANK={rank}, WORLD_SIZE={world}, "
                               f"LOCAL_RANK={local} (expected 0 <= RANK < WORLD_SIZE)")
    return DistEnv(rank, world, local, local_world)


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def current() -> DistEnv:
    """The data-parallel group this process is in: the joined group's rank and world size, else
    rank 0 of 1."""
    if not _initialized():
        return DistEnv()
    env = torchrun_env()
    return DistEnv(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                   env.local_rank if env else 0, env.local_world_size if env else 1)


def is_main() -> bool:
    """True on the process that prints, writes checkpoints and writes the file (rank 0; always True
    outside a data-parallel run)."""
    return current().rank == 0


def resolve_device(spec: str, env: DistEnv | None = None) -> torch.device:
    """The torch device for ``spec`` ("auto" | "cpu" | "cuda" | "cuda:N"); under a data-parallel run on
    CUDA, "auto"/"cuda" mean ``cuda:LOCAL_RANK``. CUDA where there is none, or an index past the last
    GPU, is a :class:`TrainConfigError`."""
    env = env or current()
    if not isinstance(spec, str) or not _DEVICE.match(spec):
        raise TrainConfigError(f"TrainConfig.device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainConfigError(f"TrainConfig.device is {spec!r} but CUDA is not available here "
                               f"(torch {torch.__version__}, built {'with' if torch.version.cuda else 'without'} "
                               "CUDA); use --device cpu or auto")
    count = torch.cuda.device_count()
    if spec in ("auto", "cuda"):
        index = env.local_rank if env.distributed else torch.cuda.current_device()
    else:
        index = int(spec.split(":")[1])
        if env.local_world_size > 1:
            raise TrainConfigError(f"TrainConfig.device {spec!r} names one GPU, but torchrun started "
                                   f"{env.local_world_size} processes on this machine; use cuda (process "
                                   "LOCAL_RANK takes cuda:LOCAL_RANK)")
    if index >= count:
        raise TrainConfigError(f"TrainConfig.device needs cuda:{index}, but this machine has {count} GPU(s) "
                               f"(cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


@dataclass(frozen=True)
class Precision:
    """Resolved mixed precision: the autocast dtype (None: float32) and whether to scale the loss."""

    dtype: torch.dtype | None = None
    scaler: bool = False

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The forward-pass context: ``torch.autocast`` with this dtype, or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A fresh ``GradScaler`` for fp16, else None."""
        return torch.amp.GradScaler(device.type) if self.scaler else None

    def __str__(self) -> str:
        if self.dtype is None:
            return "float32"
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype] + (" + loss scaling" if self.scaler else "")


def normalize_amp(amp: str | bool) -> str:
    """``amp`` as one of :data:`AMP_MODES` (True -> "on", False -> "off"); anything else is a
    :class:`TrainConfigError`."""
    if isinstance(amp, bool):
        return "on" if amp else "off"
    if isinstance(amp, str) and amp.lower() in AMP_MODES:
        return amp.lower()
    raise TrainConfigError(f"TrainConfig.amp must be one of {AMP_MODES} or a bool, got {amp!r}")


def resolve_amp(amp: str | bool, device: torch.device) -> Precision:
    """The autocast dtype and loss scaling for ``amp`` on ``device`` (rules in the module docstring)."""
    mode = normalize_amp(amp)
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return Precision()
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if mode == "bf16" and not bf16:
            raise TrainConfigError(f"TrainConfig.amp is 'bf16' but {torch.cuda.get_device_name(device)} has no bf16 "
                                   "support; use fp16 or auto")
        if mode == "fp16" or (mode in ("auto", "on") and not bf16):
            return Precision(torch.float16, scaler=True)
        return Precision(torch.bfloat16)
    if mode == "fp16":
        raise TrainConfigError(f"TrainConfig.amp 'fp16' needs CUDA (device is {device}); use bf16 on the CPU")
    return Precision(torch.bfloat16)  # "on" / "bf16" on the CPU


@contextlib.contextmanager
def float32_parametrizations(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Inside, every parametrization of ``model`` (Tucker rebuilds, fake quantizers) computes with
    autocast off, in float32, even when the forward pass runs under ``torch.autocast``."""
    lists = [m for m in model.modules() if isinstance(m, parametrize.ParametrizationList)]

    def outside_autocast(forward):
        def run(*args, **kwargs):
            with torch.autocast(device_type=device.type, enabled=False):
                return forward(*args, **kwargs)
        return run

    for plist in lists:  # an instance attribute shadows the class's forward; deleting it restores it
        plist.forward = outside_autocast(plist.forward)
    try:
        yield
    finally:
        for plist in lists:
            del plist.forward


def init(device: str = "auto", timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group torchrun describes (NCCL when ``device`` resolves to CUDA, else gloo) and
    return this process's :class:`DistEnv`. Outside torchrun, with a world size of 1, or when already
    joined, it joins nothing. Call it once at the start of a command; :func:`shutdown` at the end."""
    env = torchrun_env()
    if env is None or not env.distributed:
        return current()
    if _initialized():
        return current()
    if not torch.distributed.is_available():
        raise TrainConfigError("torchrun started this process, but this torch build has no torch.distributed")
    dev = resolve_device(device, env)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    try:
        torch.distributed.init_process_group(backend, init_method="env://",
                                             timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        raise TrainConfigError(f"cannot join the torchrun process group ({backend}, rank {env.rank} of "
                               f"{env.world_size}): {str(exc).splitlines()[0]}") from None
    return current()


def barrier() -> None:
    """Wait for every rank (nothing outside a data-parallel run)."""
    if _initialized():
        torch.distributed.barrier()


def shutdown(wait: bool = True) -> None:
    """Leave the process group: wait for every rank (``wait``), then destroy it. Nothing outside a
    data-parallel run. After an error pass ``wait=False`` (the other ranks may never arrive)."""
    if not _initialized():
        return
    if wait:
        work = torch.distributed.barrier(async_op=True)
        work.wait()
        # Keep the barrier's handle for the life of the process. A gloo collective's Work object
        # holds a Python object; if gloo's worker thread drops the last reference, it takes the GIL
        # to free it, and when that happens while the interpreter is finalizing (right after the last
        # barrier), the thread dies mid-unwind and the process aborts ("terminate called without an
        # active exception", SIGABRT) after a successful run. The group itself outlives
        # destroy_process_group while DDP-trained parameters exist (seen with torch 2.13), so its
        # threads are still there at exit.
        _KEPT_WORK.append(work)
    torch.distributed.destroy_process_group()


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[DistEnv]:
    """``with session(args.device) as env:`` — :func:`init` on entry, :func:`shutdown` on exit (without
    the final barrier when the body raised)."""
    env = init(device)
    try:
        yield env
    except BaseException:
        shutdown(wait=False)
        raise
    shutdown()


def shard(n: int, env: DistEnv) -> tuple[int, int, float]:
    """This rank's part of a global batch of ``n`` samples: ``(start, stop, weight)``.

    The batch is cut into ``world_size`` contiguous slices whose sizes differ by at most one (rank r
    gets ``[r*n//W, (r+1)*n//W)``). ``weight`` = ``W * len / n`` is what the rank's mean loss is
    multiplied by so that DDP's average of the ranks' gradients is the mean over all ``n`` samples.
    A rank whose slice is empty (``n < W``) gets weight 0 and must still take part in the step."""
    w = env.world_size
    start, stop = env.rank * n // w, (env.rank + 1) * n // w
    return start, stop, (w * (stop - start) / n if n else 0.0)


def wrap(model: nn.Module, device: torch.device, env: DistEnv | None = None) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` in a data-parallel run (rank 0's parameters and
    buffers are broadcast to every rank here), else ``model`` itself."""
    env = env or current()
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=device.index if ids else None)


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over all ranks (``value`` itself outside a data-parallel run)."""
    if _initialized() and torch.distributed.get_world_size() > 1:
        value = value.clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
    return value


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so all ranks hold the same
    model after training (nothing outside a data-parallel run)."""
    if not (_initialized() and torch.distributed.get_world_size() > 1):
        return
    for buf in model.buffers():
        if buf.numel():
            torch.distributed.broadcast(buf, src=0)


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (pickled; ``obj`` itself outside a data-parallel run). Used so
    that only rank 0 reads a checkpoint: the other machines need no copy of the file."""
    if not (_initialized() and torch.distributed.get_world_size() > 1):
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
