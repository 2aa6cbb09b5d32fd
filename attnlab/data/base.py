"""What every dataset layout shares: the Dataset classes, image checks, caches, downloads.

Datasets hand out ``(PIL.Image, int)`` pairs in the mode the model takes ("L" or "RGB").
Problems with the data are never printed per image and never dropped silently: files
that cannot be decoded are skipped but listed in ``.unreadable``, and mode conversions
(palette, RGBA, CMYK, grey...) are counted in ``.conversions``, so the caller can report
both once, at the end (``dataset.summary()``).
"""
from __future__ import annotations

import copy
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch.utils.data
from PIL import Image

from ..errors import AttnlabError, one_line
from ..paths import PathLike

Transform = Optional[Callable[[Any], Any]]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def is_image_name(path: str) -> bool:
    """Whether a file name (or path) has one of the image extensions, case-insensitive."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


MODES = {1: "L", 3: "RGB"}


def mode_for(channels: int) -> str:
    """PIL mode for a channel count; only grey (1) and colour (3) models exist here."""
    if channels not in MODES:
        raise AttnlabError(f"channels must be 1 (grey) or 3 (RGB), not {channels!r}")
    return MODES[channels]


def cache_root() -> Path:
    """Where downloads go: $ATTNLAB_CACHE, else ~/.cache/attnlab."""
    env = os.environ.get("ATTNLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "attnlab"


def cache_dir(name: str) -> Path:
    """The cache folder of one dataset (not created here)."""
    return cache_root() / name


def describe_dir(path: Path, limit: int = 6) -> str:
    """'found: a, b/, c' — what a folder holds, for layout errors."""
    path = Path(path)
    if not path.exists():
        return f"found: {path} does not exist"
    if not path.is_dir():
        return f"found: {path} is a file, not a folder"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not entries:
        return f"found: {path} is empty"
    more = f" (+{len(entries) - limit} more)" if len(entries) > limit else ""
    return f"found in {path}: {', '.join(entries[:limit])}{more}"


def check_split(dataset: str, split: str, splits: Sequence[str]) -> str:
    if split not in splits:
        raise AttnlabError(f"{dataset} has splits {', '.join(splits)}; got split={split!r}")
    return split


def classes_in_turn(targets: Sequence[int]) -> np.ndarray:
    """Indices ordering items round-robin over classes (first of each class, then second...),
    each class keeping its stored order."""
    targets = np.asarray(targets)
    rank = np.zeros(len(targets), dtype=np.int64)  # position of each item within its class
    for c in np.unique(targets):
        where = np.flatnonzero(targets == c)
        rank[where] = np.arange(len(where))
    return np.lexsort((targets, rank))


class SubsetTooLarge(AttnlabError):
    """``subset=N`` asks for more items than the dataset has (readers wanting "at most N" catch it)."""


def check_subset(subset: Optional[int], size: Optional[int] = None, what: str = "") -> Optional[int]:
    """``subset=N`` keeps the first N items; it must make sense for this dataset."""
    if subset is None:
        return None
    if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)) or subset < 1:
        raise AttnlabError(f"subset must be a whole number >= 1, not {subset!r}")
    if size is not None and subset > size:
        raise SubsetTooLarge(f"subset={subset} is larger than {what}, which has {size} items")
    return int(subset)


# --------------------------------------------------------------------------- images
_HIGH_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def convert_image(img: Image.Image, mode: str) -> Image.Image:
    """Bring any PIL image to ``mode`` ("L" or "RGB"); transparency is composited on black.

    Returns a new image (or ``img`` itself when it is already in ``mode``).
    """
    if img.mode == mode:
        return img
    if img.mode in _HIGH_BIT or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if img.mode != "F":  # 16-bit grey: keep the top 8 bits' worth of range
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return img if img.mode == mode else img.convert(mode)


def probe_image(path: PathLike, full: bool = True) -> Optional[str]:
    """The file's PIL mode, or None when it is not a decodable image.

    ``full`` decodes the whole file (a truncated JPEG only fails there); JPEGs are
    decoded at 1/8 scale, which still reads every byte but costs little.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if full:
                if im.format == "JPEG":
                    im.draft(None, (1, 1))
                im.load()
            return mode
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return None


def scan_images(
    items: Sequence[Tuple[str, int]],
    mode: str,
    verify: str = "full",
    limit: Optional[int] = None,
    workers: Optional[int] = None,
) -> Tuple[List[Tuple[str, int]], List[str], Counter]:
    """Check image files up front: (readable items, unreadable paths, conversion counts).

    Items are kept in order; with ``limit`` the scan stops once that many are readable, so
    ``subset=N`` on a large folder only touches N files and those that fail to decode.
    """
    if verify not in ("full", "header"):
        raise AttnlabError(f"verify must be 'full' or 'header', not {verify!r}")
    full = verify == "full"
    readable: List[Tuple[str, int]] = []
    unreadable: List[str] = []
    conversions: Counter = Counter()
    workers = workers or min(16, os.cpu_count() or 1)
    start = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while start < len(items) and (limit is None or len(readable) < limit):
            # chunks of 256, or of the images still wanted: a subset probes about as many files as it keeps
            chunk = 256 if limit is None else min(256, limit - len(readable))
            batch, start = items[start:start + chunk], start + chunk
            modes = list(pool.map(lambda it: probe_image(it[0], full), batch))
            for (path, label), src in zip(batch, modes):
                if src is None:
                    unreadable.append(str(path))
                    continue
                readable.append((str(path), int(label)))
                if src != mode:
                    conversions[f"{src}->{mode}"] += 1
    return readable, unreadable, conversions


# --------------------------------------------------------------------------- datasets
class ImageDataset(torch.utils.data.Dataset):
    """A labelled image dataset: ``ds[i] -> (image, label)``, with what a report needs.

    ``image`` is a PIL image in ``mode`` (or whatever ``transform`` makes of it), ``label``
    an int indexing ``classes``. ``unreadable`` lists skipped files, ``conversions``
    counts mode changes ("P->RGB": 3), ``ignored`` lists non-image files that were seen.
    """

    def __init__(
        self,
        name: str,
        split: str,
        classes: Sequence[str],
        targets: np.ndarray,
        channels: int,
        root: Optional[PathLike] = None,
        transform: Transform = None,
        target_transform: Transform = None,
    ) -> None:
        self.name = name
        self.split = split
        self.classes: List[str] = list(classes)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.channels = int(channels)
        self.mode = mode_for(self.channels)
        self.root = str(root) if root is not None else None
        self.transform = transform
        self.target_transform = target_transform
        self.unreadable: List[str] = []
        self.ignored: List[str] = []
        self.conversions: Counter = Counter()
        #: Stored class by class (image folders): subsets then take classes in turn.
        self.class_ordered = False
        #: Items the source holds before any subset (files: those found, less those seen unreadable);
        #: None: ``len(self)``.
        self.found: Optional[int] = None

    # what subclasses provide
    def load_image(self, index: int) -> Image.Image:
        """The untransformed image at ``index``, in ``self.mode``."""
        raise NotImplementedError

    def _take(self, keep: np.ndarray) -> None:
        """Keep the items at the sorted indices ``keep`` (subclasses index their storage too)."""
        self.targets = self.targets[keep]

    # the Dataset protocol
    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        img: Any = self.load_image(index)
        label: Any = int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label

    # conveniences
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_to_idx(self) -> Dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def with_transform(self, transform: Transform, target_transform: Transform = None) -> "ImageDataset":
        """A copy that applies ``transform`` (sharing the data), e.g. train vs eval views."""
        other = copy.copy(self)
        other.transform = transform
        other.target_transform = target_transform
        return other

    def subset(self, n: int) -> "ImageDataset":
        """A copy with ``n`` items: the first ``n``, or for a dataset stored class by class
        (an image folder) the first ``n`` taking the classes in turn, in their stored order,
        so that a subset of a sorted folder is not one or two classes."""
        n = check_subset(n, len(self), f"{self.name}/{self.split}")
        other = copy.copy(self)
        other.found = self.found if self.found is not None else len(self)
        keep = classes_in_turn(self.targets)[:n] if self.class_ordered else np.arange(n)
        other._take(np.sort(keep))
        return other

    def summary(self) -> str:
        """One line for the end of a run: size, classes, and every data problem seen."""
        parts = [f"{self.name}/{self.split}: {len(self)} images, {self.num_classes} classes"]
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable files skipped (e.g. {self.unreadable[0]})")
        if self.ignored:
            parts.append(f"{len(self.ignored)} non-image files ignored")
        if self.conversions:
            parts.append("converted " + ", ".join(f"{k} x{v}" for k, v in sorted(self.conversions.items())))
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.summary()}>"


class ArrayDataset(ImageDataset):
    """Images held in one uint8 array ([N,H,W] grey or [N,H,W,3] RGB), decoded lazily.

    ``images`` and ``targets`` are the raw arrays, so a trainer can build tensors in one go.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, **kwargs: Any) -> None:
        super().__init__(targets=targets, **kwargs)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
            raise ValueError(f"images must be uint8 [N,H,W] or [N,H,W,3], got {images.dtype} {images.shape}")
        if images.shape[0] != self.targets.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {self.targets.shape[0]} labels")
        self.images = images
        self.native_mode = "L" if images.ndim == 3 else "RGB"
        if self.native_mode != self.mode:
            self.conversions[f"{self.native_mode}->{self.mode}"] = len(self)

    def load_image(self, index: int) -> Image.Image:
        img = Image.fromarray(self.images[index], self.native_mode)
        return img if self.native_mode == self.mode else img.convert(self.mode)

    def _take(self, keep: np.ndarray) -> None:
        super()._take(keep)
        self.images = self.images[keep]
        if self.conversions:
            self.conversions = Counter({k: len(keep) for k in self.conversions})


class FileDataset(ImageDataset):
    """Images read from files on each access; files were checked when the dataset was built."""

    def __init__(self, samples: Sequence[Tuple[str, int]], **kwargs: Any) -> None:
        samples = list(samples)
        super().__init__(targets=np.array([s[1] for s in samples], dtype=np.int64), **kwargs)
        self.paths: List[str] = [s[0] for s in samples]

    @property
    def samples(self) -> List[Tuple[str, int]]:
        return list(zip(self.paths, (int(t) for t in self.targets)))

    def load_image(self, index: int) -> Image.Image:
        path = self.paths[index]
        return decode_image(lambda: path, path, self.mode, "it changed since the dataset was loaded")

    def _take(self, keep: np.ndarray) -> None:
        super()._take(keep)
        self.paths = [self.paths[i] for i in keep]


def decode_image(source: Callable[[], Any], name: str, mode: str, changed: str) -> Image.Image:
    """Open ``source()`` (a path or a file object) as a fully loaded image in ``mode``; a file that
    does not decode is one AttnlabError naming ``name`` (``changed`` says how it can have changed)."""
    try:
        with Image.open(source()) as im:
            im.load()
            return im.copy() if im.mode == mode else convert_image(im, mode)
    except AttnlabError:
        raise
    except Exception as e:
        raise AttnlabError(
            f"cannot decode {name} ({one_line(e)}); {changed}, or the dataset was loaded with "
            "verify='header' (use verify='full' to skip such images up front)"
        ) from None


def build_file_dataset(
    items: Sequence[Tuple[str, int]],
    *,
    name: str,
    split: str,
    classes: Sequence[str],
    channels: int,
    root: Optional[PathLike],
    subset: Optional[int] = None,
    verify: str = "full",
    class_ordered: bool = False,
) -> FileDataset:
    """Check the files, then build the dataset; missing files count as unreadable.

    ``class_ordered``: the items are stored class by class, so ``subset`` takes the
    classes in turn (see :meth:`ImageDataset.subset`)."""
    mode = mode_for(channels)
    subset = check_subset(subset)
    if subset is not None and class_ordered:
        position = {path: k for k, (path, _) in enumerate(items)}
        turn = classes_in_turn([label for _, label in items])
        readable, unreadable, conversions = scan_images([items[k] for k in turn], mode, verify=verify, limit=subset)
        readable.sort(key=lambda item: position[item[0]])
    else:
        readable, unreadable, conversions = scan_images(items, mode, verify=verify, limit=subset)
    if subset is not None and len(readable) < subset:
        check_subset(subset, len(readable), f"{name}/{split} (readable images)")
    if not readable:
        raise AttnlabError(
            f"{name}/{split}: expected readable images, found none of {len(items)}"
            + (f" (e.g. {unreadable[0]} cannot be decoded)" if unreadable else "")
        )
    ds = FileDataset(readable, name=name, split=split, classes=classes, channels=channels, root=root)
    ds.unreadable = unreadable
    ds.conversions = conversions
    ds.class_ordered = class_ordered
    ds.found = len(items) - len(unreadable)  # a subset stopped scanning early: the rest counted as found
    return ds


# --------------------------------------------------------------------------- downloads
def download_file(url: str, folder: Path, filename: Optional[str] = None, md5: Optional[str] = None) -> Path:
    """Fetch one file into ``folder`` and verify its md5 (skipped when a good copy is there)."""
    from torchvision.datasets.utils import download_url

    filename = filename or url.rsplit("/", 1)[-1]
    try:
        download_url(url, str(folder), filename=filename, md5=md5)
    except Exception as e:
        raise AttnlabError(f"could not download {url} into {folder}: {one_line(e)}") from None
    return Path(folder) / filename


def download_archive(url: str, folder: Path, md5: Optional[str] = None) -> None:
    """Fetch a tarball into ``folder``, verify its md5, unpack it there, delete the tarball."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(url, str(folder), md5=md5, remove_finished=True)
    except Exception as e:
        raise AttnlabError(f"could not download {url} into {folder}: {one_line(e)}") from None
