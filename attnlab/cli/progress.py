"""Progress bars on stderr for runs longer than a few seconds (quiet when not a terminal)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yield ``start(label, total, unit="images")`` -> ``update(done)``: one bar per model, removed when done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        def start(label: str, total: int, unit: str = "images") -> Callable[[int], None]:
            task = progress.add_task(label, total=total, unit=unit)
            return lambda done: progress.update(task, completed=done)

        yield start
