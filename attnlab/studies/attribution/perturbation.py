"""Perturbation curves: how the prediction falls as the most (or least) relevant input goes.

**Positive / negative perturbation** (Chefer, Gur, Wolf 2021's protocol): patches ranked by
the map averaged over each patch; at 10%, 20%, ..., 90% of the patches the highest ranked
(positive: most relevant first) or lowest ranked (negative: least relevant first) are set to
zero *in the model's normalised input* (that is the protocol's removal: the dataset's mean
colour). Measured: the target's softmax probability and top-1, against the dataset label
(``..._accuracy``) or, for unlabelled images, against the unperturbed prediction
(``..._agreement``). A faithful map: the positive curve falls fast, the negative one slowly.

**Deletion / insertion** (Petsiuk, Das, Saenko 2018, RISE): pixels ranked by the map; in
``steps`` equal steps from none to all of them, deletion sets the top-ranked pixels to zero
(normalised input), insertion starts from a blurred copy (Gaussian, kernel 11, sigma 5, as
RISE) and puts the top-ranked pixels back. Measured: the target's probability.

Areas: the trapezoid rule over the fractions, the unperturbed point at 0 (perturbation:
0..0.9; deletion / insertion: 0..1). Ties in the ranking keep index order (a stable sort).
Everything is batched: the perturbed copies of a batch are made on the model's device and go
through the model together, ``4 * batch_size`` images per forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...devices import model_device
from ...errors import AttnlabError, one_line

PERTURBATION_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DELETION_STEPS = 20
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0   # RISE's insertion baseline


@dataclass(frozen=True)
class Curve:
    """One curve per image: ``values[i, j]`` at ``fractions[j]`` (0 first: the unperturbed image)."""

    fractions: np.ndarray   # [k]
    values: np.ndarray      # [n, k]
    area_name: str          # its area's metric name in the CSV

    def area(self) -> np.ndarray:
        """``[n]`` trapezoid area under each image's curve over the fractions."""
        from scipy.integrate import trapezoid

        return trapezoid(self.values, self.fractions, axis=1)


def curve_names(labelled: bool) -> Dict[str, str]:
    """Metric name of each perturbation curve -> its area's (top-1 named for what it is checked against)."""
    top1 = "accuracy" if labelled else "agreement"
    names = [f"perturbation_{side}_{what}" for side in ("positive", "negative") for what in ("probability", top1)]
    names = {n: f"{n}_auc" for n in names}
    names.update({"deletion_probability": "deletion_auc", "insertion_probability": "insertion_auc"})
    return names


def _score_views(model: nn.Module, make_view: Callable[[int], torch.Tensor], n_views: int, targets: torch.Tensor,
                 chunk: int) -> Tuple[np.ndarray, np.ndarray]:
    """``([n_views, b] target probability, [n_views, b] top-1 class)`` of views ``make_view(i)`` of a
    batch of ``b`` images, made on demand and forwarded ``max(1, chunk // b)`` views at a time."""
    b = len(targets)
    per = max(1, chunk // b)
    probs, top1 = [], []
    with torch.no_grad():
        for s in range(0, n_views, per):
            views = torch.cat([make_view(i) for i in range(s, min(s + per, n_views))])
            p = model(views).float().softmax(dim=-1)
            probs.append(p.gather(1, targets.repeat(len(views) // b)[:, None])[:, 0].reshape(-1, b))
            top1.append(p.argmax(dim=-1).reshape(-1, b))
    return torch.cat(probs).cpu().numpy(), torch.cat(top1).cpu().numpy()


def _batches(model: nn.Module, x: torch.Tensor, maps: np.ndarray, targets: Sequence[int], batch_size: int):
    """``(slice, images, maps, targets)`` per batch, on the model's device."""
    if maps.shape != (x.shape[0], *x.shape[-2:]):
        raise AttnlabError(f"maps of shape {maps.shape} for images of shape {tuple(x.shape)}; give one "
                           "[H, W] map per image")
    if len(targets) != len(x):
        raise AttnlabError(f"{len(targets)} targets for {len(x)} images; give one target class per image")
    device = model_device(model)
    t = torch.as_tensor(list(targets), dtype=torch.int64)
    for s in range(0, len(x), batch_size):
        sl = slice(s, s + batch_size)
        yield sl, x[sl].to(device), torch.from_numpy(np.ascontiguousarray(maps[sl])).to(device).float(), \
            t[sl].to(device)


def perturbation_curves(
    model: nn.Module,
    x: torch.Tensor,
    maps: np.ndarray,
    targets: Sequence[int],
    grid_size: Tuple[int, int],
    labels: Optional[np.ndarray] = None,
    fractions: Sequence[float] = PERTURBATION_FRACTIONS,
    batch_size: int = 16,
) -> Dict[str, Curve]:
    """Chefer's positive and negative perturbation curves (probability and top-1) of ``[n, H, W]`` maps.

    ``grid_size`` is the model's ``(gh, gw)`` patch grid; ``labels`` (``[n]``, all >= 0) are what
    top-1 is checked against, else each image's unperturbed prediction.
    """
    gh, gw = grid_size
    g = gh * gw
    counts = [int(round(f * g)) for f in fractions]        # patches removed at each fraction
    names = list(curve_names(labels is not None))[:4]
    k = len(counts)
    out: Dict[str, list] = {n: [] for n in names}
    try:
        for sl, xb, mb, tb in _batches(model, x, maps, targets, batch_size):
            b, h, w = mb.shape
            relevance = F.adaptive_avg_pool2d(mb[:, None], (gh, gw)).flatten(1)   # [b, G]: map averaged per patch
            orders = [torch.argsort(relevance, dim=1, descending=True, stable=True),   # positive
                      torch.argsort(relevance, dim=1, descending=False, stable=True)]  # negative

            def view(i: int) -> torch.Tensor:
                if i == 0:
                    return xb
                order, n_removed = orders[(i - 1) // k], counts[(i - 1) % k]
                keep = torch.ones(b, g, device=xb.device, dtype=xb.dtype)
                keep.scatter_(1, order[:, :n_removed], 0.0)                         # removed patches -> 0
                return xb * F.interpolate(keep.reshape(b, 1, gh, gw), size=(h, w), mode="nearest")

            p, top1 = _score_views(model, view, 1 + 2 * k, tb, 4 * batch_size)
            ref = top1[0] if labels is None else np.asarray(labels)[sl]
            hit = (top1 == ref[None]).astype(np.float64)
            for side, rows in ((0, slice(1, 1 + k)), (1, slice(1 + k, 1 + 2 * k))):
                out[names[2 * side]].append(np.concatenate([p[:1], p[rows]]).T.astype(np.float64))
                out[names[2 * side + 1]].append(np.concatenate([hit[:1], hit[rows]]).T)
    except AttnlabError:
        raise
    except Exception as e:
        raise AttnlabError(f"perturbation curves failed: {type(e).__name__}: {one_line(e)}") from e
    xs = np.concatenate([[0.0], np.asarray(fractions, dtype=np.float64)])
    areas = curve_names(labels is not None)
    return {n: Curve(xs, np.concatenate(v), areas[n]) for n, v in out.items()}


def blurred(x: torch.Tensor, kernel: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """RISE's insertion baseline: a Gaussian blur of the (normalised) images (kernel clipped to the image)."""
    from torchvision.transforms.functional import gaussian_blur

    k = min(kernel, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)   # odd, and no larger than the image
    return gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma]) if k > 1 else x


def check_deletion_steps(steps: int) -> int:
    """Deletion / insertion steps: a whole number >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AttnlabError(f"deletion steps must be a whole number >= 1, not {steps}")
    return steps


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: np.ndarray,
    targets: Sequence[int],
    steps: int = DELETION_STEPS,
    batch_size: int = 16,
) -> Dict[str, Curve]:
    """RISE deletion (onto zeros) and insertion (onto a blur) probability curves of ``[n, H, W]`` maps,
    in ``steps`` equal steps of pixels, most relevant first."""
    check_deletion_steps(steps)
    out: Dict[str, list] = {"deletion_probability": [], "insertion_probability": []}
    try:
        for sl, xb, mb, tb in _batches(model, x, maps, targets, batch_size):
            b, h, w = mb.shape
            order = torch.argsort(mb.flatten(1), dim=1, descending=True, stable=True)
            rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
            rank = rank.reshape(b, 1, h, w)                                          # 0 = most relevant pixel
            base = blurred(xb)
            counts = [int(round(h * w * i / steps)) for i in range(steps + 1)]       # pixels changed at step i

            def view(i: int) -> torch.Tensor:
                changed = rank < counts[i % (steps + 1)]
                if i <= steps:
                    return xb.masked_fill(changed, 0.0)                              # deletion: -> zero
                return torch.where(changed, xb, base)                                # insertion: blur -> image

            p, _ = _score_views(model, view, 2 * (steps + 1), tb, 4 * batch_size)
            out["deletion_probability"].append(p[:steps + 1].T.astype(np.float64))
            out["insertion_probability"].append(p[steps + 1:].T.astype(np.float64))
    except AttnlabError:
        raise
    except Exception as e:
        raise AttnlabError(f"deletion / insertion curves failed: {type(e).__name__}: {one_line(e)}") from e
    xs = np.linspace(0.0, 1.0, steps + 1)
    areas = curve_names(False)
    return {n: Curve(xs, np.concatenate(v), areas[n]) for n, v in out.items()}
