"""Image -> tensor pipelines for a model's :class:`~attnlab.spec.InputSpec`, built on timm.

timm's ``create_transform`` does the geometry (resize / crop / RandAugment / flips) and
the tensor part (to tensor, normalise with ``spec.mean``/``spec.std``). attnlab adds two
steps in front: the channel conversion the model needs (``spec.channels``: 1 -> "L",
3 -> "RGB", transparency composited on black), and, with ``resize="pad"`` (default),
zero-padding of images smaller than the input size, centred, instead of upscaling them:
a 28x28 Fashion-MNIST digit becomes 32x32 with a 2-pixel black border, pixels unchanged.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

from PIL import Image

from ..errors import AttnlabError
from ..spec import InputSpec
from .base import convert_image, mode_for
from ..errors import one_line

RESIZE_MODES = ("pad", "resize")


class ConvertMode:
    """Bring any PIL image to the mode the model takes ("L" or "RGB")."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        return convert_image(img, self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


class PadToSize:
    """Zero-pad an image, centred, up to ``size`` (h, w); sides already large enough are kept."""

    def __init__(self, size: Tuple[int, int], fill: int = 0) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.fill = fill

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        th, tw = max(h, self.size[0]), max(w, self.size[1])
        if (th, tw) == (h, w):
            return img
        fill: Any = self.fill if len(img.getbands()) == 1 else (self.fill,) * len(img.getbands())
        out = Image.new(img.mode, (tw, th), fill)
        out.paste(img, ((tw - w) // 2, (th - h) // 2))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, fill={self.fill})"


class PadOrResize:
    """Eval geometry: images that fit the input size are padded to it and nothing more;
    the others go through ``resize`` (timm's resize + centre crop) after padding any
    side that is too short."""

    def __init__(self, size: Tuple[int, int], resize: Callable[[Image.Image], Image.Image]) -> None:
        self.pad = PadToSize(size)
        self.resize = resize

    def __call__(self, img: Image.Image) -> Image.Image:
        img = self.pad(img)
        return img if (img.size[1], img.size[0]) == self.pad.size else self.resize(img)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.pad.size}, resize={self.resize!r})"


def _check(spec: InputSpec, resize: str) -> Tuple[str, Tuple[int, int]]:
    mode = mode_for(spec.channels)
    if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
        raise AttnlabError(
            f"input spec has {spec.channels} channels but mean {list(spec.mean)} and std {list(spec.std)}; "
            "expected one value per channel"
        )
    if any(s <= 0 for s in spec.std):
        raise AttnlabError(f"input spec std must be positive, found {list(spec.std)}")
    if resize not in RESIZE_MODES:
        raise AttnlabError(f"resize must be one of {', '.join(RESIZE_MODES)}, not {resize!r}")
    return mode, (int(spec.size[0]), int(spec.size[1]))


def _split_at_tensor(tfs: Sequence[Any]) -> Tuple[List[Any], List[Any]]:
    """timm's steps before the to-tensor step (geometry), and from it on (tensor part)."""
    for i, t in enumerate(tfs):
        if "ToTensor" in type(t).__name__:
            return list(tfs[:i]), list(tfs[i:])
    raise AttnlabError("timm's transform has no to-tensor step; this timm version is not supported")


def eval_transform(spec: InputSpec, resize: str = "pad") -> Callable[[Image.Image], Any]:
    """Deterministic pipeline for evaluation and analysis: PIL image -> float tensor [C,H,W].

    ``resize="pad"`` keeps small images' pixels as they are (zero border); ``"resize"``
    scales every image (timm: resize to size/crop_pct, centre crop).
    """
    from timm.data import create_transform
    from torchvision import transforms as T

    mode, size = _check(spec, resize)
    timm_tf = create_transform(
        (spec.channels, *size), is_training=False, interpolation=spec.interpolation,
        mean=tuple(spec.mean), std=tuple(spec.std), crop_pct=spec.crop_pct,
    )
    geometry, tensor_part = _split_at_tensor(timm_tf.transforms)
    steps: List[Any] = [ConvertMode(mode)]
    if resize == "pad":
        steps.append(PadOrResize(size, T.Compose(geometry)))
    else:
        steps += geometry
    return T.Compose(steps + tensor_part)


def train_transform(
    spec: InputSpec,
    randaugment: Optional[str] = "rand-m9-mstd0.5",
    resize: str = "pad",
    scale: Optional[Tuple[float, float]] = None,
    hflip: float = 0.5,
    re_prob: float = 0.0,
    **timm_options: Any,
) -> Callable[[Image.Image], Any]:
    """Augmenting pipeline for training: timm's random-resized-crop, flip, RandAugment.

    ``randaugment`` is a timm auto-augment string (None or "none" turns it off); ``scale``
    the crop-area range (timm's default (0.08, 1)); ``re_prob`` random erasing. With
    ``resize="pad"`` small images are first zero-padded to the input size, so crops are
    taken from the padded image rather than from an upscaled one. Other keyword
    arguments go to ``timm.data.create_transform``.
    """
    from timm.data import create_transform
    from torchvision import transforms as T

    mode, size = _check(spec, resize)
    aa = None if randaugment in (None, "", "none") else randaugment
    try:
        timm_tf = create_transform(
            (spec.channels, *size), is_training=True, auto_augment=aa, scale=scale, hflip=hflip,
            re_prob=re_prob, interpolation=spec.interpolation, mean=tuple(spec.mean), std=tuple(spec.std),
            **timm_options,
        )
    except (AssertionError, ValueError, KeyError, TypeError) as e:
        raise AttnlabError(f"cannot build the training transform (randaugment={randaugment!r}): {one_line(e)}") from None
    steps: List[Any] = [ConvertMode(mode)]
    if resize == "pad":
        steps.append(PadToSize(size))
    return T.Compose(steps + list(timm_tf.transforms))


def pixel_transform(spec: InputSpec, resize: str = "pad") -> Callable[[Image.Image], Any]:
    """``eval_transform`` without its normalisation: images as [0, 1] tensors, for pixel-space edits."""
    from torchvision import transforms as T

    steps = [t for t in eval_transform(spec, resize).transforms if not isinstance(t, T.Normalize)]
    return T.Compose(steps)


def uint8_transform(spec: InputSpec, resize: str = "pad") -> Callable[[Image.Image], Any]:
    """``eval_transform``'s geometry ending in a uint8 tensor ``[C, H, W]``: what DataLoader workers
    send (a quarter of the bytes of floats, as timm's prefetching loader does);
    :func:`to_model_input` finishes the batch on its device."""
    from timm.data.transforms import MaybePILToTensor
    from torchvision import transforms as T

    steps = [t for t in eval_transform(spec, resize).transforms
             if not isinstance(t, T.Normalize) and "ToTensor" not in type(t).__name__]
    return T.Compose(steps + [MaybePILToTensor()])


def to_model_input(x: "torch.Tensor", spec: InputSpec, pixel: bool = False) -> "torch.Tensor":
    """uint8 images ``[B, C, H, W]`` (:func:`uint8_transform`) -> the model's input, the same bits as
    ``eval_transform`` gives (ToTensor's ``/ 255``, then Normalize's arithmetic); ``pixel``: the [0, 1]
    images of ``pixel_transform``."""
    import torch

    x = x.to(torch.get_default_dtype()).div(255)
    return x if pixel else normalize(x, spec)


def normalize(x: "torch.Tensor", spec: InputSpec) -> "torch.Tensor":
    """[0, 1] images ``[B, C, H, W]`` -> the model's input, as torchvision's Normalize computes it."""
    import torch

    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def denormalize(x: "torch.Tensor", spec: InputSpec) -> "torch.Tensor":
    """The model's input ``[B, C, H, W]`` -> images in [0, 1] (float64, clamped), for display."""
    import torch

    x = x.detach().cpu().double()
    mean = torch.tensor(spec.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float64).view(1, -1, 1, 1)
    return (x * std + mean).clamp(0, 1)
