"""Robustness from Python: in-memory models on loose images, figures, saving, fills, batch-by-batch runs."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.data.base import FileDataset
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.studies.robustness import (RobustnessResult, RobustnessRun, bootstrap_ci, evaluate_conditions,
                                        measure_robustness, shift, sweep_conditions, write_robustness)
from attnlab.studies.robustness.conditions import conditions_for
from attnlab.tables import COLUMNS

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
FAST = dict(input_spec=SPEC, device="cpu", n_boot=200, scales=[1.0])


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_model("vit_micro_patch4_32").eval()


def _pixels(folder):
    """The PNGs as [n, 3, 32, 32] tensors in [0, 1], in file order."""
    files = sorted(folder.glob("*.png"))
    return torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255).permute(2, 0, 1)
                        for f in files])


def test_unlabelled_images_get_the_label_free_metrics_and_a_note(pngs, net):
    result = measure_robustness(net, images=[pngs], shifts=[0, 4], **FAST)
    assert isinstance(result, RobustnessResult)
    df = result.frame
    assert tuple(df.columns) == COLUMNS
    assert set(df["metric"]) == {"consistency", "prob_change", "js_divergence"}   # no accuracy rows
    assert (df["n_images"] == 6).all() and set(df["transform"]) == {"shift-h", "scale"}
    assert any("accuracy needs labels" in n for n in result.notes)
    # prob_change without labels: |p_c(shifted) - p_c(unshifted)| for c the unshifted image's top-1 class
    x = _pixels(pngs)
    with torch.no_grad():
        p0 = net((x - 0.5) / 0.25).softmax(-1).double()
        p4 = net((shift(x, 4, 0) - 0.5) / 0.25).softmax(-1).double()
    c = p0.argmax(-1)
    expected = (p4.gather(1, c[:, None]) - p0.gather(1, c[:, None])).abs().mean().item()
    row = df[(df.metric == "prob_change") & (df["transform"] == "shift-h") & (df.magnitude == 4)]
    assert row["value"].item() == pytest.approx(expected, rel=1e-4, abs=1e-7)
    unshifted = df[(df["transform"] == "shift-h") & (df.magnitude == 0)].set_index("metric")["value"]
    assert unshifted["consistency"] == 1.0 and unshifted["prob_change"] == 0.0


def test_figures_in_memory_and_save_replaces_an_earlier_runs_figures(tmp_path, pngs, net):
    grid = measure_robustness(net, images=[pngs], shifts=[-4, 0, 4], direction="grid", **FAST)
    figs = grid.figures()
    assert set(figs) == {"robustness_shift-grid", "robustness_scale"}
    assert all(isinstance(f, plt.Figure) for f in figs.values())
    for f in figs.values():
        plt.close(f)
    out = tmp_path / "rob"
    written = grid.save(out)
    assert out / "robustness_shift-grid.png" in written and (out / "robustness_shift-grid.pdf").exists()
    line = measure_robustness(net, images=[pngs], shifts=[0, 4], direction="h", **FAST)
    written = line.save(out)
    names = {p.name for p in out.iterdir()}
    assert not any(n.startswith("robustness_shift-grid.") for n in names)
    assert {"robustness.csv", "robustness_shift-h.png", "robustness_shift-h.pdf"} <= names
    assert sorted(p.name for p in written) == sorted(names)
    assert set(pd.read_csv(out / "robustness.csv")["transform"]) == {"shift-h", "scale"}


def test_the_fill_is_recorded_in_the_transform_and_the_figures(tmp_path, pngs, net):
    black = measure_robustness(net, images=[pngs], shifts=[0, 8], **FAST)
    reflect = measure_robustness(net, images=[pngs], shifts=[0, 8], fill="reflect", **FAST)
    shifts = lambda r: set(r.frame["transform"]) - {"scale"}  # noqa: E731
    assert shifts(black) == {"shift-h"} and shifts(reflect) == {"shift-h:reflect"}
    assert "robustness_shift-h-reflect" in reflect.figure_makers()
    fig = reflect.figures()["robustness_shift-h-reflect"]
    assert "reflect fill" in fig._suptitle.get_text()
    plt.close("all")
    both = pd.concat([black.frame, reflect.frame], ignore_index=True)
    names = {p.name for p in write_robustness(both, tmp_path / "both")}  # a plain frame still writes
    assert {"robustness_shift-h.png", "robustness_shift-h-reflect.png"} <= names
    grid = sweep_conditions([0, 2], [], "grid", "roll", (32, 32))
    assert {c.transform for c in grid} == {"shift-grid:roll"}
    random = measure_robustness(net, images=[pngs], shifts=[4], fill="reflect", protocol="revit-random", **FAST)
    assert set(random.frame["transform"]) == {"random-translate", "scale"}  # the official protocol fills black
    assert any("--fill reflect applies to --protocol sweep only" in n for n in random.notes)


def test_bootstrap_ci_matches_direct_resampling():
    rng = np.random.default_rng(1)
    values = rng.random(300)
    lo, hi = bootstrap_ci(values, n_boot=20000, seed=3)
    means = values[np.random.default_rng(7).integers(0, len(values), size=(20000, len(values)))].mean(axis=1)
    d_lo, d_hi = np.quantile(means, [0.025, 0.975])
    assert lo == pytest.approx(d_lo, abs=3e-3) and hi == pytest.approx(d_hi, abs=3e-3)
    lo90, hi90 = bootstrap_ci(values, n_boot=20000, seed=3, level=0.9)
    assert lo < lo90 < values.mean() < hi90 < hi
    with_nan = np.concatenate([values, [np.nan] * 50])
    assert bootstrap_ci(with_nan, n_boot=500, seed=0) == bootstrap_ci(values, n_boot=500, seed=0)
    assert bootstrap_ci(np.array([0.25, np.nan])) == (0.25, 0.25)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([np.nan])))
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))


def test_models_sharing_an_input_decode_each_image_once(monkeypatch, pngs, net):
    calls = []
    original = FileDataset.load_image
    monkeypatch.setattr(FileDataset, "load_image", lambda self, i: calls.append(i) or original(self, i))
    torch.manual_seed(1)
    other = create_model("revit_micro_patch4_32").eval()
    result = measure_robustness([net, other], ["ViT", "ReViT"], images=[pngs], shifts=[0, 4], batch_size=4, **FAST)
    assert len(calls) == 6
    assert list(result.frame["model"].unique()) == ["ViT", "ReViT"]
    alone = measure_robustness([other], ["ReViT"], images=[pngs], shifts=[0, 4], batch_size=4, **FAST)
    pd.testing.assert_frame_equal(result.frame[result.frame.model == "ReViT"].reset_index(drop=True), alone.frame)


def test_a_run_fed_batch_by_batch_equals_one_call(net):
    g = torch.Generator().manual_seed(0)
    x, labels = torch.rand(10, 3, 32, 32, generator=g), torch.randint(0, 10, (10,), generator=g)
    for protocol in ("sweep", "revit-random", "consistency"):
        conds = conditions_for(protocol, [0, 4], [0.5], "h", "black", (32, 32))
        whole = evaluate_conditions(net, SPEC, [(x, labels)], conds, protocol=protocol, seed=5)
        seen = []
        run = RobustnessRun(net, SPEC, conds, protocol=protocol, seed=5, max_batch=8, progress=seen.append)
        for a in range(0, 10, 5):
            run.update(x[a:a + 5], labels[a:a + 5])
        parts = run.outcomes()
        assert seen == [5, 10]
        if protocol == "sweep":  # deterministic views: batching does not matter
            for c in conds:
                np.testing.assert_array_equal(parts[c].consistent, whole[c].consistent)
                np.testing.assert_allclose(parts[c].js, whole[c].js, rtol=1e-4, atol=1e-7)
        assert all(len(parts[c].js) == 10 for c in conds)
    free = evaluate_conditions(net, SPEC, [(x, labels)], conds[:1], protocol="consistency", use_labels=False)
    assert np.isnan(free[conds[0]].correct).all() and not np.isnan(free[conds[0]].prob_change).any()


def test_the_command_takes_loose_images(tmp_path, pngs):
    from attnlab import save_checkpoint

    ck = save_checkpoint(create_model("vit_micro_patch4_32"), tmp_path / "vit.pt", input_spec=SPEC)
    out = tmp_path / "rob"
    extra = tmp_path / "extra.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(extra)
    result = CliRunner().invoke(app, ["robustness", "--ckpt", str(ck), "--images", str(pngs), str(extra),
                                      "--shifts", "0,4", "--scales", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "note: the images have no labels: accuracy needs labels" in result.stderr
    df = pd.read_csv(out / "robustness.csv")
    assert "accuracy" not in set(df["metric"]) and (df["n_images"] == 7).all()
    assert "consistency" in result.stdout and (out / "robustness_shift-h.png").exists()
    stray = CliRunner().invoke(app, ["robustness", "--ckpt", str(ck), str(extra), "--dataset", "cifar10"])
    assert stray.exit_code == 2 and "image paths go after --images" in stray.stderr


@pytest.mark.parametrize("name", ["vit_micro_patch4_32", "revit_micro_patch4_32"])
def test_attention_rows_are_attention_stats_of_each_view(pngs, name):
    """ViT / ReViT: each condition's rows are exactly AttentionStats fed that view's applied attention."""
    from attnlab.capture import capture_attention
    from attnlab.layout import TokenLayout
    from attnlab.metrics import AttentionStats
    from attnlab.studies.robustness.study import ATTENTION_METRICS

    torch.manual_seed(0)
    model = create_model(name).eval()
    result = measure_robustness(model, images=[pngs], shifts=[0, 4], batch_size=4, attention=True, **FAST)
    got = result.frame[result.frame["metric"].isin(ATTENTION_METRICS)]
    x = _pixels(pngs)
    layout = TokenLayout.from_model(model, (32, 32))
    for transform, magnitude, view in [("shift-h", 0.0, x), ("shift-h", 4.0, shift(x, 4, 0)), ("scale", 1.0, x)]:
        stats = AttentionStats(check=False, metrics=ATTENTION_METRICS)
        for part in view.split(4):  # the study's batches: float32 sums are blocked by the batch's size
            for layer, a in enumerate(capture_attention(model, (part - 0.5) / 0.25)):
                stats.update(layer, a, layout)
        ref = stats.to_frame("m", "c")
        ref = ref[ref["head"] == -1].sort_values(["layer", "metric"])
        rows = got[(got["transform"] == transform) & (got["magnitude"] == magnitude)].sort_values(["layer", "metric"])
        assert rows["layer"].tolist() == ref["layer"].tolist() and (rows["stage"] == 0).all()
        np.testing.assert_allclose(rows["value"], ref["value"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(rows["std"], ref["std"], rtol=1e-6, atol=1e-9)
