"""Several processes (GPUs or machines) through torchrun, or locally on CPU with gloo.

``torchrun --nproc_per_node N -m attnlab train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
the trainer then wraps the model in DistributedDataParallel and gives each rank a strided
share of every global batch (``perm[step*B:(step+1)*B][rank::W]``), which is what
``DistributedSampler`` does with a per-epoch permutation. With the same global batch
the gradients DDP averages equal one process's, so N processes train the same weights
as one (up to floating-point order). ``attnlab.train.launch.launch_local`` starts N gloo
processes on this machine (tests, CPU boxes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import resolve_device


@dataclass
class DistInfo:
    """Where this process sits: its rank, the number of processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over processes (a no-op for one process); works on a copy on the comm device."""
        if not self.enabled:
            return t
        comm = t.to(self.device) if self.device.type == "cuda" else t.clone()
        dist.all_reduce(comm, op=dist.ReduceOp.SUM)
        return comm.to(t.device)

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_choice: str = "auto") -> DistInfo:
    """Join the process group torchrun (or ``launch_local``) described in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_choice, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, device)
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        here = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, here)


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's strided share of a global batch (DistributedSampler's interleaving)."""
    return indices[rank::world_size] if world_size > 1 else indices
