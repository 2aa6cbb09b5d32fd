"""Checkpoints of the official ReViT code (MViTv2 code base) as attnlab ReViT models.

The official checkpoints are dicts with ``model_state`` whose keys are timm-like
(``blocks.0.attn.qkv.weight``) except for the head (``head.projection.weight``) and the
shared mixing weight ``alpha``. ReViT-B has no class token (it averages the normalised
tokens) and its head applies softmax in eval mode; the converted model returns logits,
whose softmax equals the official output.

The architecture is read off the weights: width and patch size from the patch
embedding, depth from the blocks, MLP ratio from ``fc1``, class token and image size
from ``pos_embed``. The number of heads does not show in any shape: it comes from the
official YAML config when given, else from the official head width of 64.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..errors import CheckpointError
from ..spec import InputSpec, ModelSpec
from .zoo import ENTRIES

OFFICIAL_HEAD_DIM = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MULTISCALE = re.compile(r"(pool_[qkv]|norm_[qkv]|rel_pos_|attn\.[qkv]\.weight|blocks\.\d+\.proj\.)")


def unwrap_official(obj: Any) -> Optional[Dict[str, torch.Tensor]]:
    """The state dict inside an official checkpoint (``model_state``), or the dict itself."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model_state"), Mapping):
        return dict(obj["model_state"])
    if isinstance(obj, Mapping) and "head.projection.weight" in obj:
        return dict(obj)
    return None


def is_official_revit(state_dict: Mapping[str, Any]) -> bool:
    return "head.projection.weight" in state_dict and "patch_embed.proj.weight" in state_dict


def read_official_config(path, section: str = "ReViT") -> Dict[str, Any]:  # noqa: ANN001
    """The official YAML config, read with ``yaml.safe_load`` (no arbitrary objects); its model
    section is ``ReViT:`` (ReViT, ReMViTv2) or ``ReSwin:``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"official config not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"cannot read official config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get(section), dict):
        other = next((k for k in ("ReViT", "ReSwin") if k != section and isinstance(cfg, dict) and k in cfg), None)
        found = f"; it is a {other} config" if other else ""
        raise CheckpointError(f"{path} is not an official {section} config (it has no '{section}:' section{found}); "
                              f"pass the config that came with the checkpoint")
    return cfg


def _check_supported(sd: Mapping[str, torch.Tensor], cfg: Mapping[str, Any], source: str) -> None:
    bad = next((k for k in sd if _MULTISCALE.search(k)), None)
    if bad is not None:
        raise CheckpointError(f"{source} is a multiscale (ReMViTv2-style) checkpoint ({bad}); attnlab "
                              "converts plain ReViT checkpoints only")
    kernel, stride = cfg.get("patch_kernel"), cfg.get("patch_stride")
    padding = cfg.get("patch_padding") or [0, 0]
    if (kernel is not None and stride is not None and list(kernel) != list(stride)) or any(padding):
        raise CheckpointError(f"{source}: overlapping patch embeddings (kernel {kernel}, stride {stride}, "
                              f"padding {padding}) are not supported; only kernel == stride, no padding")
    for flag in ("use_rel_pos", "residual_pooling"):
        if cfg.get(flag):
            raise CheckpointError(f"{source}: config option {flag}=True is not supported")


def convert_official_revit(
    state_dict: Mapping[str, torch.Tensor],
    config: Optional[Mapping[str, Any]] = None,
    source: str = "checkpoint",
) -> Tuple[ModelSpec, Dict[str, torch.Tensor]]:
    """Infer the architecture of an official ReViT state dict; return (spec, attnlab state dict)."""
    cfg = dict((config or {}).get("ReViT") or {})
    data = dict((config or {}).get("DATA") or {})
    sd = dict(state_dict)
    _check_supported(sd, cfg, source)

    proj = sd["patch_embed.proj.weight"]
    embed_dim, in_chans, ph, pw = (int(s) for s in proj.shape)
    if ph != pw:
        raise CheckpointError(f"{source}: non-square patches ({ph}x{pw}) are not supported")
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    mlp_hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    num_classes = int(sd["head.projection.weight"].shape[0])
    class_token = "cls_token" in sd
    num_heads = int(cfg.get("num_heads") or embed_dim // OFFICIAL_HEAD_DIM)
    if cfg.get("embed_dim") not in (None, embed_dim):
        raise CheckpointError(f"{source}: the config says embed_dim {cfg['embed_dim']}, the weights {embed_dim}")
    if embed_dim % num_heads:
        raise CheckpointError(f"{source}: width {embed_dim} does not split into {num_heads} heads; "
                              "pass the official YAML config with --official-config")

    if "pos_embed" in sd:
        tokens = int(sd["pos_embed"].shape[1]) - (1 if class_token else 0)
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise CheckpointError(f"{source}: {tokens} position embeddings do not form a square grid")
        img_size = grid * ph
        pos_embed = "learn"
    else:
        img_size = int(data.get("crop_size") or 224)
        pos_embed = "none"
    if data.get("crop_size") not in (None, img_size):
        raise CheckpointError(f"{source}: the config says crop_size {data['crop_size']}, the weights {img_size}")

    learn_alpha = "alpha" in sd
    options: Dict[str, Any] = dict(
        img_size=img_size, patch_size=ph, in_chans=in_chans, num_classes=num_classes,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_hidden / embed_dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, class_token=class_token,
        global_pool="token" if class_token else "avg", fc_norm=False, pos_embed=pos_embed,
        learn_alpha=learn_alpha,
    )
    arch = _closest_arch(embed_dim, depth, ph, img_size)

    out = {("head." + k[len("head.projection."):] if k.startswith("head.projection.") else k): v
           for k, v in sd.items()}
    if learn_alpha:
        out["alpha"] = out["alpha"].reshape(1)
    spec = ModelSpec(
        arch=arch,
        options=options,
        input=InputSpec(
            size=(img_size, img_size), channels=in_chans,
            mean=tuple(float(m) for m in data.get("mean", IMAGENET_MEAN)),
            std=tuple(float(s) for s in data.get("std", IMAGENET_STD)),
            interpolation="bicubic", crop_pct=float(data.get("VAL_CROP_RATIO", 0.875)),
        ),
        classes=[str(i) for i in range(num_classes)],
        provenance={"weights": source, "converted_from": "official ReViT (ADiko1997/ReViT)",
                    "num_heads_from": "config" if cfg.get("num_heads") else f"head width {OFFICIAL_HEAD_DIM}"},
        source=source,
        kind="official-revit",
    )
    return spec, out


def _closest_arch(embed_dim: int, depth: int, patch: int, img_size: int) -> str:
    """A registered ReViT name of the same size where there is one (options carry the rest)."""
    for e in ENTRIES.values():
        c = e.config
        if (e.family == "revit" and c["embed_dim"] == embed_dim and c["depth"] == depth
                and c["patch_size"] == patch and c["img_size"] == img_size):
            return e.name
    return "revit_base_patch16_224"


# ----------------------------------------------------------------------------- the three official families

def detect_official(obj: Any) -> Optional[Tuple[str, Dict[str, torch.Tensor]]]:
    """``(kind, state dict)`` of a file the official ReViT code wrote, or None.

    ReMViTv2 first (the single-scale test also matches it); ReSwin only where the file says it
    comes from the official training code (a ``model_state_dict`` / ``model_state`` container or
    DDP ``module.`` prefixes): Microsoft's own Swin releases have the same keys, so a bare or
    ``model``-wrapped Swin state dict is ReSwin only when ``--model reswin_*`` says so
    (:func:`official_for_model`).
    """
    from .official_remvitv2 import unwrap_official_remvitv2
    from .official_reswin import is_official_reswin, unwrap_official_reswin

    multiscale = unwrap_official_remvitv2(obj)
    if multiscale is not None:
        return "official-remvitv2", multiscale
    swin = unwrap_official_reswin(obj)
    if swin is not None and is_official_reswin(swin) and _from_training_code(obj):
        return "official-reswin", swin
    single = unwrap_official(obj)
    if single is not None and is_official_revit(single):
        return "official-revit", single
    return None


def _from_training_code(obj: Any) -> bool:
    if not isinstance(obj, Mapping):
        return False
    if any(isinstance(obj.get(k), Mapping) for k in ("model_state_dict", "model_state")):
        return True
    inner = obj.get("model", obj)
    return isinstance(inner, Mapping) and any(str(k).startswith("module.") for k in inner)


def official_for_model(state_dict: Mapping[str, Any], model: Optional[str]) -> Optional[str]:
    """The official kind a plain state dict is when ``--model`` names a multiscale ReViT, else None."""
    from .official_reswin import is_official_reswin

    if model and model.startswith("reswin") and is_official_reswin(state_dict):
        return "official-reswin"
    return None


def convert_official(kind: str, state_dict: Mapping[str, torch.Tensor], config_path: Optional[Any],
                     source: str) -> Tuple[ModelSpec, Dict[str, torch.Tensor]]:
    """``(spec, attnlab state dict)`` of an official checkpoint of ``kind``."""
    section = "ReSwin" if kind == "official-reswin" else "ReViT"
    config = read_official_config(config_path, section) if config_path is not None else None
    if kind == "official-revit":
        return convert_official_revit(state_dict, config=config, source=source)
    if kind == "official-remvitv2":
        from .official_remvitv2 import convert_official_remvitv2

        return convert_official_remvitv2(state_dict, config=config, source=source)
    from .official_reswin import convert_official_reswin

    return convert_official_reswin(state_dict, config=config, source=source)
