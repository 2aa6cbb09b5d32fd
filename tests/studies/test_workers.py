"""Images decoded by DataLoader workers: the same batches and results for any number of workers,
each image decoded once per input spec across all processes, worker errors in one line."""
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.data.base import FileDataset
from attnlab.errors import AttnlabError
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.studies.attention import measure_attention
from attnlab.studies.inputs import ImageSelection
from attnlab.studies.robustness import measure_robustness

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_batches_are_the_same_for_any_number_of_workers(pngs):
    selection = ImageSelection(images=[pngs])
    alone = list(selection.batches(SPEC, 3, workers=0))
    shared = list(selection.batches(SPEC, 3, workers=2))
    assert [len(x) for x, _ in alone] == [3, 3, 1]
    assert len(shared) == len(alone)
    for (xa, ya), (xb, yb) in zip(alone, shared):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x0, y0 = selection.stacked(SPEC, pixel=True)
    x2, y2 = selection.stacked(SPEC, pixel=True, workers=2)
    assert torch.equal(x0, x2) and torch.equal(y0, y2) and x0.shape == (7, 3, 32, 32) and (y0 == -1).all()


@pytest.mark.parametrize("spec", [SPEC, InputSpec(size=(48, 40), channels=1, mean=(0.3,), std=(0.2,),
                                                  interpolation="bicubic", crop_pct=0.875)])
def test_batches_travel_as_uint8_and_give_the_bits_of_the_float_transform(pngs, spec):
    """Workers send uint8; the floats made from them on arrival equal eval_transform's (and
    pixel_transform's) image by image, grey and colour, padded or resized."""
    selection = ImageSelection(images=[pngs])
    for pixel in (False, True):
        ds = selection.open(spec, pixel=pixel)
        expected = torch.stack([ds[i][0] for i in range(len(ds))])
        got, _ = selection.stacked(spec, pixel=pixel, workers=2)
        assert got.dtype == expected.dtype == torch.float32 and torch.equal(got, expected)
    from attnlab.data import uint8_transform

    assert uint8_transform(spec)(Image.open(pngs / "0.png")).dtype == torch.uint8


def test_a_study_gives_the_same_frame_with_and_without_workers(pngs):
    torch.manual_seed(0)
    net = create_model("vit_micro_patch4_32").eval()
    common = dict(images=[pngs], input_spec=SPEC, device="cpu", batch_size=3, metrics=["mad_px", "entropy"])
    alone = measure_attention(net, **common, workers=0)
    shared = measure_attention(net, **common, workers=2)
    pd.testing.assert_frame_equal(alone.frame, shared.frame)
    assert alone.n_images == 7


def test_models_sharing_an_input_decode_each_image_once_across_the_workers(pngs, tmp_path, monkeypatch):
    log = tmp_path / "decoded.txt"
    original = FileDataset.load_image

    def counting(self, i):  # appends from whichever process decodes: the workers, not this one
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {self.paths[i]}\n")
        return original(self, i)

    monkeypatch.setattr(FileDataset, "load_image", counting)
    torch.manual_seed(1)
    nets = [create_model("vit_micro_patch4_32").eval(), create_model("revit_micro_patch4_32").eval()]
    result = measure_robustness(nets, ["ViT", "ReViT"], images=[pngs], input_spec=SPEC, device="cpu", n_boot=50,
                                shifts=[0, 4], scales=[], batch_size=2, workers=2)
    assert set(result.frame["model"]) == {"ViT", "ReViT"} and (result.frame["n_images"] == 7).all()
    lines = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert sorted(path for _, path in lines) == sorted(str(p) for p in pngs.glob("*.png"))  # each once, both models
    pids = {pid for pid, _ in lines}
    assert str(os.getpid()) not in pids and len(pids) == 2  # decoded by the two workers


def test_a_file_that_fails_in_a_worker_is_one_line(tmp_path):
    for i in range(4):
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    selection = ImageSelection(images=[tmp_path])
    selection.dataset_for(3)  # files checked now ...
    (tmp_path / "2.png").write_bytes(b"not a png any more")  # ... and one changes before it is read
    with pytest.raises(AttnlabError) as e:
        list(selection.batches(SPEC, 2, workers=2))
    message = str(e.value)
    assert "\n" not in message and message.startswith("cannot decode") and "2.png" in message


def test_workers_must_be_zero_or_more(pngs, tmp_path):
    r = CliRunner().invoke(app, ["globality", "--ckpt", "x.pt", "--images", str(pngs), "--workers", "-1",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == ["error: --workers must be 0 or more, not -1"], \
        r.stderr  # checked before the (missing) checkpoint is read
    with pytest.raises(AttnlabError, match="--workers must be 0 or more"):
        measure_attention(create_model("vit_micro_patch4_32"), images=[pngs], input_spec=SPEC, workers=-1)
    assert not (tmp_path / "out").exists()
