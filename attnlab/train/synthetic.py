"""Tiny learnable stand-ins for Fashion-MNIST in its real file format (gzipped IDX).

Tests and benchmarks need data that loads through the real loader and that a model can
actually learn from, without the 30 MB download: each class is a bright bar at its own
position and angle on a noisy 28x28 background.
"""
from __future__ import annotations

import gzip
from pathlib import Path
import numpy as np

from ..paths import PathLike


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def class_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """One noisy image per label; class k is a bar at row/column 3 + 2k (vertical for odd k)."""
    n = len(labels)
    images = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        pos = 3 + 2 * int(k) + int(rng.integers(-1, 2))
        if k % 2:
            images[i, 4:size - 4, pos:pos + 3] = 200 + rng.integers(0, 55)
        else:
            images[i, pos:pos + 3, 4:size - 4] = 200 + rng.integers(0, 55)
    return images


def write_fashion_mnist_idx(folder: PathLike, n_train: int = 128, n_test: int = 64, seed: int = 0) -> Path:
    """Write train/t10k images+labels ``.gz`` files into ``folder`` (the official names)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = class_images(labels, rng)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images), compresslevel=1))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels), compresslevel=1))
    return folder
