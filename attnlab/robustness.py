"""Translation and scale robustness: exact pixel-space transforms, protocols and metrics.

Every transform acts on images in pixel space (values in [0, 1], before normalisation),
so a shift moves pixels by exactly that many and black is black (0), not the dataset mean:

    shift(x, dx, dy, fill)  content moves dx pixels right and dy down; the uncovered border
                            is black (``fill="black"``), mirrored (``"reflect"``), or the
                            image wraps around (``"roll"``, circular)
    scale(x, s)             s < 1 zooms out (resize by s, pad back with black, centred);
                            s > 1 zooms in (resize by s, centre crop); s = 1 is identity

Protocols:

    sweep         deterministic: every magnitude of --shifts in a direction (h, v, diag, or a
                  2-D grid of (dx, dy)), and every --scales factor
    revit-random  the official ReViT evaluation: a random translation of up to the given
                  shift in each axis (torchvision RandomAffine(translate=...), black fill),
                  and resize-and-pad for scale, random per image, seeded
    consistency   antialiased-CNNs: two random crops of the image enlarged by 8/7 (offsets
                  0..size/7, as 224 crops of 256), share of identical top-1

Metrics per model and magnitude (``metric`` column): ``accuracy`` (top-1), ``consistency``
(top-1 equal to the unshifted image's), ``prob_change`` (mean |p_true(shifted) -
p_true(unshifted)|), ``js_divergence`` (Jensen-Shannon divergence of the two output
distributions, nats), with bootstrap 95% intervals over images. With ``attention=True``
the mean attention distance and entropy per layer are measured at every magnitude too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .errors import AttnlabError
from .spec import InputSpec

FILLS = ("black", "reflect", "roll")
DIRECTIONS = ("h", "v", "diag", "grid")
PROTOCOLS = ("sweep", "revit-random", "consistency")
METRICS = ("accuracy", "consistency", "prob_change", "js_divergence")


# ----------------------------------------------------------------------------- transforms

def shift(x: torch.Tensor, dx: int, dy: int, fill: str = "black") -> torch.Tensor:
    """Move the content of ``x`` ([..., H, W], pixel space) by (dx, dy) whole pixels."""
    if fill not in FILLS:
        raise AttnlabError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    dx, dy = int(dx), int(dy)
    H, W = x.shape[-2:]
    if abs(dx) >= W or abs(dy) >= H:
        raise AttnlabError(f"shift ({dx}, {dy}) is as large as the {H}x{W} image; use shifts below {min(H, W)}")
    if dx == 0 and dy == 0:
        return x
    if fill == "roll":
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))  # left, right, top, bottom
    if fill == "reflect" and (max(pad[:2]) >= W or max(pad[2:]) >= H):
        raise AttnlabError(f"reflect fill needs shifts smaller than the image ({H}x{W})")
    shape = x.shape
    flat = x.reshape(-1, 1, H, W) if x.dim() != 4 else x
    padded = F.pad(flat, pad, mode="constant" if fill == "black" else "reflect", value=0.0)
    top, left = pad[3], pad[1]  # keep the window that starts where the content moved from
    out = padded[..., top:top + H, left:left + W]
    return out.reshape(shape)


def scale(x: torch.Tensor, s: float) -> torch.Tensor:
    """Zoom ``x`` ([B, C, H, W], pixel space) by ``s``: shrink and pad with black, or enlarge and crop."""
    if not s > 0:
        raise AttnlabError(f"scale factors must be positive, got {s}")
    H, W = x.shape[-2:]
    h, w = max(1, round(H * s)), max(1, round(W * s))
    if (h, w) == (H, W):
        return x
    resized = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=h < H)
    if h <= H:  # zoom out: pad back, centred
        top, left = (H - h) // 2, (W - w) // 2
        return F.pad(resized, (left, W - w - left, top, H - h - top), value=0.0)
    top, left = (h - H) // 2, (w - W) // 2  # zoom in: centre crop
    return resized[..., top:top + H, left:left + W]


def normalise(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def pixel_transform(spec: InputSpec) -> Callable:
    """The evaluation pipeline of ``spec`` without its normalisation: images as [0, 1] tensors."""
    from torchvision import transforms as T

    from .data import eval_transform

    steps = [t for t in eval_transform(spec).transforms if not isinstance(t, T.Normalize)]
    return T.Compose(steps)


# ----------------------------------------------------------------------------- conditions

@dataclass(frozen=True)
class Condition:
    """One transformed view of every image: a transform name, its magnitude, and how to apply it."""

    transform: str
    magnitude: float
    magnitude_y: float = math.nan
    apply: Callable[[torch.Tensor, torch.Generator], torch.Tensor] = field(compare=False, repr=False, default=None)


def _check_shifts(shifts: Sequence[int], size: Tuple[int, int], fill: str) -> None:
    limit = min(size)
    bad = [s for s in shifts if abs(int(s)) >= limit]
    if bad:
        raise AttnlabError(f"shift {bad[0]} is larger than the {size[0]}x{size[1]} input; use shifts below {limit}")
    if any(int(s) != s for s in shifts):
        raise AttnlabError("shifts are whole pixels; pass integers")


def sweep_conditions(shifts: Sequence[int], scales: Sequence[float], direction: str, fill: str,
                     size: Tuple[int, int]) -> List[Condition]:
    """Deterministic shifts in ``direction`` and zooms by ``scales``."""
    if direction not in DIRECTIONS:
        raise AttnlabError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    _check_shifts(shifts, size, fill)
    out = []
    if direction == "grid":
        for dy in shifts:
            for dx in shifts:
                out.append(Condition("shift-grid", float(dx), float(dy),
                                     lambda x, g, dx=int(dx), dy=int(dy): shift(x, dx, dy, fill)))
    else:
        for d in shifts:
            dx, dy = {"h": (d, 0), "v": (0, d), "diag": (d, d)}[direction]
            out.append(Condition(f"shift-{direction}", float(d), apply=lambda x, g, dx=int(dx), dy=int(dy):
                                 shift(x, dx, dy, fill)))
    for s in scales:
        if not s > 0:
            raise AttnlabError(f"scale factors must be positive, got {s}")
        out.append(Condition("scale", float(s), apply=lambda x, g, s=float(s): scale(x, s)))
    return out


def _random_shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """RandomAffine(translate=(f, f)) with black fill: per image, integer shifts uniform in [-m, m]."""
    out = torch.empty_like(x)
    offsets = torch.empty(x.shape[0], 2).uniform_(-max_shift, max_shift, generator=g).round().int()
    for i, (dx, dy) in enumerate(offsets.tolist()):
        out[i] = shift(x[i], dx, dy, "black")
    return out


def revit_conditions(shifts: Sequence[int], scales: Sequence[float], size: Tuple[int, int]) -> List[Condition]:
    """The official ReViT protocol: random translation up to each shift, resize-and-pad per scale."""
    _check_shifts(shifts, size, "black")
    out = [Condition("random-translate", float(m), apply=lambda x, g, m=int(m): _random_shift(x, m, g))
           for m in shifts]
    for s in scales:
        if not s > 0:
            raise AttnlabError(f"scale factors must be positive, got {s}")
        out.append(Condition("scale", float(s), apply=lambda x, g, s=float(s): scale(x, s)))
    return out


def _two_crops(x: torch.Tensor, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Enlarge by 8/7 and take two random crops of the original size (antialiased-CNNs protocol)."""
    H, W = x.shape[-2:]
    big = F.interpolate(x, size=(H * 8 // 7, W * 8 // 7), mode="bilinear", align_corners=False)
    mh, mw = big.shape[-2] - H, big.shape[-1] - W
    crops = []
    for _ in range(2):
        oy = torch.randint(0, mh + 1, (x.shape[0],), generator=g)
        ox = torch.randint(0, mw + 1, (x.shape[0],), generator=g)
        crops.append(torch.stack([big[i, :, oy[i]:oy[i] + H, ox[i]:ox[i] + W] for i in range(x.shape[0])]))
    return crops[0], crops[1]


# ----------------------------------------------------------------------------- running

@dataclass
class Outcome:
    """Per-image results of one model under one condition (numpy arrays over images)."""

    correct: np.ndarray
    consistent: np.ndarray
    prob_change: np.ndarray
    js: np.ndarray


def _js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)
    kl = lambda a, b: (torch.special.xlogy(a, a) - torch.special.xlogy(a, b)).sum(-1)  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def _outcome(probs: torch.Tensor, base: torch.Tensor, labels: torch.Tensor) -> Outcome:
    labelled = labels >= 0
    safe = labels.clamp_min(0)
    pred, base_pred = probs.argmax(-1), base.argmax(-1)
    p_true = probs.gather(1, safe[:, None])[:, 0]
    b_true = base.gather(1, safe[:, None])[:, 0]
    nan = torch.full_like(p_true, math.nan)
    return Outcome(
        correct=torch.where(labelled, (pred == labels).double(), nan.double()).numpy(),
        consistent=(pred == base_pred).double().numpy(),
        prob_change=torch.where(labelled, (p_true - b_true).abs().double(), nan.double()).numpy(),
        js=_js(probs.double(), base.double()).numpy(),
    )


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean over images (NaNs ignored)."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarise(outcomes: Dict[Condition, Outcome], model: str, checkpoint: str, arch: str,
              n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Tidy rows (``attnlab.tables`` schema) of every metric under every condition."""
    rows = []
    for cond, out in outcomes.items():
        for metric, values in [("accuracy", out.correct), ("consistency", out.consistent),
                               ("prob_change", out.prob_change), ("js_divergence", out.js)]:
            v = values[~np.isnan(values)]
            if len(v) == 0:
                continue
            lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            rows.append(dict(model=model, checkpoint=checkpoint, arch=arch, transform=cond.transform,
                             magnitude=cond.magnitude, magnitude_y=cond.magnitude_y, metric=metric,
                             value=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                             ci_low=lo, ci_high=hi, n_images=len(v)))
    return pd.DataFrame(rows)


def evaluate_conditions(
    model: nn.Module,
    spec: InputSpec,
    batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
    conditions: Sequence[Condition],
    *,
    protocol: str = "sweep",
    seed: int = 0,
    max_batch: int = 1024,
    device: torch.device = torch.device("cpu"),
    attention_stats: Optional[Dict[Condition, "object"]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Dict[Condition, Outcome]:
    """Run every condition on every batch of pixel-space images; per-image outcomes per condition.

    All transformed copies of a batch go through one forward pass, in chunks of at most
    ``max_batch`` images. ``attention_stats`` (condition -> AttentionStats) also measures
    attention at each condition.
    """
    from .layout import TokenLayout

    if protocol not in PROTOCOLS:
        raise AttnlabError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    g = torch.Generator().manual_seed(seed)
    parts: Dict[Condition, List[Outcome]] = {c: [] for c in conditions}
    model = model.to(device).eval()
    done = 0
    for images, labels in batches:
        B = images.shape[0]
        if protocol == "consistency":
            a, b = _two_crops(images, g)
            views = [a, b]
        else:
            views = [images] + [c.apply(images, g) for c in conditions]
        stacked = normalise(torch.cat(views), spec)
        probs = _forward(model, stacked, max_batch, device, conditions, B, attention_stats,
                         TokenLayout.from_model(model, tuple(images.shape[-2:])) if attention_stats else None)
        chunks = probs.split(B)
        base = chunks[0]
        for c, p in zip(conditions, chunks[1:]):
            parts[c].append(_outcome(p, base, labels))
        done += B
        if progress is not None:
            progress(done)
    return {c: Outcome(*(np.concatenate([getattr(o, f) for o in parts[c]])
                         for f in ("correct", "consistent", "prob_change", "js"))) for c in conditions}


def _forward(model, stacked, max_batch, device, conditions, B, attention_stats, layout) -> torch.Tensor:
    """Softmax outputs of ``stacked`` in chunks; attention of each condition's images to its stats."""
    from .capture import hooks

    out = []
    with torch.inference_mode():
        for start in range(0, stacked.shape[0], max_batch):
            x = stacked[start:start + max_batch].to(device, non_blocking=True)
            if attention_stats:
                # which condition each row belongs to (row 0..B-1 is the unshifted view)
                rows = torch.arange(start, start + x.shape[0]) // B - 1

                def sink(name: str, t: torch.Tensor, rows=rows) -> None:
                    layer = int(name.split(".")[1])
                    for k, cond in enumerate(conditions):
                        sel = rows == k
                        if sel.any():
                            attention_stats[cond].update(layer, t[sel], layout)

                with hooks(model, "*.attn.pattern", sink):
                    logits = model(x)
            else:
                logits = model(x)
            out.append(logits.float().softmax(-1).cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------- the study

def parse_numbers(text: str, what: str, cast=float) -> List:
    """'0,2,4' -> [0, 2, 4], with a one-line error naming the option."""
    try:
        values = [cast(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise AttnlabError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise AttnlabError(f"{what} is empty")
    return values


def measure_robustness(
    ckpts: Sequence[str],
    labels: Optional[Sequence[str]] = None,
    *,
    dataset: str,
    data_dir=None,
    split: str = "test",
    num_images: Optional[int] = None,
    shifts: Sequence[int] = (0, 2, 4, 8, 16),
    scales: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5),
    direction: str = "h",
    fill: str = "black",
    protocol: str = "sweep",
    seed: int = 0,
    batch_size: int = 64,
    device: Optional[str] = "auto",
    attention: bool = False,
    n_boot: int = 1000,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config=None,
    progress_factory=None,
) -> Tuple[pd.DataFrame, List[str]]:
    """Accuracy, consistency, probability change and JS divergence under shifts and scales."""
    from .analysis import resolve_device
    from .data import load_dataset
    from .metrics import AttentionStats
    from .study import DEFAULT_NUM_IMAGES, data_notes, load_models
    from .tables import tidy

    if batch_size < 1:
        raise AttnlabError(f"--batch-size must be at least 1, not {batch_size}")
    if num_images is not None and num_images < 1:
        raise AttnlabError(f"--num-images must be at least 1, not {num_images}")
    if fill not in FILLS:
        raise AttnlabError(f"unknown --fill {fill!r}; choose one of {', '.join(FILLS)}")
    if protocol not in PROTOCOLS:
        raise AttnlabError(f"unknown --protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if direction not in DIRECTIONS:
        raise AttnlabError(f"unknown --direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    bad_scale = [s for s in scales if not s > 0]
    if bad_scale:
        raise AttnlabError(f"--scales must be positive, got {bad_scale[0]}")
    dev = resolve_device(device)
    models = load_models(ckpts, labels, model=model, pretrained=pretrained, official_config=official_config)
    frames, notes = [], []
    for m in models:
        size = tuple(m.spec.input.size)
        if protocol == "sweep":
            conditions = sweep_conditions(shifts, scales, direction, fill, size)
        elif protocol == "revit-random":
            conditions = revit_conditions(shifts, scales, size)
        else:
            conditions = [Condition("two-crops", float(size[0] // 7))]
        ds = load_dataset(dataset, split=split, data_dir=data_dir, channels=m.spec.input.channels)
        if len(ds.classes) != m.spec.num_classes:
            raise AttnlabError(f"{dataset} has {len(ds.classes)} classes but {m.label} predicts {m.spec.num_classes}; "
                               "evaluate a checkpoint trained on this dataset")
        if num_images is not None and num_images > len(ds):
            raise AttnlabError(f"--num-images {num_images} is more than the {len(ds)} images available; "
                               f"pass --num-images {len(ds)} or fewer")
        ds = ds.subset(num_images if num_images is not None else min(len(ds), DEFAULT_NUM_IMAGES))
        ds = ds.with_transform(pixel_transform(m.spec.input))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
        stats = {c: AttentionStats(check=False, metrics=("mad_px", "entropy", "entropy_norm")) for c in conditions} \
            if attention else None
        progress = progress_factory(m.label, len(ds)) if progress_factory else None
        outcomes = evaluate_conditions(m.model, m.spec.input, loader, conditions, protocol=protocol, seed=seed,
                                       max_batch=batch_size, device=dev, attention_stats=stats,
                                       progress=progress)
        frame = summarise(outcomes, m.label, m.checkpoint, m.spec.arch, n_boot=n_boot, seed=seed)
        if stats:
            for cond, st in stats.items():
                att = st.to_frame(m.label, m.checkpoint)
                att = att[att["head"] == -1].drop(columns=["radius"])
                att["transform"], att["magnitude"], att["magnitude_y"] = cond.transform, cond.magnitude, cond.magnitude_y
                att["arch"] = m.spec.arch
                frame = pd.concat([frame, att], ignore_index=True)
        frames.append(frame)
        notes += data_notes(ds, m.spec, m.label)
    return tidy(pd.concat(frames, ignore_index=True)), notes


def write_robustness(frame: pd.DataFrame, out) -> List:
    """``robustness.csv`` and its figures, all or nothing."""
    from pathlib import Path

    from .outputs import staged_outputs
    from .plots import robustness as fig
    from .plots import save_figure
    from .tables import write_csv

    with staged_outputs(out) as stage:
        write_csv(frame, stage / "robustness.csv")
        transforms = set(frame["transform"])
        shift_like = sorted(t for t in transforms if t.startswith("shift-") and t != "shift-grid")
        shift_like += [t for t in ("random-translate", "two-crops") if t in transforms]
        for t in shift_like:
            save_figure(fig.against_magnitude(frame, t), stage, f"robustness_{t}")
        if "shift-grid" in transforms:
            save_figure(fig.shift_grid(frame), stage, "robustness_shift-grid")
        if "scale" in transforms:
            save_figure(fig.against_magnitude(frame, "scale"), stage, "robustness_scale")
        if (frame["metric"] == "mad_px").any():
            save_figure(fig.attention_under_transform(frame), stage, "attention_under_transform")
        names = sorted(p.name for p in stage.iterdir())
    return [Path(out) / n for n in names]
