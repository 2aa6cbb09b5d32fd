"""attnlab's model families (ViT, ReViT, ViT+CB, ReViT+CB).

The zoo's names and sizes (``zoo``) are plain data and load without torch or timm; the
modules, and the timm registration in ``factory``, load on first use of their names.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "BroadcastBlock": "broadcast", "ContextBroadcast": "broadcast",
    "ResidualAttention": "residual", "ResidualBlock": "residual", "ResidualVisionTransformer": "residual",
    "ENTRIES": "zoo", "FAMILIES": "zoo", "SIZES": "zoo", "RESOLUTIONS": "zoo", "ModelEntry": "zoo",
    "family_of": "zoo", "list_models": "zoo",
    "checkpoint_filter_fn": "factory", "create_model": "factory", "resolve_model_name": "factory",
    "create_pretrained": "factory",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
