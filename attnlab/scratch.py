"""Kept storage for map-sized temporaries, shared by the models' explicit attention and the metrics.

Temporaries as large as an attention map, allocated afresh for every layer of every batch,
cost more than the arithmetic on them: the CPU allocator hands such blocks back to the system
and takes them again, zeroing pages each time.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor


class ScratchBuffer:
    """One kept storage, handed out as tensors of any shape that fits (it grows when one does not).

    Pass ``buffer.like(t)`` (or ``buffer.tensor(shape, like=t)``) as ``out=``; a tensor handed out
    is overwritten by the next, so only what is done with it before then may use it.
    """

    def __init__(self) -> None:
        self._work: Optional[Tensor] = None

    def tensor(self, shape: Sequence[int], like: Tensor) -> Tensor:
        """An uninitialised ``shape`` tensor of ``like``'s dtype and device over the kept storage."""
        numel = math.prod(shape)
        work = self._work
        if work is None or work.numel() < numel or work.dtype != like.dtype or work.device != like.device:
            work = self._work = torch.empty(numel, dtype=like.dtype, device=like.device)
        return work[:numel].view(tuple(shape))

    def like(self, like: Tensor) -> Tensor:
        """A tensor shaped like ``like`` (same dtype and device) over the kept storage."""
        return self.tensor(like.shape, like)
