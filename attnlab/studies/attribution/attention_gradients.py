"""Attribution from attention and its gradient: Chefer's gradient-weighted rollout, and attn-grad.

    chefer     Chefer, Gur, Wolf (ICCV 2021), "Generic attention-model explainability":
               R = I;  for each layer l, first to last:  R <- R + mean_heads((dA_l * A_l)^+) R
    attn-grad  mean_heads((dA_L * A_L)^+) of the last layer alone (a common baseline)

``A_l`` is the attention layer ``l`` applies (hook point ``blocks.l.attn.pattern``:
softmax(R_l) for ReViT; ``hf.vit.layers.l.attention.pattern`` for Hugging Face), ``dA_l``
the gradient of the target logit with respect to it.
The map is, as for rollout, the row of the token the head reads (the class token; the mean
of the class and distillation rows; the mean of the patch rows for pooling models) over the
patch keys. For CB models ``A`` leaves out the uniform broadcast term, as rollout does; like
rollout, both are defined only where every layer attends over the same tokens (``rollout.py``).

One backward pass per batch: image ``b``'s logit depends only on its own ``A_b``, so the
gradient of the summed target logits with respect to the batch's attention is each image's
own ``dA_b``. The gradient is taken with ``torch.autograd.grad`` on the captured attention,
so no parameter's ``.grad`` is touched; the input is made to require grad, so models with
frozen weights work too.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ...devices import model_device
from ...errors import AttnlabError
from ...layout import TokenLayout
from ..inputs import check_batch_size
from .rollout import no_rollout_reason, query_map, upsample_maps

GRADIENT_METHODS = ("chefer", "attn-grad")


def attention_and_gradients(model: nn.Module, x: torch.Tensor, targets: Sequence[int], last_only: bool = False,
                            method: str = "chefer") -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """``(A, dA)``: each layer's applied attention ``[B, heads, N, N]`` and the gradient of each image's
    target logit with respect to it (only the last layer with ``last_only``), detached."""
    from ...capture import hook_point_names, hooks

    if torch.is_inference_mode_enabled():
        raise AttnlabError(f"{method} needs gradients of the attention, but torch.inference_mode is active; "
                           "call it outside inference_mode (torch.no_grad is fine: attnlab turns gradients on)")
    if len(targets) != len(x):
        raise AttnlabError(f"{len(targets)} targets for {len(x)} images; give one target class per image")
    try:
        points = [n for n in hook_point_names(model) if n.endswith(".pattern")]  # the applied A_l, forward order
    except AttnlabError as e:
        raise AttnlabError(f"{method} needs the model's attention: {e}") from e
    reason = no_rollout_reason(model)
    if reason is not None:
        raise AttnlabError(f"{method} is not defined for {type(model).__name__}: {reason}; use a CAM method "
                           "(gradcam, eigencam, ...)")
    if last_only:
        points = points[-1:]
    captured: Dict[str, torch.Tensor] = {}
    x = x.detach().clone().requires_grad_(True)   # A is in the graph even when every weight is frozen
    with torch.enable_grad(), hooks(model, points, captured.__setitem__, detach=False):
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise AttnlabError(f"{method} needs [batch, classes] logits from the model, got "
                           f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}")
    attention = [captured.get(p) for p in points]
    cut = [p for p, a in zip(points, attention) if a is None or not a.requires_grad]
    if cut or not logits.requires_grad:
        what = f"the attention at {cut[0]} is" if cut else "the logits are"
        raise AttnlabError(f"{method} needs gradients, but {what} not in the autograd graph (the model's "
                           "forward detaches it or runs under no_grad); use a CAM method or rollout instead")
    t = torch.as_tensor(list(targets), dtype=torch.int64, device=logits.device)
    with torch.enable_grad():                      # also under a caller's no_grad
        score = logits.gather(1, t[:, None]).sum()  # sum_b z_b[t_b]: d score / d A_b = d z_b[t_b] / d A_b
        grads = torch.autograd.grad(score, attention, allow_unused=True)
    unused = [p for p, g in zip(points, grads) if g is None]
    if unused:
        raise AttnlabError(f"{method} needs gradients, but the logits do not depend on the attention at "
                           f"{unused[0]} (the model's forward detaches it); use a CAM method or rollout instead")
    return [a.detach() for a in attention], [g.detach() for g in grads]


def weighted_attention(a: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``[B, N, N]`` mean_heads((dA * A)^+), in at least float32."""
    dtype = torch.promote_types(a.dtype, torch.float32)
    return (grad.to(dtype) * a.to(dtype)).clamp(min=0).mean(dim=1)


def chefer_rollout(attention: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B, N, N]`` relevance R of Chefer et al.: R = I, then R <- R + mean_heads((dA * A)^+) R per layer."""
    first = weighted_attention(attention[0], grads[0])
    r = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device).expand_as(first)
    for a, g in zip(attention, grads):
        r = r + weighted_attention(a, g) @ r       # the first layer applied first
    return r


def gradient_relevance(model: nn.Module, x: torch.Tensor, targets: Sequence[int], method: str = "chefer"
                       ) -> torch.Tensor:
    """``[B, gh, gw]`` raw relevance of ``method`` (``chefer`` or ``attn-grad``) on the patch grid."""
    if method not in GRADIENT_METHODS:
        raise AttnlabError(f"unknown gradient method {method!r}; choose from {', '.join(GRADIENT_METHODS)}")
    attention, grads = attention_and_gradients(model, x, targets, last_only=method == "attn-grad", method=method)
    layout = TokenLayout.from_model(model, tuple(x.shape[-2:]))
    r = chefer_rollout(attention, grads) if method == "chefer" else weighted_attention(attention[-1], grads[-1])
    return query_map(r, model, layout)


def gradient_attention_maps(model: nn.Module, x: torch.Tensor, method: str, targets: Sequence[int],
                            layer: str = "auto", batch_size: int = 16) -> np.ndarray:
    """``[B, H, W]`` maps in [0, 1] of ``chefer`` / ``attn-grad``, batch by batch on the model's device,
    upsampled like rollout (``layer`` is not used: these methods read every layer's attention)."""
    check_batch_size(batch_size)
    if len(targets) != len(x):
        raise AttnlabError(f"{len(targets)} targets for {len(x)} images; give one target class per image")
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        grid = torch.cat([gradient_relevance(model, x[s:s + batch_size].to(device),
                                             targets[s:s + batch_size], method)
                          for s in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    if not torch.isfinite(grid).all():
        raise AttnlabError(f"{method} gave non-finite maps (NaN or inf attention or gradients)")
    return upsample_maps(grid, tuple(x.shape[-2:]))
