"""Stream images through a model and measure its attention, batch by batch.

``analyse_attention`` runs each batch once, captures the requested hook points layer by
layer (``attnlab.capture.hooks``) and hands each map straight to a float64 streaming
accumulator (``attnlab.metrics.AttentionStats``): no attention map outlives its layer,
and memory does not grow with the number of images. For ReViT it measures both the
attention applied, softmax(R_l) (``attention="applied"``), and the layer's own
softmax(S_l) (``attention="own"``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import pandas as pd
import torch
from torch import nn

from .capture import hooks, hook_point_names
from .layout import TokenLayout
from .metrics import DEFAULT_RADII, METRIC_NAMES, AttentionStats
from .tables import tidy

TOKEN_METRICS = ("token_cosine", "effective_rank")

Progress = Optional[Callable[[int], None]]


@dataclass
class AttentionAnalysis:
    """What one model's attention measured: the tidy rows and how many images fed them."""

    frame: pd.DataFrame
    n_images: int
    layout: TokenLayout
    notes: List[str] = field(default_factory=list)


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``auto`` -> CUDA when there is one, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .errors import AttnlabError

        raise AttnlabError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return dev


def analyse_attention(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    label: str,
    checkpoint: str,
    arch: str = "",
    radii: Sequence[float] = DEFAULT_RADII,
    own: bool = True,
    metrics: Optional[Sequence[str]] = None,
    device: Union[str, torch.device, None] = None,
    progress: Progress = None,
) -> AttentionAnalysis:
    """Every attention metric of every layer and head, streamed over ``batches`` of images.

    ``batches`` yields image tensors ``[B, C, H, W]`` (or ``(images, labels)`` pairs);
    ``own`` adds ReViT's softmax(S_l); ``metrics`` selects names of
    ``attnlab.metrics.METRIC_NAMES`` (default all; the feature-diversity ones capture block outputs).
    ``progress(n)`` is called with the number of images after each batch.
    """
    dev = resolve_device(device)
    model = model.to(dev).eval()
    chosen = set(METRIC_NAMES if metrics is None else metrics)
    tokens = bool(chosen & set(TOKEN_METRICS))
    names = set(hook_point_names(model))
    wanted = [n for n in names if n.endswith(".attn.pattern")
              or (own and n.endswith(".attn.own_pattern")) or (tokens and n.endswith(".resid_post"))]
    # maps come straight from a softmax inside the capture: no need to re-check their rows
    stats: Dict[str, AttentionStats] = {"applied": AttentionStats(radii=radii, check=False, metrics=chosen)}
    if any(n.endswith("own_pattern") for n in wanted):
        stats["own"] = AttentionStats(radii=radii, check=False, metrics=chosen - set(TOKEN_METRICS))
    layout: Optional[TokenLayout] = None

    def sink(name: str, t: torch.Tensor) -> None:
        _, layer, rest = name.split(".", 2)
        if rest == "attn.pattern":
            stats["applied"].update(int(layer), t, layout)
        elif rest == "attn.own_pattern":
            stats["own"].update(int(layer), t, layout)
        else:
            stats["applied"].update_tokens(int(layer), t, layout)

    n = 0
    with torch.inference_mode(), hooks(model, wanted, sink):
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x.to(dev, non_blocking=True)
            layout = TokenLayout.from_model(model, tuple(x.shape[-2:]))
            model(x)
            n += x.shape[0]
            if progress is not None:
                progress(n)
    if n == 0:
        from .errors import AttnlabError

        raise AttnlabError("no images to analyse")
    frames = [s.to_frame(label, checkpoint, attention) for attention, s in stats.items()]
    frame = tidy(pd.concat(frames, ignore_index=True), arch=arch)
    is_token_metric = frame["metric"].isin(TOKEN_METRICS)
    frame.loc[is_token_metric, "attention"] = "-"
    notes = []
    if any(hasattr(blk, "broadcast") for blk in getattr(model, "blocks", [])):
        notes.append(f"{label}: context broadcasting mixes tokens uniformly besides the measured attention "
                     "(CB(x) = (x + mean x) / 2 in every block); the attention metrics see only the softmax part")
    return AttentionAnalysis(frame=frame, n_images=n, layout=layout, notes=notes)
