"""A plain-data description of a loaded model: what ``attnlab info`` prints."""
from __future__ import annotations

import os
from typing import Any, Dict

from torch import nn

from .checkpoint import file_sha256
from .spec import ModelSpec


def describe(model: nn.Module, spec: ModelSpec) -> Dict[str, Any]:
    """Architecture, size, token layout, input, classes and provenance of a model."""
    pe = getattr(model, "patch_embed", None)
    blocks = getattr(model, "blocks", [])
    attn = getattr(blocks[0], "attn", None) if len(blocks) else None
    alpha = getattr(model, "alpha", None)
    out: Dict[str, Any] = {
        "source": spec.source,
        "kind": spec.kind,
        "sha256": file_sha256(spec.source) if os.path.isfile(spec.source) else None,
        "arch": spec.arch,
        "family": spec.family,
        "options": spec.options,
        "num_params": sum(p.numel() for p in model.parameters()),
        "embed_dim": getattr(model, "embed_dim", None),
        "depth": len(blocks),
        "num_heads": getattr(attn, "num_heads", None),
        "patch_size": list(pe.patch_size) if pe is not None else None,
        "grid": list(pe.grid_size) if pe is not None else None,
        "num_prefix_tokens": getattr(model, "num_prefix_tokens", 0),
        "input": spec.input.to_dict(),
        "classes": spec.classes,
        "provenance": spec.provenance,
        "alpha": None,
    }
    if alpha is not None:
        values = [round(float(a), 4) for a in alpha.detach().flatten()]
        out["alpha"] = values[0] if len(values) == 1 else values
        learnable = isinstance(alpha, nn.Parameter)
        out["alpha_mode"] = ("learnable" if learnable else "fixed") + (", per layer" if len(values) > 1 else ", shared")
    return out
