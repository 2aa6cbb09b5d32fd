"""A plain-data description of a model: what ``attnlab info`` prints.

An attnlab checkpoint's header names the architecture and its options, and the shapes
of its weights show the rest (width, depth, patch, prefix tokens, parameter count), so
it is described without importing timm or building the model. Other sources (plain
state dicts, official ReViT checkpoints, published weights) are loaded and described.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from .checkpoint import Checkpoint, file_sha256, load_model, read_checkpoint
from .models.zoo import ENTRIES, FAMILIES
from .paths import PathLike
from .spec import ModelSpec

# Options whose effect the weights' shapes show, or that change no shape at all; a
# checkpoint with any other option is described from its built model.
_SHAPE_OPTIONS = frozenset({
    "in_chans", "num_classes", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
    "class_token", "reg_tokens", "global_pool", "pos_embed", "qkv_bias",
    "alpha", "learn_alpha", "alpha_per_layer", "cb_placement", "cb_learnable_scale",
    "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
})
_BLOCK = re.compile(r"blocks\.(\d+)\.")


def summarize(
    source: PathLike,
    *,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Describe any ``--ckpt`` source: an attnlab checkpoint from its file alone, others loaded."""
    if not (pretrained or model or official_config) and os.path.isfile(source):
        ckpt = read_checkpoint(source)
        summary = describe_checkpoint(ckpt) if ckpt.kind == "attnlab" else None
        if summary is not None:
            return summary
    net, spec = load_model(source, model=model, pretrained=pretrained, official_config=official_config)
    return describe(net, spec)


def describe(model: nn.Module, spec: ModelSpec) -> Dict[str, Any]:
    """Architecture, size, token layout, input, classes and provenance of a built model (any family
    capture supports: depth is its number of attention layers, the layout is read where it is one grid)."""
    from .capture import attention_layers
    from .layout import TokenLayout

    try:
        layers = attention_layers(model)
    except Exception:  # a model capture does not support still gets its size and spec described
        layers = []
    try:
        layout = TokenLayout.from_model(model, tuple(spec.input.size))
    except Exception:
        layout = None
    attn = layers[0][2] if layers else None
    heads = getattr(attn, "num_heads", None) or getattr(attn, "num_attention_heads", None) \
        or getattr(getattr(model, "config", None), "num_attention_heads", None)
    width = getattr(model, "embed_dim", None) or getattr(getattr(model, "config", None), "hidden_size", None)
    alpha = getattr(model, "alpha", None)
    values = [float(a) for a in alpha.detach().flatten()] if alpha is not None else None
    return _summary(
        spec,
        num_params=sum(p.numel() for p in model.parameters()),
        embed_dim=width,
        depth=len(layers),
        num_heads=heads,
        patch_size=list(layout.patch_size) if layout is not None else None,
        grid=list(layout.grid_size) if layout is not None else None,
        num_prefix_tokens=layout.num_prefix_tokens if layout is not None else getattr(model, "num_prefix_tokens", 0),
        alpha=values,
        learnable=isinstance(alpha, nn.Parameter),
        **(model.stage_summary() if hasattr(model, "stage_summary") else {}),  # multiscale ReViT: per stage
    )


def describe_checkpoint(ckpt: Checkpoint) -> Optional[Dict[str, Any]]:
    """:func:`describe` of an attnlab checkpoint's model without building it, or None.

    None when the header names a model outside attnlab's zoo, an option whose effect no
    shape shows, or weights that disagree with the header (building then says what).
    """
    spec, sd = ckpt.spec, ckpt.state_dict
    entry = ENTRIES.get(spec.arch.split(".")[0]) if spec is not None else None
    if spec is None or entry is None or not set(spec.options) <= _SHAPE_OPTIONS:
        return None
    cfg = {**entry.config, "in_chans": 3, "num_classes": entry.num_classes, "class_token": True,
           "reg_tokens": 0, **spec.options}
    proj, head = sd.get("patch_embed.proj.weight"), sd.get("head.weight")
    blocks = {int(m.group(1)) for k in sd if (m := _BLOCK.match(k))}
    if proj is None or proj.ndim != 4 or not blocks:
        return None
    embed_dim, in_chans, patch = int(proj.shape[0]), int(proj.shape[1]), [int(s) for s in proj.shape[2:]]
    depth = max(blocks) + 1
    grid = [size // p for size, p in zip(_pair(cfg["img_size"]), patch)]  # timm: img_size // patch_size
    regs = int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0
    prefix = int("cls_token" in sd) + regs
    pos = sd.get("pos_embed")
    fits = (embed_dim == cfg["embed_dim"] and depth == cfg["depth"] == len(blocks) and in_chans == cfg["in_chans"]
            and patch == _pair(cfg["patch_size"]) and ("cls_token" in sd) == bool(cfg["class_token"])
            and regs == int(cfg["reg_tokens"])
            and (head is None or int(head.shape[0]) == int(cfg["num_classes"]))
            and (pos is None or int(pos.shape[1]) == grid[0] * grid[1] + prefix))
    alpha, learnable = _checkpoint_alpha(sd, cfg, FAMILIES[entry.family].residual, depth)
    if not fits or (alpha is not None and learnable != bool(cfg.get("learn_alpha", True))):
        return None
    return _summary(
        spec, num_params=sum(t.numel() for t in sd.values()),  # a ViT's state dict is its parameters
        embed_dim=embed_dim, depth=depth, num_heads=int(cfg["num_heads"]), patch_size=patch, grid=grid,
        num_prefix_tokens=prefix, alpha=alpha, learnable=learnable,
    )


def _pair(value: Any) -> List[int]:
    return [int(value), int(value)] if isinstance(value, (int, float)) else [int(v) for v in value]


def _checkpoint_alpha(sd: Dict[str, Any], cfg: Dict[str, Any], residual: bool,
                      depth: int) -> Tuple[Optional[List[float]], bool]:
    """ReViT's ``a``: saved when learnable, else the fixed value its options give (not saved)."""
    if "alpha" in sd:
        return [float(a) for a in sd["alpha"].flatten()], True
    if not residual:
        return None, False
    count = depth - 1 if cfg.get("alpha_per_layer") else 1  # per-layer a: blocks 2..L
    return [float(cfg.get("alpha", 0.5))] * count, False


def _summary(spec: ModelSpec, *, alpha: Optional[List[float]], learnable: bool, **shape: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "source": spec.source,
        "kind": spec.kind,
        "sha256": file_sha256(spec.source) if os.path.isfile(spec.source) else None,
        "arch": spec.arch,
        "family": spec.family,
        "options": spec.options,
        **shape,
        "input": spec.input.to_dict(),
        "classes": spec.classes,
        "provenance": plain_provenance(spec.provenance),
        "alpha": None,
    }
    if alpha is not None:
        values = [round(a, 4) for a in alpha]
        out["alpha"] = values[0] if len(values) == 1 else values
        out["alpha_mode"] = ("learnable" if learnable else "fixed") + (", per layer" if len(values) > 1 else ", shared")
    return out


def plain_provenance(provenance: Dict[str, Any]) -> Dict[str, Any]:
    """Provenance with ``metrics.alpha`` as numbers (checkpoints written before training stored them as numbers
    hold text: "0.353001", "0.5;0.4")."""
    out = dict(provenance)
    metrics = out.get("metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("alpha"), str):
        text = metrics["alpha"].strip()
        try:
            values = [float(v) for v in text.split(";")] if text else []
        except ValueError:
            return out
        out["metrics"] = {**metrics, "alpha": values[0] if len(values) == 1 else (values or None)}
    return out
