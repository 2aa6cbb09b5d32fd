"""Start N training processes on this machine (gloo on CPU): tests and CPU boxes without torchrun.

Each process gets the environment torchrun would give it (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT) and runs :func:`attnlab.train.loop.train`; the trainer then joins the
group through :func:`attnlab.train.distributed.init_distributed`.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Dict, Mapping, Union

from .config import TrainConfig
from .loop import train


def free_port() -> int:
    """A TCP port nobody listens on now (for the process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_worker(rank: int, world_size: int, port: int, config: Dict[str, Any], resume: bool) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    train(TrainConfig.from_mapping(config), resume=resume, log=(print if rank == 0 else None))


def launch_local(config: Union[TrainConfig, Mapping[str, Any]], world_size: int, resume: bool = False,
                 start_method: str = "spawn") -> None:
    """Train with ``world_size`` gloo processes on this machine (blocks until all finish).

    ``config`` is a :class:`TrainConfig` or a plain mapping. ``start_method="fork"``
    starts faster (no re-import of torch) where forking is safe (torch using 1 thread).
    """
    import torch.multiprocessing as mp

    values = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    mp.start_processes(_local_worker, args=(world_size, free_port(), values, resume), nprocs=world_size,
                       join=True, start_method=start_method)
