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
from contextlib import ExitStack, contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .adapters import FoundAttention, find_attention, supported_families
from .adapters import timm_vit
from .adapters.base import REAL_SOFTMAX
from .errors import AttnlabError
from .layout import TokenLayout
from .models.residual import Workspace

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
    """``(index, block, attention)`` for each attention module an adapter knows, in forward order."""
    return [(i, f.block_module, f.module) for i, f in enumerate(_found(model))]


def _found(model: nn.Module) -> List[FoundAttention]:
    found = find_attention(model)
    if not found:
        seen = sorted({type(m).__name__ for m in model.modules() if "attn" in type(m).__name__.lower()
                       or "attention" in type(m).__name__.lower()})
        hint = f" (found {', '.join(seen)}, which no adapter knows)" if seen else ""
        raise NoAttentionError(f"{type(model).__name__} has no ViT attention layer attnlab can capture{hint}; "
                               f"supported families: {'; '.join(supported_families())}")
    return found


def _points(f: FoundAttention) -> List[str]:
    from .models.residual import ResidualAttention

    # the timm ViT adapter serves ViT and ReViT: R_l and softmax(S_l) exist for ReViT's layers only
    keep_all = isinstance(f.module, ResidualAttention) or f.adapter.family != timm_vit.ADAPTER.family
    return [p for p in ATTN_POINTS if p in f.adapter.points and (keep_all or p not in RESIDUAL_ONLY)]


def hook_point_names(model: nn.Module) -> List[str]:
    """Every hook point name the model offers, in forward order: ``<attention path>.<point>`` and
    ``<block path>.resid_post`` (``blocks.3.attn.pattern``, ``layers.1.blocks.0.attn.pattern``)."""
    names = []
    for f in _found(model):
        names += [f"{f.path}.{p}" for p in _points(f)]
        names.append(f"{f.block}.resid_post")
    return names


def layer_of(model: nn.Module) -> Dict[str, int]:
    """Hook point name -> its layer: the attention module's place in forward order (0-based)."""
    out: Dict[str, int] = {}
    for i, f in enumerate(_found(model)):
        for p in _points(f):
            out[f"{f.path}.{p}"] = i
        out[f"{f.block}.resid_post"] = i
    return out


@contextmanager
def hooks(model: nn.Module, names_filter: NamesFilter, sink: Sink, detach: bool = True,
          transient: bool = False) -> Iterator[List[str]]:
    """Within the context, every forward pass sends the requested hook points to ``sink(name, tensor)``.

    Yields the names that will be produced. Adapters' patches and hooks are removed on exit,
    even on error. Raises if the filter matches nothing (a capture never comes back empty).
    ``transient``: the sink is done with each tensor when it returns (it keeps no reference or
    view), so attention layers that can may write every layer's maps into one kept storage
    (``models.residual.Workspace``) instead of allocating them afresh; the values are the same.
    """
    match = _match(names_filter)
    available = hook_point_names(model)
    wanted = [n for n in available if match(n)]
    if not wanted:
        raise AttnlabError(f"no hook point matches {names_filter!r}; available: {', '.join(available[:6])}, ...")
    wanted_set = set(wanted)

    def emit(name: str, tensor: torch.Tensor) -> None:
        sink(name, tensor.detach() if detach else tensor)

    workspace = Workspace() if transient else None
    with ExitStack() as stack:
        for f in _found(model):
            prefix = f"{f.path}."
            points = {p for p in ATTN_POINTS if prefix + p in wanted_set}
            if points:
                def observe(kind: str, t: torch.Tensor, prefix=prefix, points=points) -> None:
                    if kind in points:
                        emit(prefix + kind, t)
                    if kind == "scores" and "own_pattern" in points:  # the real softmax, even while one is observed
                        emit(prefix + "own_pattern", REAL_SOFTMAX(t, dim=-1))

                observe.workspace = workspace  # adapters that can reuse storage read it (None: allocate)
                f.adapter.install(f.module, observe, stack)
            name = f"{f.block}.resid_post"
            if name in wanted_set and f.block_module is not f.module:
                def block_hook(module, args, output, name=name):
                    emit(name, output[0] if isinstance(output, tuple) else output)

                stack.callback(f.block_module.register_forward_hook(block_hook).remove)
        yield wanted


class ActivationCache(dict):
    """Hook point name -> tensor, from one forward pass, plus the token layout (None where the
    model's tokens are not one patch grid) and each name's layer."""

    def __init__(self, data: Dict[str, torch.Tensor], layout: Optional[TokenLayout],
                 layers: Optional[Dict[str, int]] = None) -> None:
        super().__init__(data)
        self.layout = layout
        self.layers = dict(layers or {})

    def stack(self, point: str = "attn.pattern") -> List[torch.Tensor]:
        """The tensors of one hook point (``attn.pattern``, or just ``pattern``) for every layer, in order."""
        items = [(self.layers.get(k, i), v) for i, (k, v) in enumerate(self.items()) if k.endswith("." + point)]
        return [v for _, v in sorted(items, key=lambda kv: kv[0])]


def _layout_or_none(model: nn.Module, size: Tuple[int, int]) -> Optional[TokenLayout]:
    try:
        return TokenLayout.from_model(model, size)
    except Exception:  # windowed, pooled or non-timm models: their geometry is not one grid
        return None


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
    return out, ActivationCache(store, _layout_or_none(model, tuple(x.shape[-2:])), layer_of(model))


def capture_attention(model: nn.Module, x: torch.Tensor, point: str = "pattern") -> List[torch.Tensor]:
    """The attention every layer applies (``[B, heads, Nq, Nk]`` each), in forward order.

    ``point="own_pattern"`` gives ReViT's softmax(S_l) instead, ``"scores"`` the logits.
    """
    with torch.no_grad():
        _, cache = run_with_cache(model, x, f"*.{point}")
    return cache.stack(point)
