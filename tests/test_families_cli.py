"""`attnlab globality` / `entropy` end to end, offline, on every supported family (random weights, small sizes)."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import attnlab
from attnlab.adapters import find_attention
from attnlab.cli import app
from attnlab.geometry import stage_of

runner = CliRunner()
FAMILIES = {
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=56, depths=(2, 2), num_heads=(2, 4), embed_dim=16), 56, 4),
    "eva02": ("eva02_tiny_patch14_224", dict(img_size=56, depth=2), 56, 2),
    "beit": ("beit_base_patch16_224", dict(img_size=64, depth=2, embed_dim=96, num_heads=2), 64, 2),
    "mvitv2": ("mvitv2_tiny", dict(img_size=64), 64, 10),
    "cait": ("cait_xxs24_224", dict(img_size=64, depth=2, embed_dim=96, num_heads=2), 64, 4),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def checkpoint(tmp_path, family):
    name, options, size, _ = FAMILIES[family]
    torch.manual_seed(0)
    model = attnlab.create_model(name, num_classes=3, **options)
    spec = attnlab.InputSpec(size=(size, size), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    return attnlab.save_checkpoint(model, tmp_path / f"{family}.pt", input_spec=spec)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_globality_and_entropy_on_every_family(tmp_path, images, family):
    ckpt = checkpoint(tmp_path, family)
    layers = FAMILIES[family][3]
    for command, metric, csv in [("globality", "mad_px", "globality.csv"), ("entropy", "entropy_norm", "entropy.csv")]:
        out = tmp_path / command
        r = runner.invoke(app, [command, "--ckpt", str(ckpt), "--images", str(images), "--out", str(out)])
        assert r.exit_code == 0, r.output
        df = pd.read_csv(out / csv)
        rows = df[(df["metric"] == metric) & (df["head"] == -1)]
        expected = layers - (2 if family == "cait" and metric == "mad_px" else 0)  # class attention: no distance
        assert rows["layer"].nunique() == expected and np.isfinite(rows["value"]).all(), (family, command)
        if metric == "entropy_norm":
            assert ((rows["value"] > 0) & (rows["value"] <= 1 + 1e-9)).all()
        # the CSV says which stage each layer belongs to: Swin's layers.i, MViTv2's stages.i; 0 for one stage
        model, _ = attnlab.load_model(str(ckpt))
        stages = {i: stage_of(f.path) for i, f in enumerate(find_attention(model))}
        assert dict(zip(df["layer"], df["stage"])) == {k: v for k, v in stages.items() if k in set(df["layer"])}
        assert (df["stage"].nunique() > 1) == (family in ("swin", "mvitv2")), family


def test_a_plain_state_dict_with_model(tmp_path, images):
    torch.manual_seed(0)
    model = attnlab.create_model("eva02_tiny_patch14_224", num_classes=4)
    torch.save(model.state_dict(), tmp_path / "eva.pth")
    r = runner.invoke(app, ["globality", "--ckpt", str(tmp_path / "eva.pth"), "--model", "eva02_tiny_patch14_224",
                            "--images", str(images), "--out", str(tmp_path / "out"), "--num-images", "2"])
    assert r.exit_code == 0, r.output
    assert pd.read_csv(tmp_path / "out" / "globality.csv")["layer"].nunique() == 12


def test_a_hugging_face_folder(tmp_path, images):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    r = runner.invoke(app, ["globality", "--ckpt", str(tmp_path / "vit"), "--images", str(images),
                            "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "out" / "globality.csv")
    assert df["layer"].nunique() == 2 and set(df["model"]) == {"vit"}
    assert (df["stage"] == 0).all()  # hf.vit.layers.i are the blocks of one stage


def test_a_model_built_for_another_size_says_what_it_takes(tmp_path, images):
    name, options, _, _ = FAMILIES["swin"]
    model = attnlab.create_model(name, num_classes=3, **options)
    wrong = attnlab.InputSpec(size=(64, 64), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    ckpt = attnlab.save_checkpoint(model, tmp_path / "wrong.pt", input_spec=wrong)
    r = runner.invoke(app, ["globality", "--ckpt", str(ckpt), "--images", str(images), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "it takes 56x56 images" in r.stderr and not (tmp_path / "o").exists()


def test_an_unsupported_model_is_one_line(tmp_path, images):
    model = attnlab.create_model("resnet18", num_classes=3)
    spec = attnlab.InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    ckpt = attnlab.save_checkpoint(model, tmp_path / "r.pt", input_spec=spec)
    r = runner.invoke(app, ["globality", "--ckpt", str(ckpt), "--images", str(images), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "supported families" in r.stderr and "\n" not in r.stderr.strip()


@pytest.mark.parametrize("name", ["reswin_micro_patch2_window4_32", "remvitv2_micro_32"])
def test_multiscale_revit_through_every_study(tmp_path, name):
    torch.manual_seed(0)
    spec = attnlab.InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    ckpt = attnlab.save_checkpoint(attnlab.create_model(name, num_classes=3), tmp_path / "m.pt", input_spec=spec)
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    for command, extra, csv in [("globality", [], "globality.csv"), ("entropy", [], "entropy.csv"),
                                ("robustness", ["--attention", "--shifts", "0,2", "--scales", "none"], "robustness.csv"),
                                ("gradcam", ["--no-metrics"], "gradcam.csv")]:
        out = tmp_path / command
        r = runner.invoke(app, [command, "--ckpt", str(ckpt), "--images", str(d), "--out", str(out), *extra])
        assert r.exit_code == 0, (command, r.output)
        df = pd.read_csv(out / csv)
        assert len(df) and np.isfinite(df["value"].dropna()).all(), command
        if command == "robustness":
            assert (df["metric"] == "mad_px").any() and df["stage"].max() >= 1
