"""Where the queries and keys of one layer's attention map sit in the image.

A single-grid ViT is the case :class:`~attnlab.layout.TokenLayout` describes (prefix tokens,
then one patch grid); windowed and pooled attention need more, and this module says it as
data: a :class:`LayerGeometry` holds, for every window of a map, each query's and each key's
position in pixels (the centre of the image region the token stands for; NaN for a token
without one: a prefix token, or the padding Swin adds when the grid does not divide into
windows). Distances between them give the mean attention distance in pixels on every family.

- **Swin** (:func:`swin_windows`): the block rolls its ``H x W`` token grid by ``-shift``
  and cuts ``w x w`` windows, row by row; a map is ``[B * windows, heads, w*w, w*w]``. The
  position of a window's token is where that token was *before* the roll, so in a shifted
  window tokens from opposite borders are far apart, as they are in the image.
- **MViTv2** (:func:`pooled_grid`): queries and keys live on grids pooled with their own
  strides. Convention: a pooled token stands at the centre of its pooling kernel, which for
  timm's pooling (padding ``k // 2``) is input token ``i * stride``; so token ``i`` of a grid
  pooled by ``s`` from a grid of ``t`` pixels per token is at ``(i * s + 0.5) * t`` pixels.
- **CaiT class attention** (:func:`class_queries`): the one query (the class token) has no
  position; distance metrics are not defined for it and are reported as such, not as zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

Pair = Tuple[int, int]


@dataclass(frozen=True)
class LayerGeometry:
    """Positions ``[windows, tokens, 2]`` (y, x pixels; NaN: no position) of one layer's queries and keys.

    ``windows`` is how many consecutive maps of a batch belong to one image (Swin: windows
    per image; 1 otherwise); ``stage`` the model stage the layer belongs to; ``unit_px`` the
    size of the layer's (query) tokens, so that globality radii and non-locality are in tokens
    of that layer, as they are in patches on a single grid.
    """

    query_pos: torch.Tensor
    key_pos: torch.Tensor
    stage: int = 0
    reach: Optional[torch.Tensor] = None  # [windows, Nq] keys each query can reach (a mask's open ones)
    unit_px: float = 1.0                  # the layer's token size in pixels: the unit of radii and non-locality
    prefix: int = 0                       # leading keys that are prefix tokens (class token), not padding

    @property
    def windows(self) -> int:
        return int(self.query_pos.shape[0])

    def distances(self) -> torch.Tensor:
        """``[windows, Nq, Nk]`` Euclidean distances in pixels; NaN where a query or key has no position."""
        q, k = self.query_pos.double(), self.key_pos.double()
        return (q[:, :, None, :] - k[:, None, :, :]).pow(2).sum(-1).sqrt()

    def key_present(self) -> torch.Tensor:
        """``[windows, Nk]``: keys that are image tokens (not padding)."""
        return ~torch.isnan(self.key_pos).any(-1)

    def distance_terms(self, device: Optional[torch.device] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(distances [windows, Nq, Nk] with 0 where a position is missing, keys with a position
        [windows, Nk], queries with a position [windows, Nq])`` on ``device``: computed once per
        geometry and device (a study measures every batch on the same geometry)."""
        key = str(device)
        cache = self.__dict__.setdefault("_terms", {})  # not a field: equality and hashing ignore it
        if key not in cache:
            terms = (torch.nan_to_num(self.distances()), self.key_present(), ~torch.isnan(self.query_pos).any(-1))
            cache[key] = tuple(t.to(device) for t in terms) if device is not None else terms
        return cache[key]


def grid_positions(grid: Pair, pixels_per_token: Tuple[float, float]) -> torch.Tensor:
    """``[gh * gw, 2]`` centres of a row-major token grid, each token ``pixels_per_token`` in size."""
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([(ys + 0.5) * pixels_per_token[0], (xs + 0.5) * pixels_per_token[1]], -1).reshape(-1, 2)


def swin_windows(grid: Pair, window: Pair, shift: Pair, pixels_per_token: Tuple[float, float],
                 stage: int = 0) -> LayerGeometry:
    """The windows of a Swin block over a ``grid`` of tokens, as timm forms them (roll, pad, partition)."""
    gh, gw = grid
    wh, ww = window
    pos = grid_positions(grid, pixels_per_token).reshape(gh, gw, 2)
    if any(shift):
        pos = torch.roll(pos, shifts=(-shift[0], -shift[1]), dims=(0, 1))     # the block's cyclic shift
    ph, pw = (wh - gh % wh) % wh, (ww - gw % ww) % ww                         # padding to whole windows
    if ph or pw:
        padded = torch.full((gh + ph, gw + pw, 2), math.nan, dtype=pos.dtype)
        padded[:gh, :gw] = pos
        pos = padded
    H, W = pos.shape[:2]
    win = pos.reshape(H // wh, wh, W // ww, ww, 2).permute(0, 2, 1, 3, 4).reshape(-1, wh * ww, 2)
    return LayerGeometry(win, win, stage)


def pooled_grid(grid: Pair, stride: Pair, pixels_per_token: Tuple[float, float]) -> Tuple[Pair, torch.Tensor]:
    """``(pooled grid size, [n, 2] positions)`` of a grid pooled by ``stride`` (kernel-centre convention)."""
    gh, gw = grid
    sh, sw = stride
    oh, ow = -(-gh // sh), -(-gw // sw)  # ceil: timm's pooling pads k // 2
    ys, xs = torch.meshgrid(torch.arange(oh, dtype=torch.float64), torch.arange(ow, dtype=torch.float64),
                            indexing="ij")
    pos = torch.stack([(ys * sh + 0.5) * pixels_per_token[0], (xs * sw + 0.5) * pixels_per_token[1]], -1)
    return (oh, ow), pos.reshape(-1, 2)


def pooled_attention(grid: Pair, q_stride: Pair, kv_stride: Pair, pixels_per_token: Tuple[float, float],
                     num_prefix_tokens: int = 0, stage: int = 0) -> LayerGeometry:
    """MViTv2's pooled attention on a ``grid`` of input tokens: queries and keys pooled by their strides."""
    _, q = pooled_grid(grid, q_stride, pixels_per_token)
    _, k = pooled_grid(grid, kv_stride, pixels_per_token)
    prefix = torch.full((num_prefix_tokens, 2), math.nan, dtype=torch.float64)
    unit = float(pixels_per_token[0] * q_stride[0] + pixels_per_token[1] * q_stride[1]) / 2
    return LayerGeometry(torch.cat([prefix, q])[None], torch.cat([prefix, k])[None], stage, unit_px=unit,
                         prefix=num_prefix_tokens)


def class_queries(num_keys: int, grid: Pair, pixels_per_token: Tuple[float, float],
                  num_prefix_tokens: int = 1, stage: int = 0) -> LayerGeometry:
    """CaiT's class attention: one query without a position, keys = prefix tokens + the patch grid."""
    keys = torch.cat([torch.full((num_prefix_tokens, 2), math.nan, dtype=torch.float64),
                      grid_positions(grid, pixels_per_token)])
    if keys.shape[0] != num_keys:
        raise ValueError(f"{num_keys} keys, but {num_prefix_tokens} prefix + {grid[0]}x{grid[1]} tokens")
    return LayerGeometry(torch.full((1, 1, 2), math.nan, dtype=torch.float64), keys[None], stage,
                         unit_px=float(sum(pixels_per_token)) / 2, prefix=num_prefix_tokens)


def swin_block(block, image: Pair, stage: int = 0) -> LayerGeometry:  # noqa: ANN001
    """The windows of a timm ``SwinTransformerBlock`` for an ``image`` (its grid, window, shift and mask)."""
    grid = tuple(int(v) for v in block.input_resolution)
    g = swin_windows(grid, tuple(block.window_size), tuple(block.shift_size),
                     (image[0] / grid[0], image[1] / grid[1]), stage)
    present = g.key_present()
    open_keys = present[:, None, :].expand(-1, g.query_pos.shape[1], -1)
    mask = getattr(block, "attn_mask", None)
    if mask is not None and mask.shape[0] == g.windows:  # timm adds -100 where tokens come from different regions
        open_keys = open_keys & (mask.to(torch.float64) > -50).to(open_keys.device)
    return LayerGeometry(g.query_pos, g.key_pos, stage, open_keys.sum(-1),
                         unit_px=(image[0] / grid[0] + image[1] / grid[1]) / 2)


def mvit_attention(module, feat: Pair, image: Pair, n_q: int, n_k: int, stage: int = 0) -> LayerGeometry:  # noqa: ANN001
    """A timm ``MultiScaleAttention`` on a ``feat`` grid: query and key strides read off the map's sizes."""
    prefix = 1 if getattr(module, "has_cls_token", False) else 0
    ppt = (image[0] / feat[0], image[1] / feat[1])

    def stride(n: int) -> Pair:
        for s in range(1, max(feat) + 1):
            if -(-feat[0] // s) * -(-feat[1] // s) == n - prefix:
                return (s, s)
        raise ValueError(f"no pooling stride turns a {feat[0]}x{feat[1]} grid into {n - prefix} tokens")

    return pooled_attention(feat, stride(n_q), stride(n_k), ppt, prefix, stage)


def stage_path(path: str) -> Optional[str]:
    """The stage container a module path lies in (``layers.2`` of ``layers.2.blocks.0.attn``), else None.

    A ``layers.i`` / ``stages.i`` counts as a stage only when it holds indexed blocks of its own
    (Swin's ``layers.i.blocks.j``, MViTv2's ``stages.i.blocks.j``): Hugging Face's
    ``encoder.layers.i`` are the blocks of one stage, not stages."""
    parts = path.split(".")
    for k, (name, index) in enumerate(zip(parts, parts[1:])):
        if name in ("layers", "stages") and index.isdigit() and any(p.isdigit() for p in parts[k + 2:]):
            return ".".join(parts[:k + 2])
    return None


def stage_of(path: str) -> int:
    """The stage index in a module path (``layers.2.blocks.0.attn``, ``stages.1...``), else 0 (:func:`stage_path`)."""
    stage = stage_path(path)
    return int(stage.rsplit(".", 1)[1]) if stage is not None else 0


def stage_strides(sizes: Sequence[Pair], image: Pair) -> Sequence[Tuple[float, float]]:
    """Pixels per token of each grid size, for an image of ``image`` pixels."""
    return [(image[0] / g[0], image[1] / g[1]) for g in sizes]
