"""Robustness: pixel-exact transforms, protocols, metrics, the command and its bad input."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from attnlab import save_checkpoint
from attnlab.cli import app
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.studies.robustness import bootstrap_ci, evaluate_conditions, scale, shift, sweep_conditions
from attnlab.tables import COLUMNS

runner = CliRunner()


def _js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence written out: KL(p || m) / 2 + KL(q || m) / 2, m = (p + q) / 2."""
    m = 0.5 * (p + q)
    kl = lambda a, b: (torch.special.xlogy(a, a) - torch.special.xlogy(a, b)).sum(-1)  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def test_shift_moves_pixels_exactly_and_fills_black():
    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5)
    y = shift(x, 2, 1, "black")
    assert torch.equal(y[0, 0, 1:, 2:], x[0, 0, :4, :3])
    assert (y[0, 0, 0] == 0).all() and (y[0, 0, :, :2] == 0).all()
    back = shift(x, -2, -1, "black")
    assert torch.equal(back[0, 0, :4, :3], x[0, 0, 1:, 2:]) and (back[0, 0, 4] == 0).all()
    assert torch.equal(shift(x, 2, 1, "roll"), torch.roll(x, (1, 2), (-2, -1)))
    refl = shift(x, 1, 0, "reflect")
    assert torch.equal(refl[..., 1:], x[..., :4]) and torch.equal(refl[..., 0], x[..., 1])
    assert torch.equal(shift(x, 0, 0), x)
    with pytest.raises(Exception, match="as large as the 5x5 image"):
        shift(x, 5, 0)


def test_scale_zooms_out_with_black_and_in_with_a_centre_crop():
    x = torch.rand(2, 3, 32, 32)
    out = scale(x, 0.5)
    assert out.shape == x.shape
    assert (out[..., :8, :] == 0).all() and (out[..., 24:, :] == 0).all() and (out[..., :, :8] == 0).all()
    assert out[..., 8:24, 8:24].abs().sum() > 0
    big = scale(x, 2.0)
    assert big.shape == x.shape
    up = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(big, up[..., 16:48, 16:48])
    assert torch.equal(scale(x, 1.0), x)
    with pytest.raises(Exception, match="positive"):
        scale(x, 0)


def test_rolling_whole_patches_does_not_change_a_model_without_position_embeddings():
    """No position embeddings + average pooling: a circular shift by whole patches permutes tokens exactly."""
    torch.manual_seed(0)
    model = create_model("vit_micro_patch4_32", class_token=False, global_pool="avg", pos_embed="none").eval()
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        base = model(x)
        for dx, dy in [(4, 0), (0, 8), (12, -4), (-16, 28)]:
            moved = model(shift(x, dx, dy, "roll"))
            assert torch.equal(moved.argmax(-1), base.argmax(-1))
            torch.testing.assert_close(moved, base, rtol=1e-4, atol=1e-5)
        # a shift by a fraction of a patch changes the tokens, and the logits
        assert not torch.allclose(model(shift(x, 2, 0, "roll")), base, atol=1e-4)


def test_metrics_and_batched_conditions():
    spec = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    model = create_model("vit_micro_patch4_32").eval()
    x = torch.rand(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4, -1])
    conds = sweep_conditions([0, 4], [1.0, 0.5], "h", "black", (32, 32))
    out = evaluate_conditions(model, spec, [(x, labels)], conds, max_batch=7)
    with torch.no_grad():
        p0 = model((x - 0.5) / 0.5).softmax(-1)
        p4 = model((shift(x, 4, 0) - 0.5) / 0.5).softmax(-1)
    o0, o4 = out[conds[0]], out[conds[1]]
    assert (o0.consistent == 1).all() and np.allclose(o0.js, 0, atol=1e-6)
    np.testing.assert_array_equal(o4.consistent, (p4.argmax(-1) == p0.argmax(-1)).numpy())
    np.testing.assert_allclose(o4.correct[:5], (p4.argmax(-1) == labels)[:5].numpy())
    assert np.isnan(o4.correct[5]) and np.isnan(o4.prob_change[5])   # unlabelled image
    np.testing.assert_allclose(o4.prob_change[:5], (p4 - p0)[torch.arange(5), labels[:5]].abs().numpy(), rtol=1e-4)
    np.testing.assert_allclose(o4.js, _js(p4.double(), p0.double()).numpy(), rtol=1e-4, atol=1e-8)
    assert (o4.js >= 0).all() and (o4.js <= np.log(2) + 1e-9).all()


def test_bootstrap_interval_contains_the_mean_and_shrinks():
    rng = np.random.default_rng(0)
    small, large = rng.random(20) > 0.5, rng.random(2000) > 0.5
    lo, hi = bootstrap_ci(small.astype(float))
    assert lo <= small.mean() <= hi
    lo2, hi2 = bootstrap_ci(large.astype(float))
    assert hi2 - lo2 < hi - lo
    assert bootstrap_ci(np.array([1.0, np.nan, 0.0]))[0] >= 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("rob")
    rng = np.random.default_rng(0)
    for cls in ["a", "b", "c"]:
        (root / "test" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "test" / cls / f"{i}.png")
    spec = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    ck = save_checkpoint(create_model("vit_micro_patch4_32", num_classes=3), root / "vit.pt",
                         classes=["a", "b", "c"], input_spec=spec)
    ck2 = save_checkpoint(create_model("revit_micro_patch4_32", num_classes=3), root / "revit.pt",
                          classes=["a", "b", "c"], input_spec=spec)
    return root, str(ck), str(ck2)


@pytest.mark.parametrize("extra,transforms", [
    ([], {"shift-h", "scale"}),
    (["--direction", "grid", "--shifts=-4,0,4", "--scales", "1"], {"shift-grid", "scale"}),
    (["--protocol", "revit-random", "--shifts", "0,4", "--scales", "0.5"], {"random-translate", "scale"}),
    (["--protocol", "consistency"], {"two-crops"}),
])
def test_robustness_command(tmp_path, folder, extra, transforms):
    root, ck, ck2 = folder
    out = tmp_path / "rob"
    result = runner.invoke(app, ["robustness", "--ckpt", ck, "--ckpt", ck2, "--label", "ViT", "--label", "ReViT",
                                 "--dataset", "imagefolder", "--data-dir", str(root), "--num-images", "10",
                                 "--batch-size", "4", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out / "robustness.csv")
    assert tuple(df.columns) == COLUMNS
    assert set(df["transform"]) == transforms
    assert set(df["metric"]) == {"accuracy", "consistency", "prob_change", "js_divergence"}
    assert (df["n_images"] == 10).all() and (df["ci_low"] <= df["value"] + 1e-12).all()
    if "--direction" in extra:
        grid = df[(df["transform"] == "shift-grid") & (df.metric == "consistency") & (df.model == "ViT")]
        assert len(grid) == 9 and set(grid["magnitude_y"]) == {-4, 0, 4}
        assert grid[(grid.magnitude == 0) & (grid.magnitude_y == 0)]["value"].item() == 1.0
        assert (out / "robustness_shift-grid.png").exists()
    pngs = {p.name for p in out.iterdir() if p.suffix == ".png"}
    assert pngs and all((out / n.replace(".png", ".pdf")).exists() for n in pngs)


def test_robustness_attention_under_shift(tmp_path, folder):
    root, ck, _ = folder
    out = tmp_path / "rob"
    result = runner.invoke(app, ["robustness", "--ckpt", ck, "--dataset", "imagefolder", "--data-dir", str(root),
                                 "--shifts", "0,8", "--scales", "1", "--attention", "--out", str(out)])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out / "robustness.csv")
    mad = df[(df.metric == "mad_px") & (df["transform"] == "shift-h")]
    assert len(mad) == 2 * 6 and set(mad["layer"]) == set(range(6))
    assert (out / "attention_under_transform.png").exists()


def test_bad_input(tmp_path, folder):
    root, ck, _ = folder
    out = tmp_path / "out"
    base = ["robustness", "--ckpt", ck, "--dataset", "imagefolder", "--data-dir", str(root), "--out", str(out)]
    for args, fragment in [
        (["--shifts", "0,40"], "shift 40 is larger than the 32x32 input"),
        (["--scales", "0,1"], "--scales must be positive"),
        (["--scales", "-0.5"], "--scales must be positive"),
        (["--shifts", "a,b"], "--shifts must be comma-separated"),
        (["--fill", "mean"], "unknown --fill"),
        (["--protocol", "magic"], "unknown --protocol"),
        (["--direction", "up"], "unknown --direction"),
        (["--num-images", "99"], "--num-images 99 is more than the 12 images"),
    ]:
        result = runner.invoke(app, base + args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and fragment in lines[-1], (args, result.stderr)
        assert not out.exists() or not any(out.iterdir())
    result = runner.invoke(app, ["robustness", "--ckpt", ck, "--out", str(out)])
    assert result.exit_code == 2 and "pass either --images PATH... or --dataset NAME" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_dataset_with_other_classes_gets_the_label_free_metrics(tmp_path, folder):
    """A 5-class model on a 3-class folder: no accuracy, a note saying why, the rest measured."""
    root, _, _ = folder
    out = tmp_path / "out"
    other = save_checkpoint(create_model("vit_micro_patch4_32", num_classes=5), tmp_path / "five.pt")
    result = runner.invoke(app, ["robustness", "--ckpt", str(other), "--dataset", "imagefolder", "--data-dir",
                                 str(root), "--shifts", "0,4", "--scales", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "dataset imagefolder has 3 classes but five predicts 5: accuracy needs the model's labels" in result.stderr
    df = pd.read_csv(out / "robustness.csv")
    assert set(df["metric"]) == {"consistency", "prob_change", "js_divergence"}
