"""Top-1 / top-5 and per-class accuracy of a model on a labelled split.

``evaluate_checkpoint`` is what ``attnlab evaluate`` runs: it rebuilds the model from the
checkpoint alone (``load_model``) and prepares images with the checkpoint's own
InputSpec through ``attnlab.data.eval_transform``, so the numbers do not depend on how
the model was trained. The trainer uses :func:`evaluate_batches` on its in-memory
tensors, which go through the same geometry and normalisation.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import AttnlabError
from ..spec import ModelSpec

PathLike = Union[str, "Path"]


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
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["class", "n", "correct", "accuracy"])
        for c, n, k, acc in self.per_class():
            w.writerow([c, n, k, "" if n == 0 else f"{acc:.4f}"])
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


def _collate(batch):
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def evaluate_checkpoint(
    ckpt: PathLike,
    dataset: str,
    data_dir: Optional[PathLike] = None,
    split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
    subset: Optional[int] = None,
    workers: int = 0,
) -> Tuple[EvalResult, ModelSpec]:
    """Evaluate a checkpoint on a dataset split; returns ``(EvalResult, ModelSpec)``.

    The images go through ``eval_transform(spec.input)``, the checkpoint's own input spec.
    """
    from ..checkpoint import load_model
    from ..data import eval_transform, load_dataset
    from .distributed import resolve_device

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AttnlabError(f"batch size must be a whole number >= 1, not {batch_size!r}")
    dev = resolve_device(device)
    model, spec = load_model(ckpt, device=dev)
    ds = load_dataset(dataset, split, data_dir=data_dir, subset=subset, channels=spec.input.channels,
                      transform=eval_transform(spec.input))
    if len(ds.classes) != spec.num_classes:
        raise AttnlabError(f"{ckpt} has {spec.num_classes} outputs but {ds.name}/{split} has {len(ds.classes)} "
                           "classes; evaluate it on the dataset it was trained for")
    if len(ds) == 0:
        raise AttnlabError(f"{ds.name}/{split} holds no images")
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_collate)
    result = evaluate_batches(model, loader, list(ds.classes), dev)
    return result, spec


def write_per_class_csv(result: EvalResult, path: PathLike) -> Path:
    """``class, n, correct, accuracy`` (accuracy in %), written atomically."""
    from .state import atomic_write_text

    return atomic_write_text(Path(path), result.per_class_csv())
