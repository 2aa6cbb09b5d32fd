"""Figures over training runs: bands are t intervals over seeds (``attnlab.seeds``), not over images.

Every function takes frames from :func:`attnlab.seeds.over_seeds` (summaries),
:func:`~attnlab.seeds.paired_differences` (differences) or :func:`~attnlab.seeds.stack_runs`
(the runs), and a ``setting`` line that says what differs from the paper's setting (data,
size, epochs), printed under the title so a figure carries its caveats with it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..errors import plural
from ..seeds import shown
from .attention import distance_label, layer_stages
from .style import DOUBLE_COLUMN, SINGLE_COLUMN, model_palette, styled


def _seeds_text(df: pd.DataFrame) -> str:
    seeds = sorted(set(",".join(df["seeds"].astype(str)).split(",")) - {"", "-"}, key=int)
    return f"{plural(len(seeds), 'seed')} ({', '.join(seeds)})"


def _title(fig: plt.Figure, title: str, df: pd.DataFrame, setting: Optional[str]) -> None:
    fig.suptitle(f"{title}\nband: 95% t interval over {_seeds_text(df)}" + (f"\n{setting}" if setting else ""),
                 fontsize=8)


def _layer_axis(ax: plt.Axes, d: pd.DataFrame) -> None:
    layers = np.sort(d["layer"].unique())
    ax.set_xticks(layers + 1)
    ax.set_xlabel("layer (stage)" if layer_stages(d) else "layer")


@styled
def per_layer(summary: pd.DataFrame, metrics: Sequence[str], ylabels: Sequence[str], title: str,
              setting: Optional[str] = None, references: Optional[dict] = None) -> plt.Figure:
    """One panel per metric: its mean over seeds per layer (whole layer, ``head = -1``), one line per
    model (ReViT's own softmax(S_l) dashed), band = t interval over seeds; ``references``
    ``{metric: (value, label)}`` draws a dotted reference line (uniform attention)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=DOUBLE_COLUMN if len(metrics) > 1 else SINGLE_COLUMN,
                             squeeze=False)
    palette = model_palette(list(summary["model"].unique()))
    for ax, metric, ylabel in zip(axes[0], metrics, ylabels):
        d = summary[(summary["metric"] == metric) & (summary["head"] == -1)]
        for (model, attention), m in d.groupby(["model", "attention"], sort=False):
            m = m.sort_values("layer")
            x = m["layer"].to_numpy() + 1
            own = attention == "own"
            ax.plot(x, m["value"], marker="o", color=palette[model], linestyle="--" if own else "-",
                    label=f"{model} (own softmax(S))" if own else model)
            ax.fill_between(x, m["ci_low"], m["ci_high"], color=palette[model], alpha=0.12 if own else 0.22,
                            linewidth=0)
        value, label = (references or {}).get(metric, (None, None))
        if value is not None and np.isfinite(value):
            ax.axhline(value, color="0.45", linewidth=0.9, linestyle=":", label=label, zorder=0)
        if len(d):
            _layer_axis(ax, d)
        ax.set_ylabel(ylabel)
    axes[0][0].legend(frameon=True, framealpha=0.85, edgecolor="none", fontsize=6, loc="best")
    _title(fig, title, summary, setting)
    fig.tight_layout()
    return fig


@styled
def differences(diffs: pd.DataFrame, metrics: Sequence[str], ylabels: Sequence[str], title: str,
                setting: Optional[str] = None) -> plt.Figure:
    """Paired differences per layer (``a - b`` over seeds), one line per comparison, band = t
    interval; filled markers where the interval excludes zero, open ones where it covers it."""
    fig, axes = plt.subplots(1, len(metrics), figsize=DOUBLE_COLUMN if len(metrics) > 1 else SINGLE_COLUMN,
                             squeeze=False)
    palette = model_palette(list(diffs["model"].unique()))
    for ax, metric, ylabel in zip(axes[0], metrics, ylabels):
        d = diffs[(diffs["metric"] == metric) & (diffs["head"] == -1) & (diffs["attention"] != "own")]
        for model, m in d.groupby("model", sort=False):
            m = m.sort_values("layer")
            x = m["layer"].to_numpy() + 1
            color = palette[model]
            ax.plot(x, m["value"], color=color, label=model)
            ax.fill_between(x, m["ci_low"], m["ci_high"], color=color, alpha=0.2, linewidth=0)
            support = np.array([shown(r) for _, r in m.iterrows()], dtype=bool)
            ax.scatter(x[support], m["value"][support], color=color, zorder=3, s=16)
            ax.scatter(x[~support], m["value"][~support], facecolors="white", edgecolors=color, zorder=3, s=16)
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        if len(d):
            _layer_axis(ax, d)
        ax.set_ylabel(ylabel)
    axes[0][0].legend(frameon=False, title="filled: interval excludes 0", title_fontsize=6)
    _title(fig, title, diffs, setting)
    fig.tight_layout()
    return fig


@styled
def heads_per_layer(runs: pd.DataFrame, metric: str = "mad_px", setting: Optional[str] = None,
                    uniform: Optional[float] = None) -> plt.Figure:
    """The ReViT paper's globality figure: per-head mean attention distance against layer, one panel
    per model; a dot per head of every seed (seeds side by side), the line the mean over seeds of
    the layer means."""
    d = runs[(runs["metric"] == metric) & (runs["attention"] == "applied")]
    models = list(d["model"].unique())
    seeds = sorted(d["seeds"].astype(str).unique(), key=int)
    palette = model_palette(models)
    fig, axes = plt.subplots(1, len(models), figsize=(DOUBLE_COLUMN[0], 2.6), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        m = d[d["model"] == model]
        heads = m[m["head"] >= 0]
        for k, seed in enumerate(seeds):
            s = heads[heads["seeds"].astype(str) == seed]
            offset = (k - (len(seeds) - 1) / 2) * 0.18
            ax.scatter(s["layer"] + 1 + offset, s["value"], s=7, color=palette[model], alpha=0.75, edgecolors="none")
        layer_mean = m[m["head"] == -1].groupby("layer")["value"].mean()
        ax.plot(layer_mean.index + 1, layer_mean.values, color="0.2", linewidth=1.0, label="mean over seeds")
        if uniform is not None and np.isfinite(uniform):
            ax.axhline(uniform, color="0.45", linewidth=0.9, linestyle=":", label=f"uniform ({uniform:.1f} px)")
        ax.set_title(model)
        _layer_axis(ax, m)
    axes[0][0].set_ylabel(distance_label(bool(layer_stages(d))))
    axes[0][-1].legend(frameon=False, fontsize=6)
    fig.suptitle("Mean attention distance of every head (a dot per head and seed: "
                 f"{_seeds_text(d)})" + (f"\n{setting}" if setting else ""), fontsize=8)
    fig.tight_layout()
    return fig


@styled
def against_magnitude(summary: pd.DataFrame, transform: str, metric: str = "accuracy",
                      setting: Optional[str] = None, chance: Optional[float] = None) -> plt.Figure:
    """A robustness metric against the transform's magnitude, mean over seeds with its t interval."""
    d = summary[(summary["transform"] == transform) & (summary["metric"] == metric)]
    palette = model_palette(list(d["model"].unique()))
    fig, ax = plt.subplots(figsize=SINGLE_COLUMN)
    for model, m in d.groupby("model", sort=False):
        m = m.sort_values("magnitude")
        ax.plot(m["magnitude"], m["value"], marker="o", color=palette[model], label=model)
        ax.fill_between(m["magnitude"], m["ci_low"], m["ci_high"], color=palette[model], alpha=0.22, linewidth=0)
    if chance is not None:
        ax.axhline(chance, color="0.45", linewidth=0.9, linestyle=":", label=f"chance ({chance:.0%})", zorder=0)
    if not transform.startswith("scale"):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("scale factor" if transform.startswith("scale") else f"{transform} (px)")
    ax.set_ylabel("top-1 accuracy" if metric == "accuracy" else metric)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False)
    _title(fig, f"Robustness: {transform}", d, setting)
    fig.tight_layout()
    return fig


@styled
def bars(summary: pd.DataFrame, runs: pd.DataFrame, metric: str, ylabel: str, title: str,
         setting: Optional[str] = None) -> plt.Figure:
    """One bar per model: the mean over seeds with its t interval, and a dot per seed."""
    d = summary[summary["metric"] == metric]
    models = list(d["model"])
    palette = model_palette(models)
    fig, ax = plt.subplots(figsize=(max(3.0, 0.8 + 0.75 * len(models)), 2.8))
    values = d["value"].to_numpy(float)
    err = np.array([values - d["ci_low"].to_numpy(float), d["ci_high"].to_numpy(float) - values])
    ax.bar(range(len(models)), values, yerr=err, color=[palette[m] for m in models], capsize=3, alpha=0.8)
    for k, model in enumerate(models):
        r = runs[(runs["metric"] == metric) & (runs["model"] == model)]
        ax.scatter(np.full(len(r), k), r["value"], color="0.15", s=9, zorder=3)
    low = np.nanmin(np.concatenate([d["ci_low"].to_numpy(float), runs[runs["metric"] == metric]["value"].to_numpy(float)]))
    high = np.nanmax(np.concatenate([d["ci_high"].to_numpy(float), runs[runs["metric"] == metric]["value"].to_numpy(float)]))
    pad = max(0.5, 0.15 * (high - low))
    ax.set_ylim(low - pad, high + pad)
    ax.set_xticks(range(len(models)), models, rotation=25, ha="right")
    ax.set_ylabel(ylabel)
    _title(fig, title, d, setting)
    fig.tight_layout()
    return fig
