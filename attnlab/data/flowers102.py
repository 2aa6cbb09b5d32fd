"""Oxford 102 Flowers in its official layout: ``jpg/``, ``imagelabels.mat``, ``setid.mat``.

``imagelabels.mat`` holds ``labels`` (1..102, one per image ``jpg/image_00001.jpg``...),
``setid.mat`` the 1-based image ids of each split: ``trnid`` (train), ``valid`` (val),
``tstid`` (test). The release has no class names; the names below are the ones commonly
used with it (also torchvision's), in label order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import AttnlabError
from .base import (FileDataset, PathLike, build_file_dataset, cache_dir, check_split, describe_dir,
                   download_archive, download_file, one_line)

SPLITS = ("train", "val", "test")
SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}
URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
FILES = {
    "102flowers.tgz": "52808999861908f626f3c1f4e79d11fa",
    "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
    "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c",
}
CLASSES = [
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon",
    "colt's foot", "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower",
    "peruvian lily", "balloon flower", "giant white arum lily", "fire lily", "pincushion flower",
    "fritillary", "red ginger", "grape hyacinth", "corn poppy", "prince of wales feathers",
    "stemless gentian", "artichoke", "sweet william", "carnation", "garden phlox", "love in the mist",
    "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort",
    "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink-yellow dahlia", "cautleya spicata", "japanese anemone",
    "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium", "frangipani",
    "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia", "cyclamen",
    "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper",
    "blackberry lily",
]


def _layout_ok(folder: Path) -> bool:
    return (folder / "jpg").is_dir() and (folder / "imagelabels.mat").is_file() and (folder / "setid.mat").is_file()


def find_root(data_dir: Optional[PathLike], download: bool) -> Path:
    """The folder with jpg/ and the two .mat files (``data_dir`` or ``data_dir/flowers-102``)."""
    base = Path(data_dir).expanduser() if data_dir is not None else cache_dir("flowers102")
    for cand in (base, base / "flowers-102"):
        if _layout_ok(cand):
            return cand
    if download:
        download_archive(URL + "102flowers.tgz", base, FILES["102flowers.tgz"])
        for name in ("imagelabels.mat", "setid.mat"):
            download_file(URL + name, base, name, FILES[name])
        if _layout_ok(base):
            return base
    raise AttnlabError(
        f"flowers102: expected jpg/, imagelabels.mat and setid.mat under {base}, {describe_dir(base)}; "
        f"download {URL} (102flowers.tgz unpacked, imagelabels.mat, setid.mat) there, or run `attnlab download flowers102` (Python: download=True)"
    )


def _loadmat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:
        raise AttnlabError(f"cannot read {path} as a MATLAB file: {one_line(e)}") from None
    if key not in mat:
        raise AttnlabError(f"{path}: expected variable '{key}', found {sorted(k for k in mat if not k.startswith('__'))}")
    arr = np.asarray(mat[key]).ravel()
    if arr.size and not np.issubdtype(arr.dtype, np.number):
        raise AttnlabError(f"{path}: '{key}' must be numbers, found {arr.dtype}")
    return arr.astype(np.int64)


def load_flowers102(
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    channels: Optional[int] = None,
    subset: Optional[int] = None,
    verify: str = "full",
) -> FileDataset:
    """Oxford 102 Flowers: 102 classes, official train/val/test splits (10 images/class in train)."""
    check_split("flowers102", split, SPLITS)
    root = find_root(data_dir, download)
    labels = _loadmat(root / "imagelabels.mat", "labels")
    ids = _loadmat(root / "setid.mat", SPLIT_KEYS[split])
    if labels.size and (labels.min() < 1 or labels.max() > len(CLASSES)):
        raise AttnlabError(f"{root / 'imagelabels.mat'}: labels must be 1..102, found {labels.min()}..{labels.max()}")
    if ids.size and (ids.min() < 1 or ids.max() > labels.size):
        raise AttnlabError(
            f"{root / 'setid.mat'}: {SPLIT_KEYS[split]} must be image ids 1..{labels.size}, found {ids.min()}..{ids.max()}"
        )
    items = [(str(root / "jpg" / f"image_{i:05d}.jpg"), int(labels[i - 1]) - 1) for i in ids]
    return build_file_dataset(
        items, name="flowers102", split=split, classes=CLASSES, channels=channels or 3, root=root,
        subset=subset, verify=verify,
    )
