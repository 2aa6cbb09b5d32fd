"""Attention rollout (Abnar & Zuidema; jacobgil/vit-explain, done right), for the whole batch.

The map is the class token's row of the rollout over the patch keys (the mean of the
class and distillation rows for distilled models, whose eval output averages both
heads), or, for models that pool patch tokens, the mean of the patch rows. For CB models
rollout sees only attention, not the uniform broadcast term.

Rollout multiplies the layers' maps, so it is defined only where every layer attends over
the same tokens: the single-grid families (ViT, DeiT, EVA, BEiT, RelPos, Hugging Face ViTs).
Swin's windows, MViTv2's pooled keys and CaiT's class attention are not such maps:
:func:`no_rollout_reason` says why, and nothing stands in for it.
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


#: How each attention that is not over one grid is named when rollout is left out.
_NOT_ONE_GRID = {"window": "Swin's windows", "pooled": "MViTv2's pooled keys", "class": "CaiT's class attention"}


def no_rollout_reason(model: nn.Module) -> Optional[str]:
    """Why rollout (and chefer, attn-grad) is not defined for ``model``, in words; None where it is
    (every layer over the same tokens) or where no attention is known (capture says so then)."""
    from ...adapters import find_attention

    kinds = sorted({f.adapter.geometry for f in find_attention(model)} - {"grid"})
    if not kinds:
        return None
    names = ", ".join(_NOT_ONE_GRID.get(k, k) for k in kinds)
    return f"its layers attend over different tokens ({names}), so their maps cannot be multiplied layer by layer"


def rollout_queries(model: nn.Module) -> Optional[List[int]]:
    """Token rows whose rollout is the map: class (and distillation) token, or None for the patch mean."""
    if pools_patch_tokens(model):
        return None
    if hasattr(model, "token_layout") and hasattr(model, "config"):  # a wrapped Hugging Face model: its class token
        with_teacher = type(getattr(model, "hf", None)).__name__.endswith("WithTeacher")  # DeiT: class + distillation
        return [0, 1] if with_teacher else [0]
    if getattr(model, "cls_token", None) is None:
        return None
    rows = [0]
    if getattr(model, "dist_token", None) is not None and not getattr(model, "distilled_training", False):
        rows.append(1)
    return rows


def attention_rollout(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, gh, gw]`` attention rollout map of each image (raw rollout mass on each patch)."""
    from ...capture import capture_attention

    reason = no_rollout_reason(model)
    if reason is not None:
        raise AttnlabError(f"no attention rollout for {type(model).__name__}: {reason}")
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
