"""What ``explain`` returns: each model's maps and metrics, the tidy table, the npz and the figure.

**CSV mapping** (``gradcam.csv``, the ``attnlab.tables`` schema): ``transform`` = the
method (``gradcam``, ..., ``rollout``; ``none`` for ``probability``), ``attention`` =
``-``, ``layer`` = -1, ``head`` = image index with ``n_images`` = 1 for per-image rows,
and ``head`` = -1 with ``n_images`` = N (finite values) for the mean over images (with
``std`` and a 95% interval). ``radius`` is empty; ``magnitude`` is empty except on curve
points. ``probability`` is p(target | x), one per model and image, not per method.

**Faithfulness metrics** (per method, ``--faithfulness``): ``road`` gives
``road_most_relevant_first``, ``road_least_relevant_first``, ``road_combined`` and
``confidence_drop`` (``faithfulness.py``); ``perturbation`` gives the curve points
``perturbation_{positive,negative}_probability`` and ``..._accuracy`` (top-1 vs the labels;
``..._agreement``, vs the unperturbed prediction, for unlabelled images) with ``magnitude`` =
fraction of patches removed (0, 0.1, ..., 0.9), and their areas ``<curve>_auc``;
``deletion`` gives ``deletion_probability`` / ``insertion_probability`` (``magnitude`` =
fraction of pixels deleted / inserted, 0..1) and ``deletion_auc`` / ``insertion_auc``
(``perturbation.py``). Curves are drawn in ``faithfulness_curves.png/.pdf``.

**Arrays** (``gradcam_maps.npz``): ``<model>/<method>`` (and ``<model>/rollout`` where rollout
is defined: not for Swin, MViTv2 or CaiT, whose layers attend over different tokens) maps
``[n, H, W]`` in [0, 1] (pytorch-grad-cam's ``scale_cam_image`` per image; rollout
likewise, after bilinear upsampling to the input size), ``images`` (the first model's
inputs, denormalised, ``[n, H, W, C]`` in [0, 1]), ``names`` (each image's file, or
``split/index``), ``predictions``, ``probabilities`` (of the predicted class),
``targets`` and ``target_probabilities`` (each ``[n_models, n]``), ``labels``,
``models``, ``methods`` and ``layers``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ...spec import InputSpec
from ...tables import tidy
from ..result import FigureMaker, StudyResult
from .faithfulness import METRICS
from .options import METHODS, ROLLOUT
from .perturbation import Curve

CSV = "gradcam.csv"
NPZ = "gradcam_maps.npz"
FIGURE = "gradcam"
CURVES_FIGURE = "faithfulness_curves"
#: Panels of the curves figure: (curve metric, title, x label); each drawn when measured.
CURVE_PANELS = (
    ("perturbation_positive_probability", "positive perturbation\n(most relevant patches first)",
     "fraction of patches removed"),
    ("perturbation_negative_probability", "negative perturbation\n(least relevant patches first)",
     "fraction of patches removed"),
    ("deletion_probability", "deletion (RISE)\n(most relevant pixels -> 0)", "fraction of pixels deleted"),
    ("insertion_probability", "insertion (RISE)\n(most relevant pixels onto a blur)", "fraction of pixels inserted"),
)


@dataclass
class ModelAttribution:
    """Everything one model said about the images: predictions, maps, metrics."""

    label: str
    checkpoint: str
    arch: str
    layer: str
    classes: List[str]
    inputs: torch.Tensor            # [n, C, H, W] as fed to the model (normalised)
    input_spec: InputSpec
    probabilities: np.ndarray       # [n, classes]
    targets: np.ndarray             # [n] class index explained
    maps: Dict[str, np.ndarray]     # method (and "rollout") -> [n, H, W] in [0, 1]
    rollout_grid: Optional[np.ndarray]  # [n, gh, gw] raw rollout; None where rollout is not defined (Swin, ...)
    metrics: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)  # method -> metric -> [n]
    curves: Dict[str, Dict[str, Curve]] = field(default_factory=dict)        # method -> curve metric -> curve

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def target_probabilities(self) -> np.ndarray:
        """``[n]`` p(target | x) of each image."""
        return self.probabilities[np.arange(len(self.targets)), self.targets]

    def display_images(self) -> np.ndarray:
        """``[n, H, W, C]`` in [0, 1]: the inputs with the spec's normalisation undone."""
        from ...data import denormalize

        return denormalize(self.inputs, self.input_spec).permute(0, 2, 3, 1).float().numpy()


def _rows(values: np.ndarray, **keys) -> List[dict]:  # noqa: ANN003
    """Per-image rows (head = image index) and the mean over finite values (head = -1)."""
    values = np.asarray(values, dtype=np.float64)
    rows = [dict(keys, head=i, value=float(v), n_images=1) for i, v in enumerate(values)]
    finite = values[np.isfinite(values)]
    n = len(finite)
    rows.append(dict(keys, head=-1, value=float(finite.mean()) if n else math.nan,
                     std=float(finite.std(ddof=1)) if n > 1 else math.nan, n_images=n))
    return rows


def attribution_frame(models: Sequence[ModelAttribution]) -> pd.DataFrame:
    """The tidy ``gradcam.csv`` rows of every model (see the module docstring)."""
    rows: List[dict] = []
    for m in models:
        base = dict(model=m.label, checkpoint=m.checkpoint, arch=m.arch, attention="-", layer=-1)
        rows += _rows(m.target_probabilities, **base, transform="none", metric="probability")
        for method in dict.fromkeys([*m.metrics, *m.curves]):
            metrics, curves = m.metrics.get(method, {}), m.curves.get(method, {})
            for metric in METRICS:
                if metric in metrics:
                    rows += _rows(metrics[metric], **base, transform=method, metric=metric)
            for metric, curve in curves.items():
                rows += _rows(curve.area(), **base, transform=method, metric=curve.area_name)
            for metric, curve in curves.items():
                for j, fraction in enumerate(curve.fractions):
                    rows += _rows(curve.values[:, j], **base, transform=method, metric=metric,
                                  magnitude=float(fraction))
    return tidy(rows)


@dataclass(kw_only=True)
class AttributionResult(StudyResult):
    """The models' attributions on the same images: ``frame`` (tidy), ``notes``, and per model
    its maps and metrics (``models``); ``labels`` are the true labels (-1 when unknown) and
    ``names`` each image's file (or ``split/index``); ``from_files`` says which."""

    models: List[ModelAttribution]
    methods: List[str]
    labels: np.ndarray
    names: List[str]
    from_files: bool = False

    def image_titles(self) -> List[str]:
        """What each image is called in the figure: its file name, or ``image i``."""
        if self.from_files:
            return [Path(n).name for n in self.names]
        return [f"image {i}" for i in range(len(self.names))]

    def tables(self) -> Dict[str, pd.DataFrame]:
        return {CSV: self.frame}

    def arrays(self) -> Dict[str, Dict[str, np.ndarray]]:
        out: Dict[str, np.ndarray] = {}
        for m in self.models:
            for method, maps in m.maps.items():
                out[f"{m.label}/{method}"] = maps.astype(np.float32)
        out["images"] = self.models[0].display_images()
        out["names"] = np.array(self.names)
        out["predictions"] = np.stack([m.predictions for m in self.models]).astype(np.int64)
        out["probabilities"] = np.stack([m.probabilities.max(axis=1) for m in self.models]).astype(np.float32)
        out["targets"] = np.stack([m.targets for m in self.models]).astype(np.int64)
        out["target_probabilities"] = np.stack([m.target_probabilities for m in self.models]).astype(np.float32)
        out["labels"] = np.asarray(self.labels, dtype=np.int64)
        out["models"] = np.array([m.label for m in self.models])
        out["methods"] = np.array(self.methods + ([ROLLOUT] if self.has_rollout() else []))
        out["layers"] = np.array([m.layer for m in self.models])
        return {NPZ: out}

    def has_rollout(self) -> bool:
        """Whether any model has a rollout map (not windowed, pooled or class-attention models)."""
        return any(ROLLOUT in m.maps for m in self.models)

    def method_titles(self) -> Dict[str, str]:
        """What the figure says each map is of: ``method @ layer`` for CAMs, else the method's own words."""
        titles = {method: METHODS[method].where for method in self.methods if METHODS[method].where}
        titles[ROLLOUT] = "rollout (all layers)"
        return titles

    def curve_panels(self) -> List[tuple]:
        """``CURVE_PANELS`` of the curves that were measured."""
        measured = {name for m in self.models for curves in m.curves.values() for name in curves}
        return [panel for panel in CURVE_PANELS if panel[0] in measured]

    def figure_makers(self) -> Dict[str, FigureMaker]:
        from ...plots.faithfulness import faithfulness_curves
        from ...plots.gradcam import gradcam_grid

        makers: Dict[str, FigureMaker] = {FIGURE: lambda: gradcam_grid(self)}
        panels = self.curve_panels()
        if panels:
            areas = {name: c.area_name for m in self.models for curves in m.curves.values()
                     for name, c in curves.items()}
            makers[CURVES_FIGURE] = lambda: faithfulness_curves(self.frame, panels, areas)
        return makers

    def owned_patterns(self) -> List[str]:
        return [CSV, NPZ] + [f"{stem}.{ext}" for stem in (FIGURE, CURVES_FIGURE) for ext in ("png", "pdf")]

