"""What the explorer shows of each model, decided before any selected image goes through it.

Checking every model up front (capture supports it, the shape and geometry of each of its
attention layers, the ``--layers`` it gets) lets the page's size be estimated, and a run
over budget be refused, before the first image runs (``layers.py`` probes the shapes with
one blank image). Every family capture supports is shown: one patch grid (timm ViT, DeiT,
registers, ReViT, CB, EVA, BEiT, RelPos, Hugging Face ViTs), CaiT (patch blocks on the
patch grid, class attention from the class token), Swin windows and MViTv2 pooled grids.

``--layers`` indexes the attention layers in forward order (``attnlab.capture.layer_of``);
default first, middle and last (``0, (L-1)//2, L-1``). Per-head attention rows are stored
for those layers only; the per-layer metrics beside the image cover every layer. GradCAM
reads ``auto_layer``'s target (a stage output on Swin and MViTv2); attention rollout needs
every layer over the same tokens (``no_rollout_reason``): a model without it says why on the
page instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..errors import AttnlabError, one_line
from ..layout import TokenLayout
from ..studies.inputs import LoadedModel
from .layers import AttentionLayer, applied_points, describe_layers

LayerSpec = Union[None, str, int, Sequence[Union[int, str]]]
APPLIED, OWN = "applied", "own"


@dataclass
class ModelPlan:
    """One model as the page will show it: its layers, the stored ones, attention kinds, overlays."""

    model: LoadedModel
    layout: Optional[TokenLayout]  # one patch grid (ViTs, CaiT), None for Swin / MViTv2
    depth: int
    heads: int                     # the most heads of any layer
    layers: List[int]              # layers whose per-head rows are stored (0-based, sorted)
    points: Dict[str, List[str]]   # attention kind ("applied"; ReViT also "own") -> its hook points, layer order
    prefix_names: List[str]        # "cls", "dist", "reg1", ...: the prefix tokens in token order
    blocks: List[AttentionLayer] = field(default_factory=list)   # every attention layer, forward order
    cam_layer: Optional[str] = None                              # GradCAM's target layer, or None ...
    missing: Dict[str, str] = field(default_factory=dict)        # ... overlay -> why it is not available

    @property
    def label(self) -> str:
        return self.model.label

    @property
    def sources(self) -> List[str]:
        """The attention kinds shown: ``applied``, and ``own`` (softmax(S_l)) for ReViT."""
        return list(self.points)

    @property
    def size(self) -> Tuple[int, int]:
        return tuple(self.model.spec.input.size)  # type: ignore[return-value]


def default_layers(depth: int) -> List[int]:
    """First, middle and last block: ``sorted({0, (L-1)//2, L-1})``."""
    return sorted({0, (depth - 1) // 2, depth - 1})


def parse_layers(layers: LayerSpec, depth: int, who: str) -> List[int]:
    """Block indices from ``--layers`` (ints, comma lists, ``all``; negative counts from the end)."""
    if layers is None or (isinstance(layers, (list, tuple)) and not layers):
        return default_layers(depth)
    items = [layers] if isinstance(layers, (str, int)) else list(layers)
    out: List[int] = []
    for item in items:
        for text in str(item).split(","):
            text = text.strip()
            if not text:
                continue
            if text == "all":
                out.extend(range(depth))
                continue
            try:
                index = int(text)
            except ValueError:
                raise AttnlabError(f"--layers takes block indices such as 0,5,11 (or all), not {text!r}") from None
            if not -depth <= index < depth:
                raise AttnlabError(f"--layers {index} is out of range for {who} ({depth} blocks: 0..{depth - 1}, "
                                   "or -1 for the last)")
            out.append(index % depth)
    if not out:
        raise AttnlabError("--layers is empty; pass block indices such as 0,5,11 (or all)")
    return sorted(set(out))


def prefix_token_names(net, count: int) -> List[str]:
    """Names of the prefix tokens in token order: class, distillation, then registers."""
    names = []
    config = getattr(net, "config", None) if hasattr(net, "token_layout") else None
    if config is not None:  # a wrapped Hugging Face model: class token, DeiT's distillation token, registers
        names = ["cls"] + (["dist"] if getattr(config, "model_type", "") == "deit" else [])
    else:
        if getattr(net, "cls_token", None) is not None:
            names.append("cls")
        if getattr(net, "dist_token", None) is not None:
            names.append("dist")
    names += [f"reg{i + 1}" for i in range(count - len(names))]
    return names[:count]


def _layout(m: LoadedModel, grid: bool) -> Optional[TokenLayout]:
    if not grid:
        return None
    try:
        return TokenLayout.from_model(m.model, tuple(m.spec.input.size))
    except (ValueError, AttributeError, TypeError) as e:
        raise AttnlabError(f"{m.label}: cannot tell the token layout of {type(m.model).__name__} "
                           f"({one_line(e)})") from e


def _overlays(m: LoadedModel, layout: Optional[TokenLayout]) -> Tuple[Optional[str], Dict[str, str]]:
    """GradCAM's target layer (or None) and why rollout or GradCAM cannot be shown, if so."""
    from ..studies.attribution import auto_layer
    from ..studies.attribution.rollout import no_rollout_reason

    missing = {}
    reason = no_rollout_reason(m.model) or (None if layout is not None else "it has no single patch grid")
    if reason:
        missing["rollout"] = f"no attention rollout for {m.label}: {reason}"
    cam_layer = None
    try:
        cam_layer = auto_layer(m.model)
    except AttnlabError as e:
        missing["gradcam"] = f"no GradCAM for {m.label}: {one_line(e)}"
    return cam_layer, missing


def plan_model(m: LoadedModel, layers: LayerSpec) -> ModelPlan:
    """Check that capture supports ``m``, read each attention layer's shape, decide what the page stores."""
    from ..adapters import find_attention
    from ..capture import attention_layers, hook_point_names

    try:
        attention_layers(m.model)  # a model no adapter knows: one line naming the supported families
    except AttnlabError as e:
        raise AttnlabError(f"{m.label}: {e}") from e
    found = find_attention(m.model)
    names = set(hook_point_names(m.model))
    points = {APPLIED: applied_points(found)}
    own = [f"{f.path}.own_pattern" for f in found]
    if all(f.adapter.distribution for f in found) and all(n in names for n in own):
        points[OWN] = own                                  # ReViT: softmax(S_l) besides softmax(R_l)
    layout = _layout(m, all(f.adapter.geometry in ("grid", "class") for f in found))
    spec = m.spec.input
    blocks = describe_layers(m.model, found, points[APPLIED], tuple(spec.size), spec.channels, m.label, layout)
    cam_layer, missing = _overlays(m, layout)
    prefix = max(max(b.prefix_queries, b.prefix_keys) for b in blocks)
    depth = len(blocks)
    return ModelPlan(model=m, layout=layout, depth=depth, heads=max(b.heads for b in blocks),
                     layers=parse_layers(layers, depth, m.label), points=points,
                     prefix_names=prefix_token_names(m.model, prefix), blocks=blocks, cam_layer=cam_layer,
                     missing=missing)


def check_layer_option(layers: LayerSpec) -> None:
    """Reject a malformed ``--layers`` before any model loads (ranges are checked per model later)."""
    parse_layers(layers, depth=10 ** 4, who="any model")


def resolve_max_bytes(max_bytes: Optional[float]) -> int:
    """The page's size budget in bytes (a positive number)."""
    if max_bytes is None or isinstance(max_bytes, bool) or not max_bytes > 0:
        shown = f"{max_bytes / 1e6:g}" if isinstance(max_bytes, (int, float)) else repr(max_bytes)
        raise AttnlabError(f"--max-mb (max_bytes) must be more than 0, not {shown}; the default is 25 MB")
    return int(max_bytes)
