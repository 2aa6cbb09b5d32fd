"""The GPU side of training: which autocast dtype, the grad scaler, torch.compile.

Mixed precision only ever runs on CUDA: ``--amp auto`` takes bfloat16 where the GPU has
it (no loss scaling needed) and float16 with a :class:`torch.amp.GradScaler` elsewhere;
on a CPU it is off, so CPU runs compute exactly what they did without these options.
``--amp bf16`` / ``fp16`` insist on one dtype and refuse a device that cannot run it.
``torch.compile`` wraps the module that is *run*; the trainer keeps saving the plain
module, so checkpoints never carry the ``_orig_mod.`` prefix of the compiled wrapper.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from torch import nn

from ..errors import AttnlabError

#: The torch.compile backend (a name or a callable; tests swap in one that needs no C++ compiler).
COMPILE_BACKEND: Any = "inductor"


def autocast_dtype(amp: bool, amp_dtype: str, device: torch.device,
                   bf16_supported: Optional[Callable[[], bool]] = None) -> Optional[torch.dtype]:
    """The dtype training runs under autocast in, or None for full float32.

    ``bf16_supported`` defaults to ``torch.cuda.is_bf16_supported`` (a parameter so the
    choice can be checked without a GPU).
    """
    if not amp:
        return None
    if device.type != "cuda":
        if amp_dtype == "auto":
            return None
        raise AttnlabError(f"--amp {amp_dtype} needs a CUDA device and this run is on {device}; "
                           "use --amp auto (off on CPUs) or --amp off")
    has_bf16 = (bf16_supported or torch.cuda.is_bf16_supported)()
    if amp_dtype == "fp16":
        return torch.float16
    if amp_dtype == "bf16":
        if not has_bf16:
            raise AttnlabError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16 or --amp auto")
        return torch.bfloat16
    return torch.bfloat16 if has_bf16 else torch.float16


def autocast_forward(net: nn.Module, criterion: nn.Module, x: torch.Tensor, target: torch.Tensor,
                     device: torch.device, dtype: Optional[torch.dtype]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits and loss of one batch: under autocast in ``dtype`` (the loss from float32 logits), or plain."""
    if dtype is None:
        logits = net(x)
        return logits, criterion(logits, target)
    with torch.autocast(device.type, dtype=dtype):
        logits = net(x)
        return logits, criterion(logits.float(), target)


def amp_name(dtype: Optional[torch.dtype]) -> str:
    """How a run's precision is announced: bf16, fp16 (loss-scaled) or fp32."""
    return {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + grad scaler"}.get(dtype, "fp32")


def grad_scaler(device: torch.device, dtype: Optional[torch.dtype]) -> torch.amp.GradScaler:
    """Loss scaling for float16 only (bfloat16 has float32's range); a disabled scaler otherwise."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs as one fused kernel: on CUDA (CPU keeps torch's default implementation)."""
    return device.type == "cuda"


def compile_model(net: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(net)`` when asked, else ``net`` itself; only the returned module is run."""
    if not enabled:
        return net
    try:
        return torch.compile(net, backend=COMPILE_BACKEND)
    except RuntimeError as e:  # e.g. an unsupported Python or platform
        first = " ".join(str(e).split())[:200]
        raise AttnlabError(f"--compile: torch.compile is not available here ({first}); train without --compile") from None
