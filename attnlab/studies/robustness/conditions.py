"""Which transformed views of every image a robustness run compares, by protocol.

    sweep         deterministic: every magnitude of --shifts in a direction (h, v, diag, or a
                  2-D grid of (dx, dy)), and every --scales factor
    revit-random  the official ReViT evaluation: a random translation of up to the given
                  shift in each axis (torchvision RandomAffine(translate=...), black fill),
                  and resize-and-pad for scale, random per image, seeded
    consistency   antialiased-CNNs: two random crops of the image enlarged by 8/7 (offsets
                  0..size/7, as 224 crops of 256), share of identical top-1

A condition's ``transform`` names it in the tidy table: ``shift-h``, ``shift-v``,
``shift-diag``, ``shift-grid``, ``scale``, ``random-translate``, ``two-crops``. A shift
whose border is not black carries its fill after a colon (``shift-h:reflect``,
``shift-grid:roll``), so black and reflect runs stay apart in one table while black
runs read as they always did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ...errors import AttnlabError
from .transforms import FILLS, scale, shift

DIRECTIONS = ("h", "v", "diag", "grid")
PROTOCOLS = ("sweep", "revit-random", "consistency")

Size = Tuple[int, int]
Apply = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Condition:
    """One transformed view of every image: a transform name, its magnitude, and how to apply it."""

    transform: str
    magnitude: float
    magnitude_y: float = math.nan
    apply: Optional[Apply] = field(compare=False, repr=False, default=None)
    #: The random draws ``apply`` makes for n images, without the images (None: it draws none).
    draw: Optional[Callable[[int, torch.Generator], object]] = field(compare=False, repr=False, default=None)


# ----------------------------------------------------------------------------- options

def parse_numbers(text: str, what: str, cast: Callable = float, allow_empty: bool = False) -> List:
    """'0,2,4' -> [0, 2, 4], with a one-line error naming the option; '' or 'none' -> [] when allowed."""
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if not items or items == ["none"]:
        if allow_empty:
            return []
        raise AttnlabError(f"{what} is empty")
    values = []
    for v in items:
        try:
            values.append(cast(v))
        except ValueError:
            if cast is int and _is_number(v):
                raise AttnlabError(f"{what} are whole pixels; got {v} (pass integers, e.g. {what}=0,2,4)") from None
            raise AttnlabError(f"{what} must be comma-separated numbers, got {text!r}") from None
    return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_shifts(shifts: Sequence[int], size: Optional[Size] = None) -> None:
    """Shifts are whole pixels, and (given the input ``size``) smaller than the image."""
    if any(int(s) != s for s in shifts):
        raise AttnlabError("shifts are whole pixels; pass integers")
    if size is not None:
        limit = min(size)
        bad = [s for s in shifts if abs(int(s)) >= limit]
        if bad:
            raise AttnlabError(f"shift {bad[0]} is larger than the {size[0]}x{size[1]} input; "
                               f"use shifts below {limit}")


def check_scales(scales: Sequence[float], option: str = "scale factors") -> None:
    """Zoom factors are positive."""
    bad = [s for s in scales if not s > 0]
    if bad:
        raise AttnlabError(f"{option} must be positive, got {bad[0]}")


def shift_name(direction: str, fill: str = "black") -> str:
    """``shift-h`` for black borders, ``shift-h:reflect`` / ``shift-h:roll`` for the others."""
    return f"shift-{direction}" if fill == "black" else f"shift-{direction}:{fill}"


# ----------------------------------------------------------------------------- protocols

def _scale_conditions(scales: Sequence[float]) -> List[Condition]:
    check_scales(scales)
    return [Condition("scale", float(s), apply=lambda x, g, s=float(s): scale(x, s)) for s in scales]


def sweep_conditions(shifts: Sequence[int], scales: Sequence[float], direction: str, fill: str,
                     size: Size) -> List[Condition]:
    """Deterministic shifts in ``direction`` and zooms by ``scales``."""
    if direction not in DIRECTIONS:
        raise AttnlabError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    if fill not in FILLS:
        raise AttnlabError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    check_shifts(shifts, size)
    name = shift_name(direction, fill)
    out = []
    if direction == "grid":
        for dy in shifts:
            for dx in shifts:
                out.append(Condition(name, float(dx), float(dy),
                                     lambda x, g, dx=int(dx), dy=int(dy): shift(x, dx, dy, fill)))
    else:
        for d in shifts:
            dx, dy = {"h": (d, 0), "v": (0, d), "diag": (d, d)}[direction]
            out.append(Condition(name, float(d), apply=lambda x, g, dx=int(dx), dy=int(dy): shift(x, dx, dy, fill)))
    return out + _scale_conditions(scales)


def _shift_offsets(n: int, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """``[n, 2]`` integer (dx, dy), uniform in [-m, m] and rounded, as RandomAffine draws them."""
    return torch.empty(n, 2).uniform_(-max_shift, max_shift, generator=g).round().int()


def _random_shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """RandomAffine(translate=(f, f)) with black fill: per image, integer shifts uniform in [-m, m]."""
    out = torch.empty_like(x)
    offsets = _shift_offsets(x.shape[0], max_shift, g)
    for i, (dx, dy) in enumerate(offsets.tolist()):
        out[i] = shift(x[i], dx, dy, "black")
    return out


def revit_conditions(shifts: Sequence[int], scales: Sequence[float], size: Size) -> List[Condition]:
    """The official ReViT protocol: random translation up to each shift, resize-and-pad per scale."""
    check_shifts(shifts, size)
    out = [Condition("random-translate", float(m), apply=lambda x, g, m=int(m): _random_shift(x, m, g),
                     draw=lambda n, g, m=int(m): _shift_offsets(n, m, g)) for m in shifts]
    return out + _scale_conditions(scales)


def consistency_conditions(size: Size) -> List[Condition]:
    """The two-crops protocol has one condition: crops offset by up to size/7 pixels."""
    return [Condition("two-crops", float(_crop_margins(size)[0]))]


def conditions_for(protocol: str, shifts: Sequence[int], scales: Sequence[float], direction: str, fill: str,
                   size: Size) -> List[Condition]:
    """The conditions ``protocol`` compares for an input of ``size`` (h, w)."""
    if protocol == "sweep":
        return sweep_conditions(shifts, scales, direction, fill, size)
    if protocol == "revit-random":
        return revit_conditions(shifts, scales, size)
    if protocol == "consistency":
        return consistency_conditions(size)
    raise AttnlabError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def two_crops(x: torch.Tensor, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Enlarge by 8/7 and take two random crops of the original size (antialiased-CNNs protocol)."""
    H, W = x.shape[-2:]
    mh, mw = _crop_margins((H, W))
    big = F.interpolate(x, size=(H + mh, W + mw), mode="bilinear", align_corners=False)
    crops = []
    for _ in range(2):
        oy, ox = _crop_offsets(x.shape[0], mh, mw, g)
        crops.append(torch.stack([big[i, :, oy[i]:oy[i] + H, ox[i]:ox[i] + W] for i in range(x.shape[0])]))
    return crops[0], crops[1]


def _crop_margins(size: Size) -> Tuple[int, int]:
    """How far a crop of ``size`` can move inside the image enlarged by 8/7 (256 / 224)."""
    H, W = size
    return H * 8 // 7 - H, W * 8 // 7 - W


def _crop_offsets(n: int, mh: int, mw: int, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(oy, ox)``: one random crop's offsets per image, up to ``mh`` / ``mw`` pixels."""
    return torch.randint(0, mh + 1, (n,), generator=g), torch.randint(0, mw + 1, (n,), generator=g)


def views(images: torch.Tensor, conditions: Sequence[Condition], protocol: str,
          g: torch.Generator) -> List[torch.Tensor]:
    """The reference view of a batch, then one view per condition (pixel space).

    The reference is the image itself; under ``consistency`` it is the first of the two
    crops and the one condition's view the second.
    """
    if protocol == "consistency":
        return list(two_crops(images, g))
    return [images] + [c.apply(images, g) for c in conditions]


def skip_views(n: int, conditions: Sequence[Condition], protocol: str, g: torch.Generator, size: Size) -> None:
    """Make the random draws :func:`views` would make for a batch of ``n`` images of ``size``, without
    the images: a process that starts later in the data draws on from where one process would be."""
    if protocol == "consistency":
        for _ in range(2):
            _crop_offsets(n, *_crop_margins(size), g)
        return
    for c in conditions:
        if c.draw is not None:
            c.draw(n, g)
