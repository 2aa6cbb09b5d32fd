"""``attnlab download``: fetch a dataset into its cache (or --data-dir) once, so every command finds it."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from .common import user_errors


@user_errors
def download(
    dataset: Annotated[str, typer.Argument(help="fashion-mnist, cifar10, cifar100, pets or flowers102.")],
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where to put it (default: the attnlab cache, $ATTNLAB_CACHE or ~/.cache/attnlab).")] = None,
    split: Annotated[Optional[List[str]], typer.Option("--split", help="Only this split (repeatable; default: every split).")] = None,
) -> None:
    """Download a dataset's official files (checksums verified) and check that each split reads."""
    from ..data import load_dataset, resolve_name
    from ..errors import AttnlabError

    name = resolve_name(dataset)
    splits = _splits(name)
    if not splits:
        raise AttnlabError(f"{name} reads a folder you already have; there is nothing to download")
    for s in split or splits:
        ds = load_dataset(name, split=s, data_dir=data_dir, download=True)
        typer.echo(ds.summary())


def _splits(name: str) -> List[str]:
    """The splits of a downloadable dataset (none for folders the user brings)."""
    import importlib

    module = {"fashion-mnist": "fashion_mnist", "cifar10": "cifar", "cifar100": "cifar", "pets": "pets",
              "flowers102": "flowers102", "imagenet": "imagenet"}.get(name)  # imagenet: says where to get it
    return list(importlib.import_module(f"attnlab.data.{module}").SPLITS) if module else []
