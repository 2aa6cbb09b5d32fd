"""Any ``<root>/<split>/<class>/<image>`` tree (torchvision's ImageFolder, one level up).

Classes are the sorted class-folder names found across the split folders of ``root``
(train, val, test...), so every split numbers the classes the same way even when one
split lacks a class. Images may sit in nested folders under their class folder. Files
without an image extension are listed in ``.ignored``; image files that do not decode
in ``.unreadable``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..errors import AttnlabError
from .base import IMAGE_EXTENSIONS, FileDataset, PathLike, build_file_dataset, describe_dir, is_image_name

KNOWN_SPLITS = ("train", "val", "valid", "validation", "test")


def _subdirs(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _walk(folder: Path) -> List[str]:
    """Every non-hidden file under ``folder``, in a stable (sorted) order; paths as strings, not
    ``Path`` objects, which cost more than the listing itself on a split of a million files."""
    out: List[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
    return out


def load_imagefolder(
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    channels: Optional[int] = None,
    subset: Optional[int] = None,
    classes: Optional[Sequence[str]] = None,
    verify: str = "full",
) -> FileDataset:
    """Images in ``<data_dir>/<split>/<class>/``; ``classes`` pins the class list and order."""
    if data_dir is None:
        raise AttnlabError("imagefolder: expected data_dir=<root> holding <root>/<split>/<class>/<image>, found no data_dir")
    if download:
        raise AttnlabError("imagefolder: there is nothing to download; point data_dir at your own image tree")
    root = Path(data_dir).expanduser()
    split_dir = root / split
    if not split_dir.is_dir():
        splits = _subdirs(root) if root.is_dir() else []
        raise AttnlabError(
            f"imagefolder: expected {split_dir}/<class>/<image> ({root}/<split>/<class>/<image>), "
            f"{describe_dir(root)}" + (f"; splits there: {', '.join(splits)}" if splits else "")
        )
    found = set(_subdirs(split_dir))
    for other in KNOWN_SPLITS:
        if (root / other).is_dir():
            found |= set(_subdirs(root / other))
    if classes is None:
        class_list = sorted(found)
    else:
        class_list = list(classes)
        unknown = sorted(set(_subdirs(split_dir)) - set(class_list))
        if unknown:
            raise AttnlabError(f"imagefolder: {split_dir} has class folders {unknown[:5]} that are not in classes=")
    if not class_list:
        raise AttnlabError(f"imagefolder: expected class folders in {split_dir}, {describe_dir(split_dir)}")
    index = {c: i for i, c in enumerate(class_list)}
    items: List[Tuple[str, int]] = []
    ignored: List[str] = [str(p) for p in sorted(split_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    for cls in class_list:
        if not (split_dir / cls).is_dir():
            continue
        for path in _walk(split_dir / cls):
            if is_image_name(path):
                items.append((path, index[cls]))
            else:
                ignored.append(path)
    if not items:
        raise AttnlabError(
            f"imagefolder: expected image files ({', '.join(IMAGE_EXTENSIONS[:4])}...) in {split_dir}/<class>/, found none"
        )
    ds = build_file_dataset(
        items, name="imagefolder", split=split, classes=class_list, channels=channels or 3, root=root,
        subset=subset, verify=verify, class_ordered=True,
    )
    ds.ignored = ignored
    return ds
