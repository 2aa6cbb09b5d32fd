"""Several processes (GPUs or machines) through torchrun, or locally on CPU with gloo.

``torchrun --nproc_per_node N -m attnlab train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
the trainer then wraps the model in DistributedDataParallel and gives each rank a strided
share of every global batch (``perm[step*B:(step+1)*B][rank::W]``), which is what
``DistributedSampler`` does with a per-epoch permutation. With the same global batch
the gradients DDP averages equal one process's, so N processes train the same weights
as one (up to floating-point order). :func:`launch_local` starts N gloo processes on
this machine (tests, CPU boxes).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Dict

import torch
import torch.distributed as dist

from ..errors import AttnlabError


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


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """auto -> cuda if there is a GPU, else cpu; cuda without a GPU is a user error."""
    if choice == "cpu":
        return torch.device("cpu")
    has_cuda = torch.cuda.is_available()
    if choice == "cuda" and not has_cuda:
        raise AttnlabError("--device cuda, but no CUDA GPU is available here (use --device cpu or auto)")
    if has_cuda:
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def init_distributed(device_choice: str = "auto") -> DistInfo:
    """Join the process group torchrun (or :func:`launch_local`) described in the environment."""
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_worker(rank: int, world_size: int, port: int, config: Dict[str, Any], resume: bool) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    from .config import TrainConfig
    from .loop import train

    train(TrainConfig.from_mapping(config), resume=resume, log=(print if rank == 0 else None))


def launch_local(config: Any, world_size: int, resume: bool = False, start_method: str = "spawn") -> None:
    """Train with ``world_size`` gloo processes on this machine (blocks until all finish).

    ``config`` is a :class:`TrainConfig` or a plain mapping. ``start_method="fork"``
    starts faster (no re-import of torch) where forking is safe (torch using 1 thread).
    """
    import torch.multiprocessing as mp

    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    mp.start_processes(_local_worker, args=(world_size, free_port(), values, resume), nprocs=world_size,
                       join=True, start_method=start_method)


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's strided share of a global batch (DistributedSampler's interleaving)."""
    return indices[rank::world_size] if world_size > 1 else indices
