"""Which accumulator each captured attention map goes to, and on what geometry.

A model's attention layers come in two kinds. **Grid** layers attend over prefix tokens and
one patch grid (ViT, EVA, BEiT, RelPos, Hugging Face ViTs, CaiT's patch blocks): they go to
:class:`~attnlab.metrics.AttentionStats` with the model's :class:`~attnlab.layout.TokenLayout`.
**Windowed** (Swin), **pooled** (MViTv2) and **class-attention** (CaiT) layers go to
:class:`~attnlab.metrics.geometric.GeometricStats` with the layer's
:class:`~attnlab.geometry.LayerGeometry` (where each query and key sits in the image).

A :class:`LayerRouter` reads this off the model's adapters once; each study keeps its own
accumulators and asks the router where a map goes (``route``), on what layout or geometry
(``grid_layout`` / ``geometry``, cached per layer and input size), and which stage a layer
is in (``stages``). :class:`RoutedStats` is the pair of accumulators a study feeds through it.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..adapters import FoundAttention, find_attention
from ..capture import hook_point_names, layer_of
from ..geometry import LayerGeometry, class_queries, mvit_attention, stage_of, swin_block
from ..layout import TokenLayout
from ..metrics import DEFAULT_RADII, AttentionStats
from ..metrics.geometric import GeometricStats

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .sharding import World

Pair = Tuple[int, int]

#: Roles of a hook point: measured on its geometry, on the model's grid, ReViT's own softmax, block output tokens.
GEOMETRIC, GRID, OWN, TOKENS = "geometric", "grid", "own", "tokens"


class LayerRouter:
    """Where each attention layer of one model is measured, and on what.

    ``stages`` maps each layer to its stage (``attnlab.geometry.stage_of`` of its path: 0 for
    single-stage models); ``geometric`` holds the layers measured on their own geometry.
    Call :meth:`watch` inside the capture (pooled attention tells its grid through a
    pre-hook) and :meth:`start` with each batch's image size.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layer_index = layer_of(model)  # raises, in one line, for a model without capturable attention
        self.found: List[FoundAttention] = find_attention(model)
        self.stages: Dict[int, int] = {i: stage_of(f.path) for i, f in enumerate(self.found)}
        self.geometric: Dict[int, FoundAttention] = {i: f for i, f in enumerate(self.found)
                                                     if f.adapter.geometry != "grid"}
        # layers whose applied attention is no distribution (CaiT's talking heads): their per-head softmax is measured
        self.mixed = {f"{f.path}.own_pattern" for f in self.found if not f.adapter.distribution}
        self._not_measured = {f"{f.path}.pattern" for f in self.found if not f.adapter.distribution}
        self.layout: Optional[TokenLayout] = None
        self.image: Optional[Pair] = None
        self._feat: Dict[int, Pair] = {}
        self._geometries: Dict[tuple, LayerGeometry] = {}

    @property
    def single_grid(self) -> bool:
        """Every layer attends over the same prefix + patch-grid tokens (no windowed, pooled or class attention)."""
        return not self.geometric

    def attention_points(self) -> List[str]:
        """The map each layer is measured on, in forward order: the attention it applies, or its
        per-head softmax where heads are mixed after it (``own_pattern`` of CaiT's talking heads)."""
        return [n for n in hook_point_names(self.model)
                if (n.endswith(".pattern") and n not in self._not_measured) or n in self.mixed]

    def route(self, name: str) -> Tuple[int, str]:
        """``(layer, role)`` of a hook point; role :data:`GEOMETRIC`, :data:`GRID`, :data:`OWN` or :data:`TOKENS`."""
        layer, kind = self.layer_index[name], name.rsplit(".", 1)[1]
        if kind == "pattern" or name in self.mixed:
            return layer, GEOMETRIC if layer in self.geometric else GRID
        return layer, OWN if kind == "own_pattern" else TOKENS

    def watch(self, stack: ExitStack) -> None:
        """Until ``stack`` closes, pooled attention layers report the token grid they are called on."""
        for layer, f in self.geometric.items():
            if f.adapter.geometry == "pooled":
                handle = f.module.register_forward_pre_hook(
                    lambda module, args, layer=layer: self._feat.__setitem__(layer, tuple(int(v) for v in args[1])))
                stack.callback(handle.remove)

    def start(self, image: Pair) -> Optional[TokenLayout]:
        """A batch of ``image``-sized inputs is next: the model's token layout at that size (None: no one grid)."""
        image = tuple(int(v) for v in image)
        if image != self.image or self.layout is None:
            self.image = image
            try:
                self.layout = TokenLayout.from_model(self.model, image)
            except ValueError:  # no single patch grid (MViTv2): every layer has its own geometry
                self.layout = None
        return self.layout

    def grid_layout(self, t: torch.Tensor) -> TokenLayout:
        """The model's layout, or its patch grid alone for maps over patch tokens only (CaiT's patch blocks)."""
        lay = self.layout
        if lay is not None and t.shape[-1] == lay.num_patches and lay.num_prefix_tokens:
            return TokenLayout(num_prefix_tokens=0, grid_size=lay.grid_size, patch_size=lay.patch_size)
        return lay

    def geometry(self, layer: int, t: torch.Tensor) -> LayerGeometry:
        """The query and key positions of ``layer``'s map ``t`` at the current image size (computed once)."""
        f = self.geometric[layer]
        feat = self._feat.get(layer) if f.adapter.geometry == "pooled" else None
        key = (layer, self.image, tuple(t.shape[-2:]), feat)
        g = self._geometries.get(key)
        if g is None:
            g = self._geometries[key] = self._make_geometry(f, layer, t, feat)
        return g

    def _make_geometry(self, f: FoundAttention, layer: int, t: torch.Tensor, feat: Optional[Pair]) -> LayerGeometry:
        stage = self.stages[layer]
        if f.adapter.geometry == "window":
            return swin_block(f.block_module, self.image, stage)
        if f.adapter.geometry == "pooled":
            return mvit_attention(f.module, feat, self.image, t.shape[-2], t.shape[-1], stage)
        lay = self.layout
        return class_queries(t.shape[-1], lay.grid_size, tuple(float(p) for p in lay.patch_size),
                             t.shape[-1] - lay.num_patches, stage)

    def maps_per_image(self, layer: int, t: torch.Tensor) -> int:
        """How many consecutive maps of a batch belong to one image (Swin: its windows; else 1)."""
        return self.geometry(layer, t).windows if layer in self.geometric else 1

    def with_stage(self, frame: "pd.DataFrame") -> "pd.DataFrame":
        """``frame`` with its ``stage`` column: each row's layer's stage (0 for rows of no layer)."""
        frame = frame.copy()
        frame["stage"] = frame["layer"].map(self.stages).fillna(0).astype("int64")
        return frame


class RoutedStats:
    """Attention metrics of every layer of one model: ``grid`` (``AttentionStats``) for grid layers,
    ``geometric`` (``GeometricStats``, None when there are none) for the rest, fed map by map."""

    def __init__(self, router: LayerRouter, metrics: Sequence[str], radii: Sequence[float] = DEFAULT_RADII) -> None:
        self.router = router
        # maps come straight from a softmax inside the capture: no need to re-check their rows
        self.grid = AttentionStats(radii=radii, check=False, metrics=metrics)
        self.geometric = GeometricStats(set(metrics), radii) if router.geometric else None

    def update(self, name: str, t: torch.Tensor, images: Optional[torch.Tensor] = None) -> None:
        """Measure the map of hook point ``name``; ``images`` (a boolean ``[B]`` mask) keeps some images only."""
        layer, role = self.router.route(name)
        # the rows kept, as indices found on the host: a boolean mask on the device would wait for it
        keep = None if images is None else images.cpu().nonzero().flatten()
        if role == GEOMETRIC:
            g = self.router.geometry(layer, t)
            if keep is not None:  # each image owns `windows` consecutive maps
                keep = (keep[:, None] * g.windows + torch.arange(g.windows)).flatten()
                t = t.index_select(0, keep.to(t.device))
            self.geometric.update(layer, t, g)
        elif role == GRID:
            if keep is not None:
                t = t.index_select(0, keep.to(t.device))
            self.grid.update(layer, t, self.router.grid_layout(t))
        else:
            raise ValueError(f"{name} is not an attention map RoutedStats measures")

    def merge(self, world: "World") -> None:
        """Combine both accumulators over every rank of ``world`` (``attnlab.studies.sharding``)."""
        from .sharding import merge_stats

        merge_stats(world, self.grid)
        merge_stats(world, self.geometric)

    def to_frame(self, model: str, checkpoint: str, attention: str = "applied") -> "pd.DataFrame":
        """The rows of both accumulators (``attnlab.metrics.ROW_COLUMNS`` and ``stage``)."""
        import pandas as pd

        frames = [self.grid.to_frame(model, checkpoint, attention)]
        if self.geometric is not None:
            frames.append(pd.DataFrame(self.geometric.rows(model, checkpoint, attention), columns=frames[0].columns))
        frames = [f for f in frames if len(f)] or frames[:1]
        return self.router.with_stage(pd.concat(frames, ignore_index=True))
