"""Named hook points and ``run_with_cache``-style capture of attention and tokens.

Hook point names, per block ``i`` (in the spirit of TransformerLens):

    blocks.{i}.attn.scores        pre-softmax logits of the layer itself, S_l  [B, heads, N, N]
    blocks.{i}.attn.mixed_scores  ReViT only: the mixed logits R_l            [B, heads, N, N]
    blocks.{i}.attn.own_pattern   ReViT only: softmax(S_l)                    [B, heads, N, N]
    blocks.{i}.attn.pattern       the attention actually applied, A_l         [B, heads, N, N]
    blocks.{i}.resid_post         the block's output tokens                   [B, N, C]

Only what the filter asks for is computed and kept. Attention is captured by running
each attention module explicitly (``explicit_attention``, the same computation as timm's
fused and unfused paths) for the duration of the capture, so it works on any timm ViT
built with fused attention ON, with no global flag set beforehand, and leaves the model
exactly as it found it. A model without a recognised attention layer raises: a capture
never comes back empty.

Note for CB models: a block's token mixing also includes the uniform broadcast term,
which no attention hook sees (``attnlab.models.broadcast``).
"""
from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import AttnlabError
from .layout import TokenLayout

NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]
Sink = Callable[[str, torch.Tensor], None]

ATTN_POINTS = ("scores", "mixed_scores", "own_pattern", "pattern")
RESIDUAL_ONLY = ("mixed_scores", "own_pattern")


class NoAttentionError(AttnlabError):
    """The model has no attention layer that attnlab can capture."""


def _match(names_filter: NamesFilter) -> Callable[[str], bool]:
    if names_filter is None:
        return lambda name: True
    if callable(names_filter):
        return names_filter
    patterns = [names_filter] if isinstance(names_filter, str) else list(names_filter)
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def attention_layers(model: nn.Module) -> List[Tuple[int, nn.Module, nn.Module]]:
    """``(index, block, attention)`` for each transformer block, in forward order."""
    from timm.layers import Attention

    blocks = getattr(model, "blocks", None)
    out = []
    if blocks is not None:
        for i, blk in enumerate(blocks):
            attn = getattr(blk, "attn", None)
            if isinstance(attn, Attention):
                out.append((i, blk, attn))
    if not out:
        found = sorted({type(m).__name__ for m in model.modules() if "attn" in type(m).__name__.lower()})
        hint = f" (found {', '.join(found)}, which attnlab cannot capture)" if found else ""
        raise NoAttentionError(f"{type(model).__name__} has no ViT attention layer to capture{hint}; "
                               "attnlab captures timm ViT-family models (VisionTransformer, DeiT, ReViT, CB)")
    return out


def _is_residual(attn: nn.Module) -> bool:
    from .models.residual import ResidualAttention

    return isinstance(attn, ResidualAttention)


def hook_point_names(model: nn.Module) -> List[str]:
    """Every hook point name the model offers, in forward order."""
    names = []
    for i, _, attn in attention_layers(model):
        for point in ATTN_POINTS:
            if point in RESIDUAL_ONLY and not _is_residual(attn):
                continue
            names.append(f"blocks.{i}.attn.{point}")
        names.append(f"blocks.{i}.resid_post")
    return names


def _capturing_forward(attn: nn.Module, residual: bool, observe: Callable[[str, torch.Tensor], None]):
    from .models.residual import explicit_attention

    if residual:
        def forward(x, residual=None, alpha=None, attn_mask=None):
            return explicit_attention(attn, x, residual, alpha, attn_mask, observe=observe)
    else:
        def forward(x, attn_mask=None, is_causal=False):
            if is_causal:
                raise NotImplementedError("attnlab does not capture causal attention")
            return explicit_attention(attn, x, None, None, attn_mask, observe=observe)[0]
    return forward


@contextmanager
def hooks(model: nn.Module, names_filter: NamesFilter, sink: Sink, detach: bool = True) -> Iterator[List[str]]:
    """Within the context, every forward pass sends the requested hook points to ``sink(name, tensor)``.

    Yields the names that will be produced. Hooks and patched forwards are removed on exit,
    even on error. Raises if the filter matches nothing (a capture never comes back empty).
    """
    match = _match(names_filter)
    wanted = [n for n in hook_point_names(model) if match(n)]
    if not wanted:
        raise AttnlabError(f"no hook point matches {names_filter!r}; available: "
                           f"{', '.join(hook_point_names(model)[:6])}, ...")
    wanted_set = set(wanted)
    handles = []
    patched: List[Tuple[nn.Module, Optional[Callable]]] = []

    def emit(name: str, tensor: torch.Tensor) -> None:
        sink(name, tensor.detach() if detach else tensor)

    try:
        for i, blk, attn in attention_layers(model):
            prefix = f"blocks.{i}.attn."
            points = {p for p in ATTN_POINTS if prefix + p in wanted_set}
            if points:
                def observe(kind: str, t: torch.Tensor, prefix=prefix, points=points) -> None:
                    if kind in points:
                        emit(prefix + kind, t)
                    if kind == "scores" and "own_pattern" in points:
                        emit(prefix + "own_pattern", t.softmax(dim=-1))

                patched.append((attn, attn.__dict__.get("forward")))
                attn.forward = _capturing_forward(attn, _is_residual(attn), observe)
            name = f"blocks.{i}.resid_post"
            if name in wanted_set:
                def block_hook(module, args, output, name=name):
                    emit(name, output[0] if isinstance(output, tuple) else output)

                handles.append(blk.register_forward_hook(block_hook))
        yield wanted
    finally:
        for h in handles:
            h.remove()
        for module, original in patched:
            if original is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = original


class ActivationCache(dict):
    """Hook point name -> tensor, from one forward pass, plus the token layout."""

    def __init__(self, data: Dict[str, torch.Tensor], layout: TokenLayout) -> None:
        super().__init__(data)
        self.layout = layout

    def stack(self, point: str = "attn.pattern") -> List[torch.Tensor]:
        """The tensors of one hook point for every layer that has it, in layer order."""
        items = [(int(k.split(".")[1]), v) for k, v in self.items() if k.split(".", 2)[2] == point]
        return [v for _, v in sorted(items, key=lambda kv: kv[0])]


def run_with_cache(
    model: nn.Module,
    x: torch.Tensor,
    names_filter: NamesFilter = None,
    detach: bool = True,
) -> Tuple[torch.Tensor, ActivationCache]:
    """Run the model and return ``(output, cache)`` with the hook points the filter selects.

    ``names_filter``: None (everything), a glob such as ``"*.attn.pattern"``, a list of
    globs, or a predicate on names.
    """
    store: Dict[str, torch.Tensor] = {}
    with hooks(model, names_filter, store.__setitem__, detach=detach):
        out = model(x)
    return out, ActivationCache(store, TokenLayout.from_model(model, tuple(x.shape[-2:])))


def capture_attention(model: nn.Module, x: torch.Tensor, point: str = "pattern") -> List[torch.Tensor]:
    """The attention every layer applies (``[B, heads, N, N]`` each, rows sum to 1), in order.

    ``point="own_pattern"`` gives ReViT's softmax(S_l) instead, ``"scores"`` the logits.
    """
    with torch.no_grad():
        _, cache = run_with_cache(model, x, f"*.attn.{point}")
    return cache.stack(f"attn.{point}")
