"""Figures of attention metrics: globality (ReViT's claim) and entropy (CB's claim).

Every function takes a tidy frame (``attnlab.tables`` schema) and returns a matplotlib
figure; layers are shown 1-based, as in the papers, and for multi-stage models (Swin,
MViTv2) with their stage, 1-based too: ``layer (stage)``. A distance in pixels grows with
the stage's stride (a token of a later stage covers more of the image), which the distance
axes of such models say.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import DOUBLE_COLUMN, SINGLE_COLUMN, model_palette, styled


def _series(df: pd.DataFrame) -> List[tuple]:
    """(model, attention) pairs to draw, applied attention first; 'own' is ReViT's softmax(S_l)."""
    pairs = df[["model", "attention"]].drop_duplicates()
    order = {"applied": 0, "own": 1}
    return sorted(map(tuple, pairs.values), key=lambda p: (list(df["model"].unique()).index(p[0]), order.get(p[1], 2)))


def _label(model: str, attention: str) -> str:
    return model if attention == "applied" else f"{model} (own softmax(S))"


def _line(attention: str) -> dict:
    return {"linestyle": "-" if attention == "applied" else "--"}


def layer_stages(df: pd.DataFrame) -> Dict[int, int]:
    """Layer -> stage where the frame's layers lie in more than one stage (one stage each); else empty."""
    if "stage" not in df.columns:
        return {}
    pairs = df[df["layer"] >= 0][["layer", "stage"]].drop_duplicates()
    if pairs["stage"].nunique() < 2 or pairs["layer"].duplicated().any():  # one stage, or models that disagree
        return {}
    return dict(zip(pairs["layer"].astype(int), pairs["stage"].astype(int)))


def layer_name(layer: int, stages: Dict[int, int]) -> str:
    """``layer 3``, or ``layer 3 (stage 2)`` for a multi-stage model (both 1-based)."""
    return f"layer {layer + 1}" + (f" (stage {stages[layer] + 1})" if layer in stages else "")


def distance_label(multi_stage: bool) -> str:
    """The distance axis' label; multi-stage models: distances in pixels grow with the stage's stride."""
    return "mean attention distance (px)" + ("\n(grows with the stage's stride)" if multi_stage else "")


def _layers(ax: plt.Axes, layers: np.ndarray, stages: Optional[Dict[int, int]] = None) -> None:
    ax.set_xticks(layers + 1)
    if stages:
        ax.set_xticklabels([f"{layer + 1}\n({stages.get(int(layer), 0) + 1})" for layer in layers], fontsize=6)
        ax.set_xlabel("layer (stage)")
    else:
        ax.set_xlabel("layer")


def _uniform_line(ax: plt.Axes, value: Optional[float], label: str) -> None:
    """A labelled reference line (uniform attention) where its value is known."""
    if value is not None and np.isfinite(value):
        ax.axhline(value, color="0.45", linewidth=0.9, linestyle=":", label=label, zorder=0)


@styled
def mad_per_layer(df: pd.DataFrame, metric: str = "mad_px", uniform: Optional[float] = None) -> plt.Figure:
    """Mean attention distance per layer: mean over heads, band = min..max over heads;
    ``uniform``: the distance of uniform attention on the models' grid, drawn as a reference."""
    d = df[(df["metric"] == metric) & (df["head"] >= 0)]
    palette = model_palette(list(d["model"].unique()))
    fig, ax = plt.subplots(figsize=SINGLE_COLUMN)
    for model, attention in _series(d):
        g = d[(d["model"] == model) & (d["attention"] == attention)].groupby("layer")["value"]
        stats = g.agg(["mean", "min", "max"]).reset_index()
        x = stats["layer"].to_numpy() + 1
        ax.plot(x, stats["mean"], marker="o", color=palette[model], label=_label(model, attention), **_line(attention))
        if attention == "applied":
            ax.fill_between(x, stats["min"], stats["max"], color=palette[model], alpha=0.15, linewidth=0)
    stages = layer_stages(d)
    _layers(ax, np.sort(d["layer"].unique()), stages)
    _uniform_line(ax, uniform, f"uniform attention ({uniform:.1f} px)" if uniform is not None else "")
    ax.set_ylabel(distance_label(bool(stages)))
    ax.set_title("Attention distance per layer (band: range over heads)")
    ax.legend(frameon=False)
    return fig


@styled
def mad_per_head(df: pd.DataFrame, metric: str = "mad_px", uniform: Optional[float] = None) -> plt.Figure:
    """One point per head against layer (ViT paper, figure 7 style), models side by side."""
    d = df[(df["metric"] == metric) & (df["head"] >= 0) & (df["attention"] == "applied")]
    models = list(d["model"].unique())
    palette = model_palette(models)
    fig, ax = plt.subplots(figsize=SINGLE_COLUMN)
    width = 0.6 / max(len(models), 1)
    for k, model in enumerate(models):
        m = d[d["model"] == model]
        offset = (k - (len(models) - 1) / 2) * width
        ax.scatter(m["layer"] + 1 + offset, m["value"], s=10, color=palette[model], label=model, alpha=0.85,
                   edgecolors="none")
    stages = layer_stages(d)
    _layers(ax, np.sort(d["layer"].unique()), stages)
    _uniform_line(ax, uniform, f"uniform attention ({uniform:.1f} px)" if uniform is not None else "")
    ax.set_ylabel(distance_label(bool(stages)))
    ax.set_title("Attention distance of every head")
    ax.legend(frameon=False, markerscale=1.5)
    return fig


@styled
def globality_curves(df: pd.DataFrame) -> plt.Figure:
    """G_l(r): share of patch attention beyond radius r, one panel per model, one line per layer."""
    d = df[(df["metric"] == "globality") & (df["head"] == -1) & (df["attention"] == "applied")]
    models = list(d["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(DOUBLE_COLUMN[0], DOUBLE_COLUMN[1]), sharey=True, squeeze=False)
    layers = np.sort(d["layer"].unique())
    cmap = plt.get_cmap("viridis")
    for ax, model in zip(axes[0], models):
        m = d[d["model"] == model]
        stages = layer_stages(m)
        for layer in layers:
            ml = m[m["layer"] == layer].sort_values("radius")
            ax.plot(ml["radius"], ml["value"], color=cmap(layer / max(len(layers) - 1, 1)), marker=".",
                    label=layer_name(int(layer), stages))
        ax.set_title(model)
        ax.set_xlabel("radius r (patches)")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("attention beyond r, G(r)")
    axes[0][-1].legend(frameon=False, fontsize=6, ncol=1 if len(layers) <= 8 else 2, loc="upper right")
    fig.tight_layout()
    return fig


@styled
def entropy_per_layer(df: pd.DataFrame, log_n: Optional[float] = None) -> plt.Figure:
    """Entropy per layer (nats, and / log N), band = 95% confidence interval over images;
    ``log_n``: ln N of the models' token count (uniform attention), drawn as a reference."""
    fig, axes = plt.subplots(1, 2, figsize=DOUBLE_COLUMN)
    for ax, metric, ylabel in [(axes[0], "entropy", "attention entropy (nats)"),
                               (axes[1], "entropy_norm", "entropy / log N")]:
        d = df[(df["metric"] == metric) & (df["head"] == -1)]
        palette = model_palette(list(df["model"].unique()))
        for model, attention in _series(d):
            m = d[(d["model"] == model) & (d["attention"] == attention)].sort_values("layer")
            x = m["layer"].to_numpy() + 1
            ax.plot(x, m["value"], marker="o", color=palette[model], label=_label(model, attention), **_line(attention))
            ax.fill_between(x, m["ci_low"], m["ci_high"], color=palette[model], alpha=0.2, linewidth=0)
        if len(d):
            _layers(ax, np.sort(d["layer"].unique()), layer_stages(d))
        ax.set_ylabel(ylabel)
    _uniform_line(axes[0], log_n, f"uniform: ln N = {log_n:.2f}" if log_n is not None else "")
    _uniform_line(axes[1], 1.0, "uniform: log N")
    axes[1].set_ylim(top=1.02)
    axes[1].legend(frameon=False, loc="lower left")
    axes[0].legend(frameon=False)
    fig.suptitle("Attention entropy per layer (band: 95% CI over images)", fontsize=9)
    fig.tight_layout()
    return fig


@styled
def entropy_heatmaps(df: pd.DataFrame, metric: str = "entropy_norm") -> plt.Figure:
    """Layer x head heatmaps of (normalised) entropy, one panel per model, one colour scale."""
    import seaborn as sns

    d = df[(df["metric"] == metric) & (df["head"] >= 0) & (df["attention"] == "applied")]
    models = list(d["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(max(2.4 * len(models), 3.5), 2.8), squeeze=False)
    vmin, vmax = (0.0, 1.0) if metric == "entropy_norm" else (d["value"].min(), d["value"].max())
    for k, (ax, model) in enumerate(zip(axes[0], models)):
        grid = d[d["model"] == model].pivot(index="layer", columns="head", values="value")
        stages = layer_stages(d[d["model"] == model])
        grid.index = [f"{layer + 1} ({stages[layer] + 1})" if stages else layer + 1 for layer in grid.index]
        grid.columns = grid.columns + 1
        sns.heatmap(grid, ax=ax, vmin=vmin, vmax=vmax, cmap="magma", cbar=k == len(models) - 1,
                    cbar_kws={"label": "entropy / log N" if metric == "entropy_norm" else metric})
        ax.set_title(model)
        ax.set_xlabel("head")
        ax.set_ylabel(("layer (stage)" if stages else "layer") if k == 0 else "")
    fig.tight_layout()
    return fig
