"""Training one network on several processes with torch DDP, as icefall and SpeechBrain do.

One process per GPU (NCCL) or several on the CPU (gloo), started by ``torchrun``::

    torchrun --nproc-per-node 2 -m asr.cli train-hybrid --data data/train --feats ... ...

``train_nnet`` needs nothing more: it finds the launch in torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or uses a process group the
caller has already initialised, and then

- splits the training utterances (and the validation ones) into one shard per process,
  balanced by frames and fixed by the utterance lengths alone, so every process computes
  the same split and builds frames and windows of its own shard only;
- runs, in every epoch, as many optimiser steps as one process would
  (``ceil(training frames / batch_size)``; for the TDNN, which trains on chunks,
  ``ceil(training chunks / (batch_size // chunk_width))``): each process cuts its shard,
  shuffled, into that many batches, so every process takes the same number of steps and
  no collective waits for a process that has run out of data. Step ``s`` of the run is one
  global batch made of step ``s`` of every process, about ``batch_size`` frames in all
  (``batch_size / K`` per process), and each process's loss is weighted so that DDP's
  averaged gradient is the gradient of the mean loss over that global batch's frames (for
  chunks, whose last ones in an utterance are short, the processes sum their frames per
  step once an epoch): the effective batch size and learning rate are those of a
  single-process run;
- sums losses, correct frames and frame counts over the processes after each epoch, so
  every process reports, schedules and stops on the same numbers;
- writes settings, checkpoints and history on rank 0 only; every process resumes from
  the same checkpoint.

Shuffling, dropout and frequency masks draw from generators seeded by (seed, epoch, rank)
at the start of each epoch (as ``DistributedSampler.set_epoch`` does), so a resumed run
needs no per-process random state and continues exactly as an uninterrupted one.
BatchNorm (``norm = "batch"``) normalises over each process's part of a batch; the default
LayerNorm does not depend on the batch.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

#: Environment variables torchrun sets in every process it starts.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a run of ``world_size`` processes (ranks count from 0).

    ``owns_group``: the process group was initialised here (from torchrun's environment)
    and is destroyed by :meth:`close`; a group the caller initialised is left to it.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files."""
        return self.rank == 0

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    """True when torchrun's variables are set: a run of K processes, K = 1 included (a
    one-GPU NCCL run is ``torchrun --nproc-per-node 1``)."""
    return all(v in os.environ for v in LAUNCH_VARIABLES)


def cuda_wanted(device: str) -> bool:
    """Whether a run with ``NnetConfig.device`` = ``device`` trains on GPUs."""
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def setup(device: str) -> Distributed | None:
    """The distributed context of this process, or None for a single-process run.

    Uses an initialised default process group when there is one; otherwise, under
    torchrun, initialises it: NCCL with ``cuda:LOCAL_RANK`` when the run trains on GPUs
    (``device`` "cuda", or "auto" with CUDA present), gloo on the CPU otherwise.
    """
    if dist.is_available() and dist.is_initialized():
        backend = dist.get_backend()
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        ctx = Distributed(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    elif launched_by_torchrun():
        local_rank = int(os.environ["LOCAL_RANK"])
        if cuda_wanted(device):
            if not torch.cuda.is_available():
                raise ValueError('device = "cuda" but torch sees no CUDA device')
            torch.cuda.set_device(local_rank)
            backend = "nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend)
        ctx = Distributed(dist.get_rank(), dist.get_world_size(), local_rank, backend,
                          owns_group=True)
    else:
        return None
    if ctx.backend == "nccl":
        if device == "cpu":
            raise ValueError('device = "cpu" but the process group uses NCCL, which needs '
                             'GPUs; use gloo for the CPU')
        torch.cuda.set_device(ctx.local_rank)
    log.info("rank %d of %d (local rank %d), backend %s", ctx.rank, ctx.world_size,
             ctx.local_rank, ctx.backend)
    return ctx


def device_of(ctx: Distributed, device: str) -> torch.device:
    """``cuda:LOCAL_RANK`` under NCCL, else the CPU (gloo trains on the CPU)."""
    if ctx.backend == "nccl":
        return torch.device("cuda", ctx.local_rank)
    if device == "cuda":
        raise ValueError(f'device = "cuda" needs the NCCL backend, not {ctx.backend}')
    return torch.device("cpu")


def shard_utterances(lengths: Sequence[int], world_size: int) -> list[list[int]]:
    """Split utterances into ``world_size`` shards of nearly equal frame counts.

    Longest first, each to the shard with the fewest frames so far (ties: the lower rank);
    a function of the lengths alone, so every process computes the same shards.

    Parameters
    ----------
    lengths : (U,) frames of each utterance.

    Returns
    -------
    one sorted list of utterance positions per rank (a shard may be empty when there are
    fewer utterances than processes).
    """
    order = sorted(range(len(lengths)), key=lambda u: (-lengths[u], u))
    frames = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for u in order:
        rank = min(range(world_size), key=lambda r: (frames[r], r))
        shards[rank].append(u)
        frames[rank] += lengths[u]
    return [sorted(s) for s in shards]


def num_steps(total_frames: int, batch_size: int) -> int:
    """Optimiser steps per epoch: those of one process over all training frames."""
    return max(math.ceil(total_frames / batch_size), 1)


def step_sizes(frames: int, steps: int) -> np.ndarray:
    """(steps,) sizes of ``torch.tensor_split`` of ``frames`` items into ``steps`` parts."""
    base, extra = divmod(frames, steps)
    return base + (np.arange(steps) < extra).astype(np.int64)


def global_batch_sizes(shard_frames: Sequence[int], steps: int) -> np.ndarray:
    """(steps,) frames of each global batch: the sum over ranks of their step's batch."""
    return sum((step_sizes(f, steps) for f in shard_frames), np.zeros(steps, dtype=np.int64))


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one process's shuffling, dropout and masks in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0]
               & 0x7FFF_FFFF_FFFF_FFFF)


def shard_batches(frames: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch of a shard of ``frames`` frames, shuffled: ``steps`` batches of frame numbers."""
    return list(torch.tensor_split(torch.randperm(frames, generator=generator), steps))


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Sum ``values`` (one list per process, the same length everywhere) over all processes."""
    buf = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.tolist()


def process_rank() -> int:
    """This process's rank: from the process group, else torchrun's ``RANK``, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def barrier(ctx: Distributed | None) -> None:
    """Wait for every process (nothing to wait for in a single-process run)."""
    if ctx is None:
        return
    if ctx.backend == "nccl":
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()
