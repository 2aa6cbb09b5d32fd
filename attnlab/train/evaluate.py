"""Top-1 / top-5 and per-class accuracy of a model on a labelled split.

``evaluate_checkpoint`` is what ``attnlab evaluate`` runs: it loads the model as every
``--ckpt`` command does (``attnlab.studies.inputs.load_models``: an attnlab checkpoint, a
plain state dict with ``model=``, an official ReViT checkpoint, or timm weights with
``pretrained=True``) and prepares images with the model's own InputSpec through
``attnlab.data.eval_transform``, so the numbers do not depend on how the model was
trained. The trainer uses :func:`evaluate_batches` on its in-memory tensors, which go
through the same geometry and normalisation. :func:`save_per_class_accuracy` writes the
per-class table into an output folder, all or nothing.
"""
from __future__ import annotations

import csv
import io
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import AttnlabError
from ..paths import PathLike
from ..spec import ModelSpec

PER_CLASS_FILE = "per_class_accuracy.csv"
PER_CLASS_COLUMNS = ["model", "class", "n", "correct", "accuracy"]


@dataclass
class EvalResult:
    """Counts from one pass over a split; accuracies are percentages."""

    n: int
    correct1: int
    correct5: int
    loss_sum: float
    classes: List[str]
    class_n: List[int] = field(default_factory=list)
    class_correct: List[int] = field(default_factory=list)
    model: str = ""  # the model's label in tables

    @property
    def top1(self) -> float:
        return 100.0 * self.correct1 / self.n if self.n else 0.0

    @property
    def top5(self) -> float:
        return 100.0 * self.correct5 / self.n if self.n else 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / self.n if self.n else float("nan")

    def per_class(self) -> List[Tuple[str, int, int, float]]:
        """(class, n, correct, accuracy %) for every class (accuracy empty-ish 0 when n = 0)."""
        return [(c, n, k, 100.0 * k / n if n else float("nan"))
                for c, n, k in zip(self.classes, self.class_n, self.class_correct)]

    def per_class_csv(self) -> str:
        """:data:`PER_CLASS_COLUMNS`, one row per class, every row labelled with :attr:`model`."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(PER_CLASS_COLUMNS)
        for c, n, k, acc in self.per_class():
            w.writerow([self.model, c, n, k, "" if n == 0 else f"{acc:.4f}"])
        return buf.getvalue()

    def counts_tensor(self) -> torch.Tensor:
        """Everything additive in one float64 vector, for summing over processes."""
        return torch.tensor([self.n, self.correct1, self.correct5, self.loss_sum, *self.class_n, *self.class_correct],
                            dtype=torch.float64)

    @classmethod
    def from_counts(cls, t: torch.Tensor, classes: Sequence[str]) -> "EvalResult":
        k = len(classes)
        v = t.tolist()
        return cls(int(round(v[0])), int(round(v[1])), int(round(v[2])), float(v[3]), list(classes),
                   [int(round(x)) for x in v[4:4 + k]], [int(round(x)) for x in v[4 + k:4 + 2 * k]])


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
    classes: Sequence[str],
    device: Union[str, torch.device] = "cpu",
    autocast_dtype: Optional[torch.dtype] = None,
) -> EvalResult:
    """Run ``model`` (in eval mode) over (images, labels) batches and count hits."""
    device = torch.device(device)
    k = len(classes)
    topk = min(5, k)
    was_training = model.training
    model.eval()
    n = c1 = c5 = 0
    loss_sum = 0.0
    class_n = torch.zeros(k, dtype=torch.int64)
    class_c = torch.zeros(k, dtype=torch.int64)
    try:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if autocast_dtype is not None and device.type == "cuda":
                with torch.autocast("cuda", dtype=autocast_dtype):
                    logits = model(x)
            else:
                logits = model(x)
            logits = logits.float()
            if logits.shape[-1] != k:
                raise AttnlabError(f"the model has {logits.shape[-1]} outputs but the data has {k} classes")
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            top = logits.topk(topk, dim=-1).indices
            hit1 = top[:, 0] == y
            hit5 = (top == y[:, None]).any(dim=-1)
            n += int(y.numel())
            c1 += int(hit1.sum())
            c5 += int(hit5.sum())
            y_cpu, hit_cpu = y.cpu(), hit1.cpu()
            class_n += torch.bincount(y_cpu, minlength=k)[:k]
            class_c += torch.bincount(y_cpu[hit_cpu], minlength=k)[:k]
    finally:
        model.train(was_training)
    return EvalResult(n, c1, c5, loss_sum, list(classes), class_n.tolist(), class_c.tolist())


def evaluate_checkpoint(
    ckpt: PathLike,
    dataset: str,
    data_dir: Optional[PathLike] = None,
    split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
    num_images: Optional[int] = None,
    workers: int = 0,
    *,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[PathLike] = None,
    label: Optional[str] = None,
    ignore_class_names: bool = False,
) -> Tuple[EvalResult, ModelSpec]:
    """Evaluate a model on a dataset split (all of it, or its first ``num_images``).

    The model's class names must be the dataset's (``ignore_class_names`` for relabelled
    data). ``ckpt``, ``model``, ``pretrained`` and ``official_config`` are what every ``--ckpt``
    command takes; ``label`` names the model in tables (``EvalResult.model``; default: the
    file name). The images go through ``eval_transform(spec.input)``, the model's own
    input spec, decoded by ``workers`` processes (0: this one). Under torchrun each process
    evaluates its share of the images and every process returns the summed counts
    (``attnlab.studies.sharding``).
    """
    from ..devices import resolve_device
    from ..studies.inputs import (ImageSelection, check_batch_size, check_class_names, check_num_images,
                                  check_workers, load_models)
    from ..studies.sharding import current_world

    world = current_world(device)

    def count() -> Tuple[EvalResult, ModelSpec]:
        check_batch_size(batch_size)
        check_num_images(num_images)
        check_workers(workers)
        dev = resolve_device(device, world.local_rank)
        loaded = load_models([ckpt], [label] if label else None, model=model, pretrained=pretrained,
                             official_config=official_config)[0]
        spec = loaded.spec
        net = loaded.model.to(dev).eval()
        # every image unless num_images says fewer (a study's default limit does not apply here)
        images = ImageSelection(dataset=dataset, data_dir=data_dir, split=split, num_images=num_images,
                                default_limit=None)
        ds = images.dataset_for(spec.input.channels)
        if len(ds.classes) != spec.num_classes:
            raise AttnlabError(f"{ckpt} has {spec.num_classes} outputs but {ds.name}/{split} has {len(ds.classes)} "
                               "classes; evaluate it on the dataset it was trained for")
        if not ignore_class_names:
            check_class_names(spec.classes, ds.classes, loaded.label, f"{ds.name}/{split}")
        if len(ds) == 0:
            raise AttnlabError(f"{ds.name}/{split} holds no images")
        with closing(images.batches(spec.input, batch_size, workers=workers, world=world,
                                    pin_memory=dev.type == "cuda", device=dev)) as batches:  # closed (workers stopped) on error
            result = evaluate_batches(net, batches, list(ds.classes), dev)
        result.model = loaded.label
        return result, spec

    result, spec = world.run(count)
    if world.sharded:  # every count (and the loss sum) adds up over the processes
        merged = EvalResult.from_counts(world.sum(result.counts_tensor()), result.classes)
        merged.model = result.model
        result = merged
    return result, spec


def save_per_class_accuracy(result: EvalResult, out: PathLike) -> Path:
    """Write ``per_class_accuracy.csv`` (model, class, n, correct, accuracy %) into ``out``, all or nothing
    (under torchrun rank 0 writes it; the others write nothing and get the same path)."""
    from ..outputs import staged_outputs
    from ..paths import check_output_dir
    from ..studies.sharding import writes_here

    folder = check_output_dir(out)
    if not writes_here():
        return folder / PER_CLASS_FILE
    with staged_outputs(folder) as stage:
        (stage / PER_CLASS_FILE).write_text(result.per_class_csv(), encoding="utf-8")
    return folder / PER_CLASS_FILE
