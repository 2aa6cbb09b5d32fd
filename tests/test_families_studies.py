"""`attnlab robustness --attention` and `attnlab gradcam` end to end, offline, on every supported family
(random weights, small sizes), the CAM reshape of each family against pytorch-grad-cam used by hand, and
rollout only where every layer attends over the same tokens."""
import numpy as np
import pandas as pd
import pytest
import torch
from test_families_cli import FAMILIES, checkpoint, images  # noqa: F401  (images: a fixture)
from typer.testing import CliRunner

import attnlab
from attnlab.adapters import find_attention
from attnlab.cli import app
from attnlab.errors import AttnlabError
from attnlab.geometry import stage_of
from attnlab.studies.attribution import auto_layer, compute_cam, rollout, rollout_queries
from attnlab.tables import COLUMNS

runner = CliRunner()
SINGLE_GRID = {"eva02", "beit"}
#: The layer `--layer auto` picks on each family's test config.
AUTO = {"swin": "layers.1", "eva02": "blocks.1", "beit": "blocks.1", "mvitv2": "stages.3", "cait": "blocks.1"}


def hf_folder(tmp_path, kind="vit"):
    transformers = pytest.importorskip("transformers")
    common = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64)
    torch.manual_seed(0)
    if kind == "deit":
        model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(num_labels=3, **common))
    else:
        model = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=3, **common))
    model.save_pretrained(tmp_path / kind)
    return tmp_path / kind


def stages_of(model):
    return {i: stage_of(f.path) for i, f in enumerate(find_attention(model))}


# ----------------------------------------------------------------------------- robustness --attention


@pytest.mark.parametrize("family", sorted(FAMILIES) + ["hf"])
def test_robustness_attention_on_every_family(tmp_path, images, family):  # noqa: F811
    ckpt = hf_folder(tmp_path) if family == "hf" else checkpoint(tmp_path, family)
    model, _ = attnlab.load_model(str(ckpt))
    out = tmp_path / "rob"
    r = runner.invoke(app, ["robustness", "--ckpt", str(ckpt), "--images", str(images), "--shifts", "0,4",
                            "--scales", "1", "--attention", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "robustness.csv")
    assert tuple(df.columns) == COLUMNS
    att = df[df["metric"].isin(["mad_px", "entropy_norm"])]
    layers = len(find_attention(model))
    for metric, expected in [("mad_px", layers - (2 if family == "cait" else 0)), ("entropy_norm", layers)]:
        for magnitude in (0.0, 4.0):
            rows = att[(att["metric"] == metric) & (att["transform"] == "shift-h") & (att["magnitude"] == magnitude)]
            assert rows["layer"].nunique() == expected and np.isfinite(rows["value"]).all(), (metric, magnitude)
    stages = stages_of(model)
    assert dict(zip(att["layer"], att["stage"])) == {k: v for k, v in stages.items() if k in set(att["layer"])}
    assert (df[df["layer"] == -1]["stage"] == 0).all()
    assert (out / "attention_under_transform.png").exists()
    # the unshifted view is the image itself: its attention is what `attnlab globality` / `entropy` measure
    g = runner.invoke(app, ["entropy", "--ckpt", str(ckpt), "--images", str(images), "--out", str(tmp_path / "e")])
    assert g.exit_code == 0, g.output
    ent = pd.read_csv(tmp_path / "e" / "entropy.csv")
    ent = ent[(ent["metric"] == "entropy_norm") & (ent["head"] == -1) & (ent["attention"] == "applied")]
    still = att[(att["metric"] == "entropy_norm") & (att["transform"] == "shift-h") & (att["magnitude"] == 0)]
    np.testing.assert_allclose(still.sort_values("layer")["value"], ent.sort_values("layer")["value"], rtol=1e-5)
    assert still.sort_values("layer")["stage"].tolist() == ent.sort_values("layer")["stage"].tolist()


def test_a_swin_built_for_another_size_says_what_it_takes_in_robustness(tmp_path, images):  # noqa: F811
    name, options, _, _ = FAMILIES["swin"]
    model = attnlab.create_model(name, num_classes=3, **options)
    wrong = attnlab.InputSpec(size=(64, 64), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    ckpt = attnlab.save_checkpoint(model, tmp_path / "wrong.pt", input_spec=wrong)
    r = runner.invoke(app, ["robustness", "--ckpt", str(ckpt), "--images", str(images), "--shifts", "0,4",
                            "--attention", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "it takes 56x56 images" in r.stderr and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- gradcam


@pytest.mark.parametrize("family", sorted(FAMILIES) + ["hf"])
def test_gradcam_on_every_family(tmp_path, images, family):  # noqa: F811
    ckpt = hf_folder(tmp_path) if family == "hf" else checkpoint(tmp_path, family)
    out = tmp_path / "cam"
    r = runner.invoke(app, ["gradcam", "--ckpt", str(ckpt), "--images", str(images), "--num-images", "2",
                            "--method", "gradcam,eigencam", "--faithfulness", "road,perturbation", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "gradcam.csv")
    maps = np.load(out / "gradcam_maps.npz")
    label = ckpt.stem if family != "hf" else "vit"
    single_grid = family in SINGLE_GRID or family == "hf"
    assert set(df["transform"]) - {"none"} == ({"gradcam", "eigencam"} | ({"rollout"} if single_grid else set()))
    assert (f"{label}/rollout" in maps) == single_grid and ("rollout" in maps["methods"]) == single_grid
    for method in ("gradcam", "eigencam"):
        m = maps[f"{label}/{method}"]
        assert m.shape[0] == 2 and np.isfinite(m).all() and all(x.max() > x.min() for x in m), method
    assert df[df["metric"] == "perturbation_positive_probability_auc"]["value"].notna().all()
    assert ("no attention rollout" in r.stderr) == (not single_grid)
    expected = "hf.vit.layers.1.layernorm_before" if family == "hf" else AUTO[family]
    assert maps["layers"].tolist() == [expected]


@pytest.mark.parametrize("family", ["swin", "mvitv2", "cait"])
def test_chefer_where_rollout_is_not_defined_is_one_line(tmp_path, images, family):  # noqa: F811
    ckpt = checkpoint(tmp_path, family)
    out = tmp_path / "o"
    r = runner.invoke(app, ["gradcam", "--ckpt", str(ckpt), "--images", str(images), "--method", "chefer",
                            "--out", str(out)])
    assert r.exit_code == 2 and not out.exists()
    line = r.stderr.strip()
    assert "\n" not in line and "chefer is not defined" in line and "attend over different tokens" in line


def _model(family):
    name, options, size, _ = FAMILIES[family]
    torch.manual_seed(0)
    return attnlab.create_model(name, num_classes=3, **options).eval(), size


def test_auto_layers():
    for family, layer in AUTO.items():
        assert auto_layer(_model(family)[0]) == layer, family


def _by_hand(model, x, target_layer, reshape, targets):
    """pytorch-grad-cam on its own, with the reshape written out for this family."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model, target_layers=[target_layer], reshape_transform=reshape)
    with torch.enable_grad():
        out = cam(input_tensor=x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(t) for t in targets])
    cam.activations_and_grads.release()
    return out


def test_swin_cams_permute_the_nhwc_block_outputs():
    model, size = _model("swin")
    x = torch.randn(2, 3, size, size)
    mine = compute_cam(model, x, "gradcam", [0, 2])
    # pytorch-grad-cam's Swin example, for timm's [B, H, W, C] blocks: permute to NCHW
    ref = _by_hand(model, x, model.layers[-1], lambda t: t.permute(0, 3, 1, 2), [0, 2])
    np.testing.assert_allclose(mine, ref, atol=1e-6)


def test_mvitv2_cams_lay_the_tokens_on_the_stage_grid():
    model, size = _model("mvitv2")
    x = torch.randn(2, 3, size, size)
    mine = compute_cam(model, x, "gradcam", [1, 0], layer="norm")
    # the last stage of a 64 px MViTv2-T: stride 32, a 2 x 2 grid of tokens stored row-major
    ref = _by_hand(model, x, model.norm, lambda t: t.reshape(t.shape[0], 2, 2, t.shape[-1]).permute(0, 3, 1, 2), [1, 0])
    np.testing.assert_allclose(mine, ref, atol=1e-6)
    assert compute_cam(model, x, "gradcam", [1, 0]).shape == (2, size, size)   # stages.3: a (tokens, grid) tuple


def test_hugging_face_cams_drop_the_prefix_tokens(tmp_path):
    model, spec = attnlab.load_model(str(hf_folder(tmp_path, "deit")))
    x = torch.randn(2, 3, 32, 32)
    layer = auto_layer(model)
    assert layer == "hf.deit.layers.1.layernorm_before"
    mine = compute_cam(model, x, "gradcam", [0, 1])
    target = dict(model.named_modules())[layer]
    ref = _by_hand(model, x, target, lambda t: t[:, 2:].reshape(2, 8, 8, -1).permute(0, 3, 1, 2), [0, 1])
    np.testing.assert_allclose(mine, ref, atol=1e-6)
    assert rollout_queries(model) == [0, 1]   # class and distillation tokens: the head averages both


def test_hugging_face_rollout_is_the_class_row_of_the_captured_attention(tmp_path):
    from attnlab.capture import capture_attention
    from attnlab.studies.attribution import attention_rollout

    model, _ = attnlab.load_model(str(hf_folder(tmp_path)))
    x = torch.randn(2, 3, 32, 32)
    maps = capture_attention(model, x)
    assert len(maps) == 2 and maps[0].shape == (2, 2, 65, 65)
    eye = torch.eye(65, dtype=torch.float64)
    r = eye
    for a in maps:
        a = (a.double().mean(1) + eye) / 2
        r = (a / a.sum(-1, keepdim=True)) @ r
    torch.testing.assert_close(attention_rollout(model, x).double(), r[:, 0, 1:].reshape(2, 8, 8), atol=1e-6, rtol=0)
    assert torch.allclose(rollout(maps)[:, 0].sum(-1), torch.ones(2))


@pytest.mark.parametrize("family", ["swin", "mvitv2", "cait"])
def test_rollout_is_left_out_not_faked(family):
    from attnlab.studies.attribution import attention_rollout

    model, size = _model(family)
    with pytest.raises(AttnlabError, match="attend over different tokens"):
        attention_rollout(model, torch.randn(1, 3, size, size))
    with pytest.raises(AttnlabError, match="attn-grad is not defined"):
        compute_cam(model, torch.randn(1, 3, size, size), "attn-grad", [0])


def test_figures_name_the_stage_of_multi_stage_models():
    import matplotlib.pyplot as plt

    from attnlab.plots.attention import entropy_per_layer, mad_per_layer
    from attnlab.plots.robustness import attention_under_transform
    from attnlab.tables import tidy

    def frame(stages, **kw):
        return tidy([dict(model="m", checkpoint="c", attention="applied", layer=layer, head=head, metric=metric,
                          value=1.0 + layer, n_images=2, stage=stage, **kw)
                     for layer, stage in enumerate(stages) for head in (-1, 0) for metric in ("mad_px", "entropy")])

    swin, vit = frame([0, 0, 1, 1]), frame([0, 0, 0, 0])
    fig = mad_per_layer(swin)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "layer (stage)" and "stage's stride" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1\n(1)", "2\n(1)", "3\n(2)", "4\n(2)"]
    plt.close(fig)
    fig = mad_per_layer(vit)
    assert fig.axes[0].get_xlabel() == "layer" and "stride" not in fig.axes[0].get_ylabel()
    plt.close(fig)
    fig = entropy_per_layer(swin)
    assert fig.axes[0].get_xlabel() == "layer (stage)"
    plt.close(fig)
    shifted = pd.concat([frame([0, 1], transform="shift-h", magnitude=m) for m in (0.0, 4.0)], ignore_index=True)
    fig = attention_under_transform(shifted)
    assert "layer 2 (stage 2)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "stage's stride" in fig.axes[0].get_ylabel()
    plt.close(fig)
