"""Checkpoints of the official ReMViTv2 code (ADiko1997/ReViT) as attnlab ``remvitv2_*`` models.

The training code saves ``{'epoch', 'model_state_dict', 'optimizer_state_dict'}`` from a DDP
model (keys start with ``module.``) and reads ``ckpt['model']`` or ``ckpt['model_state_dict']``;
the single-scale converter reads ``model_state``. All of these and a bare state dict are accepted.

The keys are timm's ``mvitv2_*`` keys plus ``alpha`` after timm's own mapping of the MViT layout:
``blocks.n.*`` -> ``stages.s.blocks.b.*`` (by the depths), ``blocks.n.proj.*`` (the width change
at a stage's first block) -> ``...shortcut_proj_attn.*``, ``head.projection.*`` -> ``head.fc.*``.
The architecture is read off the weights: a stage starts where a block changes width
(``blocks.n.proj``), widths from ``qkv``, the head width from ``rel_pos_h`` (96 at T, so heads
1, 2, 4, 8), the image size from block 0's relative positions. The official head applies
softmax in eval mode; the converted model returns the logits.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..errors import CheckpointError
from ..spec import InputSpec, ModelSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CONTAINERS = ("model_state_dict", "model", "model_state", "state_dict")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def unwrap_official_remvitv2(obj: Any) -> Optional[Dict[str, torch.Tensor]]:
    """The state dict in an official file (any container the official code writes or reads,
    ``module.`` prefixes dropped), if it is a ReMViTv2 one, else None."""
    if not isinstance(obj, Mapping):
        return None
    for key in _CONTAINERS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    sd = {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in obj.items()}
    return sd if is_official_remvitv2(sd) else None


def is_official_remvitv2(state_dict: Mapping[str, Any]) -> bool:
    """Official MViT layout (``blocks.n``, ``head.projection``) with pooled attention."""
    return ("head.projection.weight" in state_dict and "patch_embed.proj.weight" in state_dict
            and any(re.match(r"blocks\.\d+\.attn\.(pool_[qkv]|rel_pos_h|q\.weight)", k) for k in state_dict))


def _stages(sd: Mapping[str, torch.Tensor], source: str) -> List[int]:
    """First block of each stage: block 0 and every block that changes width (``blocks.n.proj``)."""
    blocks = sorted({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    if blocks != list(range(len(blocks))):
        raise CheckpointError(f"{source}: the blocks are not numbered 0..{len(blocks) - 1}; weights that fit "
                              "no ReMViTv2 configuration")
    starts = [0] + [n for n in blocks if f"blocks.{n}.proj.weight" in sd and n > 0]
    return [b - a for a, b in zip(starts, starts[1:] + [len(blocks)])]


def _read_architecture(sd: Mapping[str, torch.Tensor], source: str) -> Dict[str, Any]:
    if "blocks.0.attn.q.weight" in sd:
        raise CheckpointError(f"{source}: an official ReMViTv2 with pool_first=True (separate q, k, v); "
                              "attnlab supports pool_first=False, the released setting")
    if "cls_token" in sd:
        raise CheckpointError(f"{source}: a ReMViTv2 with a class token; attnlab refuses it (the carried maps "
                              "are pooled on square token grids, and 3137 tokens are not one)")
    if "blocks.0.attn.rel_pos_h" not in sd or "blocks.0.attn.pool_k.weight" not in sd:
        raise CheckpointError(f"{source}: a multiscale (MViT-layout) checkpoint without conv pooling and spatial "
                              "relative positions in block 0; attnlab converts the released ReMViTv2 (mode conv, "
                              "use_rel_pos True) and plain ReViT")
    if "alpha" not in sd:
        raise CheckpointError(f"{source}: an official MViT-layout checkpoint without 'alpha' is an MViTv2, not "
                              "a ReMViTv2; load it with --model mvitv2_tiny (or its size)")
    depths = _stages(sd, source)
    starts = [sum(depths[:i]) for i in range(len(depths))]
    widths = [int(sd[f"blocks.{n}.attn.qkv.weight"].shape[0]) // 3 for n in starts]
    head_dims = [int(sd[f"blocks.{n}.attn.rel_pos_h"].shape[1]) for n in starts]
    conv_dims = [int(sd[f"blocks.{n}.attn.norm_q.weight"].shape[0]) for n in starts if f"blocks.{n}.attn.norm_q.weight" in sd]
    if any(w % d for w, d in zip(widths, head_dims)) or conv_dims not in (head_dims, []):
        raise CheckpointError(f"{source}: widths {widths} do not split into heads of {head_dims}; weights that "
                              "fit no ReMViTv2 configuration")
    proj = sd["patch_embed.proj.weight"]
    kernel = tuple(int(s) for s in proj.shape[-2:])
    if kernel != (7, 7):
        raise CheckpointError(f"{source}: patch kernel {list(kernel)}, but official ReMViTv2 uses [7, 7] "
                              "(stride 4, padding 3)")
    feat = (int(sd["blocks.0.attn.rel_pos_h"].shape[0]) + 1) // 2   # 2 * max(q, kv) - 1 at stride 1
    return dict(
        depths=tuple(depths), embed_dim=tuple(widths), num_heads=tuple(w // d for w, d in zip(widths, head_dims)),
        mlp_ratio=int(sd["blocks.0.mlp.fc1.weight"].shape[0]) / widths[0], qkv_bias="blocks.0.attn.qkv.bias" in sd,
        stride_q=((1, 1),) + ((2, 2),) * (len(depths) - 1),
        kernel_qkv=tuple(int(s) for s in sd["blocks.0.attn.pool_k.weight"].shape[-2:]),
        use_abs_pos="pos_embed" in sd, img_size=feat * 4, in_chans=int(proj.shape[1]),
        num_classes=int(sd["head.projection.weight"].shape[0]),
    )


def _check_config(arch: Dict[str, Any], config: Optional[Mapping[str, Any]], source: str) -> Dict[str, Any]:
    """The official YAML's ``ReViT`` and ``DATA`` sections against the weights; returns ``DATA``."""
    cfg = dict((config or {}).get("ReViT") or {})
    data = dict((config or {}).get("DATA") or {})
    if cfg.get("cls_embed_on"):
        raise CheckpointError(f"{source}: the config has cls_embed_on: True; ReMViTv2 without a class token only")
    if cfg.get("pool_first") or cfg.get("mode", "conv") != "conv":
        raise CheckpointError(f"{source}: the config's pool_first / mode ({cfg.get('pool_first')}, {cfg.get('mode')}) "
                              "are not supported; expected pool_first: False, mode: conv")
    for flag in ("use_rel_pos", "residual_pooling", "dim_mul_in_att"):
        if cfg.get(flag) is False:
            raise CheckpointError(f"{source}: the config has {flag}: False; attnlab converts the released "
                                  f"ReMViTv2 ({flag}: True)")
    found = {"embed_dim": arch["embed_dim"][0], "num_heads": arch["num_heads"][0], "depth": sum(arch["depths"]),
             "mlp_ratio": arch["mlp_ratio"], "qkv_bias": arch["qkv_bias"], "use_abs_pos": arch["use_abs_pos"]}
    if cfg.get("dim_mul") is not None:  # [[block, factor], ...]: where the stages start
        starts = [sum(arch["depths"][:i]) for i in range(1, len(arch["depths"]))]
        if sorted(int(b) for b, _ in cfg["dim_mul"]) != starts:
            raise CheckpointError(f"{source}: the config's dim_mul starts stages at blocks "
                                  f"{sorted(int(b) for b, _ in cfg['dim_mul'])}, the weights at {starts}")
    for key, value in found.items():
        if key in cfg and cfg[key] != value:
            raise CheckpointError(f"{source}: the config says {key} {cfg[key]}, the weights {value}; pass the "
                                  "config the weights were trained with")
    if data.get("crop_size") not in (None, arch["img_size"]):
        raise CheckpointError(f"{source}: the config says crop_size {data['crop_size']}, the weights {arch['img_size']}")
    return data


def map_official_keys(sd: Mapping[str, torch.Tensor], depths: Tuple[int, ...]) -> Dict[str, torch.Tensor]:
    """Official MViT keys -> timm ``MultiScaleVit`` keys (with ``alpha`` kept, as ``[1]``)."""
    where = {}
    for s, d in enumerate(depths):
        for b in range(d):
            where[len(where)] = (s, b)
    out = {}
    for k, v in sd.items():
        m = _BLOCK.match(k)
        if m:
            s, b = where[int(m.group(1))]
            rest = k[m.end():]
            rest = "shortcut_proj_attn." + rest[len("proj."):] if rest.startswith("proj.") else rest
            k = f"stages.{s}.blocks.{b}.{rest}"
        elif k.startswith("head.projection."):
            k = "head.fc." + k[len("head.projection."):]
        out[k] = v.reshape(1) if k == "alpha" else v
    return out


def _arch_name(arch: Dict[str, Any]) -> Tuple[str, Optional[Dict[str, Any]]]:
    """A registered name with the same MViTv2 config, else ``remvitv2_tiny`` with the config as an option."""
    from .remvitv2 import CONFIGS

    fields = ("depths", "embed_dim", "num_heads", "mlp_ratio", "qkv_bias", "stride_q", "kernel_qkv", "use_abs_pos")
    want = {f: arch[f] for f in fields}
    for name, cfg in CONFIGS.items():
        if all(tuple(getattr(cfg, f)) == want[f] if isinstance(want[f], tuple) else getattr(cfg, f) == want[f]
               for f in fields):
            return name, None
    return "remvitv2_tiny", {f: (list(map(list, v)) if f == "stride_q" else list(v)) if isinstance(v, tuple) else v
                             for f, v in want.items()}


def convert_official_remvitv2(state_dict: Mapping[str, torch.Tensor], config: Optional[Mapping[str, Any]] = None,
                              source: str = "checkpoint") -> Tuple[ModelSpec, Dict[str, torch.Tensor]]:
    """Infer the architecture of an official ReMViTv2 state dict; return (spec, attnlab state dict)."""
    sd = dict(state_dict)
    arch = _read_architecture(sd, source)
    data = _check_config(arch, config, source)
    name, mvit_cfg = _arch_name(arch)
    options: Dict[str, Any] = dict(img_size=arch["img_size"], in_chans=arch["in_chans"],
                                   num_classes=arch["num_classes"])
    if mvit_cfg is not None:
        options["mvit_cfg"] = mvit_cfg
    spec = ModelSpec(
        arch=name, options=options,
        input=InputSpec(size=(arch["img_size"],) * 2, channels=arch["in_chans"],
                        mean=tuple(float(m) for m in data.get("mean", IMAGENET_MEAN)),
                        std=tuple(float(s) for s in data.get("std", IMAGENET_STD)),
                        interpolation="bicubic", crop_pct=float(data.get("VAL_CROP_RATIO", 0.875))),
        classes=[str(i) for i in range(arch["num_classes"])],
        provenance={"weights": source, "converted_from": "official ReMViTv2 (ADiko1997/ReViT)",
                    "num_heads_from": "rel_pos_h widths"},
        source=source, kind="official-remvitv2",
    )
    return spec, map_official_keys(sd, arch["depths"])
