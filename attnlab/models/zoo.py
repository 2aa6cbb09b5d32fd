"""The model zoo as data: families x sizes x resolutions, with names, shapes and sizes.

Names follow timm's ``<family>_<size>_patch<P>_<IMG>``. The four families differ only in
the mechanism under study (same widths, depths, heads, initialisation and defaults):

    vit       timm's VisionTransformer (timm's own registrations where timm has the name)
    revit     residual attention                 (models/residual.py)
    vit_cb    context broadcasting in every block (models/broadcast.py)
    revit_cb  both

This module is plain data on purpose: ``attnlab models`` and ``ModelSpec.family`` read it
without importing torch or timm. The timm registration lives in ``factory.py``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple


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

IN_CHANS = 3  # timm's default input channels; every zoo model is built with it unless told


@dataclass(frozen=True)
class ModelEntry:
    """One name in the zoo and what it is."""

    name: str
    family: str
    size: str
    resolution: str
    owner: str  # "attnlab" (registered here) or "timm" (timm's own registration)
    config: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.config.get("num_classes", 1000))  # timm's own ViTs default to ImageNet-1k

    @property
    def num_params(self) -> int:
        """Parameters of the model as built by default (class token, qkv bias, no layer scale)."""
        c = self.config
        d, p, depth = c["embed_dim"], c["patch_size"], c["depth"]
        hidden = int(d * c["mlp_ratio"])                          # timm: int(dim * mlp_ratio)
        tokens = (c["img_size"] // p) ** 2 + 1                    # patches + class token
        patch_embed = IN_CHANS * p * p * d + d                    # conv weight + bias
        embeddings = d + tokens * d                               # cls_token + pos_embed
        block = (2 * d                                            # norm1
                 + 3 * d * d + 3 * d                              # qkv (with bias)
                 + d * d + d                                      # proj
                 + 2 * d                                          # norm2
                 + d * hidden + hidden + hidden * d + d)          # mlp fc1, fc2
        head = 2 * d + d * self.num_classes + self.num_classes    # final norm + linear head
        alpha = 1 if FAMILIES[self.family].residual else 0        # ReViT's shared scalar a
        return patch_embed + embeddings + depth * block + head + alpha   # CB adds no parameters


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


#: The multiscale ReViT families (built on timm's Swin and MViTv2; their sizes are timm's, not the zoo's).
MULTISCALE_FAMILIES = ("reswin", "remvitv2")


def family_of(name: str) -> str:
    """The family of a model name (``revit_cb_...`` -> ``revit_cb``, ``reswin_...`` -> ``reswin``);
    other ViTs are ``vit``."""
    base = name.split(".")[0]
    for fam in MULTISCALE_FAMILIES:
        if base.startswith(fam + "_"):
            return fam
    for fam in sorted(FAMILIES, key=len, reverse=True):
        if base.startswith(fam + "_"):
            return fam
    return "vit"


def list_models(pattern: str = "*") -> List[ModelEntry]:
    """The zoo's names matching a shell-style pattern, family by family."""
    return [e for n, e in ENTRIES.items() if fnmatch.fnmatch(n, pattern)]
