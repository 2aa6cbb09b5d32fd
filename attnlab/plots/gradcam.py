"""The attribution grid: where each model looks, method by method, next to the image itself.

Rows are images; columns are the original image, then each model's methods (CAMs,
chefer, attn-grad), then each model's attention rollout (where it is defined: not for
windowed, pooled or class attention). Maps are drawn over the model's own input with its
normalisation undone (grey inputs stay grey), so what is compared is the map alone.
"""
from __future__ import annotations

from typing import Any, List, Tuple

import matplotlib.pyplot as plt
import numpy as np

from .style import styled

CELL = 1.35  # inches per panel


def _wrap(text: str, width: int = 22) -> str:
    """Long names wrap onto more lines rather than being cut."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False)) or text


def _show_image(ax: plt.Axes, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")


@styled
def gradcam_grid(result: Any, alpha: float = 0.5) -> plt.Figure:
    """Overlay every model's maps on the images; titles name model, method, prediction and its probability.

    ``result`` is an ``attnlab.studies.attribution.AttributionResult``; each row is titled
    with the image's file name (or ``image i``) and, for labelled images, the true class.
    """
    models = result.models
    columns: List[Tuple[Any, str]] = [(m, method) for m in models for method in result.methods]
    columns += [(m, "rollout") for m in models if "rollout" in m.maps]  # not defined for Swin, MViTv2, CaiT
    n = len(models[0].targets)
    ncols = 1 + len(columns)
    retargeted = any((m.targets != m.predictions).any() for m in models)
    row_height = CELL + (0.62 if retargeted else 0.5)  # room for the title lines
    fig, axes = plt.subplots(n, ncols, figsize=(CELL * ncols, row_height * n + 0.25), squeeze=False)
    shown = {m.label: m.display_images() for m in models}
    first = models[0]
    titles = result.image_titles()
    method_titles = result.method_titles()
    for i in range(n):
        ax = axes[i, 0]
        _show_image(ax, shown[first.label][i])
        title = _wrap(titles[i])
        label = int(result.labels[i]) if result.labels is not None else -1
        if 0 <= label < len(first.classes):
            title += f"\ntrue: {_wrap(first.classes[label])}"
        ax.set_title(title, fontsize=6)
        for j, (m, method) in enumerate(columns, start=1):
            ax = axes[i, j]
            _show_image(ax, shown[m.label][i])
            ax.imshow(m.maps[method][i], cmap="jet", alpha=alpha, vmin=0, vmax=1, interpolation="bilinear")
            pred = int(m.predictions[i])
            where = method_titles.get(method, f"{method} @ {m.layer}")
            title = (f"{_wrap(m.label)}\n{where}\n"
                     f"pred {_wrap(m.classes[pred])} {m.probabilities[i, pred]:.2f}")
            target = int(m.targets[i])
            if target != pred and method != "rollout":  # rollout does not depend on the class
                title += f"\nmap for {_wrap(m.classes[target])} {m.probabilities[i, target]:.2f}"
            ax.set_title(title, fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
    kinds = "CAM methods: pytorch-grad-cam, at the layer named; "
    if any(m in method_titles for m in result.methods):
        kinds += "chefer / attn-grad: attention x its gradient; "
    kinds += "rollout: attention only" if any("rollout" in m.maps for m in models) else \
        "no rollout: the layers attend over different tokens"
    title = f"Attribution maps ({kinds}), titled with the predicted class and its probability"
    fig.suptitle(_wrap(title, max(60, int(CELL * ncols * 16))), fontsize=7)  # ~16 characters an inch at 7 pt
    fig.tight_layout(rect=(0, 0, 0.97, 1))
    bar = fig.colorbar(plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1)), ax=axes, fraction=0.015,
                       pad=0.01)
    bar.set_label("relevance (scaled to [0, 1] per image)", fontsize=6)
    bar.ax.tick_params(labelsize=5)
    return fig
