"""Faithfulness curves: the target's probability as the input is perturbed in the map's order.

One panel per curve (positive / negative perturbation, deletion, insertion), one line per
model x method (colour: method, line style: model), the mean over images, with each line's
area under the curve in the legend. Drawn from the tidy ``gradcam.csv`` rows, so a saved
table redraws the same figure.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import matplotlib.pyplot as plt
import pandas as pd

from .style import model_palette, styled

LINE_STYLES = ("-", "--", ":", "-.")


@styled
def faithfulness_curves(frame: pd.DataFrame, panels: Sequence[Tuple[str, str, str]],
                        areas: Dict[str, str]) -> plt.Figure:
    """``panels``: ``(curve metric, title, x label)`` each; ``areas``: curve metric -> its area's metric."""
    mean = frame[frame["head"] == -1]
    drawn = mean[mean["metric"].isin([metric for metric, _, _ in panels])]
    pairs = list(dict.fromkeys(zip(drawn["model"], drawn["transform"])))
    methods = list(dict.fromkeys(t for _, t in pairs))
    models = list(dict.fromkeys(m for m, _ in pairs))
    colours = model_palette(methods)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.6 + 0.11 * len(pairs)), squeeze=False,
                             layout="constrained")  # makes room for the legends below the panels
    for ax, (metric, title, xlabel) in zip(axes[0], panels):
        rows = mean[mean["metric"] == metric]
        for model, method in pairs:
            line = rows[(rows["model"] == model) & (rows["transform"] == method)].sort_values("magnitude")
            if line.empty:
                continue
            area = mean[(mean["model"] == model) & (mean["transform"] == method) & (mean["metric"] == areas[metric])]
            label = f"{model} · {method}" + (f" (AUC {area['value'].iloc[0]:.3f})" if len(area) else "")
            ax.plot(line["magnitude"], line["value"], marker="o", markersize=2.5, color=colours[method],
                    linestyle=LINE_STYLES[models.index(model) % len(LINE_STYLES)], label=label)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=5, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    axes[0, 0].set_ylabel("p(target), mean over images")
    fig.suptitle("Faithfulness curves: the explained class's probability as input is removed (or inserted) "
                 "in the order of each map", fontsize=8)
    return fig
