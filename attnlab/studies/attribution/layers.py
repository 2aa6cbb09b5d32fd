"""Which layer a CAM reads, and how pytorch-grad-cam gets to observe it.

``layer="auto"`` picks a layer whose patch tokens receive gradient from the target (see
:func:`auto_layer`, family by family): for models that read their class token, the last
block's first norm (the last block's output patch tokens feed nothing the class logit reads,
so their gradient is zero); for models that pool patch tokens (``avg``, ``max``, ``map``),
the last block's output; for CaiT the last patch block's output; for Swin and MViTv2 the
last stage's output.

The chosen module is observed through a parameter-free tap (an ``nn.Identity`` attached
to the model for the duration of the call): the module's output, or the first element
of a tuple output, passes through it. That is what lets pytorch-grad-cam hook ReViT
blocks, which return ``(tokens, logits)``, and what AblationCAM replaces. The model is
left exactly as it was, even on error.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Iterator, Tuple

from torch import nn

from ...adapters import find_attention
from ...errors import AttnlabError

#: timm ``global_pool`` values whose head reads the patch tokens rather than the class token.
PATCH_POOLS = ("avg", "avgmax", "max", "map")
TAP = "_attnlab_cam_tap"


def pools_patch_tokens(model: nn.Module) -> bool:
    """Whether the classifier reads the patch tokens (avg / max / map pooling), not a class token."""
    return getattr(model, "global_pool", "token") in PATCH_POOLS


#: A block's first norm (the input of its attention): timm, Hugging Face ViT / DeiT, CLIP.
BLOCK_NORMS = ("norm1", "layernorm_before", "layer_norm1")


def _first_norm(block_path: str, block: nn.Module) -> str:
    norm = next((n for n in BLOCK_NORMS if isinstance(getattr(block, n, None), nn.Module)), None)
    if norm is None:
        raise AttnlabError(f"{block_path} has no norm1; pass --layer NAME")
    return f"{block_path}.{norm}"


def _reads_class_token(model: nn.Module) -> bool:
    return not pools_patch_tokens(model) and (getattr(model, "cls_token", None) is not None
                                              or int(getattr(model, "num_prefix_tokens", 0) or 0) > 0)


def auto_layer(model: nn.Module) -> str:
    """The default target layer: one whose patch tokens get gradient from the class logit.

    - ViT-style models that read a class token (timm ViT / DeiT / ReViT / CB, Hugging Face ViT,
      DeiT, DINOv2, CLIP): the last block's first norm, ``blocks.11.norm1``
      (``hf.vit.layers.11.layernorm_before``); the last block's output patch tokens get no gradient;
    - models that pool patch tokens (avg / max / map: EVA02, BEiT, RelPos): the last block's output;
    - CaiT: the last patch block's output (``blocks.23``): the patch tokens its class attention reads;
    - Swin and MViTv2: the last stage's output (``layers.3``, ``stages.3``) on that stage's grid
      (an MViTv2 that reads a class token: its last block's ``norm1``).
    """
    from ...geometry import stage_path

    found = find_attention(model)
    if not found:  # no attention an adapter knows: a ViT-like module tree by its names
        blocks = getattr(model, "blocks", None)
        if blocks is None or len(blocks) == 0:
            raise AttnlabError(f"{type(model).__name__} has no transformer blocks; pass --layer NAME")
        last = len(blocks) - 1
        return f"blocks.{last}" if pools_patch_tokens(model) else _first_norm(f"blocks.{last}", blocks[last])
    kinds = {f.adapter.geometry for f in found}
    if kinds & {"window", "pooled"}:
        last = found[-1]
        stage = stage_path(last.path)
        if stage is None or _reads_class_token(model):
            return _first_norm(last.block, last.block_module)
        return stage
    if "class" in kinds:  # CaiT: the last self-attention block's patch tokens feed the class attention
        return [f for f in found if f.adapter.geometry == "grid"][-1].block
    last = found[-1]
    return last.block if pools_patch_tokens(model) else _first_norm(last.block, last.block_module)


def resolve_layer(model: nn.Module, layer: str = "auto") -> Tuple[str, nn.Module]:
    """``(name, module)`` for ``auto`` or a module path such as ``blocks.4.norm1``."""
    name = auto_layer(model) if layer in (None, "", "auto") else str(layer).strip()
    modules = {n: m for n, m in model.named_modules() if n and TAP not in n}
    if name not in modules:
        close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.6)
        blocks = [n for n in modules if n.startswith("blocks.") and n.count(".") <= 2 and
                  (n.count(".") == 1 or n.endswith(".norm1"))]
        shown = close or (blocks[:2] + blocks[-2:] + [n for n in ("norm", "fc_norm") if n in modules]) \
            or [f.block for f in find_attention(model)][-2:]  # Swin, MViTv2, Hugging Face: their last blocks
        raise AttnlabError(f"unknown layer {name!r}; valid layers include {', '.join(dict.fromkeys(shown))} "
                           f"(module paths of the model, {len(modules)} in all)")
    return name, modules[name]


@contextmanager
def tap_layer(model: nn.Module, module: nn.Module) -> Iterator[nn.Module]:
    """An ``nn.Identity`` the module's (first) output passes through, attached to ``model``.

    pytorch-grad-cam hooks the tap, so tuple outputs work; AblationCAM swaps the tap (it
    finds it among the model's modules), which is why the hook looks it up at call time.
    """
    tap = nn.Identity()
    model.add_module(TAP, tap)

    def hook(mod: nn.Module, args: tuple, output):  # noqa: ANN001
        current = model._modules[TAP]
        if isinstance(output, tuple):
            return (current(output[0]),) + tuple(output[1:])
        return current(output)

    handle = module.register_forward_hook(hook)
    try:
        yield tap
    finally:
        handle.remove()
        model._modules.pop(TAP, None)
