"""ReMViTv2: residual attention on timm's MViTv2 (``MultiScaleVit``), as the official ReViT code does it.

Each block l of every stage computes its own logits and mixes them with the map block l-1
carried, resampled to its own heads and (queries, keys) grid (``model/attention.py`` of
ADiko1997/ReViT):

    S_l = (q * scale) k^T                          [B, heads, Nq, Nk], no relative position yet
    res = mean over heads of C_{l-1}               when the head count changes (broadcast back)
    res = T(res)                                   when (Nq, Nk) changes (:func:`resample_carried`)
    C_l = alpha * S_l + (1 - alpha) * res;  C_1 = S_1
    C_l += P_l                                     decomposed rel-pos, in place: C_l carries P_l
    A_l = softmax(C_l),  out_l = A_l v_l (+ q_l, MViTv2's residual pooling)

``alpha`` is one learnable scalar shared by all blocks (init 0.5, no weight decay). With the
residual off (``residual=False``) the model is timm's MViTv2, weight for weight and output for
output. The carried maps live on square token grids, so a class token is refused.

The attention, block and stage classes are timm's with only ``forward`` replaced: the model is
built by timm's own constructor and its modules are then given these classes (no new weights).
"""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from timm.models.mvitv2 import (MultiScaleAttention, MultiScaleBlock, MultiScaleVit, MultiScaleVitCfg,
                                MultiScaleVitStage, cal_rel_pos_type, model_cfgs as timm_cfgs,
                                reshape_post_pool, reshape_pre_pool)
from timm.models.mvitv2 import checkpoint_filter_fn as timm_filter

Observer = Callable[[str, torch.Tensor], None]
Carried = Optional[torch.Tensor]


def _side(n: int, what: str) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"ReMViTv2 carries attention maps on square token grids; {n} {what} tokens "
                         "do not form one (a class token or a non-square input?)")
    return side


def resample_carried(res: torch.Tensor, heads: int, n_q: int, n_k: int) -> torch.Tensor:
    """The carried map ``res`` ``[B, h, Nq', Nk']`` made to fit ``[B, heads, n_q, n_k]`` (official rule).

    Heads: the mean over heads when the count changes (broadcast against the new heads).
    Grids: kernel = stride = floor(sqrt(N') / sqrt(N)), no padding; a shrinking query grid is
    average-pooled over the query axes, a shrinking key grid over the key axes, a growing key grid
    upsampled (nearest).
    """
    if res.shape[1] != heads:
        res = res.mean(1, keepdim=True)                          # mean over heads of C_{l-1}
    B, h, nq0, nk0 = res.shape
    if nq0 < n_q:
        raise ValueError(f"ReMViTv2 cannot carry a map of {nq0} queries to a block with more ({n_q})")
    if nq0 > n_q:                                                # query grid shrinks: pool the query axes
        s0, s = _side(nq0, "query"), _side(n_q, "query")
        grid = res.transpose(-1, -2).reshape(B * h, nk0, s0, s0)
        grid = F.avg_pool2d(grid, kernel_size=s0 // s, stride=s0 // s)
        res = grid.reshape(B, h, nk0, -1).transpose(-1, -2)
    nq = res.shape[-2]
    if nk0 != n_k:                                               # key grid changes: pool or upsample it
        s0, s = _side(nk0, "key"), _side(n_k, "key")
        grid = res.reshape(B * h, nq, s0, s0)
        if nk0 > n_k:
            grid = F.avg_pool2d(grid, kernel_size=s0 // s, stride=s0 // s)
        else:
            grid = F.interpolate(grid, scale_factor=s // s0, mode="nearest")
        res = grid.reshape(B, h, nq, -1)
    if res.shape[-2:] != (n_q, n_k):
        raise ValueError(f"ReMViTv2 cannot resample a {nq0}x{nk0} map to {n_q}x{n_k}: the grids are "
                         "not integer multiples of each other")
    return res


class ResidualMultiScaleAttention(MultiScaleAttention):
    """timm's pooled attention whose logits mix with the carried map; returns ``(x, q_size, C_l)``.

    ``observer`` (None unless a capture sets it) sees ``scores`` (the block's own logits with
    rel-pos, S_l + P_l), ``mixed_scores`` (C_l, rel-pos included: what is carried) and ``pattern``
    (softmax(C_l), the attention applied).
    """

    carries_logits = True  # capture offers mixed_scores and own_pattern for it
    observer: Optional[Observer] = None

    def _pool(self, t: torch.Tensor, pool: Optional[nn.Module], norm: Optional[nn.Module],
              feat_size: List[int]) -> Tuple[torch.Tensor, List[int]]:
        size = feat_size
        if pool is not None:
            t, tok = reshape_pre_pool(t, feat_size, self.has_cls_token)
            t, size = reshape_post_pool(pool(t), self.num_heads, tok)
        return (t if norm is None else norm(t)), size

    def _rel_pos(self, attn: torch.Tensor, q: torch.Tensor, q_size: List[int], k_size: List[int]) -> torch.Tensor:
        if self.rel_pos_type != "spatial":
            return attn
        return cal_rel_pos_type(attn, q, self.has_cls_token, q_size, k_size, self.rel_pos_h, self.rel_pos_w)

    def forward(self, x: torch.Tensor, feat_size: List[int], carried: Carried = None,  # type: ignore[override]
                alpha: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[int], torch.Tensor]:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(dim=0)
        q, q_size = self._pool(q, self.pool_q, self.norm_q, feat_size)
        k, k_size = self._pool(k, self.pool_k, self.norm_k, feat_size)
        v, _ = self._pool(v, self.pool_v, self.norm_v, feat_size)

        attn = (q * self.scale) @ k.transpose(-2, -1)                     # S_l
        observe = self.observer
        if observe is not None:
            observe("scores", self._rel_pos(attn.clone(), q, q_size, k_size))   # S_l + P_l
        if carried is not None and alpha is not None:
            res = resample_carried(carried, self.num_heads, attn.shape[-2], attn.shape[-1])
            attn = alpha * attn + (1 - alpha) * res                        # C_l = a S_l + (1 - a) T(res)
        attn = self._rel_pos(attn, q, q_size, k_size)                      # C_l += P_l (in place)
        pattern = attn.softmax(dim=-1)                                     # A_l = softmax(C_l)
        if observe is not None:
            observe("mixed_scores", attn)
            observe("pattern", pattern)
        x = pattern @ v
        if self.residual_pooling:
            x = x + q
        x = self.proj(x.transpose(1, 2).reshape(B, -1, self.dim_out))
        return x, q_size, attn


class ResidualMultiScaleBlock(MultiScaleBlock):
    """timm's MViTv2 block passing the carried map through its attention; returns ``(x, feat, C_l)``."""

    def forward(self, x: torch.Tensor, feat_size: List[int], carried: Carried = None,  # type: ignore[override]
                alpha: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[int], torch.Tensor]:
        x_norm = self.norm1(x)
        x_shortcut = x if self.shortcut_proj_attn is None else self.shortcut_proj_attn(x_norm)
        x_shortcut = self._shortcut_pool(x_shortcut, feat_size)
        x, feat_size_new, carried = self.attn(x_norm, feat_size, carried, alpha)
        x = x_shortcut + self.drop_path1(x)
        x_norm = self.norm2(x)
        x_shortcut = x if self.shortcut_proj_mlp is None else self.shortcut_proj_mlp(x_norm)
        x = x_shortcut + self.drop_path2(self.mlp(x_norm))
        return x, feat_size_new, carried


class ResidualMultiScaleVitStage(MultiScaleVitStage):
    """timm's MViTv2 stage threading the carried map from block to block."""

    def forward(self, x: torch.Tensor, feat_size: List[int], carried: Carried = None,  # type: ignore[override]
                alpha: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[int], Carried]:
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x, feat_size, carried = checkpoint(blk, x, feat_size, carried, alpha)
            else:
                x, feat_size, carried = blk(x, feat_size, carried, alpha)
        return x, feat_size, carried


class ResidualMultiScaleVit(MultiScaleVit):
    """timm's ``MultiScaleVit`` with ReViT's residual attention (see the module docstring).

    Args (beyond timm's): ``alpha`` the initial (or fixed) mixing weight; ``learn_alpha`` learn it
    (a parameter, no weight decay) or keep it fixed (a buffer); ``residual=False`` carries nothing
    (timm's MViTv2 exactly).
    """

    def __init__(self, cfg: MultiScaleVitCfg, *args: Any, alpha: float = 0.5, learn_alpha: bool = True,
                 residual: bool = True, **kwargs: Any) -> None:
        if cfg.use_cls_token:
            raise ValueError("ReMViTv2 needs a class-token-free MViTv2 (use_cls_token=False): the carried "
                             "attention maps are pooled on square token grids, and 56*56 + 1 = 3137 tokens "
                             "have no integer square root")
        if cfg.pool_first:
            raise ValueError("ReMViTv2 supports pool_first=False only (the official models' setting)")
        super().__init__(cfg, *args, **kwargs)
        for stage in self.stages:  # timm's modules, given the residual forwards (no weights change)
            stage.__class__ = ResidualMultiScaleVitStage
            for blk in stage.blocks:
                blk.__class__ = ResidualMultiScaleBlock
                blk.attn.__class__ = ResidualMultiScaleAttention
        self.residual = bool(residual)
        init = torch.tensor([float(alpha)])
        if learn_alpha:
            self.alpha = nn.Parameter(init)
        else:
            self.register_buffer("alpha", init)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set(super().no_weight_decay()) | {"alpha"}

    def stage_summary(self) -> Dict[str, Any]:
        """What ``attnlab info`` shows of the stages: blocks, widths and heads per stage, and alpha."""
        return dict(stages=list(self.depths), widths=[s.blocks[-1].dim_out for s in self.stages],
                    heads_per_stage=[s.blocks[0].attn.num_heads for s in self.stages],
                    residual="learnable alpha, shared" if isinstance(self.alpha, nn.Parameter) else "fixed alpha")

    def _run_stages(self, x: torch.Tensor, last: Optional[int] = None) -> Iterator[Tuple[torch.Tensor, List[int]]]:
        """Patch embedding, then stages 0..last threading the carried map; yields (x, feat_size) per stage."""
        x, feat_size = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        carried: Carried = None
        alpha = self.alpha[0] if self.residual else None
        stages = self.stages if last is None else self.stages[: last + 1]
        for stage in stages:
            x, feat_size, carried = stage(x, feat_size, carried, alpha)  # alpha None: nothing is mixed
            yield x, feat_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for x, _ in self._run_stages(x):
            pass
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's ``forward_intermediates`` (stage outputs by index), with the carried map threaded."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError("output_fmt must be 'NCHW' or 'NLC'")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_idx = len(self.stages) - 1
        B = x.shape[0]
        intermediates = []
        for i, (x, feat) in enumerate(self._run_stages(x, max_index if stop_early else None)):
            if i in take_indices:
                y = self.norm(x) if norm and i == last_idx else x
                if output_fmt == "NCHW":
                    y = y.reshape(B, feat[0], feat[1], -1).permute(0, 3, 1, 2)
                intermediates.append(y)
        if intermediates_only:
            return intermediates
        if i == last_idx:
            x = self.norm(x)
        return x, intermediates


# ----------------------------------------------------------------------------- timm registration

MICRO_32 = MultiScaleVitCfg(depths=(1, 2, 1), embed_dim=32, num_heads=1, stride_q=((1, 1), (2, 2), (2, 2)))
"""32 px, CPU-trainable: tokens 8x8 -> 4x4 -> 2x2, heads 1 / 2 / 4, widths 32 / 64 / 128. Its
four blocks exercise every resampling rule: (Nq x Nk) 64x4 -> 16x16 (queries pooled,
keys upsampled) -> 16x4 (keys pooled) -> 4x16 (queries pooled, keys upsampled)."""

CONFIGS: Dict[str, MultiScaleVitCfg] = {
    "remvitv2_tiny": timm_cfgs["mvitv2_tiny"],
    "remvitv2_small": timm_cfgs["mvitv2_small"],
    "remvitv2_base": timm_cfgs["mvitv2_base"],
    "remvitv2_micro_32": MICRO_32,
}


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, Any]:
    """timm's MViTv2 filter (official MViT layout, rel-pos resizing), keeping ReViT's ``alpha``."""
    state_dict = dict(state_dict.get("model_state", state_dict))
    alpha = state_dict.pop("alpha", None)
    out = timm_filter(state_dict, model)
    if alpha is not None:
        out["alpha"] = alpha.reshape(1)
    return out


def _cfg(size: int, num_classes: int, crop_pct: float) -> Dict[str, Any]:
    return dict(url="", num_classes=num_classes, input_size=(3, size, size), pool_size=None, crop_pct=crop_pct,
                interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="patch_embed.proj", classifier="head.fc", fixed_input_size=True, license="apache-2.0")


default_cfgs = generate_default_cfgs({  # timm reads it from this module; eval resize 256 -> crop 224
    "remvitv2_tiny": _cfg(224, 1000, 0.875), "remvitv2_small": _cfg(224, 1000, 0.875),
    "remvitv2_base": _cfg(224, 1000, 0.875), "remvitv2_micro_32": _cfg(32, 10, 1.0),
})


def create_remvitv2(variant: str, pretrained: bool = False, cfg: Optional[MultiScaleVitCfg] = None,
                    **kwargs: Any) -> ResidualMultiScaleVit:
    """Build a registered ReMViTv2; ``mvit_cfg`` (plain data, e.g. read off official weights) or ``cfg``
    replaces fields of its MViTv2 config."""
    overrides = kwargs.pop("mvit_cfg", None) or {}
    cfg = cfg or CONFIGS[variant]
    if overrides:
        unknown = sorted(set(overrides) - set(MultiScaleVitCfg.__dataclass_fields__))
        if unknown:
            raise ValueError(f"mvit_cfg has no field(s) {unknown}; see timm's MultiScaleVitCfg")
        tuples = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                  for k, v in overrides.items()}
        tuples.setdefault("stride_kv", None)  # recomputed from stride_q and stride_kv_adaptive
        cfg = replace(cfg, **tuples)
    if variant == "remvitv2_micro_32":
        kwargs.setdefault("img_size", 32)
        kwargs.setdefault("num_classes", 10)
    out_indices = kwargs.pop("out_indices", len(cfg.depths))
    return build_model_with_cfg(ResidualMultiScaleVit, variant, pretrained, model_cfg=cfg,
                                pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def _entrypoint(variant: str) -> Callable[..., ResidualMultiScaleVit]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> ResidualMultiScaleVit:
        return create_remvitv2(variant, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"ReMViTv2 (residual attention on MViTv2), {variant.split('_', 1)[1]}."
    return entrypoint


_module = sys.modules[__name__]
for _name in CONFIGS:
    setattr(_module, _name, register_model(_entrypoint(_name)))
