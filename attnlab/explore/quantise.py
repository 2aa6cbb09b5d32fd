"""Attention rows as uint8 with a per-row scale: what the page stores and draws without decoding.

For a query row ``A_i`` over ``N = P + G`` keys (``P`` prefix keys, without a position;
``G`` keys with one: patches, a Swin window's tokens, MViTv2's pooled key grid):

    s_i  = max_{k >= P} A_ik / 255                       (float32, one per row)
    q_ij = round(A_ij / s_i)   for keys j >= P           (uint8; 0 where s_i = 0)
    A_ij                       for prefix keys j < P     (float32, kept as is)

so ``q_ij * s_i`` is within ``s_i / 2`` of ``A_ij`` (half a step), and ``q`` is directly
the overlay's intensity: the row's brightest key in the image is 255. The scale is taken
over those keys only: a class token that draws most of the mass would otherwise squash
every patch to 0. Maps (rollout, GradCAM) are stored the same way, scaled to their maximum.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch


def quantise_rows(attn: torch.Tensor, num_prefix: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[..., N]`` rows -> ``(q [..., N - P] uint8, scale [...] float32, prefix keys [..., P] float32)``."""
    patch = attn[..., num_prefix:].to(torch.float32)
    top = patch.amax(dim=-1, keepdim=True)                      # max_k A_ik over patch keys
    scaled = torch.where(top > 0, patch * (255.0 / top.clamp_min(torch.finfo(torch.float32).tiny)),
                         torch.zeros_like(patch))               # A_ij / s_i = 255 A_ij / max_k A_ik
    q = scaled.round_().clamp_(0, 255).to(torch.uint8)
    scale = (top[..., 0] / 255.0).to(torch.float32)             # s_i
    prefix = attn[..., :num_prefix].to(torch.float32)
    return q.cpu().numpy(), scale.cpu().numpy(), prefix.cpu().numpy()


def dequantise_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``q_ij * s_i``: the keys with a position back as float32 (within half a step)."""
    return q.astype(np.float32) * scale[..., None]


def quantise_map(maps: np.ndarray) -> np.ndarray:
    """Non-negative maps ``[n, ...]`` -> uint8, each map scaled so its maximum is 255 (all-zero stays 0)."""
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    top = flat.max(axis=1, keepdims=True)
    scaled = np.divide(flat * 255.0, top, out=np.zeros_like(flat), where=top > 0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8).reshape(np.shape(maps))
