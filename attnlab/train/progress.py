"""A rich progress bar for training steps, or nothing at all where nobody watches.

The bar goes to stderr and only appears when stderr is a terminal (``progress: auto``),
so logs, pipes and tests get the plain one-line-per-epoch summary and no control codes.
"""
from __future__ import annotations

import sys
from typing import Any, Optional


class StepProgress:
    """One bar per epoch with loss, accuracy and throughput; a no-op when disabled."""

    def __init__(self, mode: str = "auto", enabled_here: bool = True) -> None:
        stream_is_tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.enabled = enabled_here and (mode == "on" or (mode == "auto" and stream_is_tty))
        self._progress: Any = None
        self._task: Optional[int] = None

    def __enter__(self) -> "StepProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:5.1f}%  {task.fields[ips]:,.0f} img/s"),
                TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False, refresh_per_second=4,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def start_epoch(self, label: str, total: int, completed: int = 0) -> None:
        if self._progress is None:
            return
        self._task = self._progress.add_task("train", total=total, completed=completed, epoch=label,
                                             loss=float("nan"), acc=0.0, ips=0.0)

    def update(self, completed: int, loss: float, acc: float, ips: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, loss=loss, acc=acc, ips=ips)

    def print(self, line: str) -> bool:
        """Print above the bar; returns False when there is no bar (the caller logs itself)."""
        if self._progress is None:
            return False
        self._progress.console.print(line, highlight=False, markup=False)
        return True
