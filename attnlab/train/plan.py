"""What a run is made of, decided before it trains: the split it evaluates, the model, the batches.

Each piece checks its input and raises one line, so a run that cannot work stops before
it writes anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

from ..errors import AttnlabError, ModelNameError
from .config import TrainConfig
from .data import load_split


@dataclass(frozen=True)
class BatchPlan:
    """The global batch a run uses and how many steps of it make an epoch."""

    batch_size: int
    steps_per_epoch: int
    note: str = ""  # why the batch differs from the one asked for ("" when it does not)


def plan_batches(images: int, batch_size: int, processes: int, mixing: bool) -> BatchPlan:
    """The asked global batch, cut to the data, divisible by the processes, and even per process
    for mixup (timm's Mixup pairs images); the remainder of an epoch is dropped."""
    if batch_size % processes:
        raise AttnlabError(f"batch_size {batch_size} is the global batch; it must be divisible by the "
                           f"{processes} processes")
    per_rank = min(batch_size, images - images % processes) // processes
    if mixing and per_rank % 2:
        per_rank -= 1
    if per_rank < 1:
        raise AttnlabError(f"{images} training images cannot make a batch for {processes} processes"
                           + (" with mixup/cutmix (needs 2 per process)" if mixing else ""))
    used = per_rank * processes
    note = f"batch size {used} (asked {batch_size}; the training set has {images} images)" if used != batch_size else ""
    return BatchPlan(used, images // used, note)


def load_eval_split(config: TrainConfig) -> Any:
    """The split evaluated after every epoch: all of it, or its first ``eval_subset`` images."""
    ds = load_split(config.dataset, config.eval_split, config.data_dir, config.download)
    if config.eval_subset is None:
        return ds
    if config.eval_subset > len(ds):
        raise AttnlabError(f"eval_subset {config.eval_subset} is more than the {len(ds)} images of "
                           f"{ds.name}/{config.eval_split}; pass --eval-subset {len(ds)} or fewer")
    return ds.subset(config.eval_subset)


def build_model(config: TrainConfig, channels: int, classes: Sequence[str], dataset: str) -> nn.Module:
    """``config.model`` for the data (channels, classes), with the run's drop-path and model options."""
    from ..models import create_model

    try:
        return create_model(config.model, in_chans=channels, num_classes=len(classes),
                            drop_path_rate=config.drop_path, **config.parsed_model_options())
    except ModelNameError:
        raise
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        first = " ".join(str(e).split())[:200]
        raise AttnlabError(f"cannot build {config.model} for {dataset} ({channels} channels, "
                           f"{len(classes)} classes): {first}") from None
