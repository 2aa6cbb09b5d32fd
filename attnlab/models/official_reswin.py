"""Checkpoints of the official ReSwin code (``ADiko1997/ReViT``, ``model/reswin.py``) as attnlab ReSwin.

The official training code saves ``{'epoch', 'model_state_dict', ...}`` from a DDP model (keys
start with ``module.``) and reads ``ckpt['model']`` or ``ckpt['model_state_dict']``; the ReViT
converter reads ``model_state``. The keys are Microsoft Swin's: patch merging at the end of a
stage (``layers.i.downsample`` is timm's ``layers.{i+1}.downsample``), ``head.*`` is timm's
``head.fc.*``, and the buffers ``relative_position_index`` / ``attn_mask`` are dropped. The
architecture is read off the weights: width and patch from the patch embedding, depths from the
blocks, heads from the bias-table widths, window from the table size ((2w - 1)^2 rows), image
size from the first shifted block's mask (its window count), else the config's crop size, else 224.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..errors import CheckpointError
from ..spec import InputSpec, ModelSpec

CONTAINERS = ("model_state_dict", "model", "model_state", "state_dict")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP = 0.91  # the official ReSwin-T evaluation crop ratio
_TABLE = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$")


def _strip_ddp(sd: Mapping[str, Any]) -> Dict[str, Any]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def unwrap_official_reswin(obj: Any) -> Optional[Dict[str, torch.Tensor]]:
    """The state dict inside any container the official code writes or reads, ``module.`` removed."""
    if not isinstance(obj, Mapping):
        return None
    for key in CONTAINERS:
        if isinstance(obj.get(key), Mapping):
            return _strip_ddp(obj[key])
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip_ddp(obj)
    return None


def is_official_reswin(sd: Mapping[str, Any]) -> bool:
    """Microsoft-Swin layout (stage 0 ends in patch merging, head is a bare Linear) with window tables."""
    return ("layers.0.blocks.0.attn.relative_position_bias_table" in sd and "head.weight" in sd
            and "layers.0.downsample.reduction.weight" in sd)


def _stage_heads(sd: Mapping[str, torch.Tensor], source: str) -> Tuple[List[int], List[int], int]:
    """(depths, heads per stage, window) from the relative position bias tables."""
    tables: Dict[int, Dict[int, torch.Tensor]] = {}
    for k, v in sd.items():
        m = _TABLE.match(k)
        if m:
            tables.setdefault(int(m.group(1)), {})[int(m.group(2))] = v
    stages = sorted(tables)
    if stages != list(range(len(stages))) or any(sorted(t) != list(range(len(t))) for t in tables.values()):
        raise CheckpointError(f"{source}: stages or blocks are not numbered 0, 1, ...; not an official ReSwin file")
    depths = [len(tables[s]) for s in stages]
    heads = [int(tables[s][0].shape[1]) for s in stages]
    rows = {int(t.shape[0]) for s in stages for t in tables[s].values()}
    windows = {(math.isqrt(r) + 1) // 2 for r in rows}
    if len(windows) != 1 or any((2 * w - 1) ** 2 != r for w in windows for r in rows):
        raise CheckpointError(f"{source}: bias tables of {sorted(rows)} rows fit no single square window "
                              "((2w - 1)^2 rows); per-stage windows are not supported")
    return depths, heads, windows.pop()


def to_timm_keys(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm's own Swin ``checkpoint_filter_fn`` mapping, without needing a model."""
    out = {}
    for k, v in sd.items():
        if "relative_position_index" in k or "attn_mask" in k:
            continue  # buffers timm rebuilds
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", k)
        out[k.replace("head.", "head.fc.", 1) if k.startswith("head.") else k] = v
    return out


def convert_official_reswin(state_dict: Mapping[str, torch.Tensor], config: Optional[Mapping[str, Any]] = None,
                            source: str = "checkpoint") -> Tuple[ModelSpec, Dict[str, torch.Tensor]]:
    """Infer the architecture of an official ReSwin state dict; return (spec, timm-keyed state dict).

    ``config`` (the official YAML, e.g. ``config-ReSwin-T.yaml``) is checked against the weights
    and gives the normalisation, evaluation crop and drop-path rate."""
    sd = _strip_ddp(state_dict)
    if "alpha" in sd:
        raise CheckpointError(f"{source} has an 'alpha' key, which official ReSwin files never have "
                              "(ReSwin mixes 0.5 / 0.5): it came from other code (ReMViTv2?)")
    if "absolute_pos_embed" in sd:
        raise CheckpointError(f"{source}: absolute position embeddings (ape=True) are not supported; "
                              "only the released ReSwin (ape=False)")
    if "patch_embed.proj.weight" not in sd or not is_official_reswin(sd):
        raise CheckpointError(f"{source} is not an official ReSwin checkpoint (expected patch_embed.proj.weight, "
                              "layers.0.downsample.reduction.weight and head.weight)")
    embed_dim, in_chans, ph, pw = (int(s) for s in sd["patch_embed.proj.weight"].shape)
    if ph != pw:
        raise CheckpointError(f"{source}: non-square patches ({ph}x{pw}) are not supported")
    depths, heads, window = _stage_heads(sd, source)
    widths = [int(sd[f"layers.{s}.blocks.0.norm1.weight"].shape[0]) for s in range(len(depths))]
    mlp_ratio = int(sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0]) / widths[0]
    mask = next((v for k, v in sd.items() if k.startswith("layers.0.") and k.endswith("attn_mask")), None)
    crop = ((config or {}).get("DATA") or {}).get("crop_size")  # without the mask buffers: the config's, else 224
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int)):
        raise CheckpointError(f"{source}: the config's DATA crop_size must be one whole number of pixels, not {crop!r}")
    img_size = math.isqrt(int(mask.shape[0])) * window * ph if mask is not None else int(crop or 224)
    num_classes = int(sd["head.weight"].shape[0])
    doubling = widths == [embed_dim * 2 ** i for i in range(len(widths))]
    options: Dict[str, Any] = dict(
        img_size=img_size, patch_size=ph, in_chans=in_chans, num_classes=num_classes,
        embed_dim=embed_dim if doubling else widths, depths=depths, num_heads=heads, window_size=window,
        mlp_ratio=mlp_ratio, qkv_bias="layers.0.blocks.0.attn.qkv.bias" in sd, drop_path_rate=0.1)
    data = _check_config(options, widths, config, source)
    if (config or {}).get("ReSwin", {}).get("drop_path") is not None:
        options["drop_path_rate"] = float(config["ReSwin"]["drop_path"])
    spec = ModelSpec(
        arch=_closest_arch(options), options=options,
        input=InputSpec(size=(img_size, img_size), channels=in_chans,
                        mean=tuple(float(m) for m in data.get("mean", IMAGENET_MEAN)),
                        std=tuple(float(v) for v in data.get("std", IMAGENET_STD)),
                        interpolation="bicubic", crop_pct=float(data.get("VAL_CROP_RATIO", EVAL_CROP))),
        classes=[str(i) for i in range(num_classes)],
        provenance={"weights": source, "converted_from": "official ReSwin (ADiko1997/ReViT)"},
        source=source, kind="official-reswin",
    )
    return spec, to_timm_keys(sd)


def _check_config(options: Mapping[str, Any], widths: List[int], config: Optional[Mapping[str, Any]],
                  source: str) -> Dict[str, Any]:
    """The official YAML's ``ReSwin``, ``MODEL`` and ``DATA`` sections against the weights; returns ``DATA``."""
    if config is None:
        return {}
    cfg, data = dict(config.get("ReSwin") or {}), dict(config.get("DATA") or {})
    if cfg.get("ape"):
        raise CheckpointError(f"{source}: the config has ape: True; attnlab converts the released ReSwin (ape: False)")
    window = cfg.get("window_size", cfg.get("windw_size"))  # the released config-ReSwin-T.yaml spells it windw_size
    found = {"patch_size": options["patch_size"], "in_chans": options["in_chans"], "embed_dim": widths[0],
             "depths": list(options["depths"]), "num_heads": list(options["num_heads"]), "window_size": options["window_size"],
             "mlp_ratio": options["mlp_ratio"], "qkv_bias": options["qkv_bias"]}
    given = {**{k: cfg[k] for k in found if k in cfg}, **({"window_size": window} if window is not None else {})}
    if (config.get("MODEL") or {}).get("num_classes") is not None:
        found["num_classes"], given["num_classes"] = options["num_classes"], config["MODEL"]["num_classes"]
    if data.get("crop_size") is not None:
        found["crop_size"], given["crop_size"] = options["img_size"], data["crop_size"]
    for key, value in given.items():
        if (list(value) if isinstance(value, (list, tuple)) else value) != found[key]:
            raise CheckpointError(f"{source}: the config says {key} {value}, the weights {found[key]}; pass the "
                                  "config the weights were trained with")
    return data


def _closest_arch(options: Mapping[str, Any]) -> str:
    from .reswin import ARCHS

    for name, arch in ARCHS.items():
        if (arch["embed_dim"] == options["embed_dim"] and list(arch["depths"]) == list(options["depths"])
                and list(arch["num_heads"]) == list(options["num_heads"]) and arch["window_size"] == options["window_size"]
                and arch["patch_size"] == options["patch_size"]):
            return name
    return "reswin_tiny_patch4_window7_224"  # the options carry the rest


def load_official_reswin(obj: Any, source: str = "checkpoint", device: str = "cpu"):  # noqa: ANN201
    """An official ReSwin checkpoint (any container) as an eval-mode attnlab model and its spec."""
    import timm

    from . import reswin  # noqa: F401  (registers the names)

    sd = unwrap_official_reswin(obj)
    if sd is None:
        raise CheckpointError(f"{source} holds no state dict (looked for {', '.join(CONTAINERS)} or a bare one)")
    spec, state_dict = convert_official_reswin(sd, source=source)
    model = timm.create_model(spec.arch, **spec.options)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        what = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
                else f"{wrong[0]} is {tuple(state_dict[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        raise CheckpointError(f"{source}: the weights fit no ReSwin configuration read off them ({what}; "
                              f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of wrong shape)")
    model.load_state_dict(state_dict)
    return model.to(device).eval(), spec
