"""One look for every attnlab figure: readable at paper size, PNG for screens, PDF for papers."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import matplotlib

matplotlib.use("Agg")  # figures are files; never need a display
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from ..atomic import atomic_path  # noqa: E402

SINGLE_COLUMN = (3.5, 2.6)   # inches: one column of a two-column paper
DOUBLE_COLUMN = (7.2, 2.8)
FORMATS = ("png", "pdf")


def use_style() -> None:
    """seaborn's paper context with light grids and a colour-blind-safe palette."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.0,
                  rc={"figure.dpi": 150, "savefig.dpi": 200, "savefig.bbox": "tight", "axes.titlesize": 9,
                      "axes.labelsize": 9, "legend.fontsize": 7, "xtick.labelsize": 8, "ytick.labelsize": 8,
                      "lines.linewidth": 1.4, "lines.markersize": 4, "pdf.fonttype": 42})


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
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt)
            written.append(path)
    finally:
        plt.close(fig)
    return written
