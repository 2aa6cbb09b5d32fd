"""Several processes over one image selection: torchrun shards the images, torch.distributed merges.

    torchrun --nproc-per-node 4 -m attnlab globality --ckpt vit.pt --dataset cifar10

Under torchrun (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in the environment)
:func:`current_world` joins the process group once per process: nccl when the study runs
on CUDA (device ``cuda:LOCAL_RANK``), gloo on CPU. The images are cut into batches exactly
as one process cuts them, and rank r takes a contiguous run of those batches
(:meth:`World.batches`): no image is seen twice, a rank past the end gets none, and rank
order is image order. The streaming statistics then combine exactly (:func:`merge_stats`):

- sums (``GeometricStats``: count, sum and sum of squares of the per-image values) add up:
  one all-reduce (sum) is their parallel combination;
- moments (``AttentionStats``: count n_r, mean m_r, sum of squared deviations M2_r): an
  all-reduce of n_r and n_r m_r gives the count N and mean M of all images, then one of
  M2_r + n_r (m_r - M)^2 gives their M2 (Chan et al.'s parallel formula, deviations taken
  from the global mean);
- per-image records (robustness outcomes, for the bootstrap) are gathered in rank order,
  which is image order, so every rank holds the values one process would.

Failures: :meth:`World.run` runs a step on every rank, then every rank says how it went
(``all_gather_object``); when one failed, every rank raises the same one-line error (the
command prints it on rank 0 only) and nothing is written. Every rank makes the same
collective calls in the same order, whatever its share. A rank that dies outright (killed,
out of memory) never answers: torchrun then stops the others.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, TypeVar

import torch
import torch.distributed as dist

from ..devices import DeviceLike, resolve_device
from ..errors import AttnlabError, one_line

T = TypeVar("T")


def launched_size() -> int:
    """How many processes torchrun started for this run (1 when not under torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def writes_here() -> bool:
    """Whether this process writes outputs: always in one process, rank 0 alone under torchrun."""
    return launched_size() <= 1 or os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run: ``rank`` of ``size``, the GPU index
    on its machine (``local_rank``) and the device collectives run on (``comm``)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    comm: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def sharded(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that prints and writes."""
        return self.rank == 0

    def _span(self, n: int, batch_size: int) -> range:
        """Indices of this rank's batches among one process's ``ceil(n / batch_size)``."""
        count = -(-n // batch_size)   # ceiling splits: when batches are fewer than ranks, the last ranks go empty
        return range((self.rank * count + self.size - 1) // self.size, ((self.rank + 1) * count + self.size - 1) // self.size)

    def batches(self, n: int, batch_size: int) -> List[range]:
        """This rank's batches of ``n`` images (image indices): a contiguous run of one process's batches."""
        return [range(b * batch_size, min((b + 1) * batch_size, n)) for b in self._span(n, batch_size)]

    def batches_before(self, n: int, batch_size: int) -> int:
        """How many (full) batches of one process come before this rank's first."""
        return self._span(n, batch_size).start

    # ------------------------------------------------------------------ collectives

    def gather(self, obj: Any) -> List[Any]:
        """``obj`` of every rank, in rank order (``[obj]`` in one process)."""
        if not self.sharded:
            return [obj]
        out: List[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over every rank, on ``t``'s device (``t`` itself in one process)."""
        if not self.sharded:
            return t
        comm = t.to(self.comm, copy=True)
        dist.all_reduce(comm, op=dist.ReduceOp.SUM)
        return comm.to(t.device)

    def total(self, n: int) -> int:
        """A count summed over every rank."""
        return int(self.sum(torch.tensor([float(n)], dtype=torch.float64)).item())

    def run(self, step: Callable[[], T]) -> T:
        """``step()`` on every rank; if it fails on any, every rank raises that failure in one line.

        In one process the error is raised as it is. The message carries ``rank r of N`` unless
        every rank failed the same way (a bad option fails everywhere alike).
        """
        if not self.sharded:
            return step()
        try:
            value, error = step(), None
        except Exception as e:  # noqa: BLE001 - any failure must reach the other ranks
            value, error = None, e
        said = self.gather(None if error is None else _describe(error))
        failed = [(rank, message) for rank, message in enumerate(said) if message is not None]
        if failed:
            rank, message = failed[0]
            if len(failed) < self.size or len({m for _, m in failed}) > 1:
                message = f"rank {rank} of {self.size}: {message}"
            raise AttnlabError(message) from error
        return value


def _describe(error: Exception) -> str:
    """One line for an error: an AttnlabError's own message, else its type and message."""
    return one_line(error) if isinstance(error, AttnlabError) else f"{type(error).__name__}: {one_line(error)}"


_WORLD: Optional[World] = None


def current_world(device: DeviceLike = "auto") -> World:
    """Where this process stands: one process (no torchrun), or its rank in the group torchrun
    describes, joined on the first call (nccl when ``device`` is CUDA, else gloo)."""
    global _WORLD
    if launched_size() <= 1:
        return World()
    if _WORLD is None:
        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
        dev = resolve_device(device, local_rank)
        if not dist.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
            atexit.register(_leave)
        comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")
        _WORLD = World(dist.get_rank(), dist.get_world_size(), local_rank, comm)
    return _WORLD


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- statistics

def merge_stats(world: World, stats: Any) -> None:
    """Combine a streaming accumulator over every rank, in place (every rank then holds the totals).

    ``stats`` has ``partials()`` / ``set_partials()`` and ``PARTIALS``: ``"sums"`` (count, sum,
    sum of squares: they add up) or ``"moments"`` (count, mean, M2: Chan's parallel formula).
    Ranks may have seen different keys (a rank with no image has none): the union is used.
    """
    if not world.sharded or stats is None:
        return
    if stats.PARTIALS not in ("sums", "moments"):
        raise ValueError(f"cannot merge partials of kind {stats.PARTIALS!r}")
    parts: Dict[Any, tuple] = stats.partials()
    shapes: Dict[Any, tuple] = {}
    for theirs in world.gather({key: tuple(p[1].shape) for key, p in parts.items()}):
        shapes.update(theirs)
    keys = sorted(shapes)
    if not keys:  # no rank saw anything: the same on every rank
        return
    device = next(iter(parts.values()))[1].device if parts else world.comm
    sizes = [int(torch.Size(shapes[k]).numel()) for k in keys]

    def flat(value: Callable[[Any, tuple], torch.Tensor]) -> torch.Tensor:
        """``value(key, partial)`` of every key, flattened end to end (zeros for keys this rank has not seen)."""
        return torch.cat([value(k, parts[k]).to(device, torch.float64).flatten() if k in parts
                          else torch.zeros(size, dtype=torch.float64, device=device) for k, size in zip(keys, sizes)])

    def unflat(t: torch.Tensor) -> List[torch.Tensor]:
        return [v.reshape(shapes[k]) for k, v in zip(keys, t.split(sizes))]

    counts = world.sum(torch.tensor([float(parts[k][0]) if k in parts else 0.0 for k in keys], dtype=torch.float64,
                                    device=device))
    n = [int(round(v)) for v in counts.tolist()]
    if stats.PARTIALS == "sums":  # count, sum, sum of squares: all-reduce is their combination
        both = world.sum(torch.cat([flat(lambda k, p: p[1]), flat(lambda k, p: p[2])]))
        total, squares = unflat(both[:sum(sizes)]), unflat(both[sum(sizes):])
        stats.set_partials({k: (n[i], total[i], squares[i]) for i, k in enumerate(keys)})
        return
    # moments: N and M from the sums of n_r and n_r m_r, then M2 = sum_r M2_r + n_r (m_r - M)^2
    sums = unflat(world.sum(flat(lambda k, p: p[1].double() * p[0])))
    means = {k: total / n[i] for i, (k, total) in enumerate(zip(keys, sums))}  # every key was seen: n > 0
    m2 = unflat(world.sum(flat(lambda k, p: p[2].double() + p[0] * (p[1].double() - means[k]).pow(2))))
    stats.set_partials({k: (n[i], means[k], m2[i]) for i, k in enumerate(keys)})
