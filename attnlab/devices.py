"""Which device a computation runs on: ``auto`` means CUDA when there is one."""
from __future__ import annotations

from typing import Union

import torch

from .errors import AttnlabError

DeviceLike = Union[str, torch.device, None]


def resolve_device(device: DeviceLike = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (or None) -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    ``auto`` and a bare ``cuda`` take the GPU of this process's ``local_rank`` (one GPU per
    torchrun process).
    """
    if isinstance(device, torch.device):
        dev = device
    elif device in (None, "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    else:
        text = str(device).strip().lower()
        if text not in ("cpu", "cuda") and not (text.startswith("cuda:") and text[5:].isdigit()):
            raise AttnlabError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")
        dev = torch.device(text)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AttnlabError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters live on (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
