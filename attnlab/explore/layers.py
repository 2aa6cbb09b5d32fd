"""Each attention layer as the page draws it: its map's shape, where its queries and keys sit, their cells.

The shapes (heads, Swin's windows, MViTv2's pooled query and key counts) are read, not
guessed: one probe runs the model on a blank image of its input size with the attention
hooks on, before any selected image goes through it. Positions come from
``attnlab.geometry``: a ViT's patch grid (prefix tokens have none), ``swin_block`` (a
shifted window's keys at their true, un-rolled image positions, so keys from wrapped
regions sit at the opposite border where they are in the image), ``mvit_attention``
(queries and keys on their own pooled grids) and ``class_queries`` (CaiT's class attention:
one query, the class token, without a position).

**Cells.** On every family a token at position ``c`` (pixels, per axis) stands for the tile

    [c - t/2, c - t/2 + s t)   cut at the image's edge,

``t = 2 c_0`` the pixels per input token (the first token sits at ``c_0 = t/2``) and ``s t``
the spacing of neighbouring tokens (``s`` the pooling stride: 1 on a patch grid and in Swin).
That is a ViT's patch, a Swin token at its stage's resolution, a tile of MViTv2's pooled grid.
The tiles of a layer's queries cover the image once, so a hovered point picks exactly one
query; a key is drawn as its tile. Tokens without a position have an empty cell ``h = w = 0``.

**Uniform reference** per query: uniform attention (equal logits, the mask still applied)
over the ``K_i`` keys query ``i`` can reach (in a shifted Swin window the mask closes the
keys of other image regions; every key otherwise) has entropy ``log K_i`` and mean distance
``mean_j d_ij`` over the reachable keys with a position. (``uniform_in_windows`` averages over
every key of the window instead; the two agree on unshifted windows.)
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..adapters import FoundAttention
from ..errors import AttnlabError, one_line
from ..geometry import LayerGeometry, class_queries, grid_positions, mvit_attention, stage_of, swin_block
from ..layout import TokenLayout

Pair = Tuple[int, int]
Shape = Tuple[int, int, int, int]


@dataclass
class AttentionLayer:
    """One attention layer: ``windows`` maps per image of ``heads x queries x keys``, and where they sit."""

    index: int
    path: str                 # the attention module's path: ``layers.0.blocks.1.attn``
    geometry: str             # grid | window | pooled | class (its adapter's)
    heads: int
    windows: int              # maps per image (Swin: windows; 1 otherwise)
    queries: int              # per window
    keys: int
    where: LayerGeometry      # query / key positions in pixels, per window
    about: str                # one line for the page: "shifted 7x7 windows on 14x14 tokens of 4x4 px"
    note: str = ""
    open_keys: Optional[torch.Tensor] = None  # [W, Nq, Nk] keys the mask leaves open (Swin's shifted windows)

    @property
    def rows(self) -> int:
        """Query rows per image: the windows' queries one after the other (row ``w * queries + i``)."""
        return self.windows * self.queries

    @property
    def prefix_queries(self) -> int:
        return _leading_nan(self.where.query_pos[0])

    @property
    def prefix_keys(self) -> int:
        return _leading_nan(self.where.key_pos[0])

    def query_cells(self, image: Pair) -> np.ndarray:
        """``[rows, 4]`` int16 ``(y0, x0, h, w)`` pixel cell of every query row."""
        return cells(self.where.query_pos, image).reshape(-1, 4)

    def key_cells(self, image: Pair) -> np.ndarray:
        """``[windows, keys, 4]`` int16 cell of each window's keys."""
        return cells(self.where.key_pos, image)

    def uniform(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(mean distance [rows] px, entropy [rows] nats)`` of uniform attention per query (see the module)."""
        d = torch.nan_to_num(self.where.distances())                          # [W, Nq, Nk]
        reached = self.where.key_present()[:, None, :].expand(d.shape)       # keys with a position ...
        if self.open_keys is not None:
            reached = reached & self.open_keys                                # ... that the mask leaves open
        mad = (d * reached).sum(-1) / reached.sum(-1).clamp_min(1)           # mean_j d_ij over them
        mad[torch.isnan(self.where.query_pos).any(-1)] = math.nan
        reach = self.where.reach if self.where.reach is not None else torch.full(mad.shape, self.keys)
        entropy = torch.log(reach.double().clamp_min(1))                      # log K_i
        return mad.reshape(-1).float().numpy(), entropy.reshape(-1).float().numpy()


def _leading_nan(pos: torch.Tensor) -> int:
    missing = torch.isnan(pos).any(-1).tolist()
    return next((i for i, m in enumerate(missing) if not m), len(missing))


def cells(pos: torch.Tensor, image: Pair) -> np.ndarray:
    """``[..., 2]`` positions (y, x px; NaN: none) -> ``[..., 4]`` int16 tiles ``(y0, x0, h, w)`` (module docstring)."""
    p = pos.double().numpy()
    ok = ~np.isnan(p).any(-1)
    out = np.zeros(p.shape[:-1] + (4,), dtype=np.int16)
    if not ok.any():
        return out
    for axis in (0, 1):
        c = p[..., axis]
        coords = np.unique(np.round(c[ok], 6))
        t = 2 * coords[0]                                                    # c_0 = t / 2
        step = coords[1] - coords[0] if len(coords) > 1 else image[axis]     # s t
        start = np.rint(np.nan_to_num(c) - t / 2)
        end = np.rint(np.minimum(np.nan_to_num(c) - t / 2 + step, image[axis]))
        out[..., axis] = start
        out[..., axis + 2] = end - start
    out[~ok] = 0
    return out


def applied_points(found: Sequence[FoundAttention]) -> List[str]:
    """The map shown as a layer's attention: ``pattern``, or the per-head softmax where heads are mixed
    after it (CaiT's talking heads: the applied rows are no distribution; the metrics read the same)."""
    return [f"{f.path}.pattern" if f.adapter.distribution else f"{f.path}.own_pattern" for f in found]


def probe(net: nn.Module, found: Sequence[FoundAttention], points: Sequence[str], size: Pair, channels: int,
          label: str) -> Tuple[Dict[str, Shape], Dict[int, Pair]]:
    """Shapes of ``points`` (batch of one) and the grid each pooled layer runs on, from a blank image."""
    from ..capture import hooks
    from ..devices import model_device
    from ..studies.stream import expected_size

    shapes: Dict[str, Shape] = {}
    feats: Dict[int, Pair] = {}
    was_training = net.training
    x = torch.zeros(1, channels, *size, device=model_device(net))
    with ExitStack() as stack:
        for i, f in enumerate(found):  # pooled attention is called on a grid (its forward's second argument)
            if f.adapter.geometry == "pooled":
                hook = f.module.register_forward_pre_hook(
                    lambda module, args, i=i: feats.__setitem__(i, tuple(args[1])))
                stack.callback(hook.remove)
        stack.enter_context(hooks(net, list(points), lambda name, t: shapes.__setitem__(name, tuple(t.shape))))
        try:
            with torch.no_grad():
                net.eval()(x)
        except (AssertionError, RuntimeError, ValueError) as e:  # e.g. a Swin built for another input size
            raise AttnlabError(f"{label} failed on {size[0]}x{size[1]} images ({type(e).__name__}: "
                               f"{one_line(e)[:160]}); it takes {expected_size(net)} images: give it a checkpoint "
                               "whose input spec says so") from e
        finally:
            net.train(was_training)
    return shapes, feats


def describe_layers(net: nn.Module, found: Sequence[FoundAttention], points: Sequence[str], size: Pair,
                    channels: int, label: str, layout: Optional[TokenLayout]) -> List[AttentionLayer]:
    """Every attention layer of ``net`` (forward order) with its shape, positions and a line about it."""
    shapes, feats = probe(net, found, points, size, channels, label)
    out = []
    for i, (f, point) in enumerate(zip(found, points)):
        if point not in shapes:
            raise AttnlabError(f"{label}: {f.path} did not run on a {size[0]}x{size[1]} image; the explorer shows "
                               "layers that run on every image")
        windows, heads, nq, nk = shapes[point]
        kind = f.adapter.geometry
        where, about = _where(f, kind, (nq, nk), size, feats.get(i), layout, label)
        mask = getattr(f.block_module, "attn_mask", None) if kind == "window" else None
        open_keys = mask.cpu() > -50 if mask is not None and mask.shape[0] == windows else None  # timm adds -100
        if where.windows != windows or where.query_pos.shape[1] != nq or where.key_pos.shape[1] != nk:
            raise AttnlabError(f"{label}: {f.path}'s attention {(windows, heads, nq, nk)} does not fit its geometry "
                               f"({where.windows} windows of {where.query_pos.shape[1]} x {where.key_pos.shape[1]})")
        note = "" if f.adapter.distribution else \
            "heads are mixed after the softmax (talking heads): showing each head's softmax"
        out.append(AttentionLayer(i, f.path, kind, heads, windows, nq, nk, where, about, note, open_keys))
    return out


def _where(f: FoundAttention, kind: str, counts: Pair, size: Pair, feat: Optional[Pair],
           layout: Optional[TokenLayout], label: str) -> Tuple[LayerGeometry, str]:
    nq, nk = counts
    stage = stage_of(f.path)
    if kind == "window":
        block = f.block_module
        g = swin_block(block, size, stage)
        grid, win = tuple(block.input_resolution), tuple(block.window_size)
        shifted = "shifted " if any(block.shift_size) else ""
        return g, (f"{shifted}{win[0]}x{win[1]} windows on {grid[0]}x{grid[1]} tokens of "
                   f"{_px(size[0] / grid[0])}x{_px(size[1] / grid[1])} px")
    if kind == "pooled":
        if feat is None:
            raise AttnlabError(f"{label}: could not tell the grid {f.path} runs on")
        g = mvit_attention(f.module, feat, size, nq, nk, stage)
        return g, f"queries on {_grid(g.query_pos, size)}, keys on {_grid(g.key_pos, size)}"
    if layout is None:
        raise AttnlabError(f"{label}: {f.path} has {kind} attention but the model has no patch grid")
    patch = tuple(float(p) for p in layout.patch_size)
    prefix = nk - layout.num_patches
    if kind == "class":
        if nq != 1 or prefix < 0:
            raise AttnlabError(f"{label}: class attention of {nq} x {nk} does not fit {layout}")
        return class_queries(nk, layout.grid_size, patch, prefix, stage), \
            (f"class attention: the class token queries {prefix} prefix + "
             f"{layout.grid_size[0]}x{layout.grid_size[1]} patches")
    if nq != nk or prefix < 0:
        raise AttnlabError(f"{label}: attention of shape {nq} x {nk} does not fit its layout "
                           f"({layout.num_prefix_tokens} prefix + {layout.num_patches} patch tokens)")
    pos = torch.cat([torch.full((prefix, 2), math.nan, dtype=torch.float64), grid_positions(layout.grid_size, patch)])
    about = f"{layout.grid_size[0]}x{layout.grid_size[1]} patches of {layout.patch_size[0]}x{layout.patch_size[1]} px"
    return LayerGeometry(pos[None], pos[None], stage), about + (f" + {prefix} prefix" if prefix else "")


def _px(v: float) -> str:
    return f"{v:g}"


def _grid(pos: torch.Tensor, size: Pair) -> str:
    """``8x8 tiles of 8x8 px`` for a pooled grid's positions."""
    c = cells(pos, size).reshape(-1, 4)
    c = c[(c[:, 2] > 0) & (c[:, 3] > 0)]
    rows, cols = len(np.unique(c[:, 0])), len(np.unique(c[:, 1]))
    return f"{rows}x{cols} tiles of {int(c[0, 2])}x{int(c[0, 3])} px"
