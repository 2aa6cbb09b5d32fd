"""The training recipe (short runs without long-run regularisation) and --eval-subset."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnlab.checkpoint import load_model
from attnlab.cli import app
from attnlab.train import TrainConfig, resolve_config
from attnlab.train.evaluate import evaluate_checkpoint
from attnlab.train.loop import NonFiniteLossError, Trainer, train
from attnlab.train.recipe import SHORT_RUN_STEPS, apply_recipe, planned_steps
from attnlab.train.synthetic import write_fashion_mnist_idx

runner = CliRunner()
LONG_RUN_OFF = dict(mixup=0.0, cutmix=0.0, randaugment=None, label_smoothing=0.0, drop_path=0.0)


def resolved(images: int, **flags):
    """The config a run on ``images`` training images gets from these command-line flags."""
    return apply_recipe(resolve_config(None, {"model": "vit_micro_patch4_32", **flags}), images)


def settings(cfg: TrainConfig) -> dict:
    return {k: getattr(cfg, k) for k in LONG_RUN_OFF}


def test_short_run_switches_long_run_regularisation_off():
    # the reported run: --epochs 1 --subset 5000 (batch 128): 39 steps
    cfg, choice = resolved(5000, epochs=1, seed=0)
    assert (choice.name, choice.steps, cfg.recipe) == ("short", 39, "short")
    assert settings(cfg) == LONG_RUN_OFF and not cfg.mixing
    assert (cfg.crop_padding, cfg.hflip, cfg.augment) == (4, 0.5, True)  # flips and crops kept
    assert choice.describe().startswith(f"recipe: short (39 steps < {SHORT_RUN_STEPS}): no mixup/cutmix/RandAugment")


def test_long_run_keeps_the_regularisation():
    cfg, choice = resolved(60000)  # 50 epochs x 468 steps
    assert (choice.name, choice.steps) == ("long", 50 * 468)
    assert settings(cfg) == dict(mixup=0.8, cutmix=1.0, randaugment="rand-m9-n2", label_smoothing=0.1, drop_path=0.1)
    assert cfg.mixing and choice.describe().startswith(f"recipe: long ({50 * 468} steps >= {SHORT_RUN_STEPS})")


def test_threshold_counts_optimizer_steps():
    below = TrainConfig(model="m", epochs=1, batch_size=10)
    assert planned_steps(below, 19999) == SHORT_RUN_STEPS - 1 and apply_recipe(below, 19999)[1].name == "short"
    assert apply_recipe(below, 20000)[1].name == "long"


def test_explicit_options_win_over_the_recipe(tmp_path):
    cfg, choice = resolved(5000, epochs=1, label_smoothing=0.1)
    assert cfg.label_smoothing == 0.1 and cfg.mixup == 0.0 and cfg.drop_path == 0.0
    assert choice.user_set == ("label_smoothing",) and "your own label_smoothing kept" in choice.describe()
    cfg, _ = resolved(5000, epochs=1, recipe="long")  # asked for: long even for a short run
    assert cfg.mixup == 0.8 and cfg.randaugment == "rand-m9-n2"
    cfg, _ = resolved(60000, recipe="short", mixup=0.2)
    assert cfg.mixup == 0.2 and cfg.cutmix == 0.0 and cfg.label_smoothing == 0.0
    cfg_file = tmp_path / "c.yaml"  # an explicit "off" in a config file stays off in a long run
    cfg_file.write_text("model: vit_micro_patch4_32\nrandaugment: none\ndrop_path: 0.05\n")
    cfg, _ = apply_recipe(resolve_config(cfg_file, {}), 60000)
    assert cfg.randaugment is None and cfg.drop_path == 0.05 and cfg.mixup == 0.8
    filled, _ = resolved(5000, epochs=1)
    assert apply_recipe(filled, 60000)[0] == filled  # a resolved config resolves to itself
    with pytest.raises(Exception, match="recipe must be one of auto, short, long"):
        TrainConfig(model="m", recipe="medium").validate()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fashion_mnist_idx(tmp_path_factory.mktemp("fm"), n_train=32, n_test=24, seed=4)


def test_cli_run_prints_and_records_recipe_and_eval_subset(data, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--model", "vit_micro_patch4_32", "--data-dir", str(data), "--out", str(out),
                            "--epochs", "1", "--batch-size", "16", "--threads", "1", "--progress", "off",
                            "--eval-subset", "10", "--label-smoothing", "0.1"])
    assert r.exit_code == 0, r.output
    assert "32 train / 10 test images" in r.stdout
    assert f"recipe: short (2 steps < {SHORT_RUN_STEPS}): no mixup/cutmix/RandAugment" in r.stdout
    _, spec = load_model(out / "last.pt")
    prov = spec.provenance
    assert prov["recipe"]["name"] == "short" and prov["recipe"]["steps"] == 2 and prov["eval_images"] == 10
    assert prov["config"]["recipe"] == "short" and prov["config"]["eval_subset"] == 10
    assert prov["config"]["label_smoothing"] == 0.1 and prov["config"]["mixup"] == 0.0
    res, _ = evaluate_checkpoint(out / "last.pt", "fashion-mnist", data_dir=data, device="cpu", num_images=10)
    assert res.n == 10 and res.top1 == pytest.approx(prov["metrics"]["top1"], abs=1e-4)
    help_text = runner.invoke(app, ["train", "--help"]).stdout
    assert "--eval-subset" in help_text and "--recipe" in help_text


def test_eval_subset_larger_than_the_split_is_one_line(data, tmp_path):
    r = runner.invoke(app, ["train", "--model", "vit_micro_patch4_32", "--data-dir", str(data),
                            "--out", str(tmp_path / "o"), "--eval-subset", "25", "--progress", "off"])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        "error: eval_subset 25 is more than the 24 images of fashion-mnist/test; pass --eval-subset 24 or fewer"]
    assert not (tmp_path / "o").exists()


def test_auto_recipe_run_resumes_with_its_own_config(data, tmp_path, monkeypatch):
    """The saved config is the resolved one; resuming with the original (auto) config still matches it."""
    cfg = TrainConfig(model="vit_micro_patch4_32", data_dir=str(data), out=str(tmp_path / "r"), epochs=2,
                      batch_size=16, threads=1, progress="off", save_every=0)
    real = Trainer.forward_loss

    def nan_in_epoch_two(self, x, target):
        logits, loss = real(self, x, target)
        return logits, loss * float("nan") if self.global_step >= self.steps_per_epoch else loss

    monkeypatch.setattr(Trainer, "forward_loss", nan_in_epoch_two)
    with pytest.raises(NonFiniteLossError):
        train(TrainConfig(**cfg.to_dict()), log=None)
    monkeypatch.setattr(Trainer, "forward_loss", real)
    with pytest.raises(Exception, match="different label_smoothing"):  # the recipe's 0 was saved
        train(TrainConfig(**{**cfg.to_dict(), "label_smoothing": 0.1}), resume=True, log=None)
    lines = []
    result = train(TrainConfig(**cfg.to_dict()), resume=True, log=lines.append)
    assert [int(row["epoch"]) for row in result.history] == [1, 2]
    assert any(line.startswith("resuming at epoch 2") for line in lines)
