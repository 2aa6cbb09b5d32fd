"""CIFAR-10 and CIFAR-100 from the official python-pickle release, read without risk.

The official batches are pickles, and a pickle can run any code it names. They only ever
hold dicts, lists, str/bytes and numpy arrays, so they are read with
:class:`RestrictedUnpickler`, which resolves nothing but numpy's array-rebuilding
functions: a file that names anything else (``os.system``...) is refused before any of
it runs. Images are kept as one uint8 array [N,32,32,3] in memory.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import AttnlabError
from .base import ArrayDataset, PathLike, cache_dir, check_split, check_subset, describe_dir, download_archive
from ..errors import one_line

SPLITS = ("train", "test")


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    """The only globals a CIFAR pickle may name: how numpy rebuilds arrays and dtypes."""
    import _codecs

    try:  # numpy >= 2 keeps these in numpy._core; numpy.core is a deprecated alias
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: Dict[Tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,  # how Python 3 protocol-2 pickles write bytes
        ("builtins", "bytearray"): bytearray,
        ("__builtin__", "bytearray"): bytearray,
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain data, and nothing else."""

    _allowed: Optional[Dict[Tuple[str, str], Any]] = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def safe_load_pickle(path: PathLike) -> Any:
    """Unpickle a data file that must hold only plain data and numpy arrays."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise AttnlabError(f"refusing to load {path}: {one_line(e)} (a data pickle holds only arrays and lists)") from None
    except Exception as e:
        raise AttnlabError(f"cannot read {path} as a CIFAR pickle: {one_line(e)}") from None


def _plain_keys(d: Any, path: Path) -> Dict[str, Any]:
    """Dict with str keys: Python 2 pickles read with encoding='bytes' have bytes keys."""
    if not isinstance(d, dict):
        raise AttnlabError(f"{path}: expected a dict (official CIFAR python layout), found {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in d.items()}


def _names(values: Any) -> List[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _batch(path: Path, label_key: str, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    d = _plain_keys(safe_load_pickle(path), path)
    if "data" not in d or label_key not in d:
        raise AttnlabError(f"{path}: expected keys 'data' and '{label_key}', found {sorted(d)}")
    data, labels = d["data"], np.asarray(d[label_key], dtype=np.int64)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise AttnlabError(f"{path}: expected 'data' uint8 [N,3072], found {getattr(data, 'dtype', type(data).__name__)} {shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise AttnlabError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise AttnlabError(f"{path}: labels must be 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    # rows are 1024 red, 1024 green, 1024 blue values, each a 32x32 row-major plane
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _find_folder(name: str, folder: str, required: List[str], data_dir: Optional[PathLike],
                 download: bool, url: str, md5: str) -> Path:
    """The folder holding the official files: ``data_dir`` itself or ``data_dir/<folder>``."""
    base = Path(data_dir).expanduser() if data_dir is not None else cache_dir(name)
    for cand in (base, base / folder):
        if all((cand / f).is_file() for f in required):
            return cand
    if download:
        download_archive(url, base, md5)
        if all((base / folder / f).is_file() for f in required):
            return base / folder
    raise AttnlabError(
        f"{name}: expected {folder}/{{{','.join(required)}}} under {base}, {describe_dir(base)}; "
        f"download and unpack {url} there, or run `attnlab download {name}` (Python: download=True)"
    )


def _load(name: str, split: str, data_dir: Optional[PathLike], download: bool, channels: Optional[int],
          subset: Optional[int], folder: str, files: Dict[str, List[str]], meta: str,
          names_key: str, label_key: str, url: str, md5: str) -> ArrayDataset:
    check_split(name, split, SPLITS)
    root = _find_folder(name, folder, files[split] + [meta], data_dir, download, url, md5)
    meta_d = _plain_keys(safe_load_pickle(root / meta), root / meta)
    if names_key not in meta_d:
        raise AttnlabError(f"{root / meta}: expected key '{names_key}', found {sorted(meta_d)}")
    classes = _names(meta_d[names_key])
    parts = [_batch(root / f, label_key, len(classes)) for f in files[split]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    ds = ArrayDataset(images, labels, name=name, split=split, classes=classes, channels=channels or 3, root=root)
    n = check_subset(subset, len(ds), f"{name}/{split}")
    return ds.subset(n) if n is not None else ds


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"


def load_cifar10(
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    channels: Optional[int] = None,
    subset: Optional[int] = None,
) -> ArrayDataset:
    """CIFAR-10 (10 classes of 32x32 colour images; 50000 train, 10000 test)."""
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    return _load("cifar10", split, data_dir, download, channels, subset, "cifar-10-batches-py", files,
                 "batches.meta", "label_names", "labels", CIFAR10_URL, CIFAR10_MD5)


def load_cifar100(
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    channels: Optional[int] = None,
    subset: Optional[int] = None,
    labels: str = "fine",
) -> ArrayDataset:
    """CIFAR-100 (100 fine classes, or 20 superclasses with ``labels="coarse"``)."""
    if labels not in ("fine", "coarse"):
        raise AttnlabError(f"cifar100 labels must be 'fine' or 'coarse', not {labels!r}")
    files = {"train": ["train"], "test": ["test"]}
    return _load("cifar100", split, data_dir, download, channels, subset, "cifar-100-python", files,
                 "meta", f"{labels}_label_names", f"{labels}_labels", CIFAR100_URL, CIFAR100_MD5)


LOADERS: Dict[str, Callable[..., ArrayDataset]] = {"cifar10": load_cifar10, "cifar100": load_cifar100}
