"""ReViT: residual attention across blocks (Diko et al., arXiv 2402.11301).

Each block l computes its pre-softmax logits S_l and mixes them with the logits the
previous block passed on:

    S_l = scale * Q_l K_l^T                       [B, heads, N, N]
    R_1 = S_1
    R_l = a * S_l + (1 - a) * R_{l-1}             l >= 2
    A_l = softmax(R_l),   out_l = A_l V_l

The MIXED logits R_l are what block l passes on, so R_l is an exponential moving average
of all earlier blocks' logits: low-level, local attention survives into deep layers.
``a`` is one learnable scalar shared by all blocks (init 0.5, no weight decay), as in the
official code; ``learn_alpha=False`` fixes it, ``alpha_per_layer=True`` learns one per block
(blocks 2..L; block 1 has nothing to mix with).

Everything else is timm's VisionTransformer, so ViT and ReViT weights share one layout
(ReViT adds ``alpha``). ReViT must materialise its logits (no fused attention); the mix
is one fused ``torch.lerp`` on the logits, without extra copies.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from timm.layers import Attention
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Block, VisionTransformer

from ..scratch import ScratchBuffer
from .broadcast import ContextBroadcast, check_placement, mlp_branch


Observer = Callable[[str, torch.Tensor], None]


class Workspace:
    """Kept storage (one :class:`~attnlab.scratch.ScratchBuffer` per role) for the attention maps of
    passes whose observer keeps none of them.

    At 1,370 tokens a map is 90 MB an image: allocated afresh in every layer, it costs more than
    the arithmetic on it. With a workspace, each layer writes its logits and its pattern into the
    same storage; only an observer that is done with a tensor when it returns may be given one
    (``capture.hooks``'s ``transient``).
    """

    def __init__(self) -> None:
        self._kept: Dict[str, ScratchBuffer] = {}

    def tensor(self, role: str, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised ``shape`` tensor of ``like``'s dtype and device over ``role``'s kept storage."""
        return self._kept.setdefault(role, ScratchBuffer()).tensor(shape, like)


def explicit_attention(
    attn: Attention,
    x: torch.Tensor,
    residual: Optional[torch.Tensor] = None,
    alpha: Optional[torch.Tensor | float] = None,
    attn_mask: Optional[torch.Tensor] = None,
    observe: Optional[Observer] = None,
    workspace: Optional[Workspace] = None,
    keep_logits: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """timm's multi-head self-attention with the logits materialised.

    Computes exactly what ``timm.layers.Attention`` computes (fused or not), optionally
    mixing the logits with ``residual`` (ReViT). Returns ``(out, logits)`` where
    ``logits`` is what a residual block passes on (R_l, or S_l without a residual).
    ``observe(name, tensor)``, when given, sees ``"scores"`` (the layer's own S_l),
    ``"mixed_scores"`` (R_l; equal to S_l without a residual) and ``"pattern"`` (the applied
    attention, before attention dropout). With a ``workspace`` (an observer that keeps nothing) the
    pattern, and the logits unless ``keep_logits`` (a residual block passes them on), are written
    into its kept storage: the same values, without fresh map-sized allocations.
    """
    B, N, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)

    if workspace is not None and torch.is_grad_enabled():
        workspace = None  # written-into storage has no autograd history: only passes without gradients
    shape = (B, attn.num_heads, N, N)
    reuse = workspace is not None and not keep_logits
    logits = torch.matmul(q * attn.scale, k.transpose(-2, -1),   # S_l
                          out=workspace.tensor("logits", shape, q) if reuse else None)
    if observe is not None:
        observe("scores", logits)
    if residual is not None:
        if alpha is None:
            raise ValueError("residual attention needs alpha when a residual is given")
        logits = torch.lerp(residual, logits, alpha)             # R_l = a S_l + (1 - a) R_{l-1}
    if observe is not None:
        observe("mixed_scores", logits)                          # R_l (R_1 = S_1)
    scores = logits if attn_mask is None else logits + attn_mask
    pattern = scores.softmax(dim=-1) if workspace is None else \
        torch.softmax(scores, dim=-1, out=workspace.tensor("pattern", shape, scores))
    if observe is not None:
        observe("pattern", pattern)
    x = attn.attn_drop(pattern) @ v

    x = x.transpose(1, 2).reshape(B, N, attn.num_heads * attn.head_dim)
    x = attn.norm(x)
    if gate is not None:
        x = x * gate
    x = attn.proj_drop(attn.proj(x))
    return x, logits


class ResidualAttention(Attention):
    """timm's multi-head self-attention whose pre-softmax logits are mixed with the
    previous block's and passed on.

    ``forward(x, residual, alpha)`` returns ``(out, logits)`` where ``logits`` is R_l.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fused_attn = False  # the logits are the point: they are always materialised

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        residual: Optional[torch.Tensor] = None,
        alpha: Optional[torch.Tensor | float] = None,
        attn_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        return explicit_attention(self, x, residual, alpha, attn_mask)


class ResidualBlock(Block):
    """timm's pre-norm block with residual attention, optionally with context broadcasting.

    ``forward(x, residual, alpha)`` returns ``(x, logits)``.
    """

    def __init__(
        self,
        dim: int,
        *args: Any,
        cb_placement: Optional[str] = None,
        cb_learnable_scale: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs["attn_layer"] = ResidualAttention
        super().__init__(dim, *args, **kwargs)
        if cb_placement is not None:
            self.cb_placement = check_placement(cb_placement)
            self.broadcast = ContextBroadcast(dim, learnable_scale=cb_learnable_scale)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        residual: Optional[torch.Tensor] = None,
        alpha: Optional[torch.Tensor | float] = None,
        attn_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        y, logits = self.attn(self.norm1(x), residual, alpha, attn_mask=attn_mask)
        x = x + self.drop_path1(self.ls1(y))
        return mlp_branch(self, x), logits


class ResidualVisionTransformer(VisionTransformer):
    """timm's VisionTransformer with residual attention threaded through its blocks.

    Args (beyond timm's VisionTransformer):
        alpha: initial (or fixed) mixing weight ``a``; 1.0 reduces ReViT to ViT.
        learn_alpha: learn ``a`` (a parameter, no weight decay) or keep it fixed (a buffer).
        alpha_per_layer: one ``a`` per block (blocks 1..depth-1) instead of one shared.
        cb_placement: add context broadcasting to every block ("mlp" or "block"), or None.
        cb_learnable_scale: the CB_S variant (a learnable per-channel scale).
    """

    def __init__(
        self,
        *args: Any,
        alpha: float = 0.5,
        learn_alpha: bool = True,
        alpha_per_layer: bool = False,
        cb_placement: Optional[str] = None,
        cb_learnable_scale: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs["block_fn"] = partial(
            ResidualBlock, cb_placement=cb_placement, cb_learnable_scale=cb_learnable_scale
        )
        super().__init__(*args, **kwargs)
        self.alpha_per_layer = alpha_per_layer
        # Block 0 has no predecessor to mix with, so per-layer `a` starts at block 1.
        init = torch.full((len(self.blocks) - 1 if alpha_per_layer else 1,), float(alpha))
        if learn_alpha:
            self.alpha = nn.Parameter(init)
        else:
            self.register_buffer("alpha", init, persistent=False)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set(super().no_weight_decay()) | {"alpha"}

    def block_alpha(self, index: int) -> Optional[torch.Tensor]:
        """The mixing weight ``a`` that block ``index`` uses (None for block 0, which does not mix)."""
        if index == 0:
            return None
        return self.alpha[index - 1 if self.alpha_per_layer else 0]

    def _run_blocks(self, x: torch.Tensor, last: Optional[int] = None, attn_mask=None):
        """Run blocks 0..last, threading the mixed logits; yields each block's output."""
        logits: Optional[torch.Tensor] = None
        blocks = self.blocks if last is None else self.blocks[: last + 1]
        for i, blk in enumerate(blocks):
            alpha = self.block_alpha(i)
            if self.grad_checkpointing and not torch.jit.is_scripting() and attn_mask is None:
                x, logits = checkpoint(blk, x, logits, alpha, use_reentrant=False)
            else:
                x, logits = blk(x, logits, alpha, attn_mask=attn_mask)
            yield x

    def forward_features(
        self,
        x: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if is_causal:
            raise NotImplementedError("ReViT does not support causal attention")
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        for x in self._run_blocks(x, attn_mask=attn_mask):
            pass
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        **unsupported: Any,
    ):
        """timm's ``forward_intermediates`` (block outputs by index), for residual attention."""
        if any(v not in (None, False) for v in unsupported.values()):
            raise NotImplementedError(f"ReViT forward_intermediates does not support {sorted(unsupported)}")
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError("output_fmt must be 'NCHW' or 'NLC'")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        B, _, height, width = x.shape
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        intermediates = []
        for i, x in enumerate(self._run_blocks(x, last=max_index if stop_early else None)):
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        p = self.num_prefix_tokens
        prefix = [y[:, :p] for y in intermediates] if p else None
        intermediates = [y[:, p:] for y in intermediates]
        if output_fmt == "NCHW":
            H, W = self.patch_embed.dynamic_feat_size((height, width))
            intermediates = [y.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if return_prefix_tokens and prefix is not None:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates
