"""How big ``explore.html`` will be, known from shapes alone, so a run over budget stops before it starts.

Per model, image and attention kind (applied; ReViT also own), with ``K`` stored blocks,
``H`` heads (+1 for the mean over heads), ``N = P + G`` tokens and ``L`` blocks:

    attention rows   K (H+1) N G     bytes (uint8)
    row scales       K (H+1) N       x 4 (float32)
    prefix keys      K (H+1) N P     x 4 (float32)
    query metrics    2 L (H+1) N     x 4 (float32: distance, entropy)
    image metrics    2 L (H+1)       x 4
plus per model and image the rollout (G bytes) and GradCAM (h w bytes) maps, and per input
size each image as PNG (bounded by its raw h w c bytes). Binary data is base64 in the page
(x 4/3); the page itself (markup, script, names) is a few tens of kB.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

from ..errors import AttnlabError, plural
from .plan import ModelPlan

PAGE_OVERHEAD = 80_000   # markup, style, script and JSON keys
BASE64 = 4 / 3
MB = 1e6


def model_bytes(plan: ModelPlan, n_images: int, n_layers: int) -> int:
    """Raw bytes of one model's data for ``n_images`` images and ``n_layers`` stored blocks."""
    lay = plan.layout
    n, g, p, rows = lay.num_tokens, lay.num_patches, lay.num_prefix_tokens, plan.heads + 1
    per_kind = n_layers * rows * n * (g + 4 + 4 * p) + 4 * 2 * plan.depth * rows * (n + 1)
    h, w = plan.size
    return n_images * (len(plan.sources) * per_kind + g + h * w)


def picture_bytes(plans: Sequence[ModelPlan], n_images: int) -> int:
    """Raw bytes of the images, once per input size and channel count (PNG is at most about raw)."""
    inputs: Dict[Tuple, int] = {}
    for plan in plans:
        spec = plan.model.spec.input
        inputs[(tuple(spec.size), spec.channels)] = spec.size[0] * spec.size[1] * spec.channels
    return n_images * sum(inputs.values())


def estimate_bytes(plans: Sequence[ModelPlan], n_images: int, n_layers: int = 0) -> int:
    """Estimated size of the page in bytes; ``n_layers`` > 0 caps each model's stored blocks."""
    raw = picture_bytes(plans, n_images)
    for plan in plans:
        k = min(len(plan.layers), n_layers) if n_layers > 0 else len(plan.layers)
        raw += model_bytes(plan, n_images, k)
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
