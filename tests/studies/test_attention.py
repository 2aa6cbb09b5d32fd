"""``attnlab globality`` / ``attnlab entropy`` end to end: tidy CSVs, figures, bad input."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image
from typer.testing import CliRunner

from attnlab import save_checkpoint
from attnlab.capture import capture_attention
from attnlab.cli import app
from attnlab.data import eval_transform
from attnlab.layout import TokenLayout
from attnlab.metrics import attention_entropy, mean_attention_distance
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.tables import COLUMNS

runner = CliRunner()
SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    out = {}
    for name in ["vit_micro_patch4_32", "revit_micro_patch4_32", "vit_cb_micro_patch4_32"]:
        out[name] = str(save_checkpoint(create_model(name), d / f"{name}.pt", input_spec=SPEC))
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(d / f"rgb{i}.png")
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(d / "grey.png")  # grey for an RGB model
    (d / "notes.txt").write_text("not an image")
    return d


def test_globality_csv_figures_and_values(tmp_path, ckpts, images):
    out = tmp_path / "glob"
    result = runner.invoke(app, ["globality", "--ckpt", ckpts["vit_micro_patch4_32"], "--ckpt",
                                 ckpts["revit_micro_patch4_32"], "--label", "ViT", "--label", "ReViT",
                                 "--images", str(images), "--batch-size", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "converted images to the model's 3-channel input (L->RGB x1)" in result.stderr
    assert "ignored 1 files that are not images" in result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["globality.csv"] + [f"{s}.{e}" for s in ["mad_per_layer", "mad_per_head", "globality_curves"]
                                               for e in ["png", "pdf"]])
    df = pd.read_csv(out / "globality.csv")
    assert tuple(df.columns) == COLUMNS
    assert set(df["metric"]) == {"mad_px", "mad_px_raw", "nonlocality", "globality", "prefix_mass"}
    assert set(df["model"]) == {"ViT", "ReViT"} and (df["n_images"] == 11).all()
    assert set(df[df["model"] == "ReViT"]["attention"]) == {"applied", "own"}
    # one row per model x attention x layer x head x metric (x radius): no duplicates
    key = ["model", "attention", "layer", "head", "metric", "radius"]
    assert not df.fillna({"radius": -1}).duplicated(key).any()
    assert len(df[(df.model == "ViT") & (df.metric == "mad_px")]) == 6 * (4 + 1)
    # the CSV equals the metric functions applied to captured attention of the same images
    model = timm.create_model("vit_micro_patch4_32")
    model.load_state_dict(torch.load(ckpts["vit_micro_patch4_32"], weights_only=True)["state_dict"])
    tf = eval_transform(SPEC)
    files = sorted(p for p in images.iterdir() if p.suffix == ".png")
    x = torch.stack([tf(Image.open(p)) for p in files])
    attn = capture_attention(model.eval(), x)
    layout = TokenLayout.from_model(model)
    expected = mean_attention_distance(attn[3], layout=layout)
    got = df[(df.model == "ViT") & (df.metric == "mad_px") & (df.layer == 3) & (df["head"] >= 0)].sort_values("head")
    np.testing.assert_allclose(got["value"].to_numpy(), expected.numpy(), rtol=1e-5)


def test_entropy_on_an_image_folder_dataset(tmp_path, ckpts):
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for split in ["train", "test"]:
        for cls in ["a", "b"]:
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.jpg")
    out = tmp_path / "ent"
    result = runner.invoke(app, ["entropy", "--ckpt", ckpts["vit_cb_micro_patch4_32"], "--dataset", "imagefolder",
                                 "--data-dir", str(root), "--num-images", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "context broadcasting mixes tokens uniformly" in result.stderr
    df = pd.read_csv(out / "entropy.csv")
    assert set(df["metric"]) == {"entropy", "entropy_norm", "entropy_patch", "entropy_prefix"}
    assert (df["n_images"] == 5).all()
    assert (df["value"] >= 0).all() and (df[df.metric == "entropy_norm"]["value"] <= 1 + 1e-6).all()
    whole = df[(df["head"] == -1) & (df.metric == "entropy")]
    assert (whole["ci_low"] <= whole["value"]).all() and (whole["value"] <= whole["ci_high"]).all()
    assert {"entropy_per_layer.png", "entropy_per_layer.pdf", "entropy_heatmap.png", "entropy_heatmap.pdf"} <= \
        {p.name for p in out.iterdir()}
    # random weights: nearly uniform attention, so entropy close to log N in every layer
    tf = eval_transform(SPEC)
    model = timm.create_model("vit_cb_micro_patch4_32")
    model.load_state_dict(torch.load(ckpts["vit_cb_micro_patch4_32"], weights_only=True)["state_dict"])
    files = sorted((root / "test").rglob("*.jpg"))[:5]
    attn = capture_attention(model.eval(), torch.stack([tf(Image.open(p)) for p in files]))
    expected = attention_entropy(attn[0])
    got = df[(df.metric == "entropy") & (df.layer == 0) & (df["head"] >= 0)].sort_values("head")["value"].to_numpy()
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5)


def _fails_cleanly(result, out, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    for f in fragments:
        assert f in lines[-1]
    assert not out.exists() or not any(out.iterdir())
    assert not any(p.name.startswith(f".{out.name}.staging") for p in out.parent.iterdir())


def test_bad_input(tmp_path, ckpts, images):
    out = tmp_path / "out"
    ck = ckpts["vit_micro_patch4_32"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.png").write_bytes(b"not a png")
    cases = [
        (["--images", str(tmp_path / "empty")], "no images found"),
        (["--images", str(images / "notes.txt")], "is not an image file"),
        (["--images", str(tmp_path / "fake.png")], "expected readable images, found none"),
        (["--images", str(images), "--num-images", "500"], "--num-images 500 is more than the 11 images"),
        (["--images", str(images), "--label", "a", "--label", "b"], "2 --label values for 1 --ckpt"),
        (["--images", str(images), "--dataset", "cifar10"], "either --images"),
        (["--images", str(images), "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--images", str(images), "--radii", "1,x"], "--radii"),
    ]
    for args, fragment in cases:
        _fails_cleanly(runner.invoke(app, ["globality", "--ckpt", ck, "--out", str(out), *args]), out, fragment)


def test_model_without_attention_fails_without_partial_output(tmp_path, images):
    ck = save_checkpoint(timm.create_model("resnet18", num_classes=3), tmp_path / "resnet.pt")
    out = tmp_path / "out"
    result = runner.invoke(app, ["entropy", "--ckpt", str(ck), "--images", str(images), "--out", str(out)])
    _fails_cleanly(result, out, "no ViT attention layer")


@pytest.mark.parametrize("command", ["globality", "entropy", "gradcam"])
@pytest.mark.parametrize("bad", ["file", "under-file", "read-only"])
def test_bad_out_is_refused_before_any_work(tmp_path, ckpts, images, command, bad, monkeypatch):
    import os

    from attnlab.studies import attention, attribution

    ran = []
    monkeypatch.setattr(attention.AttentionAnalyser, "update", lambda *a, **k: ran.append(1))
    monkeypatch.setattr(attribution.study, "load_models", lambda *a, **k: ran.append(1) or [])
    target = tmp_path / "taken"
    if bad == "file":
        target.write_text("x")
        out = target
    elif bad == "under-file":
        target.write_text("x")
        out = target / "sub"
    else:
        target.mkdir()
        target.chmod(0o500)
        out = target / "out"
        # root writes through permission bits: let the check see the folder as the permissions say it is
        real_access = os.access
        monkeypatch.setattr("attnlab.paths.os.access",
                            lambda p, mode: False if Path(p) == target and mode & os.W_OK else real_access(p, mode))
    result = runner.invoke(app, [command, "--ckpt", ckpts["vit_micro_patch4_32"], "--images", str(images),
                                 "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out") and "folder" in lines[0]
    assert ran == []
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
