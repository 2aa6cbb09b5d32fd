"""A dataset split held in memory as one uint8 tensor ``[N, C, H, W]`` at the model's input size.

Small-image datasets fit in memory many times over (Fashion-MNIST at 32x32: 61 MB), so
the trainer indexes batches straight out of a tensor instead of decoding and
transforming images one at a time. Images are brought to the model's input size with
the *same geometry* as ``attnlab.data.eval_transform`` (zero-pad centred if the image
fits, else timm's resize + centre crop), so evaluating these tensors gives the same
numbers as ``attnlab evaluate`` on the files.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch

from ..errors import AttnlabError
from ..spec import InputSpec

#: Per-channel statistics of the training sets (28x28 / 32x32, before padding).
DATASET_STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@dataclass
class TensorData:
    """One split in memory: uint8 images ``[N, C, H, W]``, int64 targets, class names."""

    images: torch.Tensor
    targets: torch.Tensor
    classes: List[str]
    name: str
    split: str

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def geometry_of(spec: InputSpec) -> Callable[[Any], Any]:
    """The PIL part of ``eval_transform(spec)``: everything before its to-tensor step."""
    from torchvision import transforms as T

    from ..data import eval_transform

    steps = list(eval_transform(spec).transforms)
    for i, step in enumerate(steps):
        if "ToTensor" in type(step).__name__:
            return T.Compose(steps[:i])
    raise AttnlabError("attnlab.data.eval_transform has no to-tensor step; cannot build the in-memory data")


def _pad_array(images: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Zero-pad [N,H,W(,C)] images, centred, to ``size`` (what PadToSize does per image)."""
    n, h, w = images.shape[:3]
    th, tw = size
    top, left = (th - h) // 2, (tw - w) // 2
    out = np.zeros((n, th, tw) + images.shape[3:], dtype=np.uint8)
    out[:, top:top + h, left:left + w] = images
    return out


def to_tensor_data(ds: Any, spec: InputSpec, workers: int = 4) -> TensorData:
    """Convert a dataset of (PIL image, label) to :class:`TensorData` at ``spec``'s size.

    Datasets that hold a uint8 array (``.images``: Fashion-MNIST, CIFAR) whose images fit
    the input size are padded in one numpy operation; anything else goes image by image
    through the eval geometry (threads: PIL releases the GIL while resizing).
    """
    size = (int(spec.size[0]), int(spec.size[1]))
    c = int(spec.channels)
    geometry = geometry_of(spec)
    images = getattr(ds, "images", None)
    native = getattr(ds, "native_mode", None)
    fits = (isinstance(images, np.ndarray) and images.dtype == np.uint8 and len(images) == len(ds)
            and images.shape[1] <= size[0] and images.shape[2] <= size[1]
            and native == getattr(ds, "mode", None) and ((images.ndim == 3 and c == 1) or (images.ndim == 4 and c == 3)))
    if fits:
        arr = _pad_array(images, size)
        if len(ds):  # the vectorised path must agree with the per-image geometry
            ref = np.asarray(geometry(ds.load_image(0)))
            if ref.shape != arr[0].shape or not np.array_equal(ref, arr[0]):
                fits = False
    if not fits:
        def one(i: int) -> np.ndarray:
            a = np.asarray(geometry(ds.load_image(i)) if hasattr(ds, "load_image") else geometry(ds[i][0]))
            if a.shape[:2] != size:
                raise AttnlabError(f"{getattr(ds, 'name', 'dataset')}: image {i} came out {list(a.shape[:2])}, "
                                   f"expected {list(size)}")
            return a

        with ThreadPoolExecutor(max_workers=workers) as pool:
            arr = np.stack(list(pool.map(one, range(len(ds))))) if len(ds) else np.zeros((0, *size), np.uint8)
    if arr.ndim == 3:
        arr = arr[:, :, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()
    if tensor.shape[1] != c:
        raise AttnlabError(f"images have {tensor.shape[1]} channels, the model takes {c}")
    targets = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
    return TensorData(tensor, targets, list(ds.classes), str(getattr(ds, "name", "")), str(getattr(ds, "split", "")))


def input_spec_for(model: torch.nn.Module, dataset: str, channels: int) -> InputSpec:
    """The model's input spec with the dataset's own channel statistics where they are known."""
    from ..checkpoint import default_input_spec

    base = default_input_spec(model)
    mean, std = DATASET_STATS.get(dataset, (base.mean, base.std))
    if len(mean) != channels:
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return InputSpec(size=base.size, channels=channels, mean=tuple(mean), std=tuple(std),
                     interpolation=base.interpolation, crop_pct=base.crop_pct)


def load_split(name: str, split: str, data_dir: Optional[str], download: bool, subset: Optional[int] = None):
    """``attnlab.data.load_dataset`` for one split, in the dataset's own channel mode."""
    from ..data import load_dataset

    return load_dataset(name, split, data_dir=data_dir, download=download, subset=subset)


def normalize_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 batch -> model input, exactly as torchvision's ToTensor + Normalize compute it.

    ``(x / 255 - mean) / std`` in float32, in that order, so the trainer's in-memory
    tensors give bit-for-bit the inputs of ``attnlab.data.eval_transform``. For images
    already in [0, 1] use :func:`attnlab.data.normalize` (which takes an InputSpec).
    """
    return x.to(torch.float32).div(255).sub(mean).div(std)
