"""Token layout of a ViT: prefix tokens, then a grid of patch tokens.

Attention maps are ``[B, heads, N, N]`` with ``N = P + G``: ``P`` prefix tokens (class,
distillation, register tokens) followed by ``G = gh * gw`` patch tokens in row-major
order, each patch ``ph x pw`` pixels. Metrics need nothing else, so they take a
``TokenLayout`` and never a model; ``TokenLayout.from_model`` reads it off a timm ViT
for a given input size (any image size, not just 14x14).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

Pair = Tuple[int, int]


def _pair(v: Union[int, Tuple[int, int]]) -> Pair:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class TokenLayout:
    """Where each token of an attention map sits."""

    num_prefix_tokens: int
    grid_size: Pair      # (gh, gw) patches
    patch_size: Pair     # (ph, pw) pixels

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid_size", _pair(self.grid_size))
        object.__setattr__(self, "patch_size", _pair(self.patch_size))
        if self.num_prefix_tokens < 0 or min(self.grid_size) < 1 or min(self.patch_size) < 1:
            raise ValueError(f"invalid token layout {self}")

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    def patch_coords(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """``[G, 2]`` (row, col) grid coordinates of the patch tokens, row-major."""
        gh, gw = self.grid_size
        rows, cols = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
        return torch.stack([rows.flatten(), cols.flatten()], dim=1).to(torch.float64)

    def patch_distances(self, device: Optional[torch.device] = None, pixels: bool = False) -> torch.Tensor:
        """``[G, G]`` Euclidean distances between patch centres, in patch units (or pixels).

        With non-square patches, pixel distances scale rows by ``ph`` and columns by ``pw``.
        """
        coords = self.patch_coords(device)
        if pixels:
            coords = coords * torch.tensor(self.patch_size, dtype=coords.dtype, device=coords.device)
        return torch.cdist(coords, coords)

    @classmethod
    def from_model(cls, model: torch.nn.Module, img_size: Optional[Union[int, Pair]] = None) -> "TokenLayout":
        """Read the layout off a timm ViT-style model (``patch_embed``, ``num_prefix_tokens``), or ask a
        model that says it itself (``model.token_layout(img_size)``, as wrapped Hugging Face models do)."""
        if hasattr(model, "token_layout"):
            return model.token_layout(img_size)
        pe = getattr(model, "patch_embed", None)
        if pe is None or not hasattr(pe, "patch_size"):
            raise ValueError(f"{type(model).__name__} has no patch embedding; cannot tell its token layout")
        patch = _pair(pe.patch_size)
        if img_size is None:
            grid = _pair(pe.grid_size)
        elif hasattr(pe, "dynamic_feat_size"):
            grid = _pair(pe.dynamic_feat_size(_pair(img_size)))
        else:
            h, w = _pair(img_size)
            grid = (h // patch[0], w // patch[1])
        return cls(num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 0)), grid_size=grid, patch_size=patch)
