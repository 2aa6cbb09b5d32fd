"""Oxford-IIIT Pet in its official layout: ``images/*.jpg`` and ``annotations/*.txt``.

Split files hold lines ``Abyssinian_100 1 1 1``: image name, class id 1..37, species
(1 cat, 2 dog), breed id. ``task="breed"`` (default) is the 37-class task; class names
are the image-name prefixes ("Abyssinian", "american_bulldog") in class-id order, as
the release spells them. ``task="species"`` is the 2-class cat/dog task.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import AttnlabError
from .base import FileDataset, PathLike, build_file_dataset, cache_dir, check_split, describe_dir, download_archive

SPLITS = ("train", "test")
SPLIT_FILES = {"train": "trainval.txt", "test": "test.txt"}
URLS = (
    ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
    ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f"),
)
SPECIES = ["cat", "dog"]

Entry = Tuple[str, int, int]  # image name, class id (1-based), species (1 cat, 2 dog)


def _read_split(path: Path) -> List[Entry]:
    entries: List[Entry] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            if len(fields) != 4:
                raise ValueError
            name, class_id, species = fields[0], int(fields[1]), int(fields[2])
            int(fields[3])
            if class_id < 1 or species not in (1, 2):
                raise ValueError
        except ValueError:
            raise AttnlabError(
                f"{path}:{lineno}: expected 'name class_id(1..37) species(1|2) breed_id', found {line[:80]!r}"
            ) from None
        entries.append((name, class_id, species))
    return entries


def _class_names(entries: List[Entry], where: Path) -> List[str]:
    """Breed names from image-name prefixes, in class-id order; ids must run 1..K."""
    by_id: Dict[int, str] = {}
    for name, class_id, _ in entries:
        by_id.setdefault(class_id, name.rsplit("_", 1)[0])
    ids = sorted(by_id)
    if ids != list(range(1, len(ids) + 1)):
        missing = sorted(set(range(1, max(ids) + 1)) - set(ids))
        raise AttnlabError(f"{where}: class ids must run 1..{max(ids)}, missing {missing[:5]}")
    return [by_id[i] for i in ids]


def find_root(data_dir: Optional[PathLike], download: bool, split: str) -> Path:
    """The folder with images/ and annotations/ (``data_dir`` or ``data_dir/oxford-iiit-pet``)."""
    base = Path(data_dir).expanduser() if data_dir is not None else cache_dir("pets")
    needed = f"annotations/{SPLIT_FILES[split]}"
    for cand in (base, base / "oxford-iiit-pet"):
        if (cand / needed).is_file() and (cand / "images").is_dir():
            return cand
    if download:
        for url, md5 in URLS:
            download_archive(url, base, md5)
        if (base / needed).is_file() and (base / "images").is_dir():
            return base
    raise AttnlabError(
        f"pets: expected images/ and {needed} under {base}, {describe_dir(base)}; download and unpack "
        f"{URLS[0][0]} and {URLS[1][0]} there, or run `attnlab download pets` (Python: download=True)"
    )


def load_pets(
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    channels: Optional[int] = None,
    subset: Optional[int] = None,
    task: str = "breed",
    verify: str = "full",
) -> FileDataset:
    """Oxford-IIIT Pet: 37 breeds (or 2 species); train is the official trainval list."""
    check_split("pets", split, SPLITS)
    if task not in ("breed", "species"):
        raise AttnlabError(f"pets task must be 'breed' (37 classes) or 'species' (cat/dog), not {task!r}")
    root = find_root(data_dir, download, split)
    entries = _read_split(root / "annotations" / SPLIT_FILES[split])
    if not entries:
        raise AttnlabError(f"{root / 'annotations' / SPLIT_FILES[split]}: expected lines 'name class_id species breed_id', found none")
    # names from both lists when present, so train and test agree on the class order
    named = list(entries)
    for other in SPLIT_FILES.values():
        if other != SPLIT_FILES[split] and (root / "annotations" / other).is_file():
            named += _read_split(root / "annotations" / other)
    if task == "breed":
        classes = _class_names(named, root / "annotations")
        items = [(name, class_id - 1) for name, class_id, _ in entries]
    else:
        classes = list(SPECIES)
        items = [(name, species - 1) for name, _, species in entries]
    # a listed image that is missing counts as unreadable, like a damaged one
    files = [(str(root / "images" / f"{name}.jpg"), label) for name, label in items]
    # the official lists are sorted by breed: subsets take the classes in turn
    return build_file_dataset(
        files, name="pets", split=split, classes=classes, channels=channels or 3, root=root,
        subset=subset, verify=verify, class_ordered=True,
    )
