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

from ..capture import attention_layers, hook_point_names, hooks
from ..devices import DeviceLike, resolve_device
from ..errors import AttnlabError, one_line
from ..layout import TokenLayout
from ..metrics import DEFAULT_RADII, METRIC_NAMES, NORM_METRICS, AttentionStats
from ..tables import tidy
from .routing import GEOMETRIC, GRID, OWN, LayerRouter, RoutedStats
from .sharding import World, merge_stats

#: Metrics of block outputs alone (attention "-"); high_norm_mass also reads them, but is attention.
TOKEN_METRICS = ("token_cosine", "effective_rank") + NORM_METRICS + ("high_norm_share",)

Progress = Optional[Callable[[int], None]]


class _Measured(Exception):
    """Raised by the sink once the last hook point of a forward pass is measured: the rest of the
    pass (the last block's remaining work, the final norm and the head) would feed nothing."""


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
    model is restored even on error. Passes after the first stop once their last hook point is
    measured (what follows it, the head included, feeds nothing here), so ``update`` returns no logits.
    """

    def __init__(self, model: nn.Module, *, label: str, checkpoint: str, arch: str = "",
                 radii: Sequence[float] = DEFAULT_RADII, own: bool = True,
                 metrics: Optional[Sequence[str]] = None, device: DeviceLike = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.label, self.checkpoint, self.arch = label, checkpoint, arch
        chosen = set(METRIC_NAMES if metrics is None else metrics)
        tokens = bool(chosen & set(TOKEN_METRICS)) or "high_norm_mass" in chosen
        self.router = LayerRouter(model)
        names = hook_point_names(model)
        own_points = [n for n in names if own and n.endswith(".attn.own_pattern") and n not in self.router.mixed
                      and self.router.layer_index[n] not in self.router.geometric]  # own maps: grid layers only
        token_points = [n for n in names if tokens and n.endswith(".resid_post") and self.router.single_grid]
        self.points = self.router.attention_points() + own_points + token_points
        # grid layers to AttentionStats on the model's layout; windowed, pooled and class attention on their geometry
        self.applied = RoutedStats(self.router, chosen, radii)
        self.stats: Dict[str, AttentionStats] = {"applied": self.applied.grid}
        if any(self.router.route(n)[1] == OWN for n in self.points):
            self.stats["own"] = AttentionStats(radii=radii, check=False, metrics=chosen - set(TOKEN_METRICS))
        self._block_input = "high_norm_mass" in chosen  # block 0's input: the outliers layer 0 reads
        self.n_images = 0
        self._stack: Optional[ExitStack] = None
        # Early stop: the first batch runs the whole pass and records the order the points fire in;
        # when each fired exactly once, later passes stop after the last of them.
        self._fired: Optional[List[str]] = []
        self._last_point: Optional[str] = None

    @property
    def layout(self) -> Optional[TokenLayout]:
        """The model's token layout at the last batch's size (None: no one patch grid)."""
        return self.router.layout

    def _sink(self, name: str, t: torch.Tensor) -> None:
        self._measure(name, t)
        if self._fired is not None:
            self._fired.append(name)
        elif name == self._last_point:
            raise _Measured

    def _measure(self, name: str, t: torch.Tensor) -> None:
        layer, role = self.router.route(name)
        if role in (GRID, GEOMETRIC):
            self.applied.update(name, t)
        elif role == OWN:
            self.stats["own"].update(layer, t, self.layout)
        else:
            for stats in self.stats.values():  # "own" reads the tokens only for the outliers of high_norm_mass
                if stats is self.stats["applied"] or "high_norm_mass" in stats.metrics:
                    stats.update_tokens(layer, t, self.layout)

    def _first_block_input(self, layer: int, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs["x"]
        for stats in self.stats.values():
            stats.update_block_input(layer, x.detach(), self.layout)

    def __enter__(self) -> "AttentionAnalyser":
        self._stack = ExitStack()
        # transient: every map is measured before the sink returns, and none is kept
        self._stack.enter_context(hooks(self.model, self.points, self._sink, transient=True))
        self.router.watch(self._stack)
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
        self.router.start(tuple(x.shape[-2:]))
        with torch.inference_mode():
            try:
                checked_forward(self.model, x, self.label)
            except _Measured:
                pass
        if self._fired is not None:  # the first pass: stop later ones after its last point, if it is unambiguous
            if self._fired and len(set(self._fired)) == len(self._fired) == len(self.points):
                self._last_point = self._fired[-1]
            self._fired = None
        self.n_images += x.shape[0]

    def merge(self, world: "World") -> None:
        """Combine every rank's statistics (``attnlab.studies.sharding``): afterwards :meth:`result`
        covers the images of all ranks, on every rank. Every rank calls it, with or without images."""
        if not world.sharded:
            return
        self.applied.merge(world)
        for attention, stats in self.stats.items():
            if attention != "applied":  # applied's grid accumulator is merged with its router above
                merge_stats(world, stats)
        self.n_images = world.total(self.n_images)
        image = next((im for im in world.gather(self.router.image) if im is not None), None)
        if self.router.image is None and image is not None:  # this rank saw no image: the others' layout
            self.router.start(image)

    def result(self) -> AttentionAnalysis:
        """The tidy rows (``attnlab.tables`` schema) of everything measured so far."""
        if self.n_images == 0:
            raise AttnlabError("no images to analyse")
        frames = [self.applied.to_frame(self.label, self.checkpoint)]
        frames += [self.router.with_stage(s.to_frame(self.label, self.checkpoint, attention))
                   for attention, s in self.stats.items() if attention != "applied"]
        frames = [f for f in frames if len(f)]
        frame = tidy(pd.concat(frames, ignore_index=True), arch=self.arch)
        frame.loc[frame["metric"].isin(TOKEN_METRICS), "attention"] = "-"
        notes = []
        if any(hasattr(blk, "broadcast") for blk in getattr(self.model, "blocks", [])):
            notes.append(f"{self.label}: context broadcasting mixes tokens uniformly besides the measured attention "
                         "(CB(x) = (x + mean x) / 2 in every block); the attention metrics see only the softmax part")
        # a model with windowed or pooled layers has no one grid: no layout (and no uniform reference) for it
        layout = None if any(f.adapter.geometry in ("window", "pooled") for f in self.router.geometric.values()) \
            else self.layout
        return AttentionAnalysis(frame=frame, n_images=self.n_images, layout=layout, notes=notes)


def checked_forward(model: nn.Module, x: torch.Tensor, label: str) -> torch.Tensor:
    """``model(x)``; a model built for another input size (a Swin's fixed windows) says so in one line."""
    try:
        return model(x)
    except (AssertionError, RuntimeError, ValueError) as e:
        raise AttnlabError(f"{label} failed on {x.shape[-2]}x{x.shape[-1]} images "
                           f"({type(e).__name__}: {one_line(e)[:160]}); it takes {expected_size(model)}"
                           " images: give it a checkpoint whose input spec says so") from e


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
