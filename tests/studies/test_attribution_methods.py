"""``attnlab gradcam --method chefer,attn-grad --faithfulness ...``: outputs, tidy rows, bad input."""
import numpy as np
import pandas as pd
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from attnlab import save_checkpoint
from attnlab.cli.gradcam import gradcam
from attnlab.errors import AttnlabError
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.studies.attribution import parse_faithfulness, parse_methods
from attnlab.tables import COLUMNS

runner = CliRunner()
SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
CLASSES = [f"class{i}" for i in range(10)]
CURVE_POINTS = [f"perturbation_{s}_{w}" for s in ("positive", "negative") for w in ("probability", "agreement")]
ROAD = {"road_most_relevant_first", "road_least_relevant_first", "road_combined", "confidence_drop"}


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(gradcam)
    app.command("other")(lambda: None)   # a second command keeps `gradcam` a named subcommand
    return app


APP = _app()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "vit.pt"
    return str(save_checkpoint(create_model("vit_micro_patch4_32", depth=2), path, input_spec=SPEC, classes=CLASSES))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"rgb{i}.png")
    return d


def _invoke(*args):
    return runner.invoke(APP, ["gradcam", *args])


def test_chefer_and_attn_grad_with_the_default_protocols(tmp_path, ckpt, images):
    out = tmp_path / "cam"
    result = _invoke("--ckpt", ckpt, "--label", "ViT", "--images", str(images), "--method", "chefer,attn-grad",
                     "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "top-1 is checked against each image's unperturbed prediction" in result.stderr
    assert {p.name for p in out.iterdir()} == {"gradcam.png", "gradcam.pdf", "gradcam_maps.npz", "gradcam.csv",
                                                "faithfulness_curves.png", "faithfulness_curves.pdf"}
    df = pd.read_csv(out / "gradcam.csv")
    assert tuple(df.columns) == COLUMNS
    assert set(df["transform"]) == {"none", "chefer", "attn-grad", "rollout"}
    areas = {f"{n}_auc" for n in CURVE_POINTS}
    assert set(df.metric) == {"probability"} | ROAD | set(CURVE_POINTS) | areas
    assert not df.duplicated(["model", "transform", "metric", "magnitude", "head"]).any()
    points = df[df.metric == "perturbation_positive_probability"]
    assert sorted(points.magnitude.unique()) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert len(points) == 3 * 10 * 3                  # methods x fractions x (2 images + mean)
    assert df[df.metric.isin(areas | ROAD)].magnitude.isna().all()
    mean = df[df["head"] == -1]
    start = mean[(mean.metric == "perturbation_positive_probability") & (mean.magnitude == 0)]
    prob = mean[mean.metric == "probability"].value.item()
    np.testing.assert_allclose(start.value, prob, rtol=1e-5)   # the curve starts at the unperturbed image
    npz = np.load(out / "gradcam_maps.npz")
    assert npz["ViT/chefer"].shape == (2, 32, 32) and npz["ViT/attn-grad"].max() <= 1
    assert list(npz["methods"]) == ["chefer", "attn-grad", "rollout"]
    assert "perturbation_positive_probability_auc" in result.stdout


def test_deletion_and_insertion_on_request(tmp_path, ckpt, images):
    out = tmp_path / "cam"
    result = _invoke("--ckpt", ckpt, "--images", str(images), "--method", "eigencam", "--faithfulness",
                     "deletion", "--out", str(out))
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out / "gradcam.csv")
    assert set(df.metric) == {"probability", "deletion_probability", "insertion_probability", "deletion_auc",
                              "insertion_auc"}
    assert sorted(df[df.metric == "deletion_probability"].magnitude.unique()) == pytest.approx(
        np.linspace(0, 1, 21))
    assert (out / "faithfulness_curves.png").exists()
    # road only: no curves, no curves figure, and an earlier run's is removed
    result = _invoke("--ckpt", ckpt, "--images", str(images), "--faithfulness", "road", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert not (out / "faithfulness_curves.png").exists()
    assert set(pd.read_csv(out / "gradcam.csv").metric) == {"probability"} | ROAD


def test_parse_methods_and_protocols():
    assert parse_methods("Chefer,attn-grad,gradcam") == ["chefer", "attn-grad", "gradcam"]
    assert parse_faithfulness(None) == ("road", "perturbation")
    assert parse_faithfulness(["deletion", "road,deletion"]) == ("deletion", "road")
    with pytest.raises(AttnlabError, match="unknown --faithfulness protocol 'roda' .did you mean road"):
        parse_faithfulness("roda")


def _fails_cleanly(result, out, fragment):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    assert sum(line.startswith("error: ") for line in lines) == 1
    assert fragment in lines[-1], lines[-1]
    assert not out.exists() or not any(out.iterdir())


def test_bad_input(tmp_path, ckpt, images):
    out = tmp_path / "out"
    for args, fragment in [
        (["--method", "chefr"], "unknown method 'chefr' (did you mean chefer?); choose from gradcam"),
        (["--method", "attn_grad"], "(did you mean attn-grad?)"),
        (["--faithfulness", "bogus"], "unknown --faithfulness protocol 'bogus'; choose from road, perturbation, "
                                      "deletion"),
        (["--method", "chefer", "--layer", "blocks.7.norm1"], "unknown layer 'blocks.7.norm1'; valid layers include"),
    ]:
        _fails_cleanly(_invoke("--ckpt", ckpt, "--images", str(images), "--out", str(out), *args), out, fragment)
