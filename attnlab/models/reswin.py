"""ReSwin: timm's Swin Transformer with ReViT's residual attention (official ``ADiko1997/ReViT``).

Per block ``l``, on window maps ``[B * windows, heads, N, N]`` (``N = window**2``)::

    S_l = (q * scale) k^T + B_l            B_l: relative position bias, inside what is carried
    R_1 = S_1;  R_l = 0.5 S_l + 0.5 I(R_{l-1})   fixed 0.5 / 0.5, no parameter
    A_l = softmax(R_l + M_l)               M_l: shifted-window mask (-100), never carried

``residual_mode="official"`` (default, what the released models computed): within a stage ``I``
is the identity, entry by entry; across stages ``I`` is ``F.interpolate`` (nearest) of the map
reshaped to ``(B, 1, windows*heads, N, N)`` to the new ``windows*heads``. ``"geometric"`` (new,
not in the paper): each carried entry follows its query and key pixels (rolled with the window
shift, 2x2-averaged across stages, heads averaged where their number changes); a pair the
previous block did not see falls back to ``S_l``. ``residual=False`` is timm's Swin exactly.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.swin_transformer import SwinTransformer, WindowAttention, checkpoint_filter_fn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..errors import AttnlabError

RESIDUAL_MODES = ("official", "geometric")
Layout = Tuple[int, int, int, int, int, int]  # grid H, W, window h, w, shift h, w


class ResidualCarry:
    """The map carried from block to block during one forward (plain state, not a module)."""

    def __init__(self) -> None:
        self.batch = 0
        self.res: Optional[torch.Tensor] = None
        self.layout: Optional[Layout] = None

    def start(self, batch: int) -> None:
        self.batch, self.res, self.layout = batch, None, None


class ResidualWindowAttention(WindowAttention):
    """timm's ``WindowAttention`` mixing its logits with the carried ``R_{l-1}`` (see module doc)."""

    def __init__(self, *args: Any, residual: bool = True, residual_mode: str = "official", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.residual = residual
        self.residual_mode = residual_mode
        self.first = False                   # R_1 = S_1: the chain starts here
        self.last = False                    # nothing to hand on: release the map
        self.layout: Optional[Layout] = None  # set by the model (needed by the geometric mode)
        self.carry: Optional[ResidualCarry] = None
        self._observe = None                 # set by attnlab's capture adapter

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        observe = self._observe
        if (not self.residual or self.carry is None) and observe is None:
            return super().forward(x, mask)  # timm's own path, bit for bit
        B_, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        s = (q * self.scale) @ k.transpose(-2, -1) + self._get_rel_pos_bias()      # S_l
        r = s
        if self.residual and self.carry is not None:
            carry = self.carry
            if self.first and self.layout is not None:  # images = window maps / windows per image
                H, W, wh, ww = self.layout[:4]
                carry.batch = B_ // (-(-H // wh) * -(-W // ww))
            if not self.first and carry.res is not None:
                r = 0.5 * s + 0.5 * self._resampled(carry, s)                   # R_l = 0.5 S_l + 0.5 I(R_{l-1})
            carry.res, carry.layout = (None, None) if self.last else (r, self.layout)
        logits = r
        if mask is not None:                                                    # + M_l, after: never carried
            num_win = mask.shape[0]
            logits = (r.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)).view_as(r)
        attn = logits.softmax(-1)                                               # A_l = softmax(R_l + M_l)
        if observe is not None:  # the capture derives own_pattern = softmax(scores) = softmax(S_l + M_l)
            observe("scores", s if mask is None else (s.view(-1, mask.shape[0], self.num_heads, N, N)
                                                      + mask.unsqueeze(1).unsqueeze(0)).view_as(s))
            observe("mixed_scores", r)
            observe("pattern", attn)
        x = self.attn_drop(attn) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B_, N, -1)))

    def _resampled(self, carry: ResidualCarry, s: torch.Tensor) -> torch.Tensor:
        res = carry.res
        assert res is not None
        if self.residual_mode == "geometric":
            return geometric_resample(res, carry.layout, self.layout, s, carry.batch)
        if res.shape == s.shape:                                                # within a stage: identity
            return res
        return official_resample(res, s.shape, carry.batch)


def official_resample(res: torch.Tensor, shape: torch.Size, batch: int) -> torch.Tensor:
    """The official cross-stage map: nearest ``F.interpolate`` over (windows*heads, N, N).

    New (window w', head h') reads old window ``4w' + floor(2h'/nH_old)``, head ``2h' mod nH_old``.
    """
    n_new = shape[-3] * (shape[0] // batch)                                     # new windows * heads
    res = res.reshape(batch, 1, -1, res.shape[-2], res.shape[-1])              # (B, 1, nW*nH, N, N)
    return F.interpolate(res, size=(n_new, shape[-2], shape[-1])).view(shape)


def _window_of(layout: Layout) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window and in-window index of each pixel, and each (window, index)'s pixel row / column."""
    H, W, wh, ww, sh, sw = layout
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    yr, xr = (ys - sh) % H, (xs - sw) % W                                      # position after roll(-shift)
    win = (yr // wh) * (W // ww) + xr // ww
    loc = (yr % wh) * ww + xr % ww
    pos_y = torch.empty(win.numel(), dtype=torch.long)
    pos_x = torch.empty_like(pos_y)
    flat = win.flatten() * (wh * ww) + loc.flatten()
    pos_y[flat], pos_x[flat] = ys.flatten(), xs.flatten()
    return win, loc, pos_y.view(-1, wh * ww), pos_x.view(-1, wh * ww)


@lru_cache(maxsize=64)
def geometric_index(old: Layout, new: Layout) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each new (window, query, key): the old entries of the same pixel pair, their weights, any."""
    if old[0] % new[0] or old[1] % new[1] or any(lay[0] % lay[2] or lay[1] % lay[3] for lay in (old, new)):
        raise AttnlabError("residual_mode='geometric' needs grids that the windows and 2x2 merging divide; "
                           "use residual_mode='official'")
    f = old[0] // new[0]
    win_o, loc_o, _, _ = _window_of(old)
    _, _, qy, qx = _window_of(new)
    n_old = old[2] * old[3]
    idx, ok = [], []
    for a in range(f):
        for b in range(f):
            for c in range(f):
                for d in range(f):
                    py, px = (qy * f + a)[:, :, None], (qx * f + b)[:, :, None]   # query pixel (old grid)
                    ky, kx = (qy * f + c)[:, None, :], (qx * f + d)[:, None, :]   # key pixel (old grid)
                    wq, wk = win_o[py, px], win_o[ky, kx]
                    ok.append(wq == wk)                                          # the old block saw this pair
                    idx.append((wq * n_old + loc_o[py, px]) * n_old + loc_o[ky, kx])
    valid = torch.stack(ok, -1)
    index = torch.where(valid, torch.stack(idx, -1), 0).flatten(0, 2)
    weight = (valid / valid.sum(-1, keepdim=True).clamp(min=1)).flatten(0, 2)    # mean over seen pairs
    return index, weight.float(), valid.any(-1)


def geometric_resample(res: torch.Tensor, old: Optional[Layout], new: Optional[Layout], s: torch.Tensor,
                       batch: int) -> torch.Tensor:
    """``R_{l-1}`` moved onto this block's windows by pixel position (the geometric variant)."""
    assert old is not None and new is not None
    index, weight, seen = geometric_index(old, new)
    heads = s.shape[1]
    if res.shape[1] != heads:                                                   # heads change: mean, broadcast
        res = res.mean(1, keepdim=True)
    h = res.shape[1]
    flat = res.reshape(batch, -1, h, res.shape[-2] * res.shape[-1]).transpose(1, 2).reshape(batch, h, -1)
    moved = (flat[:, :, index.to(res.device)] * weight.to(res)).sum(-1)       # (B, h, nW*N*N)
    n = s.shape[-1]
    moved = moved.view(batch, h, -1, n, n).transpose(1, 2).reshape(-1, h, n, n).expand_as(s)
    return torch.where(seen.to(s.device)[None].repeat(batch, 1, 1, 1).view(-1, 1, n, n), moved, s)


class ReSwinTransformer(SwinTransformer):
    """timm's ``SwinTransformer`` whose window attentions carry ``R_l`` (same state dict as Swin)."""

    def stage_summary(self) -> Dict[str, Any]:
        """What ``attnlab info`` shows of the stages (see :func:`reswin_info`)."""
        return reswin_info(self)

    def __init__(self, *args: Any, residual: bool = True, residual_mode: str = "official", **kwargs: Any) -> None:
        if residual_mode not in RESIDUAL_MODES:
            raise AttnlabError(f"unknown residual_mode {residual_mode!r}; use one of {', '.join(RESIDUAL_MODES)}")
        super().__init__(*args, **kwargs)
        self.residual, self.residual_mode = residual, residual_mode
        self.carry = ResidualCarry()
        blocks = [b for stage in self.layers for b in stage.blocks]
        with torch.random.fork_rng(devices=[]):                                 # timm's weights, timm's RNG draws
            for block in blocks:
                old = block.attn
                new = ResidualWindowAttention(
                    old.qkv.in_features, old.num_heads, head_dim=old.qkv.out_features // 3 // old.num_heads,
                    window_size=old.window_size, qkv_bias=old.qkv.bias is not None, attn_drop=old.attn_drop.p,
                    proj_drop=old.proj_drop.p, residual=residual, residual_mode=residual_mode,
                    device=old.qkv.weight.device, dtype=old.qkv.weight.dtype)
                new.load_state_dict(old.state_dict())
                new.fused_attn = old.fused_attn
                new.carry = self.carry
                block.attn = new
        if blocks:
            blocks[0].attn.first, blocks[-1].attn.last = True, True
        self._set_layouts()

    def _set_layouts(self) -> None:
        for stage in self.layers:
            for block in stage.blocks:
                block.attn.layout = (*block.input_resolution, *block.window_size, *block.shift_size)

    def set_input_size(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        super().set_input_size(*args, **kwargs)
        self._set_layouts()

    def set_grad_checkpointing(self, enable: bool = True) -> None:  # noqa: D102
        if enable and self.residual:
            raise AttnlabError("gradient checkpointing re-runs blocks and would carry R_l twice; "
                               "ReSwin trains without it (or build it with residual=False)")
        super().set_grad_checkpointing(enable)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.carry.start(x.shape[0])
        try:
            return super().forward_features(x)
        finally:
            self.carry.start(0)

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any):  # noqa: ANN201, D102
        self.carry.start(x.shape[0])
        try:
            return super().forward_intermediates(x, *args, **kwargs)
        finally:
            self.carry.start(0)


def reswin_info(model: ReSwinTransformer) -> Dict[str, Any]:
    """What ``attnlab info`` shows of a ReSwin: stages, depths, window and heads per stage, the mix."""
    return dict(
        stages=len(model.layers),
        depths=[len(stage.blocks) for stage in model.layers],
        window_per_stage=[int(stage.blocks[0].window_size[0]) for stage in model.layers],
        heads_per_stage=[int(stage.blocks[0].attn.num_heads) for stage in model.layers],
        residual=("fixed 0.5 / 0.5 mix, " + model.residual_mode) if model.residual else "off (timm Swin)",
    )


def _cfg(size: int, **kwargs: Any) -> Dict[str, Any]:
    cfg = dict(url="", num_classes=1000, input_size=(3, size, size), pool_size=None, crop_pct=0.91,
               interpolation="bicubic", fixed_input_size=True, mean=IMAGENET_DEFAULT_MEAN,
               std=IMAGENET_DEFAULT_STD, first_conv="patch_embed.proj", classifier="head.fc", license="mit")
    return dict(cfg, **kwargs)  # crop 0.91: the official ReSwin-T eval crop ratio


default_cfgs = generate_default_cfgs({  # timm reads the pretrained_cfg of each name from this module
    "reswin_tiny_patch4_window7_224": _cfg(224),
    "reswin_small_patch4_window7_224": _cfg(224),
    "reswin_base_patch4_window7_224": _cfg(224),
    "reswin_micro_patch2_window4_32": _cfg(32, num_classes=10, crop_pct=1.0),
})

ARCHS: Dict[str, Dict[str, Any]] = {
    "reswin_tiny_patch4_window7_224": dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2),
                                           num_heads=(3, 6, 12, 24)),
    "reswin_small_patch4_window7_224": dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 18, 2),
                                            num_heads=(3, 6, 12, 24)),
    "reswin_base_patch4_window7_224": dict(patch_size=4, window_size=7, embed_dim=128, depths=(2, 2, 18, 2),
                                           num_heads=(4, 8, 16, 32)),
    "reswin_micro_patch2_window4_32": dict(img_size=32, patch_size=2, window_size=4, embed_dim=32, depths=(2, 2),
                                           num_heads=(2, 4), num_classes=10),
}


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> ReSwinTransformer:
    args = dict(ARCHS[variant], **kwargs)
    out_indices = args.pop("out_indices", tuple(range(len(args["depths"]))))
    return build_model_with_cfg(ReSwinTransformer, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(flatten_sequential=True, out_indices=out_indices), **args)


@register_model
def reswin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> ReSwinTransformer:
    """ReSwin-T at 224 px (the official release's size)."""
    return _create("reswin_tiny_patch4_window7_224", pretrained, **kwargs)


@register_model
def reswin_small_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> ReSwinTransformer:
    """ReSwin-S at 224 px (Swin-S's sizes)."""
    return _create("reswin_small_patch4_window7_224", pretrained, **kwargs)


@register_model
def reswin_base_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> ReSwinTransformer:
    """ReSwin-B at 224 px (Swin-B's sizes)."""
    return _create("reswin_base_patch4_window7_224", pretrained, **kwargs)


@register_model
def reswin_micro_patch2_window4_32(pretrained: bool = False, **kwargs: Any) -> ReSwinTransformer:
    """A CPU-trainable ReSwin at 32 px: patch 2, window 4, depths (2, 2), heads (2, 4), width 32."""
    return _create("reswin_micro_patch2_window4_32", pretrained, **kwargs)
