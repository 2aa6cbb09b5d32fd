"""How big ``explore.html`` will be, known from shapes alone, so a run over budget stops before it starts.

Per model, image and attention kind (applied; ReViT also own), for a layer ``l`` with
``H_l`` heads (+1 for the mean over heads), ``R_l`` query rows (Swin: every window's
queries), ``K_l`` keys of which ``P_l`` are prefix keys (no position):

    attention rows   (H_l+1) R_l (K_l - P_l)   bytes (uint8), each stored layer
    row scales       (H_l+1) R_l               x 4 (float32)
    prefix keys      (H_l+1) R_l P_l           x 4
    query metrics    2 (H_l+1) R_l             x 4 (distance, entropy), every layer
    image metrics    2 (H_l+1)                 x 4
plus per model and image the rollout (G bytes) and GradCAM (h w bytes) maps where the model
has them; per model once, each distinct layer geometry's cells (int16 ``y0, x0, h, w`` of
its ``R`` queries and ``W K`` keys: 8 (R + W K) bytes) and uniform reference (8 R); per input
size each image as PNG (bounded by its raw h w c bytes). Binary data is base64 in the page
(x 4/3); the page itself (markup, script, names) is a few tens of kB.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from ..errors import AttnlabError, plural
from .plan import ModelPlan

PAGE_OVERHEAD = 90_000   # markup, style, script and JSON keys
BASE64 = 4 / 3
MB = 1e6


def model_bytes(plan: ModelPlan, n_images: int, layers: Optional[Sequence[int]] = None) -> int:
    """Raw bytes of one model's data for ``n_images`` images, storing ``layers`` (default: ``plan.layers``)."""
    stored = plan.layers if layers is None else layers
    rows = sum((b.heads + 1) * b.rows * (b.keys - b.prefix_keys + 4 + 4 * b.prefix_keys)
               for b in (plan.blocks[i] for i in stored))
    metrics = sum(4 * 2 * (b.heads + 1) * (b.rows + 1) for b in plan.blocks)
    maps = 0 if "rollout" in plan.missing else plan.layout.num_patches
    maps += 0 if "gradcam" in plan.missing else plan.size[0] * plan.size[1]
    shapes = {(b.geometry, b.windows, b.queries, b.keys, b.about): 8 * (b.rows + b.windows * b.keys)
              for b in plan.blocks}
    once = sum(shapes.values()) + sum(8 * b.rows for b in plan.blocks)
    return n_images * (len(plan.sources) * (rows + metrics) + maps) + once


def picture_bytes(plans: Sequence[ModelPlan], n_images: int) -> int:
    """Raw bytes of the images, once per input size and channel count (PNG is at most about raw)."""
    inputs: Dict[Tuple, int] = {}
    for plan in plans:
        spec = plan.model.spec.input
        inputs[(tuple(spec.size), spec.channels)] = spec.size[0] * spec.size[1] * spec.channels
    return n_images * sum(inputs.values())


def estimate_bytes(plans: Sequence[ModelPlan], n_images: int, n_layers: int = 0) -> int:
    """Estimated size of the page in bytes; ``n_layers`` > 0 stores that many layers per model, spread over depth."""
    raw = picture_bytes(plans, n_images)
    for plan in plans:
        layers = None if n_layers <= 0 or n_layers >= len(plan.layers) else _spread(plan.depth, n_layers)
        raw += model_bytes(plan, n_images, layers)
    return int(PAGE_OVERHEAD + BASE64 * raw)


def check_budget(plans: Sequence[ModelPlan], n_images: int, max_bytes: int) -> int:
    """The estimate, or one line saying it is over ``max_bytes`` and how to cut it."""
    size = estimate_bytes(plans, n_images)
    if size <= max_bytes:
        return size
    fit_images = max((k for k in range(1, n_images) if estimate_bytes(plans, k) <= max_bytes), default=0)
    most_layers = max(len(p.layers) for p in plans)
    fit_layers = max((k for k in range(1, most_layers) if estimate_bytes(plans, n_images, k) <= max_bytes), default=0)
    cuts = []
    if fit_images:
        cuts.append(f"--num-images {fit_images} or fewer")
    if fit_layers:
        cuts.append(f"at most {plural(fit_layers, 'block')} in --layers (e.g. --layers "
                    f"{','.join(str(i) for i in _spread(plans[0].depth, fit_layers))})")
    if not cuts:
        cuts.append("fewer --num-images and fewer --layers (or fewer models)")
    raise AttnlabError(f"explore.html would be about {size / MB:.1f} MB for {plural(n_images, 'image')}, over the "
                       f"{max_bytes / MB:g} MB budget; pass {' or '.join(cuts)}, or raise --max-mb")


def _spread(depth: int, k: int) -> list:
    """``k`` block indices spread evenly over ``depth`` blocks, first and last included."""
    if k == 1:
        return [depth - 1]
    return sorted({i * (depth - 1) // (k - 1) for i in range(k)})
