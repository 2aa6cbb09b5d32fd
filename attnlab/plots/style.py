"""One look for every attnlab figure: readable at paper size, PNG for screens, PDF for papers."""
from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple, TypeVar, Union

import matplotlib.pyplot as plt
import seaborn as sns

from ..atomic import atomic_path

SINGLE_COLUMN = (3.5, 2.6)   # inches: one column of a two-column paper
DOUBLE_COLUMN = (7.2, 2.8)
FORMATS = ("png", "pdf")


F = TypeVar("F", bound=Callable[..., Any])

RC = {"figure.dpi": 150, "savefig.dpi": 200, "savefig.bbox": "tight", "axes.titlesize": 9,
      "axes.labelsize": 9, "legend.fontsize": 7, "xtick.labelsize": 8, "ytick.labelsize": 8,
      "lines.linewidth": 1.4, "lines.markersize": 4, "pdf.fonttype": 42}


@contextmanager
def style() -> Iterator[None]:
    """seaborn's paper context with light grids and a colour-blind-safe palette, for the block only.

    matplotlib's global state (backend, rcParams, seaborn's theme) is left as the user had it.
    """
    rc = dict(sns.plotting_context("paper", font_scale=1.0))
    rc.update(sns.axes_style("whitegrid"))
    rc["axes.prop_cycle"] = plt.cycler(color=sns.color_palette("colorblind"))
    rc.update(RC)
    with plt.rc_context(rc):
        yield


def styled(fn: F) -> F:
    """Draw the figure of ``fn`` in attnlab's :func:`style`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with style():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def use_style() -> None:
    """Apply attnlab's style globally (for scripts that draw their own figures in it)."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.0, rc=RC)


def model_palette(models: Sequence[str]) -> Dict[str, Tuple[float, float, float]]:
    """A fixed colour per model label, in order of appearance, shared by all panels."""
    colors = sns.color_palette("colorblind", n_colors=max(len(models), 1))
    return {m: colors[i] for i, m in enumerate(models)}


def save_figure(fig: "plt.Figure", folder: Union[str, os.PathLike], stem: str) -> List[Path]:
    """Save ``stem.png`` and ``stem.pdf`` into ``folder`` (atomically) and close the figure."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for fmt in FORMATS:
            path = folder / f"{stem}.{fmt}"
            with atomic_path(path) as tmp, style():
                fig.savefig(tmp, format=fmt)
            written.append(path)
    finally:
        plt.close(fig)
    return written
