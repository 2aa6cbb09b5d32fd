"""Augmentation on uint8 image batches held as tensors: the fast path for small images.

Per-image PIL pipelines cost more than a micro ViT's training step on CPU for 32x32
images. Here a whole batch ``[B, C, H, W]`` (uint8) is augmented at once:

- RandAugment (timm's ``rand-m<M>-n<N>``): each of the N slots draws one op per image;
  the images that drew the same op (and sign) are transformed together in one batched
  ``torchvision.transforms.v2.functional`` call, so there are at most ~28 calls per slot
  whatever the batch size. Magnitudes follow timm's scale (M of 10).
- random crop after zero padding (``crop_padding``) and horizontal flips: vectorised
  gathers, no per-image loop.

All randomness comes from the ``torch.Generator`` passed in, which the trainer reseeds
every step from (seed, epoch, step, rank): batches are reproducible and a resumed run
augments exactly as an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .config import parse_randaugment

Op = Callable[[torch.Tensor, float], torch.Tensor]


class BatchRandAugment:
    """RandAugment over a uint8 batch, grouping images that drew the same op."""

    SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "color", "contrast",
              "sharpness")

    def __init__(self, magnitude: int = 9, num_ops: int = 2, fill: Sequence[int] = (0,)) -> None:
        self.magnitude = magnitude
        self.num_ops = num_ops
        self.fill = [float(f) for f in fill]
        f = magnitude / 10.0
        self.ops: List[Tuple[str, float]] = [
            ("identity", 0.0),
            ("autocontrast", 0.0),
            ("equalize", 0.0),
            ("rotate", 30.0 * f),                      # degrees
            ("posterize", float(max(1, 8 - int(4 * f)))),  # bits kept
            ("solarize", 256.0 - 256.0 * f),           # threshold
            ("color", 0.9 * f),                        # enhance factor 1 +- v
            ("contrast", 0.9 * f),
            ("brightness", 0.9 * f),
            ("sharpness", 0.9 * f),
            ("shear_x", 0.3 * f),                      # shear factor
            ("shear_y", 0.3 * f),
            ("translate_x", 0.45 * f),                 # fraction of the width
            ("translate_y", 0.45 * f),
        ]

    def _apply(self, name: str, x: torch.Tensor, v: float) -> torch.Tensor:
        h, w = x.shape[-2:]
        nearest = InterpolationMode.NEAREST
        if name == "identity":
            return x
        if name == "autocontrast":
            return F.autocontrast(x)
        if name == "equalize":
            return F.equalize(x)
        if name == "rotate":
            return F.rotate(x, v, interpolation=nearest, fill=self.fill)
        if name == "posterize":
            return F.posterize(x, int(v))
        if name == "solarize":
            return F.solarize(x, min(255.0, v))
        if name in ("color", "contrast", "brightness", "sharpness"):
            fn = {"color": F.adjust_saturation, "contrast": F.adjust_contrast,
                  "brightness": F.adjust_brightness, "sharpness": F.adjust_sharpness}[name]
            return fn(x, max(0.0, 1.0 + v))
        if name in ("shear_x", "shear_y"):
            deg = math.degrees(math.atan(v))
            shear = [deg, 0.0] if name == "shear_x" else [0.0, deg]
            return F.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=nearest,
                            fill=self.fill, center=[0, 0])
        if name in ("translate_x", "translate_y"):
            t = [int(round(v * w)), 0] if name == "translate_x" else [0, int(round(v * h))]
            return F.affine(x, angle=0.0, translate=t, scale=1.0, shear=[0.0, 0.0], interpolation=nearest,
                            fill=self.fill)
        raise ValueError(name)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        x = x.clone()
        for _ in range(self.num_ops):
            op_idx = torch.randint(len(self.ops), (b,), generator=generator)
            negate = torch.randint(2, (b,), generator=generator).bool()
            for k, (name, v) in enumerate(self.ops):
                chosen = op_idx == k
                if name == "identity" or not bool(chosen.any()):
                    continue
                groups = [(chosen & ~negate, v), (chosen & negate, -v)] if name in self.SIGNED else [(chosen, v)]
                for mask, value in groups:
                    idx = mask.nonzero().flatten()
                    if idx.numel():
                        x[idx] = self._apply(name, x[idx], value)
        return x


class TensorAugment:
    """The training augmentation of the fast path: RandAugment, padded random crop, flip.

    ``fill`` is what RandAugment's geometric ops expose (timm: the mean pixel); the crop
    pads with zeros.
    """

    def __init__(
        self,
        randaugment: Optional[str] = "rand-m9-n2",
        crop_padding: int = 4,
        hflip: float = 0.5,
        fill: Sequence[int] = (0,),
    ) -> None:
        self.randaugment = None
        if randaugment:
            magnitude, num_ops = parse_randaugment(randaugment)
            self.randaugment = BatchRandAugment(magnitude, num_ops, fill)
        self.crop_padding = int(crop_padding)
        self.hflip = float(hflip)
        self.fill = list(fill)

    @property
    def active(self) -> bool:
        return self.randaugment is not None or self.crop_padding > 0 or self.hflip > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a uint8 batch ``[B, C, H, W]``; returns a new uint8 batch of the same shape."""
        if self.randaugment is not None:
            x = self.randaugment(x, generator)
        if self.crop_padding > 0:  # zero padding, like the border eval adds to small images
            x = random_crop(x, self.crop_padding, generator)
        if self.hflip > 0:
            flip = torch.rand(x.shape[0], generator=generator) < self.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator, fill: Sequence[int] = (0,)) -> torch.Tensor:
    """Pad every image by ``padding`` pixels and cut a random HxW window from each (one gather)."""
    b, c, h, w = x.shape
    padded = x.new_empty((b, c, h + 2 * padding, w + 2 * padding))
    padded[:] = torch.tensor([int(f) for f in fill] if len(fill) == c else [int(fill[0])] * c,
                             dtype=x.dtype).view(1, c, 1, 1)
    padded[:, :, padding:padding + h, padding:padding + w] = x
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]          # [B, H, 1]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]          # [B, 1, W]
    batch = torch.arange(b)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols]          # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def batch_erasing(probability: float, device: torch.device) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """timm's random erasing (pixel mode) over a normalised batch, or None when off.

    It draws from Python's ``random`` and torch's RNG, which the trainer seeds every step.
    """
    if probability <= 0:
        return None
    from timm.data.random_erasing import RandomErasing

    return RandomErasing(probability=probability, mode="pixel", device=device.type)
