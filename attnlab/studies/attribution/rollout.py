"""Attention rollout (Abnar & Zuidema; jacobgil/vit-explain, done right), for the whole batch.

The map is the class token's row of the rollout over the patch keys (the mean of the
class and distillation rows for distilled models, whose eval output averages both
heads), or, for models that pool patch tokens, the mean of the patch rows. For CB models
rollout sees only attention, not the uniform broadcast term.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ...errors import AttnlabError
from ...layout import TokenLayout
from .layers import pools_patch_tokens


def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B, N, N]`` rollout ``A'_L ... A'_1`` of per-layer ``[B, heads, N, N]`` attention; rows sum to 1."""
    if not attentions:
        raise AttnlabError("attention rollout needs at least one layer of attention")
    first = attentions[0]
    eye = torch.eye(first.shape[-1], dtype=torch.float64, device=first.device)
    result = eye.expand(first.shape[0], -1, -1)
    for a in attentions:
        a = (a.to(torch.float64).mean(dim=1) + eye) / 2   # A' = (mean_heads A + I) / 2 ...
        a = a / a.sum(dim=-1, keepdim=True)               # ... rows normalised to sum 1
        result = a @ result                               # R = A'_l R: the first layer applied first
    return result.to(first.dtype)


def rollout_queries(model: nn.Module) -> Optional[List[int]]:
    """Token rows whose rollout is the map: class (and distillation) token, or None for the patch mean."""
    if pools_patch_tokens(model) or getattr(model, "cls_token", None) is None:
        return None
    rows = [0]
    if getattr(model, "dist_token", None) is not None and not getattr(model, "distilled_training", False):
        rows.append(1)
    return rows


def attention_rollout(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, gh, gw]`` attention rollout map of each image (raw rollout mass on each patch)."""
    from ...capture import capture_attention

    layout = TokenLayout.from_model(model, tuple(x.shape[-2:]))
    return query_map(rollout(capture_attention(model, x)), model, layout)


def query_map(r: torch.Tensor, model: nn.Module, layout: TokenLayout) -> torch.Tensor:
    """``[B, gh, gw]``: the rows of ``[B, N, N]`` relevance ``r`` the head reads (``rollout_queries``),
    averaged, over the patch keys."""
    p = layout.num_prefix_tokens
    rows = rollout_queries(model)
    m = r[:, p:, p:].mean(dim=1) if rows is None else r[:, rows, p:].mean(dim=1)
    return m.reshape(r.shape[0], *layout.grid_size)


def upsample_maps(maps: torch.Tensor, size: Tuple[int, int]) -> np.ndarray:
    """``[B, gh, gw]`` -> ``[B, H, W]`` float32 in [0, 1] per image (bilinear, like pytorch-grad-cam)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    up = torch.nn.functional.interpolate(maps[:, None].double(), size=tuple(size), mode="bilinear",
                                         align_corners=False)[:, 0]
    return scale_cam_image(up.cpu().numpy())
