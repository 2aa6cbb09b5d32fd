"""ImageNet layouts and WebDataset shards, built small from real Fashion-MNIST images saved as JPEG."""
from __future__ import annotations

import csv
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from typer.testing import CliRunner

from attnlab import save_checkpoint
from attnlab.cli import app
from attnlab.data import load_dataset
from attnlab.errors import AttnlabError
from attnlab.models import create_model
from attnlab.spec import InputSpec

FMNIST = Path("/usr/share/datasets/fashion-mnist")
# Fashion-MNIST label -> a real synset; sorted wnids give another order (trouser 0, pullover 1, T-shirt 2)
SYNSETS = {0: ("n04370456", "sweatshirt"), 1: ("n03594734", "jean, blue jean, denim"), 2: ("n03980874", "poncho")}
WNIDS = sorted(w for w, _ in SYNSETS.values())
NAMES = ["jean", "poncho", "sweatshirt"]
runner = CliRunner()


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def photos():
    """{fashion label: [five 28 x 28 grey images]} from the real Fashion-MNIST test set."""
    try:
        ds = load_dataset("fashion-mnist", "test", data_dir=FMNIST, subset=120)
    except AttnlabError:
        if os.environ.get("ATTNLAB_STRICT_TESTS") == "1":
            pytest.fail("Fashion-MNIST is not installed, though `make test` installs it (make data)")
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    out = {c: [] for c in SYNSETS}
    for img, label in ds:
        if label in out and len(out[label]) < 5:
            out[label].append(img)
    assert all(len(v) == 5 for v in out.values())
    return out


def jpeg(img: Image.Image, grey: bool = False) -> bytes:
    buf = io.BytesIO()
    (img if grey else img.convert("RGB")).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def decoded(data: bytes) -> np.ndarray:
    """What PIL itself makes of the JPEG: the reference for every loader."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def write_train(root: Path, photos) -> dict:
    """root/train/<wnid>/<wnid>_<k>.JPEG from images 0..2 of each class; {path: (bytes, wnid)}."""
    files = {}
    for c, (wnid, _) in SYNSETS.items():
        (root / "train" / wnid).mkdir(parents=True)
        for k in range(3):
            path = root / "train" / wnid / f"{wnid}_{k}.JPEG"
            path.write_bytes(data := jpeg(photos[c][k], grey=(c, k) == (1, 0)))
            files[path] = (data, wnid)
    return files


def val_images(photos):
    """The six val images in file order: (file name, bytes, wnid), classes interleaved."""
    out = []
    for n, (c, k) in enumerate([(2, 3), (0, 3), (1, 3), (0, 4), (2, 4), (1, 4)], 1):
        out.append((f"ILSVRC2012_val_{n:08d}.JPEG", jpeg(photos[c][k]), SYNSETS[c][0]))
    return out


def write_flat_val(folder: Path, photos):
    folder.mkdir(parents=True)
    images = val_images(photos)
    for name, data, _ in images:
        (folder / name).write_bytes(data)
    return images


def write_mapping(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = sorted(f"{w} {words}" for w, words in SYNSETS.values())
    (folder / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")


def write_solution(path: Path, images) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        for name, _, wnid in images:
            w.writerow([name.split(".")[0], f"{wnid} 1 2 20 25 {wnid} 3 3 9 9"])


def check_items(ds, expected) -> None:
    """expected: [(bytes, wnid)] in dataset order; pixels and labels must match."""
    assert len(ds) == len(expected)
    for (img, label), (data, wnid) in zip(ds, expected):
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), decoded(data))
        assert label == WNIDS.index(wnid)


# --------------------------------------------------------------------------- folders
def test_train_and_val_class_folders(tmp_path, photos):
    files = write_train(tmp_path, photos)
    truncated = tmp_path / "train" / WNIDS[2] / "broken.JPEG"
    whole = jpeg(photos[0][4])
    truncated.write_bytes(whole[:len(whole) * 3 // 4])  # headers intact, image data cut
    for name, data, wnid in val_images(photos):
        (tmp_path / "val" / wnid).mkdir(parents=True, exist_ok=True)
        (tmp_path / "val" / wnid / name).write_bytes(data)
    (tmp_path / "val" / "README.txt").write_text("notes")

    train = load_dataset("imagenet", "train", data_dir=tmp_path)
    assert (train.name, train.split, train.classes, train.wnids) == ("imagenet", "train", WNIDS, WNIDS)
    check_items(train, [files[p] for p in sorted(files)])  # sorted wnid folders, sorted files
    assert "9 images, 3 classes" in train.summary() and "1 unreadable files skipped" in train.summary()
    assert str(truncated) in train.unreadable and train.conversions == {"L->RGB": 1}
    assert len(load_dataset("imagenet", "train", data_dir=tmp_path, verify="header")) == 10

    val = load_dataset("ImageNet-1K", "validation", data_dir=tmp_path)
    by_folder = sorted(val_images(photos), key=lambda t: (t[2], t[0]))
    check_items(val, [(d, w) for _, d, w in by_folder])
    assert val.ignored == [str(tmp_path / "val" / "README.txt")]
    few = load_dataset("imagenet", "val", data_dir=tmp_path, subset=3)  # one image of each class, in stored order
    assert few.targets.tolist() == [0, 1, 2] and few.paths == [val.paths[0], val.paths[2], val.paths[4]]
    grey = load_dataset("imagenet", "val", data_dir=tmp_path, channels=1)
    assert grey[0][0].mode == "L" and grey.conversions == {"RGB->L": 6}


def test_kaggle_layout_flat_val_with_loc_val_solution(tmp_path, photos):
    images = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    write_train(images, photos)
    flat = write_flat_val(images / "val", photos)
    write_solution(tmp_path / "LOC_val_solution.csv", flat)
    write_mapping(tmp_path)
    val = load_dataset("imagenet", "val", data_dir=tmp_path)
    assert val.classes == NAMES and val.wnids == WNIDS
    check_items(val, [(d, w) for _, d, w in flat])  # file order
    assert load_dataset("imagenet", "train", data_dir=tmp_path).classes == NAMES


def test_flat_val_with_devkit_ground_truth_and_synset_mapping(tmp_path, photos):
    write_train(tmp_path, photos)
    flat = write_flat_val(tmp_path / "val", photos)
    write_mapping(tmp_path)
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    # IDs are 1-based line numbers of the synset file, which lists the wnids sorted
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{WNIDS.index(w) + 1}\n" for _, _, w in flat))
    val = load_dataset("imagenet", "val", data_dir=tmp_path)
    assert val.classes == NAMES
    check_items(val, [(d, w) for _, d, w in flat])
    test = load_dataset("imagenet", "test", data_dir=tmp_path)  # the test labels are not public: val
    assert test.split == "val" and test.targets.tolist() == val.targets.tolist()


def test_devkit_meta_mat_maps_ids_in_its_own_order(tmp_path, photos):
    flat = write_flat_val(tmp_path / "val", photos)
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    order = ["n04370456", "n03594734", "n03980874"]  # the devkit's IDs 1, 2, 3: not sorted
    words = {w: words for w, words in SYNSETS.values()}
    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    rows = [(i, w, words[w], "-", 0) for i, w in enumerate(order, 1)] + [(1001, "n00001740", "entity", "-", 3)]
    scipy.io.savemat(data / "meta.mat", {"synsets": np.array(rows, dtype=dt)})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{order.index(w) + 1}\n" for _, _, w in flat))
    val = load_dataset("imagenet", "val", data_dir=tmp_path)  # no train folder: meta.mat's leaves are the classes
    assert val.classes == NAMES and val.wnids == WNIDS
    check_items(val, [(d, w) for _, d, w in flat])


def test_devkit_ids_are_not_read_through_the_sorted_1000_class_file(tmp_path, photos):
    write_flat_val(tmp_path / "val", photos)
    (tmp_path / "LOC_synset_mapping.txt").write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)))
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n3\n1\n2\n3\n")
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagenet", "val", data_dir=tmp_path)
    assert "devkit's ILSVRC2012_ID order" in one_line(e) and "meta.mat" in str(e.value)


# --------------------------------------------------------------------------- shards
def write_shard(path: Path, samples) -> None:
    """samples: (key, {ext: bytes})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, parts in samples:
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def shard_samples(photos):
    """Nine samples with labels 0..2 as text, over two shards; ([shard0, shard1], [(bytes, wnid)])."""
    samples, expected = [], []
    for k in range(3):
        for c, (wnid, _) in SYNSETS.items():
            data = jpeg(photos[c][k])
            samples.append((f"s{k}{c}/{wnid}_{k}", {"jpg": data, "cls": f"{WNIDS.index(wnid)}\n".encode(),
                                                     "json": b'{"source": "fashion-mnist"}'}))
            expected.append((data, wnid))
    return [samples[:5], samples[5:]], expected


@pytest.fixture
def shards(tmp_path, photos):
    (first, second), expected = shard_samples(photos)
    write_shard(tmp_path / "train-000000.tar", first)
    write_shard(tmp_path / "train-000001.tar", second)
    (tmp_path / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return tmp_path, expected


def test_webdataset_shards(shards, photos):
    root, expected = shards
    ds = load_dataset("webdataset", "train", data_dir=root)
    assert (ds.name, ds.classes) == ("webdataset", NAMES)
    check_items(ds, expected)
    assert ds.members[5] == f"{root / 'train-000001.tar'}:s12/{SYNSETS[2][0]}_1.jpg"
    few = load_dataset("wds", "train", data_dir=root, subset=4, channels=1)
    assert len(few) == 4 and few.targets.tolist() == ds.targets[:4].tolist() and few[3][0].mode == "L"
    auto = load_dataset("imagenet", "train", data_dir=root)  # imagenet finds shards instead of folders
    assert auto.name == "imagenet" and auto.classes == NAMES and auto.targets.tolist() == ds.targets.tolist()

    # <split>/*.tar, a names file of synsets, a PNG and a damaged JPEG: the bad one skipped and counted
    png = io.BytesIO()
    photos[0][0].save(png, "PNG")
    write_shard(root / "val" / "part-a.tar", [("a", {"png": png.getvalue(), "cls": b"2"}),
                                              ("b", {"jpg": jpeg(photos[1][1])[:200], "cls": b"0"}),
                                              ("c", {"txt": b"caption only"})])
    write_mapping(root / "val")
    (root / "classes.txt").unlink()
    val = load_dataset("webdataset", "val", data_dir=root)
    assert val.classes == NAMES and len(val) == 1 and val.targets.tolist() == [2]
    assert np.array_equal(np.asarray(val[0][0]), np.asarray(photos[0][0].convert("RGB")))
    assert val.unreadable == [f"{root / 'val' / 'part-a.tar'}:b.jpg"] and val.conversions == {"L->RGB": 1}
    assert "1 unreadable files skipped" in val.summary() and "1 non-image files ignored" in val.summary()
    test = load_dataset("webdataset", "test", data_dir=root)  # no test shards: val
    assert (len(test), test.split) == (1, "val")
    unnamed = load_dataset("webdataset", "train", data_dir=root)  # no names file: the labels
    assert unnamed.classes == ["0", "1", "2"]


def pixels(img):
    return torch.from_numpy(np.asarray(img).copy())


def test_dataloader_workers_read_the_same_items(shards):
    root, _ = shards
    ds = load_dataset("webdataset", "train", data_dir=root, transform=pixels)
    ds[0]  # the parent has a shard open before the workers fork
    serial = list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0))
    parallel = list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2))
    assert len(serial) == len(parallel) == 5
    for (xa, ya), (xb, yb) in zip(serial, parallel):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# --------------------------------------------------------------------------- bad input
def test_bad_layouts_are_one_line_each(tmp_path, photos):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagenet", "train", data_dir=tmp_path / "empty")
    msg = one_line(e)
    for layout in ("train/<wnid>/*.JPEG", "LOC_val_solution.csv", "ILSVRC/Data/CLS-LOC", "train-000000.tar",
                   "train/*.tar", "image-net.org"):
        assert layout in msg

    flat = tmp_path / "flat"
    write_train(flat, photos)
    images = write_flat_val(flat / "val", photos)
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagenet", "val", data_dir=flat)
    msg = one_line(e)
    assert "holds 6 images flat" in msg and "LOC_val_solution.csv and ILSVRC2012_validation_ground_truth.txt" in msg
    assert str(flat) in msg and str(flat / "val") in msg

    write_solution(flat / "LOC_val_solution.csv", images[1:] + [("ILSVRC2012_val_00000099.JPEG", b"", WNIDS[0]),
                                                               ("ILSVRC2012_val_00000098.JPEG", b"", WNIDS[0])])
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagenet", "val", data_dir=flat)
    msg = one_line(e)
    assert "names 2 images missing from" in msg and "1 image in" in msg and "ILSVRC2012_val_00000001.JPEG" in msg

    write_solution(flat / "LOC_val_solution.csv", images[:-1] + [(images[-1][0], b"", "n09999999")])
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagenet", "val", data_dir=flat)
    assert "wnids n09999999 that are not among the 3 classes of" in one_line(e)

    folders = tmp_path / "folders"
    write_train(folders, photos)
    (folders / "val" / "n09999999").mkdir(parents=True)
    (folders / "val" / "n09999999" / "x.JPEG").write_bytes(jpeg(photos[0][0]))
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagenet", "val", data_dir=folders)
    assert "class folders n09999999 that are not among the 3 classes of " + str(folders / "train") in one_line(e)

    with pytest.raises(AttnlabError) as e:
        load_dataset("imagenet", "holdout", data_dir=folders)
    assert "imagenet has splits train, val" in one_line(e)


def test_bad_shards_are_one_line_each(tmp_path, photos):
    write_shard(tmp_path / "train-000000.tar", [("a", {"jpg": jpeg(photos[0][0])}), ("b", {"jpg": jpeg(photos[1][0])})])
    for name in ("webdataset", "imagenet"):
        with pytest.raises(AttnlabError) as e:
            load_dataset(name, "train", data_dir=tmp_path)
        assert "train-000000.tar has no .cls labels (e.g. a.jpg)" in one_line(e)
    write_shard(tmp_path / "train-000000.tar", [("a", {"jpg": jpeg(photos[0][0]), "cls": b"cat"})])
    with pytest.raises(AttnlabError) as e:
        load_dataset("wds", "train", data_dir=tmp_path)
    assert "a.cls: expected a class index" in one_line(e)
    with pytest.raises(AttnlabError) as e:
        load_dataset("wds", "val", data_dir=tmp_path)
    assert "expected" in one_line(e) and "val-000000.tar" in str(e.value) and "found shards for splits train" in str(e.value)


def test_imagenet_cannot_be_downloaded(tmp_path):
    with pytest.raises(AttnlabError) as e:
        load_dataset("imagenet", "val", data_dir=tmp_path, download=True)
    assert "cannot be downloaded automatically" in one_line(e) and "image-net.org" in str(e.value)
    assert "Kaggle" in str(e.value) and "train/<wnid>/*.JPEG" in str(e.value)
    r = runner.invoke(app, ["download", "imagenet", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "image-net.org" in r.stderr


# --------------------------------------------------------------------------- the CLI
def test_evaluate_on_imagenet_folders(tmp_path, photos):
    root = tmp_path / "in1k"
    write_train(root, photos)
    images = write_flat_val(root / "val", photos)
    write_solution(root / "LOC_val_solution.csv", images)
    write_mapping(root)
    torch.manual_seed(0)
    model = create_model("vit_micro_patch4_32", in_chans=3, num_classes=3)
    spec = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    ckpt = save_checkpoint(model, tmp_path / "m.pt", classes=NAMES, input_spec=spec)
    out = tmp_path / "ev"
    r = runner.invoke(app, ["evaluate", "--ckpt", str(ckpt), "--dataset", "imagenet", "--data-dir", str(root),
                            "--out", str(out)])  # the default split, test, reads val
    assert r.exit_code == 0, r.output
    assert "6 images" in r.stdout
    with open(out / "per_class_accuracy.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["class"] for row in rows] == NAMES and [int(row["n"]) for row in rows] == [2, 2, 2]


def test_a_forked_process_opens_its_own_shard_files(shards, monkeypatch):
    root, expected = shards
    ds = load_dataset("webdataset", "train", data_dir=root)
    first = np.asarray(ds[0][0])
    inherited = dict(ds._fds)
    assert list(inherited) == [0]
    closed, real_close = [], os.close
    monkeypatch.setattr("attnlab.data.shards.os.close", lambda fd: closed.append(fd) or real_close(fd))
    monkeypatch.setattr("attnlab.data.shards.os.getpid", lambda: -1)  # as a DataLoader worker sees it
    assert np.array_equal(np.asarray(ds[0][0]), first)
    assert closed == [inherited[0]] and list(ds._fds) == [0]  # the inherited one closed, its own opened
    view = ds.with_transform(None)
    assert view._fds == {} and np.array_equal(np.asarray(view[0][0]), first)  # views open their own too
