"""`attnlab evaluate`: top-1 / top-5 and a per-class CSV that adds up, from the checkpoint alone,
with the loading and output options of the other --ckpt commands."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnlab import save_checkpoint
from attnlab.cli import app
from attnlab.data import eval_transform, load_dataset
from attnlab.data.fashion_mnist import CLASSES as FMNIST_CLASSES
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.train.synthetic import write_fashion_mnist_idx

runner = CliRunner()
SPEC = InputSpec(size=(32, 32), channels=1, mean=(0.2860,), std=(0.3530,))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fashion_mnist_idx(tmp_path_factory.mktemp("fm"), n_train=10, n_test=50, seed=3)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = create_model("vit_micro_patch4_32", in_chans=1).eval()
    with torch.no_grad():  # a biased head: some classes right, some wrong, so the counts say something
        model.head.bias.copy_(torch.linspace(0, 3, 10))
    return save_checkpoint(model, tmp_path_factory.mktemp("ck") / "m.pt", classes=FMNIST_CLASSES, input_spec=SPEC)


def test_evaluate_prints_topk_and_per_class_csv_sums_to_total(ckpt, data, tmp_path):
    r = runner.invoke(app, ["evaluate", "--ckpt", str(ckpt), "--dataset", "fashion-mnist", "--data-dir", str(data),
                            "--batch-size", "7", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    top1 = re.search(r"top-1 ([\d.]+)%  \((\d+)/(\d+)\)", r.stdout)
    top5 = re.search(r"top-5 ([\d.]+)%  \((\d+)/(\d+)\)", r.stdout)
    assert top1 and top5, r.stdout
    c1, n = int(top1.group(2)), int(top1.group(3))
    assert n == 50 and c1 <= int(top5.group(2)) <= n

    with open(tmp_path / "ev" / "per_class_accuracy.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == FMNIST_CLASSES
    assert list(rows[0]) == ["model", "class", "n", "correct", "accuracy"]
    assert {r["model"] for r in rows} == {"m"}  # the checkpoint's file stem
    assert sum(int(r["n"]) for r in rows) == n
    assert sum(int(r["correct"]) for r in rows) == c1
    for r in rows:
        assert float(r["accuracy"]) == pytest.approx(100 * int(r["correct"]) / int(r["n"]), abs=1e-3)

    # independently: the model on eval_transform'd images, one at a time
    model = create_model("vit_micro_patch4_32", in_chans=1).eval()
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    ds = load_dataset("fashion-mnist", "test", data_dir=data, transform=eval_transform(SPEC))
    with torch.no_grad():
        preds = [int(model(x[None]).argmax()) for x, _ in ds]
    per_class = [sum(1 for p, t in zip(preds, ds.targets) if p == t == k) for k in range(10)]
    assert [int(r["correct"]) for r in rows] == per_class
    assert 0 < c1 < n  # the biased head makes the counts informative


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_defaults_to_out_evaluate_not_the_checkpoint_folder(ckpt, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "--ckpt", str(ckpt), "--dataset", "fashion-mnist", "--data-dir", str(data)]
    r = runner.invoke(app, args + ["--num-images", "20", "--label", "first"])
    assert r.exit_code == 0, r.output
    rows = read_csv(tmp_path / "out" / "evaluate" / "per_class_accuracy.csv")
    assert sum(int(row["n"]) for row in rows) == 20 and {row["model"] for row in rows} == {"first"}
    assert not (ckpt.parent / "per_class_accuracy.csv").exists()
    # --subset is the old name of --num-images: still accepted (hidden), with a note
    r = runner.invoke(app, args + ["--subset", "10"])
    assert r.exit_code == 0, r.output
    assert "--subset is deprecated; use --num-images" in r.stderr
    rows = read_csv(tmp_path / "out" / "evaluate" / "per_class_accuracy.csv")
    assert sum(int(row["n"]) for row in rows) == 10 and {row["model"] for row in rows} == {"m"}
    help_text = runner.invoke(app, ["evaluate", "--help"]).stdout
    assert "--num-images" in help_text and "--subset" not in help_text and "--model" in help_text


def test_evaluate_plain_state_dict_with_model(ckpt, data, tmp_path):
    """A plain state dict needs --model NAME, which `evaluate` takes like the other --ckpt commands."""
    plain = tmp_path / "weights.pth"
    torch.save(torch.load(ckpt, weights_only=True)["state_dict"], plain)
    base = ["evaluate", "--ckpt", str(plain), "--dataset", "fashion-mnist", "--data-dir", str(data),
            "--out", str(tmp_path / "plain")]
    assert "pass the model name with --model NAME" in _one_line(runner.invoke(app, base))
    r = runner.invoke(app, base + ["--model", "vit_micro_patch4_32"])
    assert r.exit_code == 0, r.output
    rows = read_csv(tmp_path / "plain" / "per_class_accuracy.csv")
    assert sum(int(row["n"]) for row in rows) == 50 and {row["model"] for row in rows} == {"weights"}
    assert "weights (vit_micro_patch4_32)" in r.stdout


def test_evaluate_checks_out_before_any_work(ckpt, data, tmp_path):
    a_file = tmp_path / "taken.csv"
    a_file.write_text("keep me\n")
    base = ["evaluate", "--ckpt", str(ckpt), "--dataset", "fashion-mnist", "--data-dir", str(data)]
    assert f"--out {a_file} is a file" in _one_line(runner.invoke(app, base + ["--out", str(a_file)]))
    under = a_file / "sub"
    assert f"is inside {a_file}, which is a file" in _one_line(runner.invoke(app, base + ["--out", str(under)]))
    assert a_file.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.csv"]  # nothing written, no staging left


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_evaluate_bad_input(ckpt, data, tmp_path):
    five = save_checkpoint(create_model("vit_micro_patch4_32", in_chans=1, num_classes=5), tmp_path / "five.pt",
                           classes=list("abcde"), input_spec=SPEC)
    base = ["evaluate", "--dataset", "fashion-mnist", "--data-dir", str(data), "--out", str(tmp_path / "o")]
    cases = [
        (["--ckpt", str(five)], "has 5 outputs"),
        (["--ckpt", str(tmp_path / "missing.pt")], "checkpoint not found"),
        (["--ckpt", str(ckpt), "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--ckpt", str(ckpt), "--split", "val"], "split"),
        (["--ckpt", str(ckpt), "--num-images", "0"], "--num-images must be at least 1"),
        (["--ckpt", str(ckpt), "--num-images", "51"], "--num-images 51 is more than the 50 images"),
        (["--ckpt", str(ckpt), "--num-images", "5", "--subset", "5"], "pass --num-images alone"),
        (["--ckpt", str(ckpt), "--device", "tpu"], "--device must be"),
    ]
    for extra, fragment in cases:
        assert fragment in _one_line(runner.invoke(app, base + extra)), extra
    r = runner.invoke(app, ["evaluate", "--ckpt", str(ckpt), "--dataset", "nope", "--out", str(tmp_path / "o")])
    assert "unknown dataset" in _one_line(r)
    assert not (tmp_path / "o").exists()
