"""File-system paths as the API takes them: one ``PathLike`` for every module."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def check_output_dir(out: PathLike, option: str = "--out") -> Path:
    """``out`` must be a folder that can be made and written: check before any work is done.

    Refuses an existing file, a path under a file, and a folder (or nearest existing parent)
    that is not writable, each with one line naming the path and what to pass instead.
    """
    from .errors import AttnlabError

    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise AttnlabError(f"{option} {path} is a file, not a folder; pass a folder path")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise AttnlabError(f"{option} {path} is inside {parent}, which is a file; pass a folder path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AttnlabError(f"{option} {path}: {parent} is not writable; pass a folder you can write to")
    return path
