"""The attention families attnlab captures: one adapter per attention implementation.

Adding a family is adding one file here with its :class:`~attnlab.adapters.base.Adapter` and
naming it in :data:`ADAPTERS`; this list is the documented list of supported families.
:func:`find_attention` walks a model and returns every attention module an adapter knows,
in forward (registration) order, with its hook-point prefix (its module path).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from torch import nn

from . import beit, cait, eva, hf, mvitv2, relpos, remvitv2, reswin, swin, timm_vit
from .base import Adapter

ADAPTERS: List[Adapter] = [timm_vit.ADAPTER, eva.ADAPTER, beit.ADAPTER, relpos.ADAPTER, cait.TALKING_HEADS,
                           cait.CLASS_ATTENTION, reswin.ADAPTER, swin.ADAPTER, remvitv2.ADAPTER, mvitv2.ADAPTER,
                           hf.ADAPTER]


@dataclass
class FoundAttention:
    """One attention module of a model: ``path`` (``blocks.3.attn``), the ``block`` path whose
    output is ``resid_post`` (``blocks.3``), its module, the block module, and its adapter."""

    path: str
    block: str
    module: nn.Module
    block_module: nn.Module
    adapter: Adapter


def _block_path(path: str) -> str:
    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        if parts[end - 1].isdigit():
            return ".".join(parts[:end])
    return ".".join(parts[:-1])


def find_attention(model: nn.Module) -> List[FoundAttention]:
    """Every attention module an adapter knows, in registration order (which is forward order)."""
    modules = dict(model.named_modules())
    out = []
    for path, module in modules.items():
        adapter = next((a for a in ADAPTERS if a.matches(module)), None)
        if adapter is not None and path:
            block = _block_path(path)
            out.append(FoundAttention(path, block, module, modules.get(block, module), adapter))
    return out


def supported_families() -> List[str]:
    return [a.family for a in ADAPTERS]
