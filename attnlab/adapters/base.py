"""What an attention adapter is, and the two ways attnlab sees inside an attention module.

An adapter names the attention classes of one family and patches such a module for the
duration of a capture so that, while the module's own forward runs unchanged around it,
the attention it computes is handed to ``observe(point, tensor)``:

- ``scores``: the logits that go into the softmax, bias and mask included ``[B, heads, Nq, Nk]``
- ``pattern``: the attention applied to the values (rows sum to 1 unless the family mixes
  heads after the softmax, as CaiT's talking heads do)

Two interceptors do the seeing, both scoped to the module's forward (nothing outside it
is touched, and everything is restored on exit, even on error):

- :func:`explicit_sdpa` stands in for ``torch.nn.functional.scaled_dot_product_attention``
  and computes it explicitly, ``softmax(q k^T * scale + mask) v``, from the very ``q``,
  ``k``, ``v`` and mask the module passes (modules with a ``fused_attn`` switch are put on
  their fused path for the capture, so every bias and mask reaches it);
- :func:`observed_softmax` watches the module's softmax call (``Tensor.softmax`` and
  ``torch.nn.functional.softmax``) for modules that compute attention by hand.
"""
from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

Observe = Callable[[str, torch.Tensor], None]
# An Observe may carry ``.workspace`` (``models.residual.Workspace``, or None): set when its sink
# keeps nothing, so a patch may write each layer's maps into that kept storage.

REAL_SOFTMAX = torch.Tensor.softmax  # the real one, even while observed_softmax stands in for it


def explicit_sdpa(observe: Observe) -> Callable[..., torch.Tensor]:
    """``F.scaled_dot_product_attention`` computed explicitly, emitting ``scores`` and ``pattern``."""

    def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
             dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
             enable_gqa: bool = False) -> torch.Tensor:
        scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
        if key.shape[-3] != query.shape[-3]:  # grouped-query attention: each key head serves several queries
            repeat = query.shape[-3] // key.shape[-3]
            key, value = key.repeat_interleave(repeat, dim=-3), value.repeat_interleave(repeat, dim=-3)
        scores = (query * scale) @ key.transpose(-2, -1)                 # q k^T / sqrt(d)
        if is_causal:
            nq, nk = scores.shape[-2:]
            causal = torch.ones(nq, nk, dtype=torch.bool, device=scores.device).tril(diagonal=nk - nq)
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:                                        # + bias, or -inf where masked
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
                else scores + attn_mask
        observe("scores", scores)
        pattern = REAL_SOFTMAX(scores, dim=-1)
        observe("pattern", pattern)
        if dropout_p > 0.0:
            pattern = F.dropout(pattern, p=dropout_p)
        return pattern @ value

    return sdpa


@contextmanager
def _swapped(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def observed_softmax(observe: Observe) -> Callable[[], Any]:
    """A context factory: inside it, the softmax calls of attention code are observed.

    The tensor going in is ``scores``, the one coming out ``pattern``.
    """
    tensor_softmax, functional_softmax = torch.Tensor.softmax, F.softmax

    def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = tensor_softmax(self, *args, **kwargs)
        observe("scores", self)
        observe("pattern", out)
        return out

    def function(input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:  # noqa: A002
        out = functional_softmax(input, *args, **kwargs)
        observe("scores", input)
        observe("pattern", out)
        return out

    @contextmanager
    def context() -> Iterator[None]:
        with _swapped(torch.Tensor, "softmax", method), _swapped(F, "softmax", function):
            yield

    return context


@dataclass(frozen=True)
class Adapter:
    """How attnlab sees one family's attention modules.

    ``classes()`` returns the module classes (imported lazily: a family's library may be
    absent); ``way`` is ``"sdpa"`` or ``"softmax"`` (see the module docstring) or ``"custom"``
    with ``patch`` doing it; ``geometry`` says how queries and keys sit in the image
    (``grid``: one patch grid with prefix tokens, the ViT case; ``window``; ``pooled``;
    ``class``: only the class token queries); ``distribution`` is False where the applied
    attention is no distribution over keys (CaiT's talking heads), so metrics read the
    per-head softmax (``own_pattern``) instead. The block whose output is ``resid_post`` is the
    nearest enclosing module whose path ends in an index (``blocks.3``, ``layers.1.blocks.0``).
    """

    family: str
    classes: Callable[[], Tuple[type, ...]]
    way: str = "sdpa"
    geometry: str = "grid"
    points: Tuple[str, ...] = ("scores", "pattern")
    distribution: bool = True  # False: ``pattern`` is not a distribution per row (heads mixed after the softmax)
    patch: Optional[Callable[[nn.Module, Observe, ExitStack], None]] = field(default=None, compare=False)

    def matches(self, module: nn.Module) -> bool:
        try:
            classes = self.classes()
        except ImportError:
            return False
        return type(module) in classes

    def install(self, module: nn.Module, observe: Observe, stack: ExitStack) -> None:
        """Patch ``module`` until ``stack`` closes: its forward runs as before, observed."""
        if self.patch is not None:
            self.patch(module, observe, stack)
            return
        if hasattr(module, "fused_attn") and self.way == "sdpa":  # take the path every bias and mask reaches
            stack.enter_context(_attribute(module, "fused_attn", True))
        wrap_forward(module, stack, self._context(observe))

    def _context(self, observe: Observe) -> Callable[[], Any]:
        sdpa = lambda: _swapped(F, "scaled_dot_product_attention", explicit_sdpa(observe))  # noqa: E731
        if self.way == "sdpa":
            return sdpa
        if self.way == "softmax":
            return observed_softmax(observe)
        if self.way == "sdpa+softmax":  # whichever of the two the module's implementation calls
            softmax = observed_softmax(observe)

            @contextmanager
            def both() -> Iterator[None]:
                with sdpa(), softmax():
                    yield

            return both
        raise ValueError(f"adapter {self.family}: unknown way {self.way!r}")


@contextmanager
def _attribute(module: nn.Module, name: str, value: Any) -> Iterator[None]:
    """Set an instance attribute for the duration, then put back exactly what was there."""
    had = name in module.__dict__
    old = module.__dict__.get(name)
    module.__dict__[name] = value
    try:
        yield
    finally:
        if had:
            module.__dict__[name] = old
        else:
            module.__dict__.pop(name, None)


def wrap_forward(module: nn.Module, stack: ExitStack, context: Callable[[], Any]) -> None:
    """Run ``module``'s own forward inside ``context()`` until ``stack`` closes."""
    bound = module.forward  # an instance forward already set (another tool's patch) is kept and restored
    had = "forward" in module.__dict__

    def forward(*args: Any, **kwargs: Any) -> Any:
        with context():
            return bound(*args, **kwargs)

    module.forward = forward

    def restore() -> None:
        if had:
            module.forward = bound
        else:
            module.__dict__.pop("forward", None)

    stack.callback(restore)
