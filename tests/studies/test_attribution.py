"""``attnlab gradcam`` and ``attnlab.studies.attribution``: CAM reshape, layer choice, rollout, outputs, bad input."""
import numpy as np
import pandas as pd
import pytest
import timm
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

import pytorch_grad_cam
from attnlab import save_checkpoint
from attnlab.capture import capture_attention
from attnlab.cli.gradcam import gradcam
from attnlab.errors import AttnlabError
from attnlab.layout import TokenLayout
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.studies.attribution import (ROLLOUT, attention_rollout, auto_layer, compute_cam, parse_methods,
                                         resolve_layer, resolve_targets, rollout, tokens_to_grid)
from attnlab.tables import COLUMNS

runner = CliRunner()
SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
GREY = InputSpec(size=(32, 32), channels=1, mean=(0.3,), std=(0.35,))
CLASSES = [f"class{i}" for i in range(10)]
FAMILIES = ["vit_micro_patch4_32", "revit_micro_patch4_32", "vit_cb_micro_patch4_32", "revit_cb_micro_patch4_32"]


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(gradcam)

    @app.command()
    def _other() -> None:  # a second command keeps `gradcam` a named subcommand, as in attnlab's app
        pass

    return app


APP = _app()


def _invoke(*args: str):
    return runner.invoke(APP, ["gradcam", *args])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    return {
        "vit": str(save_checkpoint(create_model("vit_micro_patch4_32"), d / "vit.pt", input_spec=SPEC, classes=CLASSES)),
        "revit_cb": str(save_checkpoint(create_model("revit_cb_micro_patch4_32"), d / "revit_cb.pt",
                                        input_spec=SPEC, classes=CLASSES)),
        "grey_avg": str(save_checkpoint(create_model("revit_micro_patch4_32", in_chans=1, class_token=False,
                                                     global_pool="avg"), d / "grey_avg.pt", input_spec=GREY,
                                        classes=CLASSES)),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"rgb{i}.png")
    return d


def _model(name, **kw):
    torch.manual_seed(0)
    return create_model(name, **kw).eval()


def _clean(model, before):
    """The model is as it was: no tap module, no hooks left behind."""
    assert [n for n, _ in model.named_modules()] == before
    assert all(not m._forward_hooks for m in model.modules())


# ----------------------------------------------------------------------------- reshape and layers

@pytest.mark.parametrize("name, kw, prefix, grid", [
    ("vit_micro_patch4_32", dict(class_token=False, global_pool="avg"), 0, (8, 8)),
    ("vit_micro_patch4_32", dict(img_size=(32, 48)), 1, (8, 12)),
    ("deit_tiny_distilled_patch16_224", dict(img_size=(48, 80)), 2, (3, 5)),
    ("vit_micro_patch4_32", dict(reg_tokens=4, img_size=(24, 32)), 5, (6, 8)),
])
def test_reshape_follows_the_token_layout(name, kw, prefix, grid):
    layout = TokenLayout.from_model(timm.create_model(name, **kw), kw.get("img_size", (32, 32)))
    assert (layout.num_prefix_tokens, layout.grid_size) == (prefix, grid)
    gh, gw = grid
    tokens = torch.randn(2, prefix + gh * gw, 3)
    out = tokens_to_grid(tokens, layout)
    hand = torch.empty(2, 3, gh, gw)
    for b in range(2):
        for c in range(3):
            for i in range(gh):
                for j in range(gw):
                    hand[b, c, i, j] = tokens[b, prefix + i * gw + j, c]
    assert torch.equal(out, hand)
    assert torch.equal(tokens_to_grid(tokens[:, prefix:], layout), hand)  # patch tokens only
    assert torch.equal(tokens_to_grid((tokens, None), layout), hand)      # tuple outputs: first element
    with pytest.raises(ValueError, match="tokens"):
        tokens_to_grid(torch.cat([tokens, tokens[:, :1]], dim=1), layout)


def test_auto_layer_and_unknown_layers():
    assert auto_layer(_model("vit_micro_patch4_32")) == "blocks.5.norm1"          # class token: before the last attention
    assert auto_layer(_model("revit_micro_patch4_32", class_token=False, global_pool="avg")) == "blocks.5"
    assert auto_layer(timm.create_model("deit_tiny_distilled_patch16_224", img_size=64)) == "blocks.11.norm1"
    m = _model("vit_micro_patch4_32")
    assert resolve_layer(m, "blocks.4.norm1")[1] is m.blocks[4].norm1
    with pytest.raises(AttnlabError, match=r"unknown layer 'blocks\.9\.norm1'; valid layers include blocks\.5\.norm1"):
        resolve_layer(m, "blocks.9.norm1")
    with pytest.raises(AttnlabError, match="valid layers include blocks.0"):
        resolve_layer(m, "nonsense")


def test_parse_methods_and_targets():
    assert parse_methods(["gradcam,eigencam", "GradCAM++", "eigencam"]) == ["gradcam", "eigencam", "gradcam++"]
    with pytest.raises(AttnlabError, match="unknown method 'gradcan' .did you mean gradcam"):
        parse_methods("gradcan")
    pred, labels = np.array([1, 2]), np.array([3, 4])
    assert resolve_targets("predicted", pred, labels, CLASSES).tolist() == [1, 2]
    assert resolve_targets("true", pred, labels, CLASSES).tolist() == [3, 4]
    assert resolve_targets("class7", pred, labels, CLASSES).tolist() == [7, 7]
    assert resolve_targets("9", pred, labels, CLASSES).tolist() == [9, 9]
    for bad in ["10", "-1", "cat"]:
        with pytest.raises(AttnlabError, match="is not a class of"):
            resolve_targets(bad, pred, labels, CLASSES)
    with pytest.raises(AttnlabError, match="needs labelled images"):
        resolve_targets("true", pred, np.array([-1, -1]), CLASSES)


# ----------------------------------------------------------------------------- CAMs

@pytest.mark.parametrize("name, kw, size", [(f, {}, (32, 32)) for f in FAMILIES] + [
    ("vit_tiny_patch16_224", dict(img_size=64), (64, 64)),
    ("deit_tiny_distilled_patch16_224", dict(img_size=(48, 64)), (48, 64)),
    ("revit_micro_patch4_32", dict(class_token=False, global_pool="avg", img_size=(32, 24)), (32, 24)),
])
def test_cams_for_every_family_and_plain_timm(name, kw, size):
    m = _model(name, **kw)
    before = [n for n, _ in m.named_modules()]
    x = torch.randn(2, 3, *size)
    for method in ["gradcam", "eigencam"]:
        cams = compute_cam(m, x, method, targets=[1, 2])
        assert cams.shape == (2, *size) and np.isfinite(cams).all() and (cams >= 0).all()
        assert all(c.max() > c.min() for c in cams), method
    _clean(m, before)
    assert m.training is False


def test_gradient_reaches_the_auto_layer():
    m = _model("vit_micro_patch4_32")
    x = torch.randn(2, 3, 32, 32)
    assert compute_cam(m, x, "gradcam", [0, 1]).reshape(2, -1).max(axis=1).min() > 0
    # the last block's output: the class logit reads only the class token, so its patch tokens get no gradient
    assert compute_cam(m, x, "gradcam", [0, 1], layer="blocks.5").max() == 0
    # a ReViT block returns (tokens, logits); the tap still sees the tokens and their gradient
    avg = _model("revit_micro_patch4_32", class_token=False, global_pool="avg")
    assert compute_cam(avg, x, "gradcam", [0, 1], layer="blocks.5").reshape(2, -1).max(axis=1).min() > 0


def test_gradient_free_methods_on_a_tiny_model():
    m = _model("revit_micro_patch4_32", embed_dim=32, depth=2, num_heads=2, class_token=False, global_pool="avg")
    before = [n for n, _ in m.named_modules()]
    x = torch.randn(2, 3, 32, 32)
    for method in ["scorecam", "ablationcam"]:   # ablationcam swaps the tap on a tuple-returning ReViT block
        cams = compute_cam(m, x, method, [0, 1], batch_size=32)
        assert cams.shape == (2, 32, 32) and np.isfinite(cams).all() and (cams >= 0).all()
        assert all(c.max() > c.min() for c in cams), method
        _clean(m, before)


def test_internal_failure_surfaces_with_its_cause(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom inside pytorch-grad-cam\nsecond line")

    monkeypatch.setattr(pytorch_grad_cam.GradCAM, "get_cam_weights", boom)
    m = _model("vit_micro_patch4_32")
    before = [n for n, _ in m.named_modules()]
    with pytest.raises(AttnlabError, match="gradcam failed at layer blocks.5.norm1: RuntimeError: boom inside "
                                           "pytorch-grad-cam second line") as info:
        compute_cam(m, torch.randn(1, 3, 32, 32), "gradcam", [0])
    assert isinstance(info.value.__cause__, RuntimeError)
    _clean(m, before)


# ----------------------------------------------------------------------------- rollout

def test_rollout_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    layers = [torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64).softmax(-1) for _ in range(3)]
    got = rollout(layers)
    for b in range(2):
        r = np.eye(4)
        for a in layers:
            mean = a[b].numpy().mean(axis=0)
            a2 = (mean + np.eye(4)) / 2
            a2 = a2 / a2.sum(axis=1)[:, None]
            r = a2 @ r                             # first layer applied first: A'_3 A'_2 A'_1
        np.testing.assert_allclose(got[b].numpy(), r, rtol=1e-12)
    np.testing.assert_allclose(got.sum(-1).numpy(), 1.0, rtol=1e-12)
    assert not torch.allclose(got[0], got[1])     # every batch item, not item 0 only


def test_attention_rollout_rows():
    x = torch.randn(3, 3, 32, 48)
    m = _model("vit_micro_patch4_32", img_size=(32, 48))
    r = rollout(capture_attention(m, x))
    np.testing.assert_allclose(r.sum(-1).numpy(), 1.0, rtol=1e-5)
    assert torch.allclose(attention_rollout(m, x), r[:, 0, 1:].reshape(3, 8, 12))   # class token row
    avg = _model("vit_micro_patch4_32", class_token=False, global_pool="avg")
    x = torch.randn(2, 3, 32, 32)
    r = rollout(capture_attention(avg, x))
    assert torch.allclose(attention_rollout(avg, x), r.mean(dim=1).reshape(2, 8, 8))  # mean over patch queries


# ----------------------------------------------------------------------------- command

def test_command_writes_figure_maps_and_tidy_csv(tmp_path, ckpts, images):
    out = tmp_path / "cam"
    result = _invoke("--ckpt", ckpts["vit"], "--ckpt", ckpts["grey_avg"], "--label", "ViT", "--label", "grey",
                     "--images", str(images), "--method", "gradcam,eigencam", "--batch-size", "2", "--faithfulness", "road",
                     "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "converted images to the model's 1-channel input" in result.stderr
    assert {p.name for p in out.iterdir()} == {"gradcam.png", "gradcam.pdf", "gradcam_maps.npz", "gradcam.csv"}
    df = pd.read_csv(out / "gradcam.csv")
    assert tuple(df.columns) == COLUMNS
    assert set(df["transform"]) == {"none", "gradcam", "eigencam", ROLLOUT}
    assert set(df.metric) == {"probability", "road_most_relevant_first", "road_least_relevant_first",
                              "road_combined", "confidence_drop"}
    assert len(df) == 2 * (3 + 3 * 4 * 3)          # models x (probability + maps x metrics) x (2 images + mean)
    assert not df.duplicated(["model", "transform", "metric", "head"]).any()
    per_image, mean = df[df["head"] >= 0], df[df["head"] == -1]
    assert (per_image.n_images == 1).all() and (mean.n_images == 2).all() and (df.layer == -1).all()
    assert np.isfinite(df.value).all()
    g = per_image[(per_image.model == "ViT") & (per_image.metric == "road_combined") & (per_image["transform"] == "gradcam")]
    assert np.isclose(g.value.mean(), mean[(mean.model == "ViT") & (mean.metric == "road_combined")
                                           & (mean["transform"] == "gradcam")].value.item())
    npz = np.load(out / "gradcam_maps.npz")
    for key in ["ViT/gradcam", "ViT/eigencam", "ViT/rollout", "grey/gradcam", "grey/rollout"]:
        assert npz[key].shape == (2, 32, 32) and npz[key].min() >= 0 and npz[key].max() <= 1
    assert npz["images"].shape == (2, 32, 32, 3) and npz["predictions"].shape == (2, 2)
    assert list(npz["models"]) == ["ViT", "grey"] and list(npz["layers"]) == ["blocks.5.norm1", "blocks.5"]
    probs = df[(df.metric == "probability") & (df["head"] >= 0) & (df.model == "ViT")].sort_values("head").value
    np.testing.assert_allclose(probs.to_numpy(), npz["target_probabilities"][0], rtol=1e-5)


def test_true_labels_from_a_dataset(tmp_path, ckpts):
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for split in ["train", "test"]:
        for cls in ["a", "b"]:
            (root / split / cls).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / cls / "0.png")
    out = tmp_path / "cam"
    result = _invoke("--ckpt", ckpts["revit_cb"], "--dataset", "imagefolder", "--data-dir", str(root),
                     "--num-images", "2", "--target", "true", "--method", "layercam", "--no-metrics", "--out", str(out))
    assert result.exit_code == 0, result.output
    npz = np.load(out / "gradcam_maps.npz")
    assert npz["labels"].tolist() == [0, 1] and npz["targets"].tolist() == [[0, 1]]
    assert set(pd.read_csv(out / "gradcam.csv").metric) == {"probability"}


def _fails_cleanly(result, out, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    assert sum(line.startswith("error: ") for line in lines) == 1
    for f in fragments:
        assert f in lines[-1], lines[-1]
    assert not out.exists() or not any(out.iterdir())
    assert not any(p.name.startswith(f".{out.name}.staging") for p in out.parent.iterdir())


def test_bad_input(tmp_path, ckpts, images):
    out = tmp_path / "out"
    cases = [
        (["--method", "gradcam,nope"], "unknown method 'nope'"),
        (["--layer", "blocks.42.norm1"], "unknown layer 'blocks.42.norm1'; valid layers include"),
        (["--target", "true"], "--target true needs labelled images"),
        (["--target", "cat"], "--target 'cat' is not a class of vit"),
        (["--target", "10"], "is not a class of vit"),
        (["--num-images", "0"], "--num-images must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ]
    for args, fragment in cases:
        _fails_cleanly(_invoke("--ckpt", ckpts["vit"], "--images", str(images), "--no-metrics", "--out", str(out),
                               *args), out, fragment)


def test_internal_failure_reaches_the_user(tmp_path, ckpts, images, monkeypatch):
    def boom(*args, **kwargs):
        raise IndexError("index 7 is out of bounds")   # BaseCAM.__exit__ would have swallowed this one

    monkeypatch.setattr(pytorch_grad_cam.EigenCAM, "get_cam_image", boom)
    out = tmp_path / "out"
    result = _invoke("--ckpt", ckpts["vit"], "--images", str(images), "--method", "eigencam", "--no-metrics",
                     "--out", str(out))
    _fails_cleanly(result, out, "vit: eigencam failed at layer blocks.5.norm1: IndexError: index 7 is out of bounds")


def test_target_class_names_match_without_case_and_suggest():
    import numpy as np

    from attnlab.studies.attribution import resolve_targets

    classes = ["T-shirt/top", "Trouser", "Sneaker"]
    assert resolve_targets("sneaker", np.array([0, 1]), np.array([-1, -1]), classes).tolist() == [2, 2]
    with pytest.raises(AttnlabError, match="did you mean 'Sneaker'"):
        resolve_targets("sneakr", np.array([0]), np.array([-1]), classes)


def test_stage_tokens_follow_the_stage_grid():
    from attnlab.studies.attribution.grid import patch_grid, pooled_grid_of, stage_tokens_to_grid

    nhwc = torch.randn(2, 3, 5, 4)
    assert torch.equal(stage_tokens_to_grid(nhwc, (48, 80), channels_last=True), nhwc.permute(0, 3, 1, 2))
    assert torch.equal(stage_tokens_to_grid((nhwc, None), (48, 80)), nhwc)          # NCHW passes
    assert pooled_grid_of(6, (48, 64)) == (2, 3) and pooled_grid_of(12, (48, 64)) == (3, 4)  # ceil(48/s) x ceil(64/s)
    tokens = torch.randn(2, 1 + 12, 5)
    out = stage_tokens_to_grid(tokens, (48, 64), num_prefix_tokens=1)
    assert out.shape == (2, 5, 3, 4) and torch.equal(out[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])
    with pytest.raises(ValueError, match="no strided grid"):
        stage_tokens_to_grid(torch.randn(1, 7, 5), (48, 64))
    mvit = timm.create_model("mvitv2_tiny", img_size=64)
    assert patch_grid(mvit, (64, 64)) == (16, 16)                                   # a 7x7 convolution, stride 4, pad 3
    assert patch_grid(_model("vit_micro_patch4_32"), (32, 32)) == (8, 8)
