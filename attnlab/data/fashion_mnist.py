"""Fashion-MNIST from its official gzipped IDX files, held in memory as one uint8 array.

Where the files come from, first match wins: ``data_dir`` if given; else the Debian
package ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist); else the cache
($ATTNLAB_CACHE or ~/.cache/attnlab, sub-folder fashion-mnist), downloaded there with
md5 checks when ``download=True``. IDX is parsed here with numpy: the format is tiny, and
checking its magic numbers and sizes gives clear errors for damaged files.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import BinaryIO, List, Optional, Tuple

import numpy as np

from ..errors import AttnlabError
from .base import ArrayDataset, PathLike, cache_dir, check_split, check_subset, describe_dir, download_file
from ..errors import one_line

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPLITS = ("train", "test")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# md5 of the official files (as published by Zalando, and used by torchvision)
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HOW_TO_GET = (
    "install the Debian package (apt-get install dataset-fashion-mnist, files in "
    f"{DEBIAN_DIR}) or run `attnlab download fashion-mnist` (Python: download=True; from {URL})"
)

# IDX type codes -> big-endian numpy dtypes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def _read_exact(f: BinaryIO, n: int) -> bytes:
    buf = io.BytesIO()
    while buf.tell() < n:
        chunk = f.read(min(n - buf.tell(), 1 << 22))
        if not chunk:
            break
        buf.write(chunk)
    return buf.getvalue()


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array, checking header and size.

    Header: two zero bytes, a type code, the number of dimensions, then one big-endian
    uint32 per dimension; the data must hold exactly prod(dims) items.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            head = _read_exact(f, 4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES or not 1 <= head[3] <= 4:
                raise AttnlabError(
                    f"{path} is not an IDX file: expected magic 0x0000TTDD (T type code, D dims 1..4), "
                    f"found 0x{head.hex() or 'empty'}"
                )
            dtype = np.dtype(_IDX_TYPES[head[2]])
            ndim = head[3]
            dims_raw = _read_exact(f, 4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise AttnlabError(f"{path}: IDX header cut short (expected {ndim} dimensions)")
            dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            count = int(np.prod(dims, dtype=np.int64))
            data = _read_exact(f, count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise AttnlabError(
                    f"{path}: IDX header says {dims} ({count * dtype.itemsize} bytes of data), "
                    f"found only {len(data)} bytes; the file is truncated, download it again"
                )
            if f.read(1):
                raise AttnlabError(f"{path}: more data than its IDX header {dims} declares; the file is damaged")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise AttnlabError(f"cannot read {path}: {one_line(e)}") from None
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _find(folder: Path, filename: str) -> Optional[Path]:
    """The gzipped file, or its unpacked twin (torchvision's raw folder holds both)."""
    for name in (filename, filename[:-3]):
        if (folder / name).is_file():
            return folder / name
    return None


def _candidates(data_dir: Optional[Path]) -> List[Path]:
    if data_dir is not None:
        return [data_dir, data_dir / "fashion-mnist", data_dir / "FashionMNIST" / "raw"]
    return [DEBIAN_DIR, cache_dir("fashion-mnist")]


def locate(split: str, data_dir: Optional[PathLike] = None, download: bool = False) -> Tuple[Path, Path]:
    """Paths of the (images, labels) files of ``split``, downloading them if allowed."""
    files = FILES[split]
    folder_arg = Path(data_dir).expanduser() if data_dir is not None else None
    for folder in _candidates(folder_arg):
        found = [_find(folder, f) for f in files]
        if all(found):
            if download and folder != DEBIAN_DIR:  # verify (and repair) a copy attnlab manages
                found = [download_file(URL + f, folder, f, MD5[f]) for f in files]
            return found[0], found[1]  # type: ignore[return-value]
    target = folder_arg if folder_arg is not None else cache_dir("fashion-mnist")
    if download:
        images, labels = (download_file(URL + f, target, f, MD5[f]) for f in files)
        return images, labels
    where = str(target) if folder_arg is not None else f"{DEBIAN_DIR} or {target}"
    raise AttnlabError(
        f"fashion-mnist: expected {files[0]} and {files[1]} in {where}, "
        f"{describe_dir(target if folder_arg is not None else DEBIAN_DIR)}; {HOW_TO_GET}"
    )


def load_fashion_mnist(
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    channels: Optional[int] = None,
    subset: Optional[int] = None,
) -> ArrayDataset:
    """Fashion-MNIST (10 classes of 28x28 grey clothing images; 60000 train, 10000 test)."""
    check_split("fashion-mnist", split, SPLITS)
    images_path, labels_path = locate(split, data_dir, download)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise AttnlabError(
            f"{images_path}: expected uint8 images of shape [N,28,28], found {images.dtype} {list(images.shape)}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise AttnlabError(
            f"{labels_path}: expected {images.shape[0]} labels (one per image in {images_path.name}), "
            f"found shape {list(labels.shape)}"
        )
    if labels.size and int(labels.max()) >= len(CLASSES):
        raise AttnlabError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    ds = ArrayDataset(
        images,
        labels.astype(np.int64),
        name="fashion-mnist",
        split=split,
        classes=CLASSES,
        channels=channels or 1,
        root=images_path.parent,
    )
    n = check_subset(subset, len(ds), f"fashion-mnist/{split}")
    return ds.subset(n) if n is not None else ds
