"""The model zoo as data: families x sizes x resolutions, registered with timm.

Names follow timm's ``<family>_<size>_patch<P>_<IMG>``. The four families differ only in
the mechanism under study (same widths, depths, heads, initialisation and defaults):

    vit       timm's VisionTransformer (timm's own registrations where timm has the name)
    revit     residual attention                 (models/residual.py)
    vit_cb    context broadcasting in every block (models/broadcast.py)
    revit_cb  both
"""
from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models import vision_transformer as timm_vit

from .broadcast import BroadcastBlock
from .residual import ResidualVisionTransformer


@dataclass(frozen=True)
class Size:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class Resolution:
    patch_size: int
    img_size: int
    sizes: Tuple[str, ...]
    num_classes: int
    crop_pct: float


@dataclass(frozen=True)
class Family:
    name: str
    summary: str
    residual: bool
    broadcast: bool


SIZES: Dict[str, Size] = {
    # micro: a CPU-friendly size that trains to useful accuracy in minutes on 2 cores.
    "micro": Size(embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0),
    "tiny": Size(embed_dim=192, depth=12, num_heads=3),   # ViT-Ti
    "small": Size(embed_dim=384, depth=12, num_heads=6),  # ViT-S
    "base": Size(embed_dim=768, depth=12, num_heads=12),  # ViT-B
}

RESOLUTIONS: Dict[str, Resolution] = {
    "patch16_224": Resolution(16, 224, ("tiny", "small", "base"), num_classes=1000, crop_pct=0.9),
    "patch4_32": Resolution(4, 32, ("micro", "tiny", "small"), num_classes=10, crop_pct=1.0),
}

FAMILIES: Dict[str, Family] = {
    "vit": Family("vit", "ViT baseline: timm's VisionTransformer", residual=False, broadcast=False),
    "revit": Family("revit", "ReViT: residual attention logits, R_l = a S_l + (1-a) R_{l-1}", True, False),
    "vit_cb": Family("vit_cb", "ViT + context broadcasting: CB(x) = (x + mean_tokens x) / 2", False, True),
    "revit_cb": Family("revit_cb", "ReViT + context broadcasting", True, True),
}


@dataclass(frozen=True)
class ModelEntry:
    """One name in the zoo and what it is."""

    name: str
    family: str
    size: str
    resolution: str
    owner: str  # "attnlab" (registered here) or "timm" (timm's own registration)
    config: Dict[str, Any] = field(default_factory=dict)


def _entries() -> List[ModelEntry]:
    out = []
    for family in FAMILIES:
        for res_name, res in RESOLUTIONS.items():
            for size_name in res.sizes:
                name = f"{family}_{size_name}_{res_name}"
                owner = "timm" if family == "vit" and res_name == "patch16_224" else "attnlab"
                s = SIZES[size_name]
                config = dict(
                    patch_size=res.patch_size, img_size=res.img_size, embed_dim=s.embed_dim,
                    depth=s.depth, num_heads=s.num_heads, mlp_ratio=s.mlp_ratio,
                )
                if owner == "attnlab":
                    config["num_classes"] = res.num_classes
                out.append(ModelEntry(name, family, size_name, res_name, owner, config))
    return out


ENTRIES: Dict[str, ModelEntry] = {e.name: e for e in _entries()}


def family_of(name: str) -> str:
    """The family of a model name (``revit_cb_...`` -> ``revit_cb``); other ViTs are ``vit``."""
    base = name.split(".")[0]
    for fam in sorted(FAMILIES, key=len, reverse=True):
        if base.startswith(fam + "_"):
            return fam
    return "vit"


def list_models(pattern: str = "*") -> List[ModelEntry]:
    """The zoo's names matching a shell-style pattern, family by family."""
    return [e for n, e in ENTRIES.items() if fnmatch.fnmatch(n, pattern)]


def checkpoint_filter_fn(state_dict: Dict[str, Any], model) -> Dict[str, Any]:
    """Adapt others' ViT / ReViT weights to these models.

    Understands the official ReViT checkpoints (``model_state`` wrapper,
    ``head.projection``) and then everything timm's ViT filter understands (position
    embedding resizing, patch embedding resampling, common wrappers).
    """
    if "model_state" in state_dict and isinstance(state_dict["model_state"], dict):
        state_dict = state_dict["model_state"]
    state_dict = {
        ("head." + k[len("head.projection."):] if k.startswith("head.projection.") else k): v
        for k, v in state_dict.items()
    }
    alpha = state_dict.pop("alpha", None)
    out = timm_vit.checkpoint_filter_fn(state_dict, model)
    if alpha is not None:
        out["alpha"] = alpha
    return out


def _model_kwargs(entry: ModelEntry, kwargs: Dict[str, Any]) -> Tuple[type, Dict[str, Any]]:
    fam = FAMILIES[entry.family]
    args = dict(entry.config)
    args.update(kwargs)
    if fam.residual:
        if fam.broadcast:
            args.setdefault("cb_placement", "mlp")
        elif args.get("cb_placement") is not None:
            raise ValueError(f"{entry.name} has no context broadcasting; use revit_cb_* for CB options")
        return ResidualVisionTransformer, args
    cb_placement = args.pop("cb_placement", "mlp" if fam.broadcast else None)
    cb_scale = args.pop("cb_learnable_scale", False)
    if fam.broadcast:
        args["block_fn"] = partial(BroadcastBlock, cb_placement=cb_placement, cb_learnable_scale=cb_scale)
    elif cb_placement is not None or cb_scale:
        raise ValueError(f"{entry.name} has no context broadcasting; use vit_cb_* for CB options")
    return timm_vit.VisionTransformer, args


def _make_entrypoint(entry: ModelEntry) -> Callable[..., Any]:
    def entrypoint(pretrained: bool = False, **kwargs: Any):
        cls, args = _model_kwargs(entry, kwargs)
        return build_model_with_cfg(
            cls, entry.name, pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(out_indices=args.get("depth", 12) - 1, feature_cls="getter"),
            **args,
        )

    entrypoint.__name__ = entry.name
    entrypoint.__qualname__ = entry.name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{FAMILIES[entry.family].summary}; {entry.size} at {entry.resolution}."
    return entrypoint


def _cfg(entry: ModelEntry) -> Dict[str, Any]:
    res = RESOLUTIONS[entry.resolution]
    return dict(
        url="", num_classes=res.num_classes, input_size=(3, res.img_size, res.img_size),
        pool_size=None, crop_pct=res.crop_pct, interpolation="bicubic", fixed_input_size=True,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="patch_embed.proj", classifier="head", license="mit",
    )


_OURS = [e for e in ENTRIES.values() if e.owner == "attnlab"]
default_cfgs = generate_default_cfgs({e.name: _cfg(e) for e in _OURS})

_module = sys.modules[__name__]
for _entry in _OURS:
    setattr(_module, _entry.name, register_model(_make_entrypoint(_entry)))

_missing_timm = [e.name for e in ENTRIES.values() if e.owner == "timm" and e.name not in timm.list_models()]
if _missing_timm:  # pragma: no cover - guards against a timm that dropped a name
    raise ImportError(f"timm {timm.__version__} lacks {', '.join(_missing_timm)}; upgrade timm")
