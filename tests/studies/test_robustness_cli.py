"""`attnlab robustness` options as a user meets them: what each protocol takes, shifts or scales
alone, the grid summary, whole pixels, reference lines."""
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
from attnlab.studies.robustness import RobustnessResult

runner = CliRunner()
SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("rob")
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("vit_micro_patch4_32"), d / "vit.pt", input_spec=SPEC)
    imgs = d / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    return str(ckpt), str(imgs)


def invoke(setup, tmp_path, *args):
    ckpt, imgs = setup
    return runner.invoke(app, ["robustness", "--ckpt", ckpt, "--images", imgs, "--out", str(tmp_path / "out"), *args])


@pytest.mark.parametrize("extra", [["--shifts", "2"], ["--scales", "1"], ["--direction", "v"], ["--fill", "reflect"]])
def test_consistency_refuses_the_options_it_would_ignore(setup, tmp_path, extra):
    r = invoke(setup, tmp_path, "--protocol", "consistency", *extra)
    assert r.exit_code == 2 and f"takes no {extra[0]}" in r.stderr
    assert not (tmp_path / "out").exists()


def test_consistency_draws_its_own_figure(setup, tmp_path):
    r = invoke(setup, tmp_path, "--protocol", "consistency")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "robustness_two-crops.png").exists()


def test_shifts_only_and_scales_only(setup, tmp_path):
    r = invoke(setup, tmp_path, "--scales", "none", "--shifts", "0,2")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "out" / "robustness.csv")
    assert set(df["transform"]) == {"shift-h"}
    assert not (tmp_path / "out" / "robustness_scale.png").exists()
    r = invoke(setup, tmp_path, "--shifts", "", "--scales", "0.5,1")
    assert r.exit_code == 0, r.output
    assert set(pd.read_csv(tmp_path / "out" / "robustness.csv")["transform"]) == {"scale"}
    assert not (tmp_path / "out" / "robustness_shift-h.png").exists()  # the earlier run's figure is gone
    r = invoke(setup, tmp_path, "--shifts", "none", "--scales", "none")
    assert r.exit_code == 2 and "both empty" in r.stderr


def test_fractional_shifts_say_whole_pixels(setup, tmp_path):
    r = invoke(setup, tmp_path, "--shifts", "0,1.5")
    assert r.exit_code == 2 and "whole pixels; got 1.5" in r.stderr


def test_grid_summary_is_a_dx_by_dy_table(setup, tmp_path):
    r = invoke(setup, tmp_path, "--direction", "grid", "--shifts=-2,0,2", "--scales", "none")
    assert r.exit_code == 0, r.output
    assert "consistency (shift-grid, rows dy, columns dx)" in r.stdout
    assert "dy=-2" in r.stdout and "dx=2" in r.stdout


def test_bad_out_is_refused_before_any_work(setup, tmp_path):
    (tmp_path / "taken").write_text("x")
    ckpt, imgs = setup
    r = runner.invoke(app, ["robustness", "--ckpt", ckpt, "--images", imgs, "--out", str(tmp_path / "taken")])
    assert r.exit_code == 2 and r.stderr.startswith("error: --out") and "is a file" in r.stderr


def test_accuracy_panels_show_chance_and_whole_pixel_ticks():
    rows = [dict(model="m", checkpoint="c", transform="shift-h", magnitude=float(s), metric=metric, value=v,
                 n_images=10, std=0.1) for s in (0, 1, 3) for metric, v in (("accuracy", 0.5), ("consistency", 0.9))]
    from attnlab.tables import tidy

    figs = RobustnessResult(tidy(rows), chance=0.1).figures()
    ax = figs["robustness_shift-h"].axes[0]
    assert any(t.get_text() == "chance (10%)" for t in ax.get_legend().get_texts())
    assert all(float(t).is_integer() for t in ax.get_xticks())
