"""attnlab.train / `attnlab train` on a tiny generated Fashion-MNIST (real IDX files, micro models, CPU)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnlab.checkpoint import load_model
from attnlab.cli import app
from sigkill import kill_mid_epoch
from attnlab.data.fashion_mnist import CLASSES as FMNIST_CLASSES
from attnlab.errors import AttnlabError
from attnlab.models import create_model
from attnlab.train import TrainConfig, resolve_config
from attnlab.train.augment import TensorAugment
from attnlab.train.evaluate import evaluate_checkpoint
from attnlab.train.loop import Trainer, train
from attnlab.train.optim import WarmupCosine, build_optimizer
from attnlab.train.records import METRIC_COLUMNS
from attnlab.train.synthetic import write_fashion_mnist_idx

runner = CliRunner()


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Path:
    return write_fashion_mnist_idx(tmp_path_factory.mktemp("fmnist"), n_train=64, n_test=32, seed=1)


def tiny(data: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(model="revit_micro_patch4_32", dataset="fashion-mnist", data_dir=str(data), out=str(out),
                  epochs=2, batch_size=16, threads=1, progress="off", warmup_epochs=1, save_every=0)
    values.update(overrides)
    return TrainConfig.from_mapping(values)


def cli_args(cfg: TrainConfig) -> list:
    """The same run as command-line flags (everything a test sets)."""
    return ["train", "--model", cfg.model, "--dataset", cfg.dataset, "--data-dir", cfg.data_dir, "--out", cfg.out,
            "--epochs", str(cfg.epochs), "--batch-size", str(cfg.batch_size), "--threads", str(cfg.threads),
            "--progress", "off", "--warmup-epochs", str(cfg.warmup_epochs), "--save-every", str(cfg.save_every)]


def read_rows(path: Path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, r)) for r in reader]


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# ----------------------------------------------------------------------------- a whole run
@pytest.fixture(scope="module")
def run(fmnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "revit"
    result = train(tiny(fmnist, out), log=None)
    return out, result


def test_metrics_csv_rows_and_columns(run):
    out, result = run
    header, rows = read_rows(out / "metrics.csv")
    assert header == METRIC_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(float(r["train_loss"])) and math.isfinite(float(r["test_loss"]))
        assert 0 <= float(r["top1"]) <= float(r["top5"]) <= 100
        assert float(r["lr"]) > 0 and float(r["images_per_s"]) > 0 and float(r["seconds"]) > 0
        assert 0 < float(r["alpha"]) < 1  # ReViT's learned a is logged
    assert float(rows[0]["alpha"]) != 0.5 or float(rows[1]["alpha"]) != 0.5  # a is trained
    assert result.steps_per_epoch == 4 and len(result.history) == 2


def test_checkpoints_reload_with_logged_accuracy(run, fmnist):
    out, result = run
    _, rows = read_rows(out / "metrics.csv")
    for name, row in (("last.pt", rows[-1]), ("best.pt", rows[result.best_epoch - 1])):
        model, spec = load_model(out / name)
        assert spec.arch == "revit_micro_patch4_32" and spec.classes == FMNIST_CLASSES
        assert spec.input.size == (32, 32) and spec.input.channels == 1 and spec.input.mean == (0.2860,)
        prov = spec.provenance
        assert prov["dataset"] == "fashion-mnist" and prov["seed"] == 0 and prov["epochs"] == int(row["epoch"])
        assert prov["config"]["batch_size"] == 16 and prov["metrics"]["top1"] == pytest.approx(float(row["top1"]))
        # the independent pipeline (PIL images -> eval_transform) reproduces the logged numbers
        res, _ = evaluate_checkpoint(out / name, "fashion-mnist", data_dir=fmnist, batch_size=256, device="cpu")
        assert res.n == 32
        assert res.top1 == pytest.approx(float(row["top1"]), abs=1e-4)
        assert res.top5 == pytest.approx(float(row["top5"]), abs=1e-4)
        assert res.loss == pytest.approx(float(row["test_loss"]), rel=1e-4)
    best = max(float(r["top1"]) for r in rows)
    assert float(rows[result.best_epoch - 1]["top1"]) == best


def test_resume_state_is_weights_only(run):
    out, _ = run
    state = torch.load(out / "resume.pt", weights_only=True)
    assert state["finished"] and state["epoch"] == 2 and state["global_step"] == 8
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor) and len(state["rng"]["python"]["state"]) == 625
    assert json.loads((out / "resume.json").read_text())["global_step"] == 8
    r = runner.invoke(app, ["train", "--out", str(out), "--resume"])
    assert "already finished" in one_line_error(r)


# ----------------------------------------------------------------------------- pieces
def test_weight_decay_groups_exclude_alpha_and_1d_params():
    model = create_model("revit_micro_patch4_32", in_chans=1, alpha_per_layer=True)
    opt = build_optimizer(model, TrainConfig(model="x", weight_decay=0.05))
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay | no_decay == set(names.values()) and not decay & no_decay
    assert "alpha" in no_decay and {"pos_embed", "cls_token"} <= no_decay
    for n, p in model.named_parameters():
        if p.ndim <= 1:
            assert n in no_decay, n
    assert all(model.get_parameter(n).ndim >= 2 for n in decay)
    assert "blocks.0.attn.qkv.weight" in decay and "head.weight" in decay


def test_schedule_warms_up_then_decays_to_min_lr():
    f = WarmupCosine(warmup_steps=4, total_steps=20, min_ratio=0.01)
    values = [f(s) for s in range(21)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(values[3:], values[4:]))
    assert values[20] == pytest.approx(0.01)


def test_tensor_augment_is_seeded_and_switchable():
    x = torch.randint(0, 256, (32, 1, 32, 32), dtype=torch.uint8)
    aug = TensorAugment("rand-m9-n2", crop_padding=4, hflip=0.5)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    off = TensorAugment(None, crop_padding=0, hflip=0.0)
    assert not off.active and torch.equal(off(x, torch.Generator()), x)
    cfg = resolve_config(None, {"model": "m", "augment": False})
    assert not cfg.mixing


def test_config_file_and_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model: vit_micro_patch4_32\nepochs: 3\nbatch-size: 32\nrandaugment: none\nmixup: 0\n")
    cfg = resolve_config(cfg_file, {"epochs": 5, "lr": None})
    assert (cfg.model, cfg.epochs, cfg.batch_size, cfg.randaugment, cfg.mixup) == ("vit_micro_patch4_32", 5, 32, None, 0.0)


# ----------------------------------------------------------------------------- bad input
def _bad_cases(tmp_path: Path, data: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("model: vit_micro_patch4_32\nlearning_rate: 0.1\n")
    base = ["train", "--model", "vit_micro_patch4_32", "--data-dir", str(data), "--progress", "off"]
    return [
        (base + ["--dataset", "nope"], "unknown dataset 'nope'"),
        (["train", "--model", "vit_micro_patch4_32", "--data-dir", str(empty)], "expected train-images"),
        (base + ["--epochs", "0"], "epochs must be"),
        (base + ["--batch-size", "0"], "batch_size must be"),
        (base + ["--subset", "0"], "subset must be"),
        (base + ["--resume"], "nothing to resume"),
        (["train", "--config", str(bad_key), "--data-dir", str(data)], "unknown option 'learning_rate'"),
        (base + ["--model", "revit_nano"], "unknown model name"),
    ]


def test_bad_input_one_line_and_nothing_written(tmp_path, fmnist):
    for i, (args, fragment) in enumerate(_bad_cases(tmp_path, fmnist)):
        out = tmp_path / f"out{i}"
        r = runner.invoke(app, args + ["--out", str(out)])
        assert fragment in one_line_error(r), (args, r.stderr)
        assert not out.exists(), args


def test_refuses_to_overwrite_a_run(run):
    out, _ = run
    before = (out / "last.pt").stat().st_mtime_ns
    r = runner.invoke(app, ["train", "--model", "vit_micro_patch4_32", "--out", str(out)])
    assert "already holds a training run" in one_line_error(r)
    assert (out / "last.pt").stat().st_mtime_ns == before


# ----------------------------------------------------------------------------- divergence
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, fmnist, monkeypatch):
    real = Trainer.forward_loss

    def nan_in_epoch_two(self, x, target):
        logits, loss = real(self, x, target)
        return logits, loss * float("nan") if self.global_step >= self.steps_per_epoch + 1 else loss

    monkeypatch.setattr(Trainer, "forward_loss", nan_in_epoch_two)
    cfg_file = tmp_path / "run.yaml"  # options from a YAML file; flags override it (epochs 9 -> 3)
    cfg_file.write_text(f"model: vit_cb_micro_patch4_32\ndata-dir: {fmnist}\nepochs: 9\nbatch_size: 16\n"
                        "threads: 1\nwarmup_epochs: 1\nsave_every: 0\nprogress: 'off'\n")
    r = runner.invoke(app, ["train", "--config", str(cfg_file), "--epochs", "3", "--out", str(tmp_path / "nan")])
    msg = one_line_error(r, code=1)
    assert "non-finite loss nan at epoch 2, step 2" in msg and "last.pt (epoch 1) is kept" in msg
    _, rows = read_rows(tmp_path / "nan" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1"] and rows[0]["alpha"] == ""  # no a for CB models
    model, spec = load_model(tmp_path / "nan" / "last.pt")
    assert spec.provenance["epochs"] == 1 and spec.provenance["config"]["epochs"] == 3
    assert spec.arch == "vit_cb_micro_patch4_32"
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())
    # the stopped run can be resumed, but only as it was configured
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "nan"), "--resume", "--lr", "0.5"])
    assert "lr was 0.001 there, 0.5 here" in one_line_error(r)
    with pytest.raises(AttnlabError, match="different lr"):
        train(TrainConfig.from_mapping({**spec.provenance["config"], "lr": 0.5}), resume=True, log=None)


# ----------------------------------------------------------------------------- exact resume
def test_resume_after_sigkill_is_bit_identical(tmp_path, fmnist):
    """A run SIGKILLed mid-epoch and resumed ends with exactly the weights of one uninterrupted run."""
    data = write_fashion_mnist_idx(tmp_path / "data", n_train=96, n_test=16, seed=2)
    # every random piece on (the long recipe): RandAugment, crop, flip, mixup/cutmix, drop-path,
    # label smoothing, EMA
    extra = ["--ema", "--drop-path", "0.1", "--recipe", "long"]
    killed = tiny(data, tmp_path / "killed", batch_size=8, save_every=2)
    whole = tiny(data, tmp_path / "whole", batch_size=8, save_every=2)

    state = kill_mid_epoch(cli_args(killed) + extra, tmp_path / "killed", min_step=2, timeout=120)
    assert not state["finished"] and 0 < state["step"] < state["steps_per_epoch"]  # really mid-epoch

    r = runner.invoke(app, ["train", "--out", str(tmp_path / "killed"), "--resume", "--progress", "off"])
    assert r.exit_code == 0, r.output
    assert "resuming at epoch" in r.stdout and "recipe: long (chosen explicitly" in r.stdout
    r = runner.invoke(app, cli_args(whole) + extra)
    assert r.exit_code == 0, r.output

    for name in ("last.pt", "best.pt"):
        a = torch.load(tmp_path / "killed" / name, weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "whole" / name, weights_only=True)["state_dict"]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    sa = torch.load(tmp_path / "killed" / "resume.pt", weights_only=True)
    sb = torch.load(tmp_path / "whole" / "resume.pt", weights_only=True)
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    for pid, st in sa["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, sb["optimizer"]["state"][pid][k]), (pid, k)
    _, rows_a = read_rows(tmp_path / "killed" / "metrics.csv")
    _, rows_b = read_rows(tmp_path / "whole" / "metrics.csv")
    same = ["epoch", "train_loss", "test_loss", "top1", "top5", "lr", "alpha"]
    assert [[r[c] for c in same] for r in rows_a] == [[r[c] for c in same] for r in rows_b]


# ----------------------------------------------------------------------------- two processes
def test_two_gloo_processes_equal_one_process(tmp_path, fmnist):
    from attnlab.train.launch import launch_local

    common = dict(epochs=1, batch_size=16, augment=False, drop_path=0.0, lr=2e-3, warmup_epochs=0)
    one = tiny(fmnist, tmp_path / "one", **common)
    two = tiny(fmnist, tmp_path / "two", **common)
    launch_local(two, world_size=2, start_method="fork")
    train(one, log=None)
    a = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["state_dict"]
    torch.manual_seed(0)  # the trainer's initialisation (seed 0)
    init = create_model("revit_micro_patch4_32", in_chans=1)
    moved = 0
    for k in b:
        # Adam divides by sqrt(v): a gradient that is ~0 turns float rounding into up to
        # ~1e-5 of weight, so the bound is a tenth of one step (lr 2e-3); typical diffs are ~1e-8
        assert torch.allclose(a[k], b[k], rtol=0, atol=2e-4), k
        assert (a[k] - b[k]).abs().mean() < 1e-6, k
        if a[k].shape == init.state_dict()[k].shape and not torch.allclose(a[k], init.state_dict()[k]):
            moved += 1
    assert moved > 10  # the weights did train
    _, rows_a = read_rows(tmp_path / "two" / "metrics.csv")
    _, rows_b = read_rows(tmp_path / "one" / "metrics.csv")
    assert float(rows_a[0]["train_loss"]) == pytest.approx(float(rows_b[0]["train_loss"]), rel=1e-4)
    assert rows_a[0]["top1"] == rows_b[0]["top1"]


def test_model_options_and_kept_epochs(tmp_path):
    from attnlab import load_model
    from attnlab.errors import AttnlabError
    from attnlab.train import TrainConfig, train
    from attnlab.train.synthetic import write_fashion_mnist_idx

    data = write_fashion_mnist_idx(tmp_path / "d", n_train=32, n_test=16)
    cfg = TrainConfig(model="revit_micro_patch4_32", data_dir=str(data), epochs=2, batch_size=16, augment=False,
                      model_options="alpha=0.25,learn_alpha=false", keep_epochs="1", out=str(tmp_path / "run"),
                      progress="off")
    train(cfg.validate(), log=lambda m: None)
    model, spec = load_model(tmp_path / "run" / "epoch_1.pt")
    assert spec.options["alpha"] == 0.25 and spec.options["learn_alpha"] is False
    assert float(model.alpha) == 0.25 and not (tmp_path / "run" / "epoch_2.pt").exists()
    assert spec.provenance["epochs"] == 1
    with pytest.raises(AttnlabError, match="key=value"):
        TrainConfig(model="vit_micro_patch4_32", model_options="alpha").validate()
    with pytest.raises(AttnlabError, match="keep_epochs"):
        TrainConfig(model="vit_micro_patch4_32", keep_epochs="x").validate()
    assert TrainConfig(model="m", epochs=3, keep_epochs="all").kept_epochs() == {1, 2, 3}
