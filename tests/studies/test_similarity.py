"""``attnlab similarity`` end to end: CKA within and between models, the logit lens, bad input."""
import numpy as np
import pandas as pd
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

import attnlab
from attnlab.capture import run_with_cache
from attnlab.cli.similarity import similarity
from attnlab.errors import AttnlabError
from attnlab.metrics import MinibatchCKA, gram_linear
from attnlab.spec import InputSpec
from attnlab.studies.inputs import ImageSelection, load_models
from attnlab.studies.similarity import measure_similarity
from attnlab.tables import COLUMNS

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
OTHER_SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
runner = CliRunner()


def cli():
    """The similarity command in an app of its own (the package's app registers it too)."""
    app = typer.Typer(add_completion=False)
    app.callback()(lambda: None)
    app.command()(similarity)
    return app


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    out = {}
    for name in ["vit_micro_patch4_32", "revit_micro_patch4_32"]:
        out[name] = str(attnlab.save_checkpoint(attnlab.create_model(name), d / f"{name}.pt", input_spec=SPEC))
    out["other"] = str(attnlab.save_checkpoint(attnlab.create_model("vit_micro_patch4_32"), d / "other.pt",
                                               input_spec=OTHER_SPEC))
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    return d


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image-folder dataset with two classes, a and b."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    for cls in ["a", "b"]:
        (root / "test" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "test" / cls / f"{i}.png")
    return root


def test_similarity_csv_figures_and_values(tmp_path, ckpts, images):
    out = tmp_path / "sim"
    result = runner.invoke(cli(), ["similarity", "--ckpt", ckpts["vit_micro_patch4_32"], "--ckpt",
                                   ckpts["revit_micro_patch4_32"], "--label", "ViT", "--label", "ReViT",
                                   "--images", str(images), "--batch-size", "4", "--tokens", "mean",
                                   "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "leaves out the last 2 images" in result.stderr and "logit_lens_agreement" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["similarity.csv"] + [f"{s}.{e}" for s in ("cka_within", "cka_between", "logit_lens") for e in ("png", "pdf")])
    df = pd.read_csv(out / "similarity.csv", keep_default_na=False, na_values=[""])
    assert tuple(df.columns) == COLUMNS
    assert set(df["metric"]) == {"cka", "logit_lens_agreement"}
    cka = df[df.metric == "cka"]
    assert set(cka["model"]) == {"ViT", "ReViT", "ViT|ReViT"} and set(cka["transform"]) == {"mean"}
    assert len(cka) == 3 * 6 * 6 and (cka["n_images"] == 8).all()
    assert set(cka[cka.model == "ViT|ReViT"]["checkpoint"].str.count(r"\|")) == {1}
    within = cka[cka.model == "ViT"].pivot(index="layer", columns="head", values="value").to_numpy()
    np.testing.assert_allclose(np.diag(within), 1.0, atol=1e-12)
    np.testing.assert_allclose(within, within.T, atol=1e-12)
    # the pair's value at (layer i, head j): ViT's block i against ReViT's block j, two minibatches of 4 images
    nets = {m.label: m.model for m in load_models([ckpts["vit_micro_patch4_32"], ckpts["revit_micro_patch4_32"]],
                                                   ["ViT", "ReViT"])}
    x, _ = ImageSelection(images=[images]).stacked(SPEC)
    caches = {k: run_with_cache(net.eval(), x, "*.resid_post")[1] for k, net in nets.items()}
    ref = MinibatchCKA()
    for part in (slice(0, 4), slice(4, 8)):
        ref.update(torch.stack([gram_linear(caches[k][f"blocks.{i}.resid_post"][part, 1:].mean(1))
                                for k, i in (("ViT", 1), ("ReViT", 4))]))
    got = cka[(cka.model == "ViT|ReViT") & (cka.layer == 1) & (cka["head"] == 4)]["value"].item()
    assert got == pytest.approx(ref.cka()[0, 1].item(), rel=1e-6)
    lens = df[df.metric == "logit_lens_agreement"]
    assert set(lens["model"]) == {"ViT", "ReViT"} and (lens["head"] == -1).all() and (lens["n_images"] == 10).all()
    assert (lens[lens.layer == 5]["value"] == 1.0).all()  # the last block is the model's own prediction
    assert "logit lens per block" in result.output and "CKA of block i" in result.output


def test_logit_lens_last_block_is_the_models_accuracy(tmp_path, folder):
    torch.manual_seed(3)
    nets = {name: attnlab.create_model(name, num_classes=2) for name in ("vit_micro_patch4_32", "revit_micro_patch4_32")}
    ckpts = [attnlab.save_checkpoint(net, tmp_path / f"{name}.pt", classes=["a", "b"], input_spec=SPEC)
             for name, net in nets.items()]
    result = measure_similarity(ckpts, ["ViT", "ReViT"], dataset="imagefolder", data_dir=folder, batch_size=4,
                                tokens="patches", device="cpu")
    df = result.frame
    x, y = ImageSelection(dataset="imagefolder", data_dir=folder).stacked(SPEC)
    for label, net in zip(["ViT", "ReViT"], nets.values()):
        with torch.no_grad():
            accuracy = (net.eval()(x).argmax(-1) == y).double().mean().item()
        lens = df[(df.model == label) & (df.metric == "logit_lens_top1")].sort_values("layer")
        assert len(lens) == 6 and (lens["n_images"] == 12).all()
        assert lens["value"].iloc[-1] == pytest.approx(accuracy)
    assert set(df[df.metric == "cka"]["transform"]) == {"patches"}
    assert result.notes == []  # 12 labelled images in minibatches of 4: none left out, nothing to say
    assert result.cka_matrix("ViT", "ReViT").shape == (6, 6)


def test_models_sharing_an_input_decode_each_image_once(images, monkeypatch):
    from attnlab.data.base import FileDataset

    calls = []
    original = FileDataset.load_image
    monkeypatch.setattr(FileDataset, "load_image", lambda self, i: calls.append(i) or original(self, i))
    nets = [attnlab.create_model("vit_micro_patch4_32"), attnlab.create_model("vit_cb_micro_patch4_32")]
    result = measure_similarity(nets, ["a", "b"], images=[images], input_spec=SPEC, batch_size=5, logit_lens=False,
                                device="cpu")
    assert len(calls) == 10
    assert set(result.frame["metric"]) == {"cka"} and result.notes == []


def test_cls_needs_a_class_token(images):
    net = attnlab.create_model("vit_micro_patch4_32", class_token=False, global_pool="avg")
    with pytest.raises(AttnlabError, match="has no class token; use --tokens mean"):
        measure_similarity([net], images=[images], input_spec=SPEC, tokens="cls", device="cpu")
    result = measure_similarity([net], images=[images], input_spec=SPEC, tokens="mean", batch_size=5, device="cpu")
    assert (result.frame[(result.frame.metric == "logit_lens_agreement") & (result.frame.layer == 5)]["value"] == 1).all()


def _fails_cleanly(result, out, fragment):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_bad_input(tmp_path, ckpts, images):
    out = tmp_path / "out"
    vit, revit, other = ckpts["vit_micro_patch4_32"], ckpts["revit_micro_patch4_32"], ckpts["other"]
    cases = [
        (["--ckpt", vit, "--ckpt", other, "--images", str(images)], "CKA compares models on the same images"),
        (["--ckpt", vit, "--images", str(images), "--tokens", "all"], "unknown --tokens 'all'; choose one of cls"),
        (["--ckpt", vit, "--images", str(images), "--batch-size", "3"], "--batch-size must be at least 4"),
        (["--ckpt", vit, "--images", str(images), "--num-images", "3"], "CKA needs at least 4 images"),
        (["--ckpt", vit, "--ckpt", revit, "--label", "a", "--images", str(images)], "1 --label values for 2"),
        (["--ckpt", vit, str(images)], "image paths go after --images"),
    ]
    for args, fragment in cases:
        _fails_cleanly(runner.invoke(cli(), ["similarity", *args, "--out", str(out)]), out, fragment)
