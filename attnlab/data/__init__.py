"""Datasets in their official layouts, and the transforms that feed them to a model.

``load_dataset(name, split)`` returns a torch Dataset of ``(PIL.Image, int)`` pairs with
``.classes``, ``.name`` and ``.split``; data problems (unreadable files, mode
conversions) are collected on it for one report at the end (``ds.summary()``), never
printed per image. ``eval_transform(spec)`` / ``train_transform(spec)`` turn its images
into tensors for a model's :class:`~attnlab.spec.InputSpec`.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .._lazy import lazy_exports
from ..errors import AttnlabError
from .base import ArrayDataset, FileDataset, ImageDataset, PathLike, Transform, cache_root, convert_image, mode_for
from .cifar import RestrictedUnpickler, load_cifar10, load_cifar100, safe_load_pickle
from .fashion_mnist import load_fashion_mnist, read_idx
from .flowers102 import load_flowers102
from .imagefolder import load_imagefolder
from .imagenet import load_imagenet
from .pets import load_pets
from .shards import ShardDataset, load_webdataset

DATASETS: Dict[str, Callable[..., ImageDataset]] = {
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "pets": load_pets,
    "flowers102": load_flowers102,
    "imagefolder": load_imagefolder,
    "imagenet": load_imagenet,
    "webdataset": load_webdataset,
}
DEFAULT_DATASET = "fashion-mnist"

_ALIASES = {
    "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "cifar-10": "cifar10", "cifar-100": "cifar100",
    "oxford-pets": "pets", "oxford-iiit-pet": "pets", "oxford-iiit-pets": "pets",
    "flowers": "flowers102", "flowers-102": "flowers102", "oxford-flowers102": "flowers102",
    "image-folder": "imagefolder", "folder": "imagefolder",
    "imagenet-1k": "imagenet", "imagenet1k": "imagenet", "in1k": "imagenet", "ilsvrc2012": "imagenet",
    "wds": "webdataset", "web-dataset": "webdataset",
}

_LAZY = {name: "transforms" for name in ("eval_transform", "train_transform", "pixel_transform", "normalize",
                                        "denormalize", "uint8_transform", "to_model_input")}

__all__ = [
    "DATASETS", "DEFAULT_DATASET", "ArrayDataset", "FileDataset", "ImageDataset", "RestrictedUnpickler", "ShardDataset",
    "cache_root", "convert_image", "dataset_names", "denormalize", "eval_transform", "load_dataset", "read_idx",
    "normalize", "pixel_transform", "resolve_name", "safe_load_pickle", "to_model_input", "train_transform",
    "uint8_transform",
    "load_cifar10", "load_cifar100", "load_fashion_mnist", "load_flowers102", "load_imagefolder", "load_imagenet",
    "load_pets", "load_webdataset",
]


__getattr__, _ = lazy_exports(__name__, _LAZY)  # transforms import timm: load them on first use


def dataset_names() -> List[str]:
    """The dataset names ``load_dataset`` knows, default first."""
    return [DEFAULT_DATASET] + sorted(n for n in DATASETS if n != DEFAULT_DATASET)


def resolve_name(name: str) -> str:
    """Canonical dataset name ("CIFAR-10" -> "cifar10"), or an error listing the known ones."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise AttnlabError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())} "
                           "(imagefolder reads any <root>/<split>/<class>/<image> tree, webdataset any tar shards)")
    return key


def load_dataset(
    name: str = DEFAULT_DATASET,
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    *,
    transform: Transform = None,
    subset: Optional[int] = None,
    channels: Optional[int] = None,
    **options: Any,
) -> ImageDataset:
    """Load one split of a dataset: a torch Dataset of (PIL image, int label).

    ``channels`` (1 or 3) is the mode images come out in (default: the dataset's own);
    ``subset=N`` keeps the first N items; ``transform`` is applied to each image.
    ``options`` are dataset-specific (pets: ``task``; cifar100: ``labels``; file-based
    datasets, tar shards included: ``verify="full"|"header"``; imagefolder: ``classes``). A ``name`` that is
    an existing folder and no dataset name is read as an image folder.
    """
    try:
        key = resolve_name(name)
    except AttnlabError:
        if data_dir is not None or not os.path.isdir(os.path.expanduser(str(name))):
            raise
        key, data_dir = "imagefolder", Path(str(name)).expanduser()
    if channels is not None:
        mode_for(channels)  # fail before reading any data
    loader = DATASETS[key]
    params = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        extra = [p for p in params if p not in ("split", "data_dir", "download", "channels", "subset")]
        raise AttnlabError(
            f"{key} has no option {', '.join(unknown)}; its options: {', '.join(extra) or 'none'}"
        )
    ds = loader(split=split, data_dir=data_dir, download=download, channels=channels, subset=subset, **options)
    if transform is not None:
        ds = ds.with_transform(transform)
    return ds
