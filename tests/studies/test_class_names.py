"""A checkpoint scored against a dataset's labels must name the dataset's classes (or be told to ignore them)."""
import pytest
import torch
from typer.testing import CliRunner

from attnlab import save_checkpoint
from attnlab.cli import app
from attnlab.errors import AttnlabError
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.studies.inputs import check_class_names
from attnlab.train.synthetic import write_fashion_mnist_idx

runner = CliRunner()
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("names")
    data = write_fashion_mnist_idx(d / "fm", n_train=8, n_test=12)
    torch.manual_seed(0)
    spec = InputSpec(size=(32, 32), channels=1, mean=(0.5,), std=(0.5,))
    ckpt = save_checkpoint(create_model("vit_micro_patch4_32", in_chans=1), d / "cifar_named.pt", classes=CIFAR,
                           input_spec=spec)
    return str(ckpt), str(data)


@pytest.mark.parametrize("command", ["evaluate", "robustness"])
def test_other_class_names_are_refused_with_the_first_difference(setup, tmp_path, command):
    ckpt, data = setup
    out = tmp_path / "out"
    r = runner.invoke(app, [command, "--ckpt", ckpt, "--dataset", "fashion-mnist", "--data-dir", data,
                            "--out", str(out), "--num-images", "4"])
    assert r.exit_code == 2, r.output
    line = r.stderr.strip()
    assert "class 0 is 'airplane' for the model but 'T-shirt/top' in the data" in line and "\n" not in line
    assert "--ignore-class-names" in line and not out.exists()
    r = runner.invoke(app, [command, "--ckpt", ckpt, "--dataset", "fashion-mnist", "--data-dir", data,
                            "--out", str(out), "--num-images", "4", "--ignore-class-names"])
    assert r.exit_code == 0, r.output


def test_unnamed_classes_and_equal_names_pass():
    check_class_names([str(i) for i in range(3)], ["a", "b", "c"], "m", "d")
    check_class_names(["a", "b"], ["a", "b"], "m", "d")
    with pytest.raises(AttnlabError, match="class 1 is 'x'"):
        check_class_names(["a", "x"], ["a", "b"], "m", "d")
