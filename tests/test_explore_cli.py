"""``attnlab explore`` on the command line: the page is written, and bad input (over the size budget,
a model capture does not support, unreadable images, bad --layers) is one line, a non-zero exit
and no partial page."""
import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from attnlab import save_checkpoint
from attnlab.cli.explore import explore
from attnlab.models import create_model

from test_explore import SPEC

runner = CliRunner()
CLASSES = [f"class{i}" for i in range(10)]


def _app() -> typer.Typer:
    try:  # registered in attnlab's app
        from attnlab.cli import app

        names = {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}
        if "explore" in names:
            return app
    except ImportError:  # pragma: no cover
        pass
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(explore)

    @app.command()
    def _other() -> None:  # a second command keeps `explore` a named subcommand
        pass

    return app


APP = _app()


def invoke(*args):
    return runner.invoke(APP, ["explore", *map(str, args)])


def one_error_line(result, *words):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert [ln.startswith("error: ") for ln in lines].count(True) == 1, result.output
    assert "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    vit = save_checkpoint(create_model("vit_micro_patch4_32"), d / "vit.pt", input_spec=SPEC, classes=CLASSES)
    revit = save_checkpoint(create_model("revit_micro_patch4_32"), d / "revit.pt", input_spec=SPEC, classes=CLASSES)
    resnet = save_checkpoint(create_model("resnet10t", num_classes=10), d / "resnet.pt", input_spec=SPEC,
                             classes=CLASSES)
    imgs = d / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(imgs / f"im{i}.png")
    bad = d / "bad"
    bad.mkdir()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(bad / "good.png")
    (bad / "broken.png").write_bytes(b"not a png at all")
    return {"vit": vit, "revit": revit, "resnet": resnet, "imgs": imgs, "bad": bad, "dir": d}


def test_writes_one_page(files, tmp_path):
    out = tmp_path / "out"
    result = invoke("--ckpt", files["vit"], "--ckpt", files["revit"], "--label", "ViT", "--label", "ReViT",
                    "--images", files["imgs"], "--layers", "0,-1", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["explore.html"]
    assert "wrote" in result.stdout and "explore.html" in result.stdout and "page about" in result.stderr
    page = (out / "explore.html").read_text()
    assert '"label":"ReViT"' in page and '"layers":[0,5]' in page


def test_over_budget_says_the_size_and_how_to_cut_it(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "explore.html").write_text("an earlier page")
    result = invoke("--ckpt", files["vit"], "--ckpt", files["revit"], "--images", files["imgs"], "--layers", "all",
                    "--max-mb", "0.5", "--out", out)
    line = one_error_line(result, "MB", "over the 0.5 MB budget", "--num-images", "--layers")
    assert "would be about" in line
    assert (out / "explore.html").read_text() == "an earlier page"       # nothing partial, nothing replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]           # no staging folder left


def test_a_model_capture_does_not_support(files, tmp_path):
    result = invoke("--ckpt", files["vit"], "--ckpt", files["resnet"], "--images", files["imgs"],
                    "--out", tmp_path / "out")
    one_error_line(result, "resnet", "ResNet")
    assert not (tmp_path / "out").exists()


def test_unreadable_images(files, tmp_path):
    result = invoke("--ckpt", files["vit"], "--images", files["bad"], "--out", tmp_path / "out")
    one_error_line(result, "cannot read 1 image file", "broken.png")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layers, words", [("6", ["--layers 6 is out of range", "6 blocks"]),
                                           ("first", ["block indices"])])
def test_bad_layers(files, tmp_path, layers, words):
    result = invoke("--ckpt", files["vit"], "--images", files["imgs"], "--layers", layers, "--out", tmp_path / "out")
    one_error_line(result, *words)
    assert not (tmp_path / "out").exists()


def test_bad_budget_and_output(files, tmp_path):
    one_error_line(invoke("--ckpt", files["vit"], "--images", files["imgs"], "--max-mb", "0", "--out", tmp_path / "o"),
                   "--max-mb")
    (tmp_path / "file").write_text("x")
    one_error_line(invoke("--ckpt", files["vit"], "--images", files["imgs"], "--out", tmp_path / "file"), "is a file")


def test_windowed_and_pooled_checkpoints_side_by_side(files, tmp_path):
    from test_explore_families import family

    ckpts = []
    for name in ("swin", "mvitv2"):
        net, spec = family(name)
        path = files["dir"] / f"{name}.pt"
        ckpts += ["--ckpt", save_checkpoint(net, path, input_spec=spec.input, classes=spec.classes)]
    out = tmp_path / "out"
    result = invoke(*ckpts, "--images", files["imgs"], "--layers", "0,-1", "--out", out)
    assert result.exit_code == 0, result.output
    page = (out / "explore.html").read_text()
    assert '"geometry":"window"' in page and '"geometry":"pooled"' in page and "no attention rollout" in page


def test_a_model_built_for_another_size(files, tmp_path):
    from test_explore_families import family, spec_of

    net, spec = family("swin")                                             # built for 56 px
    ckpt = save_checkpoint(net, files["dir"] / "swin64.pt", input_spec=spec_of(64), classes=spec.classes)
    result = invoke("--ckpt", ckpt, "--images", files["imgs"], "--out", tmp_path / "out")
    one_error_line(result, "failed on 64x64 images", "it takes 56x56")
    assert not (tmp_path / "out").exists()
