"""Loose image files and folders (``--images PATH...``): unlabelled, any layout."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..errors import AttnlabError
from .base import IMAGE_EXTENSIONS, FileDataset, PathLike, build_file_dataset, is_image_name

UNLABELLED = -1


def load_image_files(
    paths: Sequence[PathLike],
    channels: int = 3,
    subset: Optional[int] = None,
) -> FileDataset:
    """Every image under ``paths`` (files, or folders searched recursively), label -1.

    A file named explicitly must be an image; inside folders, non-image files are listed
    in ``.ignored`` and undecodable images in ``.unreadable`` (reported, never dropped silently).
    """
    if not paths:
        raise AttnlabError("no image paths given; pass image files or folders")
    items: List[Tuple[str, int]] = []
    ignored: List[str] = []
    for p in map(Path, paths):
        if not p.exists():
            raise AttnlabError(f"image path not found: {p}")
        if p.is_file():
            if not is_image_name(p.name):
                raise AttnlabError(f"{p} is not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)})")
            items.append((str(p), UNLABELLED))
            continue
        for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith("."):
                    continue
                target = items if is_image_name(f) else None
                if target is None:
                    ignored.append(os.path.join(dirpath, f))
                else:
                    items.append((os.path.join(dirpath, f), UNLABELLED))
    if not items:
        where = ", ".join(str(p) for p in paths)
        extra = f" ({len(ignored)} non-image files, e.g. {ignored[0]})" if ignored else ""
        raise AttnlabError(f"no images found in {where}{extra}; expected {', '.join(IMAGE_EXTENSIONS)} files")
    ds = build_file_dataset(items, name="images", split="-", classes=[], channels=channels,
                            root=None, subset=subset)
    ds.ignored = ignored
    return ds
