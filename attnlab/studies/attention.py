"""The attention studies behind ``attnlab globality`` and ``attnlab entropy``, as a Python API.

    result = measure_attention(["vit.pt", "revit.pt"], dataset="fashion-mnist")
    result.frame                       # tidy rows, every metric asked for
    result.figures()                   # {"mad_per_layer": Figure, ...}
    result.save("out/globality")       # globality.csv + figures (PNG and PDF), all or nothing

One pass over the images measures every metric; models that take the same input see
the same decoded batches. What ``save`` writes follows the metrics measured: the
globality metrics give ``globality.csv`` and its figures, the entropy metrics
``entropy.csv`` and its figures (``GlobalityResult`` / ``EntropyResult`` pick one share).
The high-norm token metrics (``HIGH_NORM_METRICS``, only when asked for: ``attnlab
globality --metrics``, the feature-diversity set) go into ``globality.csv``, next to
``prefix_mass``; each figure is drawn when the metric it shows was measured.
"""
from __future__ import annotations

import math
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import pandas as pd
import torch

from ..layout import TokenLayout
from ..metrics import DEFAULT_RADII, HIGH_NORM_METRICS, mean_attention_distance
from ..paths import PathLike
from ..spec import InputSpec
from .inputs import ImageSelection, ModelSource, check_batch_size, check_workers, group_by_input, load_models
from .result import FigureMaker, StudyResult
from .stream import AttentionAnalyser

GLOBALITY_METRICS = ("mad_px", "mad_px_raw", "nonlocality", "globality", "prefix_mass")
ENTROPY_METRICS = ("entropy", "entropy_norm", "entropy_patch", "entropy_prefix")
#: Feature diversity of block outputs, with the high-norm tokens and the attention they draw.
FEATURE_METRICS = ("token_cosine", "effective_rank") + HIGH_NORM_METRICS
#: What ``attnlab globality --metrics`` chooses from (default: GLOBALITY_METRICS).
GLOBALITY_CHOICES = GLOBALITY_METRICS + HIGH_NORM_METRICS
GLOBALITY_FIGURES = ("mad_per_layer", "mad_per_head", "globality_curves")
ENTROPY_FIGURES = ("entropy_per_layer", "entropy_heatmap")

ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class AttentionResult(StudyResult):
    """Attention metrics of one or more models over the same images; ``layouts`` (model ->
    token layout) give the figures their uniform-attention reference lines."""

    layouts: Dict[str, TokenLayout] = field(default_factory=dict)

    def uniform_distance(self) -> Optional[float]:
        """Mean attention distance (px) of uniform attention, when every model has the same grid."""
        if not self.layouts or any(lay is None for lay in self.layouts.values()):
            return None  # windowed or pooled models: no one grid, no one uniform distance
        distinct = {(lay.grid_size, lay.patch_size, lay.num_prefix_tokens) for lay in self.layouts.values()}
        if len(distinct) != 1:
            return None
        lay = next(iter(self.layouts.values()))
        n = lay.num_tokens
        return float(mean_attention_distance(torch.full((1, 1, n, n), 1.0 / n, dtype=torch.float64), layout=lay))

    def log_tokens(self) -> Optional[float]:
        """ln N, the entropy of uniform attention, when every model has the same token count."""
        if not self.layouts or any(lay is None for lay in self.layouts.values()):
            return None
        counts = {lay.num_tokens for lay in self.layouts.values()}
        return math.log(counts.pop()) if len(counts) == 1 else None

    def share(self, metrics: Sequence[str]) -> pd.DataFrame:
        """The rows of ``metrics`` only."""
        return self.frame[self.frame["metric"].isin(metrics)]

    def has(self, metrics: Sequence[str]) -> bool:
        return bool(self.frame["metric"].isin(metrics).any())

    def tables(self) -> Dict[str, pd.DataFrame]:
        out = {}
        if self.has(GLOBALITY_CHOICES):
            out["globality.csv"] = self.share(GLOBALITY_CHOICES)
        if self.has(ENTROPY_METRICS):
            out["entropy.csv"] = self.share(ENTROPY_METRICS)
        return out

    def figure_makers(self) -> Dict[str, FigureMaker]:
        from ..plots import attention as fig

        out: Dict[str, FigureMaker] = {}
        if self.has(("mad_px",)):
            rows = self.share(GLOBALITY_METRICS)
            uniform = self.uniform_distance()
            out["mad_per_layer"] = lambda: fig.mad_per_layer(rows, uniform=uniform)
            out["mad_per_head"] = lambda: fig.mad_per_head(rows, uniform=uniform)
        if self.has(("globality",)):
            out["globality_curves"] = lambda: fig.globality_curves(self.share(GLOBALITY_METRICS))
        if self.has(ENTROPY_METRICS):
            rows_e = self.share(ENTROPY_METRICS)
            out["entropy_per_layer"] = lambda: fig.entropy_per_layer(rows_e, log_n=self.log_tokens())
            out["entropy_heatmap"] = lambda: fig.entropy_heatmaps(rows_e)
        return out

    def owned_patterns(self) -> List[str]:
        """The tables written and every figure of their share (a figure not drawn this time is stale)."""
        stems = (GLOBALITY_FIGURES if "globality.csv" in self.tables() else ()) + \
            (ENTROPY_FIGURES if "entropy.csv" in self.tables() else ())
        return list(self.tables()) + [f"{stem}.*" for stem in stems]

    def layer_summary(self, metric: str) -> pd.DataFrame:
        """Model x layer table of a metric's layer value (applied attention), for the terminal."""
        return layer_summary(self.frame, metric)

    @property
    def n_images(self) -> int:
        return int(self.frame["n_images"].max())


class GlobalityResult(AttentionResult):
    """The globality share of an attention study (with any high-norm metrics measured):
    ``globality.csv`` and its three figures."""

    def __init__(self, frame: pd.DataFrame, notes: Optional[List[str]] = None,
                 layouts: Optional[Dict[str, TokenLayout]] = None) -> None:
        super().__init__(frame[frame["metric"].isin(GLOBALITY_CHOICES)], list(notes or []), dict(layouts or {}))


class EntropyResult(AttentionResult):
    """The entropy share of an attention study: ``entropy.csv`` and its two figures."""

    def __init__(self, frame: pd.DataFrame, notes: Optional[List[str]] = None,
                 layouts: Optional[Dict[str, TokenLayout]] = None) -> None:
        super().__init__(frame[frame["metric"].isin(ENTROPY_METRICS)], list(notes or []), dict(layouts or {}))


def measure_attention(
    models: Union[ModelSource, Sequence[ModelSource]],
    labels: Optional[Sequence[str]] = None,
    *,
    images: Optional[Sequence[PathLike]] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[PathLike] = None,
    split: str = "test",
    num_images: Optional[int] = None,
    batch_size: int = 64,
    device: Optional[str] = "auto",
    radii: Sequence[float] = DEFAULT_RADII,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[PathLike] = None,
    input_spec: Optional[InputSpec] = None,
    metrics: Optional[Sequence[str]] = None,
    progress_factory: Optional[ProgressFactory] = None,
    workers: int = 0,
) -> AttentionResult:
    """Attention metrics (``metrics``, default all) of every model over the same images.

    ``models`` are checkpoint paths, timm names (``pretrained=True``), ``(model, spec)``
    pairs or bare modules (``input_spec`` says what they take when their config does not).
    ``workers`` processes decode the images (0: this one). Under torchrun each process
    measures its share of the images and every process returns the merged result
    (``attnlab.studies.sharding``).
    """
    from ..devices import resolve_device
    from .sharding import current_world

    world = current_world(device)

    def measure():
        check_batch_size(batch_size)
        check_workers(workers)
        dev = resolve_device(device, world.local_rank)
        selection = ImageSelection(images=images, dataset=dataset, data_dir=data_dir, split=split,
                                   num_images=num_images)
        loaded = load_models(models, labels, model=model, pretrained=pretrained, official_config=official_config,
                             input_spec=input_spec)
        analysers: Dict[str, AttentionAnalyser] = {}
        notes: List[str] = []
        for spec, group in group_by_input(loaded).items():
            mine = [AttentionAnalyser(m.model, label=m.label, checkpoint=m.checkpoint, arch=m.spec.arch,
                                      radii=radii, metrics=metrics, device=dev) for m in group]
            who = ", ".join(m.label for m in group)
            notes += selection.notes(spec, who)
            n = sum(len(b) for b in world.batches(len(selection.dataset_for(spec.channels)), batch_size))
            progress = progress_factory(who, n) if progress_factory else None
            with ExitStack() as stack:
                for a in mine:
                    stack.enter_context(a)
                batches = stack.enter_context(closing(selection.batches(  # closed (its workers stopped) on error
                    spec, batch_size, workers=workers, world=world, pin_memory=dev.type == "cuda", device=dev)))
                for batch in batches:
                    for a in mine:
                        a.update(batch)
                    if progress is not None:
                        progress(mine[0].n_images)
            analysers.update({m.label: a for m, a in zip(group, mine)})
        return loaded, analysers, notes

    loaded, analysers, notes = world.run(measure)
    for m in loaded:  # the same order on every rank
        analysers[m.label].merge(world)

    def combine() -> AttentionResult:
        ordered = [analysers[m.label].result() for m in loaded]  # the order models were given
        out = notes + [note for r in ordered for note in r.notes]
        layouts = {m.label: r.layout for m, r in zip(loaded, ordered)}
        return AttentionResult(pd.concat([r.frame for r in ordered], ignore_index=True), out, layouts)

    return world.run(combine)


def write_globality(frame: pd.DataFrame, out: PathLike) -> list:
    """``globality.csv`` and the globality figures of a frame, all or nothing."""
    return GlobalityResult(frame).save(out)


def write_entropy(frame: pd.DataFrame, out: PathLike) -> list:
    """``entropy.csv`` and the entropy figures of a frame, all or nothing."""
    return EntropyResult(frame).save(out)


def layer_summary(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Model x layer table of a metric's layer value (applied attention), for the terminal."""
    d = frame[(frame["metric"] == metric) & (frame["head"] == -1) & (frame["attention"].isin(["applied", "-"]))]
    table = d.pivot_table(index="model", columns="layer", values="value", sort=False)
    table.columns = [f"L{c + 1}" for c in table.columns]
    return table
