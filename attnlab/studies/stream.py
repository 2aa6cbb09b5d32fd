"""Stream images through a model and measure its attention, batch by batch.

An :class:`AttentionAnalyser` captures the requested hook points layer by layer
(``attnlab.capture.hooks``) and hands each map straight to a float64 streaming
accumulator (``attnlab.metrics.AttentionStats``): no attention map outlives its layer,
and memory does not grow with the number of images. For ReViT it measures both the
attention applied, softmax(R_l) (``attention="applied"``), and the layer's own
softmax(S_l) (``attention="own"``). Being fed batch by batch, several analysers can
share the same decoded batches (models with the same input)::

    with AttentionAnalyser(vit, label="ViT", checkpoint="ab12") as a:
        for x, _ in batches:
            a.update(x)
    result = a.result()
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import pandas as pd
import torch
from torch import nn

from ..adapters import find_attention
from ..capture import attention_layers, hook_point_names, hooks, layer_of
from ..devices import DeviceLike, resolve_device
from ..errors import AttnlabError, one_line
from ..layout import TokenLayout
from ..metrics.geometric import GeometricStats
from ..metrics import DEFAULT_RADII, METRIC_NAMES, NORM_METRICS, AttentionStats
from ..tables import tidy

#: Metrics of block outputs alone (attention "-"); high_norm_mass also reads them, but is attention.
TOKEN_METRICS = ("token_cosine", "effective_rank") + NORM_METRICS + ("high_norm_share",)

Progress = Optional[Callable[[int], None]]


@dataclass
class AttentionAnalysis:
    """What one model's attention measured: the tidy rows and how many images fed them."""

    frame: pd.DataFrame
    n_images: int
    layout: TokenLayout
    notes: List[str] = field(default_factory=list)


class AttentionAnalyser:
    """Every attention metric of every layer and head of one model, fed batch by batch.

    ``own`` adds ReViT's softmax(S_l); ``metrics`` selects names of
    ``attnlab.metrics.METRIC_NAMES`` and ``HIGH_NORM_METRICS`` (default: all of METRIC_NAMES).
    The feature-diversity and high-norm ones capture block outputs; ``high_norm_mass`` also
    the first block's input (layer l's attention is measured on the outliers of its input).
    Use it as a context manager: the hooks are in place inside the block only, and the
    model is restored even on error.
    """

    def __init__(self, model: nn.Module, *, label: str, checkpoint: str, arch: str = "",
                 radii: Sequence[float] = DEFAULT_RADII, own: bool = True,
                 metrics: Optional[Sequence[str]] = None, device: DeviceLike = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.label, self.checkpoint, self.arch = label, checkpoint, arch
        chosen = set(METRIC_NAMES if metrics is None else metrics)
        tokens = bool(chosen & set(TOKEN_METRICS)) or "high_norm_mass" in chosen
        self.found = find_attention(model)
        self.layer_index = layer_of(model)
        grid = {f"{f.path}.pattern" for f in self.found if f.adapter.geometry == "grid"}
        # layers whose applied attention is no distribution (CaiT's talking heads): their softmax is measured
        self.mixed = {f"{f.path}.own_pattern" for f in self.found if not f.adapter.distribution}
        skip = {f"{f.path}.pattern" for f in self.found if not f.adapter.distribution}
        self.points = [n for n in hook_point_names(model) if n.endswith(".pattern") and n not in skip
                       or n in self.mixed or (own and n.endswith(".attn.own_pattern"))
                       or (tokens and n.endswith(".resid_post") and len(grid) == len(self.found))]
        # windowed, pooled and class attention: distance and entropy from each layer's geometry
        self.geometric = {i: f for i, f in enumerate(self.found) if f.adapter.geometry != "grid"}
        self.geo_stats = GeometricStats(chosen) if self.geometric else None
        self._feat: Dict[int, tuple] = {}
        self._image: Optional[tuple] = None
        # maps come straight from a softmax inside the capture: no need to re-check their rows
        self.stats: Dict[str, AttentionStats] = {"applied": AttentionStats(radii=radii, check=False, metrics=chosen)}
        if any(n.endswith("own_pattern") and n not in self.mixed for n in self.points):
            self.stats["own"] = AttentionStats(radii=radii, check=False, metrics=chosen - set(TOKEN_METRICS))
        self._block_input = "high_norm_mass" in chosen  # block 0's input: the outliers layer 0 reads
        self.layout: Optional[TokenLayout] = None
        self.n_images = 0
        self._stack: Optional[ExitStack] = None

    def _sink(self, name: str, t: torch.Tensor) -> None:
        layer, kind = self.layer_index[name], name.rsplit(".", 1)[1]
        if layer in self.geometric and kind == "pattern":
            self.geo_stats.update(layer, t, self._geometry(layer, t))
        elif kind == "pattern" or name in self.mixed:
            self.stats["applied"].update(layer, t, self._grid_layout(t))
        elif kind == "own_pattern":
            self.stats["own"].update(layer, t, self.layout)
        else:
            for stats in self.stats.values():  # "own" reads the tokens only for the outliers of high_norm_mass
                if stats is self.stats["applied"] or "high_norm_mass" in stats.metrics:
                    stats.update_tokens(layer, t, self.layout)

    def _grid_layout(self, t: torch.Tensor) -> TokenLayout:
        """The model's layout, or its patch grid alone for maps over patch tokens only (CaiT's patch blocks)."""
        lay = self.layout
        if lay is not None and t.shape[-1] == lay.num_patches and lay.num_prefix_tokens:
            return TokenLayout(num_prefix_tokens=0, grid_size=lay.grid_size, patch_size=lay.patch_size)
        return lay

    def _geometry(self, layer: int, t: torch.Tensor):  # noqa: ANN202
        from ..geometry import class_queries, mvit_attention, stage_of, swin_block

        f = self.geometric[layer]
        stage = stage_of(f.path)
        if f.adapter.geometry == "window":
            return swin_block(f.block_module, self._image, stage)
        if f.adapter.geometry == "pooled":
            return mvit_attention(f.module, self._feat[layer], self._image, t.shape[-2], t.shape[-1], stage)
        lay = self.layout
        return class_queries(t.shape[-1], lay.grid_size, tuple(float(p) for p in lay.patch_size),
                             t.shape[-1] - lay.num_patches, stage)

    def _first_block_input(self, layer: int, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs["x"]
        for stats in self.stats.values():
            stats.update_block_input(layer, x.detach(), self.layout)

    def __enter__(self) -> "AttentionAnalyser":
        self._stack = ExitStack()
        self._stack.enter_context(hooks(self.model, self.points, self._sink))
        for layer, f in self.geometric.items():  # pooled attention: the grid it is called on
            if f.adapter.geometry == "pooled":
                handle = f.module.register_forward_pre_hook(
                    lambda module, args, layer=layer: self._feat.__setitem__(layer, tuple(args[1])))
                self._stack.callback(handle.remove)
        if self._block_input:
            first, block, _ = attention_layers(self.model)[0]
            handle = block.register_forward_pre_hook(
                lambda module, args, kwargs: self._first_block_input(first, args, kwargs), with_kwargs=True)
            self._stack.callback(handle.remove)
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(*exc)

    def update(self, batch) -> None:  # noqa: ANN001
        """Measure one batch: an image tensor ``[B, C, H, W]`` or an ``(images, labels)`` pair."""
        if self._stack is None:
            raise RuntimeError("AttentionAnalyser.update runs inside `with analyser:` (the hooks are set there)")
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x.to(self.device, non_blocking=True)
        self._image = tuple(x.shape[-2:])
        try:
            self.layout = TokenLayout.from_model(self.model, self._image)
        except ValueError:  # no single patch grid (Swin, MViTv2): every layer has its own geometry
            self.layout = None
        with torch.inference_mode():
            try:
                self.model(x)
            except (AssertionError, RuntimeError, ValueError) as e:  # e.g. a Swin built for another input size
                raise AttnlabError(f"{self.label} failed on {x.shape[-2]}x{x.shape[-1]} images "
                                   f"({type(e).__name__}: {one_line(e)[:160]}); it takes {expected_size(self.model)}"
                                   " images: give it a checkpoint whose input spec says so") from e
        self.n_images += x.shape[0]

    def result(self) -> AttentionAnalysis:
        """The tidy rows (``attnlab.tables`` schema) of everything measured so far."""
        if self.n_images == 0:
            raise AttnlabError("no images to analyse")
        frames = [s.to_frame(self.label, self.checkpoint, attention) for attention, s in self.stats.items()]
        if self.geo_stats is not None:
            frames.append(pd.DataFrame(self.geo_stats.rows(self.label, self.checkpoint)))
        frames = [f for f in frames if len(f)]
        frame = tidy(pd.concat(frames, ignore_index=True), arch=self.arch)
        frame.loc[frame["metric"].isin(TOKEN_METRICS), "attention"] = "-"
        notes = []
        if any(hasattr(blk, "broadcast") for blk in getattr(self.model, "blocks", [])):
            notes.append(f"{self.label}: context broadcasting mixes tokens uniformly besides the measured attention "
                         "(CB(x) = (x + mean x) / 2 in every block); the attention metrics see only the softmax part")
        # a model with windowed or pooled layers has no one grid: no layout (and no uniform reference) for it
        layout = None if any(f.adapter.geometry in ("window", "pooled") for f in self.geometric.values()) else self.layout
        return AttentionAnalysis(frame=frame, n_images=self.n_images, layout=layout, notes=notes)


def expected_size(model: nn.Module) -> str:
    """The input size a model says it was built for (its patch embedding, or its timm config)."""
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is None:
        size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (None, "?", "?"))[1:]
    return "x".join(str(v) for v in size)


def analyse_attention(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    label: str,
    checkpoint: str,
    arch: str = "",
    radii: Sequence[float] = DEFAULT_RADII,
    own: bool = True,
    metrics: Optional[Sequence[str]] = None,
    device: DeviceLike = None,
    progress: Progress = None,
) -> AttentionAnalysis:
    """Every attention metric of every layer and head of one model, streamed over ``batches``.

    ``batches`` yields image tensors ``[B, C, H, W]`` (or ``(images, labels)`` pairs);
    ``progress(n)`` is called with the number of images after each batch.
    """
    analyser = AttentionAnalyser(model, label=label, checkpoint=checkpoint, arch=arch, radii=radii, own=own,
                                 metrics=metrics, device=device)
    with analyser:
        for batch in batches:
            analyser.update(batch)
            if progress is not None:
                progress(analyser.n_images)
    return analyser.result()
