"""WebDataset tar shards as a map-style dataset: members indexed once, then read by offset.

A shard is an uncompressed tar whose members group into samples by key (the member path
up to the first dot of its file name, as WebDataset groups them): ``<key>.jpg`` (or
``.jpeg``, ``.png``, ``.webp``) is the image and ``<key>.cls`` its class index as text;
other members (``.json``, ``.txt``...) are left alone. Shards are ``<root>/<split>-000000.tar``...
(any ``<prefix>-<split>-NNNN.tar`` too, as in ``imagenet1k-validation-00.tar``) or
``<root>/<split>/*.tar``. Class names come from ``classes.txt`` (one per line, in label
order) or ``LOC_synset_mapping.txt`` (``n01440764 tench, Tinca tinca``: its first name)
beside the shards, else the labels are their own names ("0", "1", ...).

Indexing reads the tar headers and the small ``.cls`` members only; an image is then one
positional read (``os.pread``) into its shard, so items come in any order (shuffles,
subsets, DataLoader workers). Shard files are opened lazily per process: a worker forked
from the parent opens its own, never using a descriptor it inherited.
"""
from __future__ import annotations

import io
import os
import posixpath
import re
import tarfile
import threading
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import AttnlabError, one_line, plural
from .base import ImageDataset, PathLike, check_subset, decode_image, describe_dir, mode_for, probe_image

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
NAMES_FILES = ("classes.txt", "LOC_synset_mapping.txt")
VAL_NAMES = ("val", "validation", "valid")
MAX_OPEN = 64  # shard files held open per process (ImageNet train has 1024 shards; ulimit -n is often 1024)

Member = Tuple[int, str, int, int, int]  # shard index, member name, data offset, size, label


def split_names(split: str) -> List[str]:
    """The folder / shard names a split may go by: val is also validation or valid."""
    return list(VAL_NAMES) if split in VAL_NAMES else [split]


def _shard_split(name: str) -> Optional[str]:
    """'train' for train-000012.tar or imagenet1k-train-0012.tar; None for other names."""
    m = re.fullmatch(r"(?:.*[-_])?([A-Za-z]+)-\d+\.tar", name)
    return m.group(1) if m else None


def find_shards(root: Path, split: str) -> List[Path]:
    """The tar shards of ``split`` under ``root`` (sorted), or [] when there are none."""
    if not root.is_dir():
        return []
    for name in split_names(split):
        flat = sorted(p for p in root.glob("*.tar") if p.is_file() and _shard_split(p.name) == name)
        if flat:
            return flat
        if (root / name).is_dir():
            inside = sorted(p for p in (root / name).glob("*.tar") if p.is_file())
            if inside:
                return inside
    return []


def shard_splits(root: Path) -> List[str]:
    """Every split with shards under ``root``, for messages."""
    found = {_shard_split(p.name) for p in root.glob("*.tar")} if root.is_dir() else set()
    found |= {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.tar"))} if root.is_dir() else set()
    return sorted(s for s in found if s)


# --------------------------------------------------------------------------- names
def read_synset_mapping(path: Path) -> List[Tuple[str, str]]:
    """(wnid, first name) per line of ``n01440764 tench, Tinca tinca`` (a line of a wnid alone: the wnid)."""
    out: List[Tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.strip().split(None, 1)
        if fields:
            out.append((fields[0], fields[1].split(",")[0].strip() if len(fields) > 1 else fields[0]))
    if not out:
        raise AttnlabError(f"{path}: expected lines '<wnid> <names>' (n01440764 tench, Tinca tinca), found none")
    return out


def read_names(folders: Sequence[Path]) -> Optional[List[str]]:
    """Class names in label order from the first names file in ``folders``, or None."""
    for folder in folders:
        for filename in NAMES_FILES:
            path = folder / filename
            if not path.is_file():
                continue
            if filename == "classes.txt":
                names = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
                names = [n for n in names if n]
                if not names:
                    raise AttnlabError(f"{path}: expected one class name per line, found none")
                return names
            return [name for _, name in read_synset_mapping(path)]
    return None


# --------------------------------------------------------------------------- index
def index_tar(path: Path, shard: int) -> Tuple[List[Member], List[str]]:
    """(labelled image members, keys of samples without an image) of one shard."""
    try:
        tar = tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as e:
        raise AttnlabError(f"{path} is not an uncompressed tar ({one_line(e)}); WebDataset shards are plain .tar files") from None
    samples: Dict[str, Dict[str, tarfile.TarInfo]] = {}
    members: List[Member] = []
    no_image: List[str] = []
    unlabelled: List[str] = []
    with tar:
        try:
            for info in tar:  # headers only: tarfile seeks over the data
                folder, base = posixpath.split(info.name)
                if info.isfile() and not base.startswith(".") and "." in base:
                    stem, ext = base.split(".", 1)
                    samples.setdefault(posixpath.join(folder, stem), {})[ext.lower()] = info
        except (tarfile.TarError, OSError) as e:
            raise AttnlabError(f"{path}: damaged tar ({one_line(e)})") from None
        for key, parts in samples.items():
            ext = next((e for e in IMAGE_KEYS if e in parts), None)
            if ext is None:
                no_image.append(f"{path}:{key}")
                continue
            if "cls" not in parts:
                unlabelled.append(f"{key}.{ext}")
                continue
            text = tar.extractfile(parts["cls"]).read()  # type: ignore[union-attr]
            try:
                label = int(text.decode("ascii").strip())
                if label < 0:
                    raise ValueError
            except (ValueError, UnicodeDecodeError):
                raise AttnlabError(
                    f"{path}:{parts['cls'].name}: expected a class index (0, 1, ...) as text, found {text[:20]!r}"
                ) from None
            image = parts[ext]
            members.append((shard, f"{key}.{ext}", image.offset_data, image.size, label))
    if unlabelled:
        what = "has no .cls labels" if not members else f"has {plural(len(unlabelled), 'image')} without a .cls label"
        raise AttnlabError(
            f"{path} {what} (e.g. {unlabelled[0]}); each sample needs <key>.cls holding its class index as text "
            f"beside <key>.{'/'.join(IMAGE_KEYS)}"
        )
    return members, no_image


# --------------------------------------------------------------------------- dataset
class ShardDataset(ImageDataset):
    """Images read from tar shards by offset; ``members`` name them ``shard.tar:key.jpg``."""

    def __init__(self, shards: Sequence[PathLike], members: Sequence[Member], **kwargs: Any) -> None:
        super().__init__(targets=np.array([m[4] for m in members], dtype=np.int64), **kwargs)
        self.shards: List[str] = [str(s) for s in shards]
        self.shard_of = np.array([m[0] for m in members], dtype=np.int32)
        self.offsets = np.array([m[2] for m in members], dtype=np.int64)
        self.sizes = np.array([m[3] for m in members], dtype=np.int64)
        self.members: List[str] = [f"{self.shards[m[0]]}:{m[1]}" for m in members]
        self._fds: "OrderedDict[int, int]" = OrderedDict()  # shard -> descriptor, least recently used first
        self._pid: Optional[int] = None
        self._lock = threading.Lock()

    def __copy__(self) -> "ShardDataset":  # views (with_transform, subset) open their own descriptors
        other = type(self).__new__(type(self))
        other.__setstate__(self.__getstate__())
        return other

    def __getstate__(self) -> Dict[str, Any]:  # nor do spawned workers get the parent's
        state = dict(self.__dict__, _fds=OrderedDict(), _pid=None)
        del state["_lock"]
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        try:
            if self._pid == os.getpid():
                self.close()
        except Exception:
            pass

    def close(self) -> None:
        """Close the open shard files (reads reopen them)."""
        with self._lock:
            while self._fds:
                os.close(self._fds.popitem()[1])

    def read_bytes(self, index: int) -> bytes:
        """The stored bytes of item ``index``: one positional read into its shard."""
        shard, size = int(self.shard_of[index]), int(self.sizes[index])
        with self._lock:
            if self._pid != os.getpid():  # a forked worker: close what it inherited, open its own
                for fd in self._fds.values():
                    os.close(fd)
                self._fds, self._pid = OrderedDict(), os.getpid()
            fd = self._fds.pop(shard, None)
            if fd is None:
                if len(self._fds) >= MAX_OPEN:
                    os.close(self._fds.popitem(last=False)[1])
                fd = os.open(self.shards[shard], os.O_RDONLY)
            self._fds[shard] = fd
            data = os.pread(fd, size, int(self.offsets[index]))
        if len(data) != size:
            raise AttnlabError(f"{self.members[index]}: the shard is shorter than when it was indexed; reload the dataset")
        return data

    def load_image(self, index: int) -> Image.Image:
        return decode_image(lambda: io.BytesIO(self.read_bytes(index)), self.members[index], self.mode,
                            "the shard changed since the dataset was loaded")

    def _take(self, keep: np.ndarray) -> None:
        super()._take(keep)
        self.shard_of, self.offsets, self.sizes = self.shard_of[keep], self.offsets[keep], self.sizes[keep]
        self.members = [self.members[i] for i in keep]


def _scan(ds: ShardDataset, verify: str, limit: Optional[int]) -> Tuple[np.ndarray, List[str], Counter]:
    """Which items decode (indices), which do not (names), and the mode conversions, as
    :func:`~attnlab.data.base.scan_images` does for files; bytes are read here, decoded in threads."""
    if verify not in ("full", "header"):
        raise AttnlabError(f"verify must be 'full' or 'header', not {verify!r}")
    keep: List[int] = []
    unreadable: List[str] = []
    conversions: Counter = Counter()
    chunk = 256
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        for start in range(0, len(ds), chunk):
            batch = range(start, min(start + chunk, len(ds)))
            blobs = [ds.read_bytes(i) for i in batch]
            modes = list(pool.map(lambda b: probe_image(io.BytesIO(b), verify == "full"), blobs))  # type: ignore[arg-type]
            for i, src in zip(batch, modes):
                if limit is not None and len(keep) >= limit:
                    break
                if src is None:
                    unreadable.append(ds.members[i])
                    continue
                keep.append(i)
                if src != ds.mode:
                    conversions[f"{src}->{ds.mode}"] += 1
            if limit is not None and len(keep) >= limit:
                break
    return np.array(keep, dtype=np.int64), unreadable, conversions


def build_shard_dataset(
    shards: Sequence[Path],
    *,
    name: str,
    split: str,
    channels: int,
    root: Optional[PathLike],
    names_dirs: Sequence[Path] = (),
    subset: Optional[int] = None,
    verify: str = "full",
) -> ShardDataset:
    """Index every shard, check the images (all, or until ``subset`` decode), build the dataset."""
    mode_for(channels)
    subset = check_subset(subset)
    members: List[Member] = []
    ignored: List[str] = []
    for k, path in enumerate(shards):
        found, no_image = index_tar(path, k)
        members += found
        ignored += no_image
    if not members:
        raise AttnlabError(f"{name}/{split}: expected <key>.jpg + <key>.cls samples in {shards[0]}, found none"
                           + (f" ({len(ignored)} samples without an image, e.g. {ignored[0]})" if ignored else ""))
    top = max(m[4] for m in members)
    classes = read_names([Path(shards[0]).parent, *names_dirs])
    if classes is None:
        classes = [str(i) for i in range(top + 1)]
    elif top >= len(classes):
        raise AttnlabError(f"{name}/{split}: label {top} in the shards but the class names file beside them lists "
                           f"{len(classes)} classes (labels 0..{len(classes) - 1})")
    ds = ShardDataset(shards, members, name=name, split=split, classes=classes, channels=channels, root=root)
    keep, unreadable, conversions = _scan(ds, verify, subset)
    if subset is not None and len(keep) < subset:
        check_subset(subset, len(keep), f"{name}/{split} (readable images)")
    if not len(keep):
        raise AttnlabError(f"{name}/{split}: expected readable images, found none of {len(ds)} (e.g. {unreadable[0]} cannot be decoded)")
    if len(keep) < len(ds):
        ds._take(keep)
    ds.unreadable, ds.conversions, ds.ignored = unreadable, conversions, ignored
    ds.close()  # the scan's descriptors: readers (and forked workers) open their own
    return ds


def load_webdataset(
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    channels: Optional[int] = None,
    subset: Optional[int] = None,
    verify: str = "full",
) -> ShardDataset:
    """Tar shards in the WebDataset layout (``<root>/<split>-000000.tar``... or ``<root>/<split>/*.tar``).

    Split ``val`` is also found as validation / valid; ``test`` reads val when there are no test shards."""
    if data_dir is None:
        raise AttnlabError("webdataset: expected data_dir=<root> holding <root>/<split>-000000.tar... or "
                           "<root>/<split>/*.tar, found no data_dir")
    if download:
        raise AttnlabError("webdataset: there is nothing to download; point data_dir at your own tar shards")
    root = Path(data_dir).expanduser()
    shards = find_shards(root, split)
    if not shards and split == "test":  # no test shards: val, as for ImageNet, whose test labels are not public
        split, shards = "val", find_shards(root, "val")
    if not shards:
        splits = shard_splits(root)
        raise AttnlabError(
            f"webdataset: expected {root}/{split}-000000.tar... or {root}/{split}/*.tar (samples <key>.jpg + <key>.cls), "
            + (f"found shards for splits {', '.join(splits)}" if splits else describe_dir(root))
        )
    return build_shard_dataset(shards, name="webdataset", split=split, channels=channels or 3, root=root,
                               names_dirs=[root], subset=subset, verify=verify)
