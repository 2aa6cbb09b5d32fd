"""What a run records: each epoch's running tally, its row of metrics.csv, its log line, its result."""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Union

import torch
from torch import nn

METRIC_COLUMNS = ["epoch", "train_loss", "test_loss", "top1", "top5", "lr", "alpha", "images_per_s", "seconds"]
_SUMS = ("loss_sum", "correct", "seen")


@dataclass
class EpochTally:
    """The running sums of one epoch (this process's share until :meth:`summed`) and its clock.

    Saved in the resume state as a plain dict (:meth:`to_dict`), so a resumed epoch goes
    on adding to the same sums.
    """

    loss_sum: float = 0.0       # sum over images of the training loss
    correct: float = 0.0        # images whose top-1 prediction was the (unmixed) label
    seen: float = 0.0           # images trained on
    train_seconds: float = 0.0  # time inside training steps (for images/s)
    epoch_seconds: float = 0.0  # wall time of the epoch, evaluation included
    _since: float = field(default_factory=time.perf_counter, repr=False, compare=False)

    def add(self, loss_value: float, correct: float, images: int, seconds: float) -> None:
        """Count one training step."""
        self.loss_sum += loss_value * images  # the loss is a batch mean
        self.correct += correct
        self.seen += images
        self.train_seconds += seconds

    def restart_clock(self) -> None:
        self._since = time.perf_counter()

    def lap(self) -> None:
        """Add the time since the last lap (or restart) to ``epoch_seconds``."""
        now = time.perf_counter()
        self.epoch_seconds += now - self._since
        self._since = now

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(1.0, self.seen)

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / max(1.0, self.seen)

    def images_per_s(self, processes: int = 1) -> float:
        """Throughput, assuming every process trains as fast as this one."""
        return self.seen * processes / max(1e-9, self.train_seconds)

    def summed(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> "EpochTally":
        """The sums over all processes (every process must call this); times stay this process's."""
        t = all_reduce_sum(torch.tensor([self.loss_sum, self.correct, self.seen], dtype=torch.float64))
        return EpochTally(float(t[0]), float(t[1]), float(t[2]), self.train_seconds, self.epoch_seconds)

    def without_sums(self) -> "EpochTally":
        """The same times with the sums at 0 (a resumed non-main process: the saved sums are global)."""
        return EpochTally(0.0, 0.0, 0.0, self.train_seconds, self.epoch_seconds)

    def to_dict(self) -> Dict[str, float]:
        return {k: float(getattr(self, k)) for k in (*_SUMS, "train_seconds", "epoch_seconds")}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EpochTally":
        return cls(**{k: float(values[k]) for k in (*_SUMS, "train_seconds", "epoch_seconds")})


def epoch_row(epoch: int, totals: EpochTally, result: Any, lr: float, alpha: str, seconds: float) -> Dict[str, Any]:
    """One row of metrics.csv from the epoch's global tally and its evaluation (an EvalResult)."""
    return {
        "epoch": epoch, "train_loss": totals.mean_loss,
        "test_loss": result.loss, "top1": result.top1, "top5": result.top5,
        "lr": lr, "alpha": alpha, "images_per_s": totals.images_per_s(), "seconds": seconds,
    }


def alpha_value(model: nn.Module) -> Union[None, float, List[float]]:
    """ReViT's learned ``a`` as numbers: one float, a list (one per layer), or None without one."""
    a = getattr(model, "alpha", None)
    if not isinstance(a, torch.Tensor):
        return None
    values = [float(v) for v in a.detach().float().flatten().cpu()]
    return values[0] if len(values) == 1 else values


def alpha_text(alpha: Union[None, float, Sequence[float]]) -> str:
    """``a`` as the metrics file and the epoch line write it ('' without one, ';' between layers)."""
    if alpha is None or alpha == "":
        return ""
    if isinstance(alpha, str):  # rows of runs saved before a was stored as numbers
        return alpha
    values = [alpha] if isinstance(alpha, (int, float)) else list(alpha)
    return ";".join(f"{float(v):.6f}" for v in values)


def metrics_csv(history: List[Mapping[str, Any]]) -> str:
    """metrics.csv: one row per epoch, :data:`METRIC_COLUMNS`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRIC_COLUMNS)
    for row in history:
        w.writerow([_fmt(c, row.get(c, "")) for c in METRIC_COLUMNS])
    return buf.getvalue()


def _fmt(column: str, v: Any) -> str:
    if column == "alpha":
        return alpha_text(v)
    if isinstance(v, str) or v is None:
        return v or ""
    if column == "epoch":
        return str(int(v))
    if column == "lr":
        return f"{v:.6g}"
    if column in ("images_per_s", "seconds"):
        return f"{v:.2f}"
    return f"{v:.6f}"


def epoch_line(row: Mapping[str, Any], epochs: int) -> str:
    """The log line at the end of an epoch."""
    alpha = f"  a {alpha_text(row.get('alpha'))}" if alpha_text(row.get("alpha")) else ""
    return (f"epoch {int(row['epoch'])}/{epochs}  train_loss {row['train_loss']:.4f}  test_loss {row['test_loss']:.4f}  "
            f"top1 {row['top1']:.2f}%  top5 {row['top5']:.2f}%  lr {row['lr']:.3g}{alpha}  "
            f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f} s")


@dataclass
class TrainResult:
    """Where a run wrote its files and what it measured."""

    out_dir: Path
    history: List[Dict[str, Any]]
    best_top1: float
    best_epoch: int
    steps_per_epoch: int
    batch_size: int
    rank: int = 0

    @property
    def last_checkpoint(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / "best.pt"
