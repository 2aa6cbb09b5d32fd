"""The demo end to end on a tiny generated Fashion-MNIST: every stage, the report, and reuse."""
import pandas as pd
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.train.synthetic import write_fashion_mnist_idx

runner = CliRunner()


def test_demo_runs_every_stage_and_reuses_results(tmp_path):
    data = write_fashion_mnist_idx(tmp_path / "fmnist", n_train=64, n_test=24)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--epochs", "1", "--subset", "64", "--images", "12", "--data-dir", str(data)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for stage in ["[1/6]", "[2/6]", "[3/6]", "[4/6]", "[5/6]", "[6/6]"]:
        assert stage in result.stdout
    for name in ["vit_micro_patch4_32", "revit_micro_patch4_32", "vit_cb_micro_patch4_32"]:
        assert (out / "runs" / name / "best.pt").exists()
    for f in ["globality/globality.csv", "entropy/entropy.csv", "robustness/robustness.csv", "gradcam/gradcam.csv",
              "globality/mad_per_layer.png", "entropy/entropy_per_layer.png", "robustness/robustness_shift-h.png",
              "gradcam/gradcam.png", "explore/explore.html"]:
        assert (out / f).exists(), f
    report = (out / "report.md").read_text()
    assert report.count("![") == 8 and "| ViT |" in report and "| ReViT |" in report
    assert "[explore/explore.html](explore/explore.html)" in report
    for link in [line.rsplit("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]:
        assert (out / link).exists(), link
    assert set(pd.read_csv(out / "globality" / "globality.csv")["model"]) == {"ViT", "ReViT", "ViT+CB"}

    before = (out / "globality" / "globality.csv").stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.stdout.count("reusing") == 7  # three runs, four analysis stages
    assert (out / "globality" / "globality.csv").stat().st_mtime_ns == before
