"""Data-parallel training on PyTorch's own engine (torch.distributed + DDP).

Nothing is configured: as in nanoGPT, a run is distributed when ``torchrun``
has set ``RANK`` in the environment. The backend follows the device: NCCL on
CUDA, gloo on the CPU. Each process trains on its own shard of every epoch;
gradients are averaged by DistributedDataParallel, so all processes hold the
same weights after each step.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("RANK", -1)) != -1


def setup(device: torch.device) -> tuple[DistInfo | None, torch.device]:
    """Join the process group torchrun describes; returns (info, this process's device).

    Outside torchrun this returns (None, device) and does nothing.
    """
    if not launched_by_torchrun():
        return None, device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                f"use --nproc_per_node <= {torch.cuda.device_count()}"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend), device


def teardown(info: DistInfo | None) -> None:
    if info is not None and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo | None) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place); a no-op in a single process."""
    if info is not None:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo | None) -> None:
    if info is not None:
        dist.barrier()
