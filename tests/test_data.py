"""attnlab.data: every official layout, built small on the fly in its real file format."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.data import (DATASETS, dataset_names, eval_transform, load_dataset, read_idx,
                          safe_load_pickle, train_transform)
from attnlab.data import cifar as cifar_mod
from attnlab.data import fashion_mnist as fm_mod
from attnlab.data.flowers102 import CLASSES as FLOWER_CLASSES
from attnlab.errors import AttnlabError
from attnlab.spec import InputSpec

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"]


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- writers of real formats
def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_fmnist(folder: Path, n_train: int = 12, n_test: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0] = 255  # a known image
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def cifar_batch(n: int, num_classes: int, label_key: str, seed: int, bytes_keys: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 10, 20, 30  # image 0: R=10 G=20 B=30
    d = {"batch_label": "batch", label_key: [int(i % num_classes) for i in range(n)], "data": data,
         "filenames": [f"img_{i}.png" for i in range(n)]}
    return {k.encode(): v for k, v in d.items()} if bytes_keys else d


def make_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):  # batch 2 with bytes keys, as Python 2 pickles read with encoding='bytes'
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(4, 10, "labels", i, i == 2), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(3, 10, "labels", 9), protocol=4))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_cases_per_batch": 4}, protocol=2))
    return root


def make_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in (("train", 7), ("test", 5)):
        d = cifar_batch(n, 100, "fine_labels", n)
        d["coarse_labels"] = [i % 20 for i in range(n)]
        (folder / split).write_bytes(pickle.dumps(d, protocol=5))
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def save_jpeg(path: Path, mode: str = "RGB", size=(40, 30), color=None) -> Path:
    rng = np.random.default_rng(len(str(path)))
    if color is None:
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(path, format="JPEG")
    else:
        Image.new(mode, size, color).save(path, format="JPEG")
    return path


def save_odd_images(folder: Path, names: dict) -> None:
    """One of each awkward kind, under the given names: grey, palette, RGBA, CMYK, corrupt, truncated."""
    save_jpeg(folder / names["grey"], "L")
    Image.new("RGB", (20, 20), (200, 10, 10)).convert("P").save(folder / names["palette"], format="PNG")
    rgba = Image.new("RGBA", (20, 20), (255, 255, 255, 0))  # fully transparent white -> black
    rgba.putpixel((0, 0), (255, 255, 255, 255))
    rgba.save(folder / names["rgba"], format="PNG")
    save_jpeg(folder / names["cmyk"], "CMYK")
    (folder / names["corrupt"]).write_bytes(b"this is not an image at all" * 10)
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good, "JPEG")
    (folder / names["truncated"]).write_bytes(good.getvalue()[: len(good.getvalue()) // 2])


PET_BREEDS = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]  # class ids 1..3, species


def make_pets(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    train, test = [], []
    for cid, (breed, species) in enumerate(PET_BREEDS, 1):
        for k in range(1, 4):
            name = f"{breed}_{k}"
            save_jpeg(root / "images" / f"{name}.jpg")
            (train if k < 3 else test).append(f"{name} {cid} {species} {cid}")
    odd = {"grey": "Abyssinian_10.jpg", "palette": "Abyssinian_11.jpg", "rgba": "Bengal_12.jpg",
           "cmyk": "Bengal_13.jpg", "corrupt": "american_bulldog_14.jpg", "truncated": "american_bulldog_15.jpg"}
    save_odd_images(root / "images", odd)
    ids = {"Abyssinian": (1, 1), "american_bulldog": (2, 2), "Bengal": (3, 1)}
    for fname in odd.values():
        stem = fname[:-4]
        cid, species = ids[stem.rsplit("_", 1)[0]]
        train.append(f"{stem} {cid} {species} {cid}")
    train.append("Bengal_99 3 1 3")  # listed but missing
    (root / "annotations" / "trainval.txt").write_text("\n".join(train) + "\n")
    (root / "annotations" / "test.txt").write_text("# comment line\n" + "\n".join(test) + "\n")
    return root


def make_flowers(root: Path) -> Path:
    from scipy.io import savemat

    (root / "jpg").mkdir(parents=True)
    labels = np.array([[1, 2, 3, 1, 2, 3, 102, 5]], dtype=np.float64)  # 8 images, 1-based labels
    for i in range(1, labels.size + 1):
        save_jpeg(root / "jpg" / f"image_{i:05d}.jpg")
    (root / "jpg" / "image_00008.jpg").write_bytes(b"\xff\xd8\xff garbage")  # corrupt
    savemat(root / "imagelabels.mat", {"labels": labels})
    savemat(root / "setid.mat", {"trnid": np.array([[1, 2, 3]], dtype=np.uint16),
                                 "valid": np.array([[4, 5]], dtype=np.uint16),
                                 "tstid": np.array([[6, 7, 8]], dtype=np.uint16)})
    return root


def make_imagefolder(root: Path) -> Path:
    for split, classes in (("train", ["dog", "cat", "bird"]), ("test", ["dog", "cat"])):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for k in range(2):
                save_jpeg(root / split / cls / f"{k}.jpg")
    save_odd_images(root / "train" / "cat", {"grey": "g.png", "palette": "p.png", "rgba": "a.png",
                                             "cmyk": "c.jpg", "corrupt": "x.jpg", "truncated": "t.jpg"})
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / "nested").mkdir()
    save_jpeg(root / "train" / "dog" / "nested" / "deep.jpg")
    return root


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server over tmp_path/mirror: the real download code, no internet."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- registry
def test_registry_names_and_errors(tmp_path):
    assert dataset_names()[0] == "fashion-mnist"
    assert set(dataset_names()) == set(DATASETS) == {"fashion-mnist", "cifar10", "cifar100", "pets", "flowers102",
                                                     "imagefolder", "imagenet", "webdataset"}
    with pytest.raises(AttnlabError) as e:
        load_dataset("mnist-nope")
    assert "cifar10" in one_line_error(e)
    make_fmnist(tmp_path)
    with pytest.raises(AttnlabError) as e:
        load_dataset("fashion-mnist", "val", tmp_path)
    assert "train, test" in one_line_error(e)
    with pytest.raises(AttnlabError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path, task="species")
    assert "no option task" in one_line_error(e)
    with pytest.raises(AttnlabError, match="channels must be 1"):
        load_dataset("fashion-mnist", data_dir=tmp_path, channels=2)
    assert len(load_dataset("Fashion_MNIST", data_dir=tmp_path)) == 12  # aliases / spelling


# --------------------------------------------------------------------------- fashion-mnist
def test_fashion_mnist_reads_idx(tmp_path):
    make_fmnist(tmp_path)
    ds = load_dataset("fashion-mnist", "train", tmp_path)
    assert (ds.name, ds.split, len(ds)) == ("fashion-mnist", "train", 12)
    assert ds.classes == FMNIST_NAMES
    assert ds.images.dtype == np.uint8 and ds.images.shape == (12, 28, 28)
    assert ds.targets.tolist() == [i % 10 for i in range(12)]
    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (28, 28) and label == 0
    assert np.asarray(img).min() == 255
    assert not ds.conversions and not ds.unreadable
    assert torch.from_numpy(ds.images).shape == (12, 28, 28)  # writable: no warning, no copy needed
    test = load_dataset("fashion-mnist", "test", tmp_path, channels=3)
    assert len(test) == 6 and test[1][0].mode == "RGB" and test[1][1] == 1
    assert test.conversions == {"L->RGB": 6} and "L->RGB x6" in test.summary()
    assert test.images.shape == (6, 28, 28)  # raw arrays stay as stored


def test_fashion_mnist_uncompressed_and_torchvision_raw_folder(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    make_fmnist(raw)
    for f in raw.glob("t10k-*.gz"):
        f.with_suffix("").write_bytes(gzip.decompress(f.read_bytes()))
        f.unlink()
    assert len(load_dataset("fashion-mnist", "test", tmp_path)) == 6


def test_idx_validation(tmp_path):
    make_fmnist(tmp_path)
    good = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(good.read_bytes())
    (tmp_path / "bad_magic").write_bytes(b"\x08\x03\x00\x00" + raw[4:])
    with pytest.raises(AttnlabError) as e:
        read_idx(tmp_path / "bad_magic")
    assert "magic" in one_line_error(e)
    good.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(AttnlabError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert "truncated" in one_line_error(e)
    good.write_bytes(gzip.compress(raw + b"\x00"))
    with pytest.raises(AttnlabError, match="more data"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    write_idx(good, np.zeros((12, 14, 14), np.uint8))
    with pytest.raises(AttnlabError, match=r"expected uint8 images of shape \[N,28,28\]"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    write_idx(good, np.zeros((11, 28, 28), np.uint8))
    with pytest.raises(AttnlabError, match="expected 11 labels"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AttnlabError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    msg = one_line_error(e)
    assert "expected train-images-idx3-ubyte.gz" in msg and "dataset-fashion-mnist" in msg and fm_mod.URL in msg
    monkeypatch.setattr(fm_mod, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(AttnlabError) as e:
        load_dataset("fashion-mnist", "test")
    msg = one_line_error(e)
    assert str(tmp_path / "no-debian") in msg and str(tmp_path / "cache" / "fashion-mnist") in msg


def test_fashion_mnist_download_verifies_md5(tmp_path, monkeypatch, http_mirror):
    """The real download path (torchvision download_url), served by a local mirror."""
    mirror, url = http_mirror
    make_fmnist(mirror)
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in mirror.iterdir()}
    monkeypatch.setattr(fm_mod, "URL", url)
    monkeypatch.setattr(fm_mod, "MD5", md5)
    monkeypatch.setattr(fm_mod, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    ds = load_dataset("fashion-mnist", "train", download=True)
    assert len(ds) == 12 and Path(ds.root) == tmp_path / "cache" / "fashion-mnist"
    assert len(load_dataset("fashion-mnist", "train")) == 12  # found in the cache afterwards
    monkeypatch.setattr(fm_mod, "MD5", {k: "0" * 32 for k in md5})
    with pytest.raises(AttnlabError) as e:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path / "elsewhere", download=True)
    assert "could not download" in one_line_error(e)


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package():
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    assert Path(train.root) == DEBIAN_FMNIST
    assert (len(train), len(test)) == (60000, 10000)
    assert train.classes == FMNIST_NAMES and len(train.classes) == 10
    assert np.bincount(train.targets).tolist() == [6000] * 10
    assert np.bincount(test.targets).tolist() == [1000] * 10
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert train.images.min() == 0 and train.images.max() == 255
    assert 60 < train.images.mean() < 85  # Fashion-MNIST mean is about 0.286 * 255 = 72.9
    img, label = train[0]
    assert img.size == (28, 28) and label == 9  # the first training image is an ankle boot


# --------------------------------------------------------------------------- cifar
def test_cifar10(tmp_path):
    make_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", tmp_path)
    assert len(train) == 20 and train.classes[0] == "airplane" and train.classes[-1] == "truck"
    assert train.images.shape == (20, 32, 32, 3)
    assert train.targets.tolist() == [0, 1, 2, 3] * 5
    img, label = train[0]
    assert img.mode == "RGB" and img.size == (32, 32) and np.asarray(img)[5, 7].tolist() == [10, 20, 30]
    test = load_dataset("cifar10", "test", tmp_path / "cifar-10-batches-py", channels=1)  # the folder itself
    assert len(test) == 3 and test[0][0].mode == "L" and test.conversions == {"RGB->L": 3}


def test_cifar100_fine_and_coarse(tmp_path):
    make_cifar100(tmp_path)
    fine = load_dataset("cifar100", "train", tmp_path)
    assert len(fine) == 7 and len(fine.classes) == 100 and fine.classes[3] == "fine3"
    coarse = load_dataset("cifar100", "test", tmp_path, labels="coarse")
    assert len(coarse.classes) == 20 and coarse.targets.tolist() == [0, 1, 2, 3, 4]


def test_cifar_wrong_layout(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(AttnlabError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = one_line_error(e)
    assert "expected cifar-10-batches-py/" in msg and "something/" in msg and cifar_mod.CIFAR10_URL in msg
    with pytest.raises(AttnlabError) as e:
        load_dataset("cifar100", data_dir=tmp_path / "nope")
    assert "does not exist" in one_line_error(e) and "cifar-100-python.tar.gz" in str(e.value)
    make_cifar10(tmp_path)
    bad = cifar_batch(4, 10, "labels", 0)
    bad["data"] = bad["data"][:, :100]
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(bad))
    with pytest.raises(AttnlabError, match=r"expected 'data' uint8 \[N,3072\]"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_download_from_tarball(tmp_path, monkeypatch, http_mirror):
    mirror, url = http_mirror
    src = make_cifar10(tmp_path / "src")
    tgz = mirror / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(cifar_mod, "CIFAR10_URL", url + tgz.name)
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", hashlib.md5(tgz.read_bytes()).hexdigest())
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    ds = load_dataset("cifar10", "test", download=True)
    assert len(ds) == 3 and Path(ds.root) == tmp_path / "cache" / "cifar10" / "cifar-10-batches-py"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_loads_arrays(tmp_path, protocol):
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "f": np.float32(1.5), "names": [b"a", "b"]}
    (tmp_path / "ok").write_bytes(pickle.dumps(obj, protocol=protocol))
    back = safe_load_pickle(tmp_path / "ok")
    assert back["data"].tolist() == obj["data"].tolist() and back["names"] == [b"a", "b"] and back["f"] == 1.5


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    make_cifar10(tmp_path)
    evil = cifar_batch(3, 10, "labels", 0)
    evil["filenames"] = _Evil(marker)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(AttnlabError) as e:
        load_dataset("cifar10", "test", tmp_path)
    msg = one_line_error(e)
    assert "refusing" in msg and ("posix.system" in msg or "os.system" in msg)
    assert not marker.exists()


# --------------------------------------------------------------------------- pets
def test_pets_breeds_species_and_bad_files(tmp_path):
    root = make_pets(tmp_path / "pets")
    ds = load_dataset("pets", "train", root)
    assert ds.classes == ["Abyssinian", "american_bulldog", "Bengal"]
    # 6 good + grey, palette, rgba, cmyk; corrupt, truncated and missing are skipped and listed
    assert len(ds) == 10
    assert sorted(Path(p).name for p in ds.unreadable) == ["Bengal_99.jpg", "american_bulldog_14.jpg",
                                                           "american_bulldog_15.jpg"]
    assert ds.conversions == {"L->RGB": 1, "P->RGB": 1, "RGBA->RGB": 1, "CMYK->RGB": 1}
    assert "3 unreadable files skipped" in ds.summary()
    assert all(ds[i][0].mode == "RGB" for i in range(len(ds)))
    names = [Path(p).stem for p in ds.paths]
    assert ds.targets[names.index("american_bulldog_1")] == 1
    rgba = np.asarray(ds[names.index("Bengal_12")][0])
    assert rgba[0, 0].tolist() == [255, 255, 255] and rgba[5, 5].tolist() == [0, 0, 0]  # composited on black
    grey = load_dataset("pets", "train", root, channels=1)
    assert grey[0][0].mode == "L" and grey.conversions == {"RGB->L": 6, "P->L": 1, "RGBA->L": 1, "CMYK->L": 1}
    species = load_dataset("pets", "test", root, task="species")
    assert species.classes == ["cat", "dog"] and species.targets.tolist() == [0, 1, 0]
    assert load_dataset("pets", "test", root).classes == ds.classes


def test_pets_wrong_layout_and_bad_lines(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(AttnlabError) as e:
        load_dataset("pets", data_dir=tmp_path)
    msg = one_line_error(e)
    assert "expected images/ and annotations/trainval.txt" in msg and "robots.ox.ac.uk" in msg
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 cat 1\n")
    with pytest.raises(AttnlabError) as e:
        load_dataset("pets", data_dir=tmp_path)
    assert "trainval.txt:1: expected" in one_line_error(e)
    with pytest.raises(AttnlabError, match="task must be"):
        load_dataset("pets", data_dir=tmp_path, task="colour")


# --------------------------------------------------------------------------- flowers102
def test_flowers102_splits(tmp_path):
    root = make_flowers(tmp_path)
    train = load_dataset("flowers102", "train", root)
    assert len(train.classes) == 102 and train.classes[0] == "pink primrose" and train.classes[101] == "blackberry lily"
    assert train.targets.tolist() == [0, 1, 2] and len(FLOWER_CLASSES) == 102
    assert load_dataset("flowers102", "val", root).targets.tolist() == [0, 1]
    test = load_dataset("flowers102", "test", root)
    assert test.targets.tolist() == [2, 101] and [Path(p).name for p in test.unreadable] == ["image_00008.jpg"]
    with pytest.raises(AttnlabError, match="train, val, test"):
        load_dataset("flowers102", "trainval", root)


def test_flowers102_wrong_layout(tmp_path):
    (tmp_path / "jpg").mkdir()
    with pytest.raises(AttnlabError) as e:
        load_dataset("flowers102", data_dir=tmp_path)
    msg = one_line_error(e)
    assert "expected jpg/, imagelabels.mat and setid.mat" in msg and "jpg/" in msg.split("found")[1]
    from scipy.io import savemat

    savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[1, 200]])})
    savemat(tmp_path / "setid.mat", {"trnid": np.array([[1]]), "valid": np.array([[2]]), "tstid": np.array([[2]])})
    with pytest.raises(AttnlabError, match="labels must be 1..102"):
        load_dataset("flowers102", data_dir=tmp_path)


# --------------------------------------------------------------------------- imagefolder
def test_imagefolder(tmp_path):
    root = make_imagefolder(tmp_path)
    ds = load_dataset("imagefolder", "train", root)
    assert ds.classes == ["bird", "cat", "dog"]
    assert len(ds) == 2 + 6 + 3  # bird 2; cat 2 + grey/palette/rgba/cmyk; dog 2 + nested
    assert sorted(Path(p).name for p in ds.unreadable) == ["t.jpg", "x.jpg"]
    assert [Path(p).name for p in ds.ignored] == ["notes.txt"]
    assert ds.conversions == {"L->RGB": 1, "P->RGB": 1, "RGBA->RGB": 1, "CMYK->RGB": 1}
    test = load_dataset(str(root), "test")  # a folder path works as a name
    assert test.classes == ["bird", "cat", "dog"] and test.targets.tolist() == [1, 1, 2, 2]
    grey = load_dataset("imagefolder", "train", root, channels=1)
    assert {grey[i][0].mode for i in range(len(grey))} == {"L"}
    assert grey.conversions["RGB->L"] == 7 and grey.conversions["CMYK->L"] == 1 and "L->L" not in grey.conversions
    quick = load_dataset("imagefolder", "train", root, verify="header")  # header only: truncated file passes
    assert [Path(p).name for p in quick.unreadable] == ["x.jpg"]
    with pytest.raises(AttnlabError) as e:
        quick[quick.paths.index(str(root / "train" / "cat" / "t.jpg"))]
    assert "verify='full'" in one_line_error(e)


def test_imagefolder_wrong_layout(tmp_path):
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagefolder")
    assert "expected data_dir=<root>" in one_line_error(e)
    (tmp_path / "training").mkdir()
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagefolder", "train", tmp_path)
    msg = one_line_error(e)
    assert "expected" in msg and "<class>/<image>" in msg and "splits there: training" in msg
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(AttnlabError, match="expected image files"):
        load_dataset("imagefolder", "train", tmp_path)


SHARED_CIFAR10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"  # ../shared of the repo


@pytest.mark.skipif(not (SHARED_CIFAR10 / "test").is_dir(), reason="../shared/data/cifar10-jpeg absent")
def test_real_cifar10_jpeg_folder_subset():
    ds = load_dataset("imagefolder", "test", SHARED_CIFAR10, subset=50)
    assert len(ds) == 50 and len(ds.classes) == 10 and ds[0][0].size == (32, 32)


# --------------------------------------------------------------------------- subset, transforms on datasets
def test_subset(tmp_path):
    make_fmnist(tmp_path / "f")
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "f", subset=5)
    assert len(ds) == 5 and ds.images.shape[0] == 5 and ds.targets.tolist() == [0, 1, 2, 3, 4]
    for bad in (0, -3, 2.5):
        with pytest.raises(AttnlabError, match="subset must be"):
            load_dataset("fashion-mnist", data_dir=tmp_path / "f", subset=bad)
    with pytest.raises(AttnlabError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path / "f", subset=13)
    assert "has 12 items" in one_line_error(e)
    root = make_imagefolder(tmp_path / "if")
    few = load_dataset("imagefolder", "train", root, subset=4)  # classes in turn, kept in folder order
    assert few.targets.tolist() == [0, 0, 1, 2] and not few.unreadable
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagefolder", "train", root, subset=12)
    assert "has 11 items" in one_line_error(e)


def test_with_transform_and_dataloader(tmp_path):
    make_fmnist(tmp_path)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    spec = InputSpec(size=(32, 32), channels=1, mean=(0.5,), std=(0.5,))
    view = ds.with_transform(eval_transform(spec))
    assert ds.transform is None and isinstance(ds[0][0], Image.Image)
    x, y = next(iter(torch.utils.data.DataLoader(view, batch_size=4)))
    assert x.shape == (4, 1, 32, 32) and x.dtype == torch.float32 and y.tolist() == [0, 1, 2, 3]
    direct = load_dataset("fashion-mnist", data_dir=tmp_path, transform=eval_transform(spec))
    assert torch.equal(direct[3][0], view[3][0])


# --------------------------------------------------------------------------- transforms
SPEC1 = InputSpec(size=(32, 32), channels=1, mean=(0.25,), std=(0.5,))
SPEC3 = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))


def test_eval_transform_pads_small_images():
    x = eval_transform(SPEC1)(Image.new("L", (28, 28), 255))
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    inside, border = (1 - 0.25) / 0.5, (0 - 0.25) / 0.5
    assert torch.allclose(x[0, 2:30, 2:30], torch.tensor(inside))
    assert torch.allclose(x[0, :2], torch.tensor(border)) and torch.allclose(x[0, :, 30:], torch.tensor(border))
    y = eval_transform(SPEC1, resize="resize")(Image.new("L", (28, 28), 255))
    assert torch.allclose(y, torch.tensor(inside))  # upscaled: no border


def test_eval_transform_sizes_and_channels():
    t3 = eval_transform(SPEC3)
    assert t3(Image.new("RGB", (64, 48), (255, 0, 0))).shape == (3, 32, 32)  # larger: resized + cropped
    assert t3(Image.new("RGB", (40, 20))).shape == (3, 32, 32)  # one side short: padded, then cropped
    x = t3(Image.new("L", (32, 32), 255))  # grey into an RGB model
    expected = torch.tensor([(1 - m) / s for m, s in zip(SPEC3.mean, SPEC3.std)])
    assert torch.allclose(x[:, 10, 10], expected)
    rgba = Image.new("RGBA", (32, 32), (255, 255, 255, 0))
    assert torch.allclose(t3(rgba)[:, 0, 0], torch.tensor([(0 - m) / s for m, s in zip(SPEC3.mean, SPEC3.std)]))
    assert eval_transform(SPEC1)(Image.new("RGB", (32, 32), (255, 255, 255))).shape == (1, 32, 32)


def test_train_transform_shapes_and_normalisation():
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L")
    t1 = train_transform(SPEC1)
    t3 = train_transform(SPEC3, randaugment="rand-m5-n1", re_prob=0.5)
    for _ in range(20):
        assert t1(small).shape == (1, 32, 32) and t3(small).shape == (3, 32, 32)
        assert t1(small).dtype == torch.float32
    plain = train_transform(SPEC1, randaugment=None, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    x = plain(Image.new("L", (28, 28), 255))  # padded, not upscaled, then normalised
    assert torch.allclose(x[0, 2:30, 2:30], torch.tensor(1.5)) and torch.allclose(x[0, 0], torch.tensor(-0.5))


def test_transform_errors():
    with pytest.raises(AttnlabError, match="one value per channel"):
        eval_transform(InputSpec(size=(32, 32), channels=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    with pytest.raises(AttnlabError, match="resize must be one of pad, resize"):
        eval_transform(SPEC1, resize="stretch")
    with pytest.raises(AttnlabError, match="cannot build the training transform"):
        train_transform(SPEC1, randaugment="bogus-aa")


def test_image_folder_subsets_take_the_classes_in_turn(tmp_path):
    """A folder is stored class by class: a subset must not be the first class alone."""
    import numpy as np
    from PIL import Image

    from attnlab.data import load_dataset
    from attnlab.data.base import classes_in_turn

    for cls, count in (("ant", 4), ("bee", 2), ("cat", 3)):
        (tmp_path / "test" / cls).mkdir(parents=True)
        for k in range(count):
            Image.new("RGB", (8, 8), (10 * k, 0, 0)).save(tmp_path / "test" / cls / f"{k}.png")
    full = load_dataset("imagefolder", "test", data_dir=tmp_path)
    assert full.targets.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]  # stored order unchanged
    assert classes_in_turn(full.targets).tolist() == [0, 4, 6, 1, 5, 7, 2, 8, 3]
    for sub in (full.subset(4), load_dataset("imagefolder", "test", data_dir=tmp_path, subset=4)):
        assert sub.targets.tolist() == [0, 0, 1, 2]  # ant 0, ant 1, bee 0, cat 0, in folder order
        assert [p.split("/")[-2:] for p in sub.paths] == [["ant", "0.png"], ["ant", "1.png"], ["bee", "0.png"],
                                                           ["cat", "0.png"]]
        assert np.asarray(sub[3][0]).shape == (8, 8, 3)
