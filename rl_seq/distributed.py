"""The process group under ``torchrun``: world, per-rank seeds, all-reduce, agree, gather.

Offline training is data-parallel with PyTorch's own DDP when ``WORLD_SIZE`` > 1: the engine
joins the group (:func:`init`), each rank samples its own windows from a stream derived from
the seed (:func:`rank_seed`) and the losses divide by the real steps of the global batch
(:func:`global_mean`). In one process every helper here is the identity.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from rl_seq.runs import seed_everything


def world() -> tuple[int, int]:
    """(rank, world size) of this process: torchrun's ``RANK`` / ``WORLD_SIZE``, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def distributed() -> bool:
    """Whether this process trains in a process group of more than one rank."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world()[1] > 1


def rank_seed(seed: int) -> int:
    """The seed of this rank's own sampling stream (rank 0, and a single process: ``seed``)."""
    return seed + 100_003 * world()[0]


def init(device: torch.device, seed: int) -> tuple[bool, torch.device]:
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group (NCCL on CUDA, gloo on CPU)
    and give ranks > 0 their own torch / numpy streams (dropout). Returns whether it created
    the group (the caller ends it) and the device of this rank (its own GPU on CUDA)."""
    rank, size = world()
    if size == 1 or torch.distributed.is_initialized():
        return False, device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        device = torch.device("cuda", torch.cuda.current_device())
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if rank > 0:
        seed_everything(rank_seed(seed))
    return True, device


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count`` with ``count`` summed over the DDP ranks (and scaled by the world
    size, which DDP's gradient averaging divides out): the loss of the global batch, however
    its real (unpadded) steps fall on the ranks. In one process: ``total / count``."""
    if not distributed():
        return total / count
    c = count.detach().clone()
    torch.distributed.all_reduce(c)
    return total * world()[1] / c


def agree(flags: list[float]) -> list[float]:
    """Max over ranks of each flag (a stop asked for on any rank stops all)."""
    if not distributed():
        return flags
    t = torch.tensor(flags, dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the ranks."""
    if not distributed() or not metrics:
        return metrics
    t = torch.tensor(list(metrics.values()), dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return dict(zip(metrics, (t / world()[1]).tolist(), strict=True))


def gather(obj: Any) -> list:
    """``obj`` of every rank, in rank order (a collective: every rank calls it)."""
    if not distributed():
        return [obj]
    out = [None] * world()[1]
    torch.distributed.all_gather_object(out, obj)
    return out
