"""Pixel-exact transforms: images in pixel space ([0, 1], before normalisation).

A shift moves the content by exactly that many pixels and black is black (0), not the
dataset mean, because the transforms act before the model's normalisation:

    shift(x, dx, dy, fill)  content moves dx pixels right and dy down; the uncovered border
                            is black (``fill="black"``), mirrored (``"reflect"``), or the
                            image wraps around (``"roll"``, circular)
    scale(x, s)             s < 1 zooms out (resize by s, pad back with black, centred);
                            s > 1 zooms in (resize by s, centre crop); s = 1 is identity
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import AttnlabError

FILLS = ("black", "reflect", "roll")

# F.pad's name for each fill that pads (roll is a circular shift: torch.roll)
_PAD_MODE = {"black": "constant", "reflect": "reflect"}


def shift(x: torch.Tensor, dx: int, dy: int, fill: str = "black") -> torch.Tensor:
    """Move the content of ``x`` ([..., H, W], pixel space) by (dx, dy) whole pixels."""
    if fill not in FILLS:
        raise AttnlabError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    dx, dy = int(dx), int(dy)
    H, W = x.shape[-2:]
    if abs(dx) >= W or abs(dy) >= H:
        raise AttnlabError(f"shift ({dx}, {dy}) is as large as the {H}x{W} image; use shifts below {min(H, W)}")
    if dx == 0 and dy == 0:
        return x
    if fill == "roll":
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))  # left, right, top, bottom
    flat = x if x.dim() == 4 else x.reshape(-1, 1, H, W)       # F.pad's reflect wants [B, C, H, W]
    padded = F.pad(flat, pad, mode=_PAD_MODE[fill], value=0.0 if fill == "black" else None)
    top, left = pad[3], pad[1]  # keep the window that starts where the content moved from
    return padded[..., top:top + H, left:left + W].reshape(x.shape)


def scale(x: torch.Tensor, s: float) -> torch.Tensor:
    """Zoom ``x`` ([B, C, H, W], pixel space) by ``s``: shrink and pad with black, or enlarge and crop."""
    if not s > 0:
        raise AttnlabError(f"scale factors must be positive, got {s}")
    H, W = x.shape[-2:]
    h, w = max(1, round(H * s)), max(1, round(W * s))
    if (h, w) == (H, W):
        return x
    # antialias only when shrinking: enlarging is plain bilinear interpolation
    resized = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=h < H)
    if h <= H:  # zoom out: pad back, centred
        top, left = (H - h) // 2, (W - w) // 2
        return F.pad(resized, (left, W - w - left, top, H - h - top), value=0.0)
    top, left = (h - H) // 2, (w - W) // 2  # zoom in: centre crop
    return resized[..., top:top + H, left:left + W]
