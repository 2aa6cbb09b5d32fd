"""Figures of robustness: metrics against shift or scale, a (dx, dy) heatmap, attention under shift."""
from __future__ import annotations

from typing import Optional, Tuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from .attention import distance_label, layer_name, layer_stages
from .style import DOUBLE_COLUMN, model_palette, styled

_XLABEL = {"scale": "scale factor", "two-crops": "crop offset range (px)",
           "random-translate": "maximum random shift (px)"}
_YLABEL = {"accuracy": "top-1 accuracy", "consistency": "consistency with unshifted top-1"}


def _name_and_fill(transform: str) -> Tuple[str, str]:
    """``shift-h:reflect`` -> ("shift-h", "reflect"); a transform without a fill suffix -> (it, "")."""
    name, _, fill = transform.partition(":")
    return name, fill


def _title(transform: str) -> str:
    """``shift-h``; ``shift-h, reflect fill`` for a shift whose border is not black."""
    name, fill = _name_and_fill(transform)
    return f"{name}, {fill} fill" if fill else name


@styled
def against_magnitude(df: pd.DataFrame, transform: str, chance: Optional[float] = None) -> plt.Figure:
    """Accuracy and consistency against the transform's magnitude, one line per model, 95% CI bands;
    ``chance`` (1 / classes) is drawn on the accuracy panel. Shift axes tick at whole pixels."""
    d = df[(df["transform"] == transform) & (df["metric"].isin(["accuracy", "consistency"]))]
    metrics = [m for m in ("accuracy", "consistency") if m in set(d["metric"])]
    palette = model_palette(list(df["model"].unique()))
    fig, axes = plt.subplots(1, len(metrics), figsize=DOUBLE_COLUMN, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for model in d["model"].unique():
            m = d[(d["model"] == model) & (d["metric"] == metric)].sort_values("magnitude")
            ax.plot(m["magnitude"], m["value"], marker="o", color=palette[model], label=model)
            ax.fill_between(m["magnitude"], m["ci_low"], m["ci_high"], color=palette[model], alpha=0.2, linewidth=0)
        name = _name_and_fill(transform)[0]
        if metric == "accuracy" and chance is not None:
            ax.axhline(chance, color="0.45", linewidth=0.9, linestyle=":", label=f"chance ({chance:.0%})", zorder=0)
        if name != "scale":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(_XLABEL.get(name, f"{name.replace('shift-', '')} shift (px)"))
        ax.set_ylabel(_YLABEL[metric])
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].legend(frameon=False)
    fig.suptitle(f"Robustness to {_title(transform)} (band: bootstrap 95% CI)", fontsize=9)
    fig.tight_layout()
    return fig


@styled
def two_crops(df: pd.DataFrame, transform: str = "two-crops") -> plt.Figure:
    """The consistency protocol: top-1 agreement between two random crops of each image, one bar per
    model, with its bootstrap 95% CI."""
    d = df[(df["transform"] == transform) & (df["metric"] == "consistency")]
    models = list(d["model"].unique())
    palette = model_palette(models)
    fig, ax = plt.subplots(figsize=(max(1.0 + 0.8 * len(models), 3.0), 2.6))
    values = [float(d[d["model"] == m]["value"].iloc[0]) for m in models]
    lows = [float(d[d["model"] == m]["ci_low"].iloc[0]) for m in models]
    highs = [float(d[d["model"] == m]["ci_high"].iloc[0]) for m in models]
    err = np.array([np.subtract(values, lows), np.subtract(highs, values)])
    ax.bar(range(len(models)), values, yerr=err, color=[palette[m] for m in models], capsize=3)
    ax.set_xticks(range(len(models)), models, rotation=20 if max(map(len, models)) * len(models) > 30 else 0,
                  ha="right" if max(map(len, models)) * len(models) > 30 else "center")
    ax.set_ylabel("top-1 agreement of two crops")
    ax.set_ylim(0, 1.02)
    offset = int(d["magnitude"].iloc[0]) if len(d) else 0
    ax.set_title(f"Two random crops (offsets up to {offset} px)")
    fig.tight_layout()
    return fig


@styled
def shift_grid(df: pd.DataFrame, metric: str = "accuracy", transform: str = "shift-grid") -> plt.Figure:
    """Heatmap of a metric over (dx, dy), one panel per model, one colour scale (consistency without labels)."""
    import seaborn as sns

    d = df[(df["transform"] == transform) & (df["metric"] == metric)]
    if d.empty and metric == "accuracy":
        metric = "consistency"
        d = df[(df["transform"] == transform) & (df["metric"] == metric)]
    models = list(d["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(max(2.6 * len(models), 3.5), 2.8), squeeze=False)
    for k, (ax, model) in enumerate(zip(axes[0], models)):
        grid = d[d["model"] == model].pivot(index="magnitude_y", columns="magnitude", values="value")
        grid.index = grid.index.astype(int)
        grid.columns = grid.columns.astype(int)
        sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=grid.shape[0] <= 6, fmt=".2f",
                    cbar=k == len(models) - 1, cbar_kws={"label": _YLABEL.get(metric, metric)})
        fill = _name_and_fill(transform)[1]
        ax.set_title(f"{model} ({fill} fill)" if fill else model)
        ax.set_xlabel("dx (px)")
        ax.set_ylabel("dy (px)" if k == 0 else "")
    fig.tight_layout()
    return fig


@styled
def attention_under_transform(df: pd.DataFrame, metric: str = "mad_px") -> plt.Figure:
    """Per-layer mean attention distance at each magnitude: does attention follow the object?
    Layers of multi-stage models are named with their stage (distances grow with its stride)."""
    d = df[(df["metric"] == metric) & (df["layer"] >= 0)]
    d = d[d["transform"].str.partition(":")[0] != "shift-grid"]
    models = list(d["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=DOUBLE_COLUMN, sharey=True, squeeze=False)
    cmap = plt.get_cmap("viridis")
    multi_stage = False
    for ax, model in zip(axes[0], models):
        m = d[d["model"] == model]
        transform = m["transform"].iloc[0]
        m = m[m["transform"] == transform]
        layers = np.sort(m["layer"].unique())
        stages = layer_stages(m)
        multi_stage = multi_stage or bool(stages)
        for layer in layers:
            ml = m[m["layer"] == layer].sort_values("magnitude")
            ax.plot(ml["magnitude"], ml["value"], marker=".", color=cmap(layer / max(len(layers) - 1, 1)),
                    label=layer_name(int(layer), stages))
        ax.set_title(f"{model} ({_title(transform)})")
        ax.set_xlabel("magnitude")
    axes[0][0].set_ylabel(distance_label(multi_stage))
    axes[0][-1].legend(frameon=False, fontsize=6)
    fig.tight_layout()
    return fig
