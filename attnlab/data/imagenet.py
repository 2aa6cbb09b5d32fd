"""ImageNet-1K (ILSVRC2012) in the layouts people keep it in; it cannot be downloaded for you.

Looked for under ``data_dir`` and under ``data_dir/ILSVRC/Data/CLS-LOC`` (Kaggle's download):

- ``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``: class folders named by WordNet id;
- ``val/ILSVRC2012_val_00000001.JPEG``... flat, labelled by ``LOC_val_solution.csv`` (Kaggle:
  ``ImageId,PredictionString``, whose first token is the wnid) or by the devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per line, for the images in
  file-number order), its IDs mapped to wnids by the devkit's ``meta.mat``, else by the line
  order of a synset file;
- WebDataset tar shards ``<split>-000000.tar``... or ``<split>/*.tar`` (see :mod:`.shards`),
  read instead of folders when present.

Ground truth, ``meta.mat`` and synset files (``LOC_synset_mapping.txt``, ``synset_words.txt``,
``synsets.txt``: ``n01440764 tench, Tinca tinca`` per line) are looked for in ``data_dir``, the
Kaggle image root, the val folder, and each ``*devkit*`` folder of ``data_dir`` and its ``data/``.

Classes are the sorted wnids (torchvision's and timm's order) of train's class folders, so
every split numbers them alike; without a train folder, those of the synset file (or of
meta.mat's 1000 leaf synsets), else those of val. A class's name is the first name of its
synset ("tench") from the synset file or meta.mat, else its wnid. ``test`` reads val: the
test labels were never released (a labelled ``test/<wnid>/`` tree or test shards is read).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import AttnlabError, one_line, plural
from .base import ImageDataset, PathLike, build_file_dataset, cache_dir, describe_dir, is_image_name
from .imagefolder import _subdirs, _walk
from .shards import VAL_NAMES, build_shard_dataset, find_shards, read_synset_mapping, split_names

SPLITS = ("train", "val")
SOLUTION = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt", "synsets.txt")
KAGGLE_ROOT = Path("ILSVRC") / "Data" / "CLS-LOC"
HOW_TO_GET = (
    "ImageNet cannot be downloaded automatically: get ILSVRC2012 from https://image-net.org/download.php "
    "(or Kaggle's ImageNet Object Localization Challenge) and unpack it as <data_dir>/train/<wnid>/*.JPEG and "
    f"<data_dir>/val/<wnid>/*.JPEG (or val/*.JPEG flat with {SOLUTION} or the devkit's {DEVKIT_TRUTH} + meta.mat)"
)


# --------------------------------------------------------------------------- where things are
def _image_root(base: Path) -> Path:
    """``base``, or Kaggle's ``base/ILSVRC/Data/CLS-LOC`` when the images are there."""
    kaggle = base / KAGGLE_ROOT
    if kaggle.is_dir() and not any((base / s).is_dir() for s in ("train", *VAL_NAMES)):
        return kaggle
    return base


def _split_dir(image_root: Path, split: str) -> Optional[Path]:
    return next((image_root / n for n in split_names(split) if (image_root / n).is_dir()), None)


def _resolve_split(base: Path, image_root: Path, split: str) -> str:
    """'train' or 'val' ('test' only where a labelled test split is there)."""
    if split in VAL_NAMES:
        return "val"
    if split == "train":
        return split
    if split == "test":
        test = image_root / "test"
        return "test" if find_shards(base, "test") or (test.is_dir() and _subdirs(test)) else "val"
    raise AttnlabError(f"imagenet has splits {', '.join(SPLITS)} (test reads val: its labels are not public); "
                       f"got split={split!r}")


def _meta_dirs(base: Path, image_root: Path, split_dir: Optional[Path]) -> List[Path]:
    """Where ground truth and synset files may be: see the module docstring."""
    dirs = [base, image_root] + ([split_dir] if split_dir is not None else [])
    if base.is_dir():
        for devkit in sorted(p for p in base.iterdir() if p.is_dir() and "devkit" in p.name.lower()):
            dirs += [devkit, devkit / "data"]
    return list(dict.fromkeys(dirs))


def _where(dirs: Sequence[Path]) -> str:
    return ", ".join(str(d) for d in dirs)


def _find(dirs: Sequence[Path], names: Sequence[str]) -> Optional[Path]:
    return next((d / n for n in names for d in dirs if (d / n).is_file()), None)


# --------------------------------------------------------------------------- metadata files
def read_meta(path: Path) -> Dict[int, Tuple[str, str]]:
    """ILSVRC2012_ID -> (wnid, first name) for the devkit's leaf synsets (the 1000 classes)."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
        rows = zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["words"], synsets["num_children"])
        return {int(i): (str(w), str(words).split(",")[0].strip()) for i, w, words, kids in rows if int(kids) == 0}
    except Exception as e:
        raise AttnlabError(f"cannot read {path} as the devkit's meta.mat (a 'synsets' struct with ILSVRC2012_ID, "
                           f"WNID, words, num_children): {one_line(e)}") from None


def _read_solution(path: Path) -> Dict[str, str]:
    """Image id -> wnid from Kaggle's LOC_val_solution.csv."""
    truth: Dict[str, str] = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f)
        header = next(rows, [])
        if [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise AttnlabError(f"{path}: expected the header 'ImageId,PredictionString', found {','.join(header)[:60]!r}")
        for lineno, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) < 2 or not row[1].split():
                raise AttnlabError(f"{path}:{lineno}: expected '<image id>,<wnid> <box>...', found {','.join(row)[:60]!r}")
            truth[row[0].strip()] = row[1].split()[0]
    return truth


def _read_devkit_truth(path: Path, dirs: Sequence[Path]) -> Dict[str, str]:
    """Image id -> wnid from the devkit's ground truth, its IDs mapped by meta.mat or a synset file."""
    ids: List[int] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            try:
                ids.append(int(line))
            except ValueError:
                raise AttnlabError(f"{path}:{lineno}: expected one ILSVRC2012_ID (1..1000) per line, found {line[:40]!r}") from None
    meta = _find(dirs, ["meta.mat"])
    if meta is not None:
        id_to_wnid = {i: w for i, (w, _) in read_meta(meta).items()}
        source = str(meta)
    else:
        synsets = _find(dirs, SYNSET_FILES)
        if synsets is None:
            raise AttnlabError(f"{path} numbers classes by ILSVRC2012_ID: put the devkit's meta.mat (or a synset file: "
                               f"{', '.join(SYNSET_FILES)}) in one of {_where(dirs)}")
        wnids = [w for w, _ in read_synset_mapping(synsets)]
        if len(wnids) == 1000 and wnids == sorted(wnids):
            raise AttnlabError(f"{path} numbers the 1000 classes in the devkit's ILSVRC2012_ID order, not in the sorted "
                               f"order of {synsets}: put the devkit's meta.mat (ILSVRC2012_devkit_t12/data/meta.mat) in "
                               f"one of {_where(dirs)}, or use Kaggle's {SOLUTION}")
        id_to_wnid = {k: w for k, w in enumerate(wnids, 1)}
        source = str(synsets)
    unknown = sorted(set(ids) - set(id_to_wnid))
    if unknown:
        raise AttnlabError(f"{path}: IDs {unknown[:5]} are not classes of {source} (which has {len(id_to_wnid)})")
    return {f"ILSVRC2012_val_{n:08d}": id_to_wnid[i] for n, i in enumerate(ids, 1)}


def _synset_names(dirs: Sequence[Path]) -> Tuple[List[str], Dict[str, str], Optional[Path]]:
    """(the wnids a synset file or meta.mat lists, sorted; wnid -> first name; that file), or ([], {}, None)."""
    source = _find(dirs, SYNSET_FILES) or _find(dirs, ["meta.mat"])
    if source is None:
        return [], {}, None
    pairs = read_synset_mapping(source) if source.name != "meta.mat" else list(read_meta(source).values())
    return sorted({w for w, _ in pairs}), dict(pairs), source


# --------------------------------------------------------------------------- the loader
def _items_from_folders(split_dir: Path, index: Dict[str, int], source: str) -> Tuple[List[Tuple[str, int]], List[str]]:
    unknown = sorted(set(_subdirs(split_dir)) - set(index))
    if unknown:
        raise AttnlabError(f"imagenet: {split_dir} has class folders {', '.join(unknown[:5])}"
                           f"{f' (+{len(unknown) - 5} more)' if len(unknown) > 5 else ''} that are not among the "
                           f"{len(index)} classes of {source}")
    items: List[Tuple[str, int]] = []
    ignored = [str(p) for p in sorted(split_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    for wnid in _subdirs(split_dir):
        for path in _walk(split_dir / wnid):
            (items.append((path, index[wnid])) if is_image_name(path) else ignored.append(path))
    return items, ignored


def _ground_truth(split_dir: Path, dirs: Sequence[Path], count: int) -> Tuple[Path, Dict[str, str]]:
    path = _find(dirs, [SOLUTION, DEVKIT_TRUTH])
    if path is None:
        raise AttnlabError(f"imagenet: {split_dir} holds {plural(count, 'image')} flat (no <wnid>/ class folders) and no "
                           f"ground truth: looked for {SOLUTION} and {DEVKIT_TRUTH} in {_where(dirs)}; put one there "
                           f"or sort the images into {split_dir}/<wnid>/ folders")
    return path, (_read_solution(path) if path.name == SOLUTION else _read_devkit_truth(path, dirs))


def _flat_items(split_dir: Path, files: List[Path], truth_file: Path, truth: Dict[str, str],
                index: Dict[str, int], source: str) -> List[Tuple[str, int]]:
    by_id = {p.stem: p for p in files}
    missing = sorted(set(truth) - set(by_id))
    unlisted = sorted(set(by_id) - set(truth))
    if missing or unlisted:
        parts = []
        if missing:
            parts.append(f"{truth_file.name} names {plural(len(missing), 'image')} missing from {split_dir} (e.g. {missing[0]})")
        if unlisted:
            parts.append(f"{plural(len(unlisted), 'image')} in {split_dir} {'have' if len(unlisted) > 1 else 'has'} no "
                         f"ground truth in {truth_file} (e.g. {by_id[unlisted[0]].name})")
        raise AttnlabError("imagenet: " + "; ".join(parts) + "; the images and the ground truth must match")
    unknown = sorted(set(truth.values()) - set(index))
    if unknown:
        raise AttnlabError(f"imagenet: {truth_file} labels images with wnids {', '.join(unknown[:5])} that are not "
                           f"among the {len(index)} classes of {source}")
    return [(str(by_id[i]), index[truth[i]]) for i in sorted(by_id)]


def load_imagenet(
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    channels: Optional[int] = None,
    subset: Optional[int] = None,
    verify: str = "full",
) -> ImageDataset:
    """ImageNet-1K from class folders, a flat val with its ground truth, or tar shards (module docstring)."""
    if download:
        raise AttnlabError(HOW_TO_GET)
    base = Path(data_dir).expanduser() if data_dir is not None else cache_dir("imagenet")
    image_root = _image_root(base)
    want = _resolve_split(base, image_root, split)
    shards = find_shards(base, want)
    if shards:
        return build_shard_dataset(shards, name="imagenet", split=want, channels=channels or 3, root=base,
                                   names_dirs=_meta_dirs(base, image_root, None), subset=subset, verify=verify)
    split_dir = _split_dir(image_root, want)
    if split_dir is None:
        raise AttnlabError(
            f"imagenet: no {want} split under {base}; looked for these layouts: {want}/<wnid>/*.JPEG (class folders); "
            f"val/*.JPEG flat with {SOLUTION} or {DEVKIT_TRUTH}; {KAGGLE_ROOT}/{want}/ (Kaggle); {want}-000000.tar... "
            f"or {want}/*.tar (WebDataset shards); {describe_dir(base)}; {HOW_TO_GET}"
        )
    dirs = _meta_dirs(base, image_root, split_dir)
    train_dir = _split_dir(image_root, "train")
    listed, names, synsets = _synset_names(dirs)
    if train_dir is not None and _subdirs(train_dir):
        wnids, source = _subdirs(train_dir), str(train_dir)
    elif synsets is not None:
        wnids, source = listed, str(synsets)
    else:
        wnids, source = [], str(split_dir)  # from the split itself, below
    folders = _subdirs(split_dir)
    files = [p for p in sorted(split_dir.iterdir()) if p.is_file() and is_image_name(p.name)]
    if folders:
        wnids = wnids or folders
        index = {w: i for i, w in enumerate(wnids)}
        items, ignored = _items_from_folders(split_dir, index, source)
    elif files:
        truth_file, truth = _ground_truth(split_dir, dirs, len(files))
        wnids = wnids or sorted(set(truth.values()))
        index = {w: i for i, w in enumerate(wnids)}
        items = _flat_items(split_dir, files, truth_file, truth, index, source)
        images = set(files)
        ignored = [str(p) for p in sorted(split_dir.iterdir()) if p.is_file() and p not in images
                   and not p.name.startswith(".")]
    else:
        raise AttnlabError(f"imagenet: expected {split_dir}/<wnid>/*.JPEG class folders or *.JPEG images, "
                           f"{describe_dir(split_dir)}")
    if not items:
        raise AttnlabError(f"imagenet: expected image files (.JPEG, .png...) in {split_dir}/<wnid>/, found none")
    ds = build_file_dataset(items, name="imagenet", split=want, classes=[names.get(w, w) for w in wnids],
                            channels=channels or 3, root=base, subset=subset, verify=verify,
                            class_ordered=bool(folders))
    ds.ignored = ignored
    ds.wnids = list(wnids)  # type: ignore[attr-defined]
    return ds
