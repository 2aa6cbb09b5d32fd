"""What ``explore`` returns: the page, the arrays behind it, and a tidy table of the per-image metrics.

**Frame** (the ``attnlab.tables`` schema): metric ``mad_px`` and ``entropy`` (nats, all
queries) per model, attention kind, layer (and its ``stage``) and head (``head`` -1: the mean over heads),
``value`` the mean over the images, ``std`` over images, ``n_images``. ``save(out)``
writes ``explore.html`` only, all or nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from ..paths import PathLike
from ..studies.result import StudyResult
from ..tables import tidy
from .collect import ModelView

PAGE = "explore.html"


@dataclass
class ExploreResult(StudyResult):
    """The explorer page (``page``, HTML text) and what it was made of (``views``, one per model)."""

    page: str = ""
    views: List[ModelView] = field(default_factory=list)
    names: List[str] = field(default_factory=list)
    labels: List[Optional[str]] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return len(self.page.encode("utf-8"))

    def owned_patterns(self) -> List[str]:
        return [PAGE]

    def save(self, out: PathLike) -> List[Path]:
        """Write ``explore.html`` into ``out``, all or nothing; returns its path in a list."""
        from ..outputs import staged_outputs

        with staged_outputs(out, owned=self.owned_patterns()) as stage:
            (stage / PAGE).write_text(self.page, encoding="utf-8")
        return [Path(out) / PAGE]


def metrics_frame(views: Sequence[ModelView]) -> pd.DataFrame:
    """Per-image metrics of every model, kind, layer and head as tidy rows (mean and std over images);
    a metric undefined for a layer (distance under class attention) gives no row rather than NaN."""
    rows = []
    for view in views:
        m = view.plan.model
        for kind, t in view.metrics.items():
            for metric, per_layer in (("mad_px", t.image_mad), ("entropy", t.image_entropy)):
                for layer, values in enumerate(per_layer):
                    stage = view.plan.blocks[layer].where.stage           # Swin's layers.i, MViTv2's stages.i
                    n, heads1 = values.shape
                    v = values.astype(np.float64)
                    mean = v.mean(0)
                    std = v.std(0, ddof=1) if n > 1 else np.full(heads1, np.nan)
                    for h in range(heads1):
                        if not np.isfinite(mean[h]):
                            continue
                        rows.append({"model": m.label, "checkpoint": m.checkpoint, "arch": m.spec.arch,
                                     "attention": kind, "layer": layer, "head": -1 if h == heads1 - 1 else h,
                                     "metric": metric, "value": float(mean[h]), "std": float(std[h]), "n_images": n,
                                     "stage": stage})
    return tidy(rows)
