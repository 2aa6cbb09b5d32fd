"""Hugging Face ``transformers`` vision transformers: ViT, DeiT, DINOv2 (with registers) and the CLIP
vision tower. Whatever attention implementation the model was loaded with, what it computes is
seen: the SDPA path through the explicit stand-in, the eager path through its softmax call."""
from __future__ import annotations

import importlib
from typing import Tuple

from .base import Adapter

_CLASSES = {
    # transformers 5 has one attention class per model; 4.x split self-attention (eager / SDPA) from it
    "transformers.models.vit.modeling_vit": ("ViTAttention", "ViTSelfAttention", "ViTSdpaSelfAttention"),
    "transformers.models.deit.modeling_deit": ("DeiTAttention", "DeiTSelfAttention", "DeiTSdpaSelfAttention"),
    "transformers.models.dinov2.modeling_dinov2": ("Dinov2Attention", "Dinov2SelfAttention", "Dinov2SdpaSelfAttention"),
    "transformers.models.dinov2_with_registers.modeling_dinov2_with_registers": (
        "Dinov2WithRegistersAttention", "Dinov2WithRegistersSelfAttention", "Dinov2WithRegistersSdpaSelfAttention"),
    "transformers.models.clip.modeling_clip": ("CLIPAttention", "CLIPSdpaAttention"),
}


def _classes() -> Tuple[type, ...]:
    import sys

    out = []
    for module_name, names in _CLASSES.items():
        if module_name not in sys.modules:  # a model of that kind exists only if its module was imported
            continue
        module = importlib.import_module(module_name)
        out += [getattr(module, n) for n in names if hasattr(module, n)]
    return tuple(out)


ADAPTER = Adapter(family="Hugging Face ViT, DeiT, DINOv2 (registers), CLIP vision", classes=_classes,
                  way="sdpa+softmax")
