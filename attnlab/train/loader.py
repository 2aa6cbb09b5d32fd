"""Where training batches come from: a uint8 tensor in memory, or a DataLoader streaming from disk.

Small sets (Fashion-MNIST, CIFAR at 32 px) are fastest held in memory and augmented on
tensors (:class:`MemoryBatches`). A set whose in-memory tensor would not fit the memory
budget (ImageNet at 224 px: 190 GB) is streamed (:class:`StreamBatches`): a
``torch.utils.data.DataLoader`` with worker processes decodes each image and runs timm's
training transform on it (random-resized-crop from the full image, flip, RandAugment,
random erasing). :func:`plan_data` makes the choice (``data: auto``) or follows
``data: memory|stream``.

Streamed batches resume exactly, with any number of workers:

- the batch order is :func:`attnlab.train.state.epoch_permutation` of (seed, epoch), the
  same as in memory, and :class:`EpochBatchSampler` can start at any step without
  touching the images before it;
- each sample seeds Python's, numpy's and torch's RNGs from (seed, epoch, position in the
  epoch) before it is decoded and transformed (:class:`SeededSamples`), so an image's
  augmentation at a given step does not depend on which worker got it, on prefetching,
  or on whether the run was interrupted.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..data.workers import drain, stop_workers
from ..spec import InputSpec
from .augment import TensorAugment, batch_erasing
from .config import TrainConfig
from .data import TensorData, normalize_uint8
from .distributed import shard
from .state import epoch_permutation, seed_rngs, seed_step

Batch = Tuple[torch.Tensor, torch.Tensor]
Key = Tuple[int, int, int]  # (dataset index, epoch, position in the epoch's order)

#: The default memory budget: this fraction of the machine's RAM.
BUDGET_FRACTION = 0.25
#: The budget where the RAM size cannot be read.
FALLBACK_BUDGET_GB = 8.0
_SAMPLE_TAG, _WORKER_TAG = 3, 4


# ----------------------------------------------------------------------------- the choice
def physical_memory_bytes() -> Optional[int]:
    """The machine's RAM (``os.sysconf``), or None where it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget_bytes(gb: Optional[float] = None) -> int:
    """``gb`` GiB, or by default a quarter of the RAM (8 GiB where the RAM size is unknown)."""
    if gb is not None:
        return int(gb * 2**30)
    ram = physical_memory_bytes()
    return int(ram * BUDGET_FRACTION) if ram else int(FALLBACK_BUDGET_GB * 2**30)


def tensor_bytes(images: int, spec: InputSpec) -> int:
    """What a split takes in memory: N x C x H x W bytes of uint8 at the model's input size."""
    return int(images) * int(spec.channels) * int(spec.size[0]) * int(spec.size[1])


@dataclass(frozen=True)
class DataPlan:
    """Which split is held in memory and which is streamed, and the numbers behind it."""

    train_in_memory: bool
    eval_in_memory: bool
    train_bytes: int
    eval_bytes: int
    budget: int
    asked: str = "auto"

    @property
    def mode(self) -> str:
        """What the run's config records: ``memory`` or ``stream``."""
        return "memory" if self.train_in_memory else "stream"

    def describe(self, workers: int) -> str:
        """One line for the start of a run."""
        flag = {"memory": "--data-in-memory", "stream": "--stream"}
        why = flag[self.asked] if self.asked in flag else f"memory budget {_size(self.budget)}"
        by = f"{workers} worker process(es)" if workers else "the main process (--workers 0)"
        where = "in memory" if self.train_in_memory else f"streamed from disk by {by}"
        ev = "in memory" if self.eval_in_memory else "streamed"
        aug = "" if self.train_in_memory else \
            "; streamed runs augment with timm's pipeline (a random-resized crop where memory pads and crops)"
        return (f"data: training images {where} ({_size(self.train_bytes)} as uint8 tensors; {why}{aug}); "
                f"evaluation {ev}")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def plan_data(asked: str, train_images: int, eval_images: int, spec: InputSpec, budget: int) -> DataPlan:
    """``memory`` holds both splits; ``stream`` streams training; evaluation stays in memory when
    it fits the budget alone; ``auto`` holds training in memory when it fits the budget together
    with the evaluation split (or alone, when that split streams)."""
    tb, eb = tensor_bytes(train_images, spec), tensor_bytes(eval_images, spec)
    if asked == "memory":
        return DataPlan(True, True, tb, eb, budget, asked)
    eval_in_memory = eb <= budget
    train_in_memory = asked == "auto" and tb + (eb if eval_in_memory else 0) <= budget
    return DataPlan(train_in_memory, eval_in_memory, tb, eb, budget, asked)


def stream_transform(config: TrainConfig, spec: InputSpec) -> Callable[[Any], torch.Tensor]:
    """The per-image training pipeline of streamed data (timm's ``create_transform``).

    ``crop_padding > 0`` turns on timm's random-resized-crop over ``crop_scale``..1 of the
    area (aspect 3/4..4/3); ``crop_padding: 0`` keeps the whole (padded or centre-cropped
    square) image. ``randaugment`` is timm's RandAugment string; ``random_erasing`` its
    probability (pixel mode); colour jitter is off, as in memory. With no random step
    left (``augment: false``) it is the evaluation pipeline, ``attnlab.data.eval_transform``.
    """
    from ..data import eval_transform, train_transform

    ra = config.randaugment if config.augment else None
    crop = config.augment and config.crop_padding > 0
    hflip = config.hflip if config.augment else 0.0
    erase = config.random_erasing if config.augment else 0.0
    if not (ra or crop or hflip > 0 or erase > 0):
        return eval_transform(spec)
    return train_transform(spec, randaugment=ra, scale=(config.crop_scale, 1.0) if crop else (1.0, 1.0),
                           ratio=None if crop else (1.0, 1.0), hflip=hflip, re_prob=erase, re_mode="pixel",
                           color_jitter=None)


# ----------------------------------------------------------------------------- streamed pieces
class EpochBatchSampler(Sampler[List[Key]]):
    """This process's share of each global batch of one epoch, from a chosen step on.

    The order is a function of (seed, epoch) only; :meth:`set_epoch` picks the epoch and
    the first step (a resumed epoch skips the batches before it without reading them).
    Each item is ``(index, epoch, position)`` so that the sample can seed itself.
    """

    def __init__(self, n: int, batch_size: int, steps_per_epoch: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.n, self.batch_size, self.steps_per_epoch = int(n), int(batch_size), int(steps_per_epoch)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start_step)

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start)

    def __iter__(self) -> Iterator[List[Key]]:
        perm = epoch_permutation(self.seed, self.epoch, self.n)
        b = self.batch_size
        for step in range(self.start, self.steps_per_epoch):
            positions = shard(torch.arange(step * b, (step + 1) * b), self.rank, self.world_size)
            yield [(int(perm[p]), self.epoch, int(p)) for p in positions]


class SeededSamples(Dataset):
    """``(index, epoch, position)`` -> (transformed image, label), every RNG seeded for that sample."""

    def __init__(self, dataset: Any, transform: Callable[[Any], torch.Tensor], seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, int(seed)
        self.targets = np.asarray(dataset.targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key) -> Tuple[torch.Tensor, int]:
        index, epoch, position = key
        seed_rngs(self.seed, _SAMPLE_TAG, epoch, position)  # CPU only: the transforms run on the CPU
        ds = self.dataset
        image = ds.load_image(index) if hasattr(ds, "load_image") else ds[index][0]
        return self.transform(image), int(self.targets[index])


def _seed_worker(seed: int, worker_id: int) -> None:
    """Seed a worker's RNGs for anything drawn outside a sample (each sample reseeds them)."""
    seed_rngs(seed, _WORKER_TAG, worker_id)


def data_loader(dataset: Dataset, workers: int, pin_memory: bool, seed: int, persistent: bool,
                **options: Any) -> DataLoader:
    """A DataLoader with the trainer's settings; it never draws from the global torch RNG."""
    return DataLoader(dataset, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=persistent and workers > 0,
                      worker_init_fn=functools.partial(_seed_worker, seed) if workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed), **options)


# ----------------------------------------------------------------------------- batch sources
class MemoryBatches:
    """The in-memory path: each global batch indexed out of a uint8 tensor, augmented on tensors
    (:class:`~attnlab.train.augment.TensorAugment`, then random erasing on the normalised batch)."""

    def __init__(self, data: TensorData, config: TrainConfig, spec: InputSpec, mean: torch.Tensor, std: torch.Tensor,
                 batch_size: int, steps_per_epoch: int, seed: int, rank: int, world_size: int,
                 generator: torch.Generator, device: torch.device) -> None:
        on = config.augment
        fill = [int(round(255 * m)) for m in spec.mean]  # RandAugment's geometric ops expose the mean pixel
        self.augment = TensorAugment(config.randaugment if on else None, config.crop_padding if on else 0,
                                     config.hflip if on else 0.0, fill=fill)
        self.erasing = batch_erasing(config.random_erasing if on else 0.0, device)
        self.data, self.batch_size, self.steps_per_epoch, self.seed = data, batch_size, steps_per_epoch, seed
        self.rank, self.world_size, self.generator = rank, world_size, generator
        self.device, self.mean, self.std = device, mean, std

    def epoch(self, epoch: int, start_step: int, perm: torch.Tensor) -> Iterator[Batch]:
        """This process's batches of ``epoch`` from ``start_step`` on: augmented, normalised, on the device."""
        b = self.batch_size
        for step in range(start_step, self.steps_per_epoch):
            seed_step(self.seed, epoch, step, self.rank, self.generator)
            idx = shard(perm[step * b:(step + 1) * b], self.rank, self.world_size)
            x = self.data.images[idx]
            y = self.data.targets[idx]
            if self.augment.active:
                x = self.augment(x, self.generator)
            x = normalize_uint8(x.to(self.device, non_blocking=True), self.mean, self.std)
            if self.erasing is not None:
                x = self.erasing(x)
            yield x, y.to(self.device, non_blocking=True)

    def close(self) -> None:
        pass


class StreamBatches:
    """The streamed path: a DataLoader over the dataset, its workers kept for the whole run."""

    def __init__(self, dataset: Any, transform: Callable[[Any], torch.Tensor], workers: int, batch_size: int,
                 steps_per_epoch: int, seed: int, rank: int, world_size: int, generator: torch.Generator,
                 device: torch.device) -> None:
        self.steps_per_epoch, self.seed, self.rank = steps_per_epoch, seed, rank
        self.generator, self.device = generator, device
        self.sampler = EpochBatchSampler(len(dataset), batch_size, steps_per_epoch, seed, rank, world_size)
        self.loader: Optional[DataLoader] = data_loader(
            SeededSamples(dataset, transform, seed), workers, device.type == "cuda", seed, persistent=True,
            batch_sampler=self.sampler)

    def epoch(self, epoch: int, start_step: int, perm: torch.Tensor) -> Iterator[Batch]:
        """Like :meth:`MemoryBatches.epoch` (the sampler makes the same ``perm`` itself); the step's
        RNGs are seeded once its batch has arrived (with ``workers: 0`` the samples seed the main
        process's RNGs while they are made)."""
        assert self.loader is not None, "the loader was closed"
        self.sampler.set_epoch(epoch, start_step)
        for step, (x, y) in zip(range(start_step, self.steps_per_epoch), drain(self.loader, stop=False)):
            seed_step(self.seed, epoch, step, self.rank, self.generator)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the worker processes now, also when an error's traceback still holds the iterator."""
        if self.loader is not None:
            stop_workers(getattr(self.loader, "_iterator", None))  # the persistent workers' iterator
        self.loader = None


def memory_eval_batches(data: TensorData, indices: torch.Tensor, batch_size: int, device: torch.device,
                        mean: torch.Tensor, std: torch.Tensor) -> Iterator[Batch]:
    """The evaluation split's images at ``indices`` out of memory, normalised, on the device."""
    for i in range(0, len(indices), batch_size):
        j = indices[i:i + batch_size]
        x = data.images[j].to(device, non_blocking=True)
        yield normalize_uint8(x, mean, std), data.targets[j]


def stream_eval_batches(dataset: Any, spec: InputSpec, indices: torch.Tensor, batch_size: int, workers: int,
                        device: torch.device) -> Iterator[Batch]:
    """The evaluation split streamed through ``attnlab.data.eval_transform`` (normalised tensors)."""
    from ..data import eval_transform

    view = Subset(dataset.with_transform(eval_transform(spec)), [int(i) for i in indices])
    loader = data_loader(view, workers, device.type == "cuda", 0, persistent=False, batch_size=batch_size,
                         shuffle=False)
    yield from drain(loader)
