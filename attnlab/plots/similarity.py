"""Figures of representation similarity: CKA heatmaps and the logit lens.

Each function takes the tidy frame of ``similarity.csv`` (``model`` is ``A`` for a model
with itself or ``A|B`` for a pair; ``layer`` is the first model's block, ``head`` the
second's) and returns a matplotlib figure; blocks are shown 1-based, as in the papers,
with block 1 at the bottom left (Kornblith et al.'s orientation).
"""
from __future__ import annotations

from typing import List

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import SINGLE_COLUMN, model_palette, styled


def _panels(n: int) -> tuple:
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    return plt.subplots(rows, cols, figsize=(2.5 * cols + 0.6, 2.4 * rows), squeeze=False)


@styled
def cka_heatmaps(df: pd.DataFrame, pairs: bool = False) -> plt.Figure:
    """Block x block linear CKA, one panel per model (``pairs=False``) or per pair of models
    (``pairs=True``: rows the first model's blocks, columns the second's); one colour scale, 0 to 1."""
    import seaborn as sns

    d = df[df["metric"] == "cka"]
    keys: List[str] = [k for k in d["model"].unique() if ("|" in k) == pairs]
    fig, axes = _panels(max(len(keys), 1))
    for k, (ax, key) in enumerate(zip(axes.flat, keys)):
        grid = d[d["model"] == key].pivot(index="layer", columns="head", values="value")
        grid.index, grid.columns = grid.index + 1, grid.columns + 1
        sns.heatmap(grid, ax=ax, vmin=0.0, vmax=1.0, cmap="magma", square=True, cbar=k == len(keys) - 1,
                    cbar_kws={"label": "linear CKA"})
        ax.invert_yaxis()  # block 1 at the bottom
        first, _, second = key.partition("|")
        ax.set_title(f"{first} vs {second}" if pairs else first)
        ax.set_ylabel(f"{first} block")
        ax.set_xlabel(f"{second or first} block")
    for ax in list(axes.flat)[len(keys):]:
        ax.set_axis_off()
    tokens = ", ".join(sorted(d["transform"].unique()))
    fig.suptitle(f"Linear CKA between block outputs (tokens: {tokens}; minibatch unbiased HSIC)", fontsize=9)
    fig.tight_layout()
    return fig


@styled
def logit_lens(df: pd.DataFrame) -> plt.Figure:
    """Top-1 accuracy (or agreement with the final prediction) of the final norm and head applied
    to each block's output, against the block; band: 95% CI over images."""
    d = df[df["metric"].isin(["logit_lens_top1", "logit_lens_agreement"])]
    palette = model_palette(list(d["model"].unique()))
    fig, ax = plt.subplots(figsize=SINGLE_COLUMN)
    for (model, metric), m in d.groupby(["model", "metric"], sort=False):
        m = m.sort_values("layer")
        x = m["layer"].to_numpy() + 1
        label = model if metric == "logit_lens_top1" else f"{model} (agreement with its final prediction)"
        ax.plot(x, m["value"], marker="o", color=palette[model], label=label)
        ax.fill_between(x, m["ci_low"].clip(0, 1), m["ci_high"].clip(0, 1), color=palette[model], alpha=0.2,
                        linewidth=0)
    if len(d):
        ax.set_xticks(np.sort(d["layer"].unique()) + 1)
    ax.set_xlabel("block")
    kinds = set(d["metric"])
    ax.set_ylabel({"logit_lens_top1": "top-1 accuracy", "logit_lens_agreement": "agreement with final prediction"}
                  .get(kinds.pop(), "") if len(kinds) == 1 else "top-1 accuracy / agreement")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Logit lens: final norm and head on each block")
    ax.legend(frameon=False, fontsize=6)
    return fig
