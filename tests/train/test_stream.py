"""Streamed training data (`--stream`, `--workers`): the choice, the sampler, per-sample seeds,
exact resume after SIGKILL with two workers, and the data wait counted in images_per_s.

The data is a folder of JPEG/PNG files (an image folder in tmp_path), so batches really are
decoded from disk: real Fashion-MNIST images when the dataset is installed, else the
generated stand-ins of attnlab.train.synthetic (the checks do not depend on which).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from attnlab.cli import app
from sigkill import kill_mid_epoch
from attnlab.errors import AttnlabError
from attnlab.spec import InputSpec
from attnlab.train import TrainConfig, train
from attnlab.train.loader import (EpochBatchSampler, SeededSamples, memory_budget_bytes, physical_memory_bytes,
                                  plan_data, stream_transform, tensor_bytes)
from attnlab.train.state import epoch_permutation

runner = CliRunner()
SPEC32 = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


def fashion_images(n: int, seed: int):
    """n 28x28 grey images and labels: real Fashion-MNIST if installed, else generated ones."""
    from attnlab.data.fashion_mnist import load_fashion_mnist
    from attnlab.train.synthetic import class_images

    try:
        ds = load_fashion_mnist(split="train", subset=n)
        return ds.images, ds.targets
    except AttnlabError:
        labels = np.arange(n) % 10
        return class_images(labels, np.random.default_rng(seed)), labels


def write_folder(root: Path, n_train: int = 200, n_test: int = 40, seed: int = 0) -> Path:
    """``root/<split>/<class>/<i>.(jpg|png)``: JPEG training images, PNG test images."""
    images, labels = fashion_images(n_train + n_test, seed)
    for i, (img, k) in enumerate(zip(images, labels)):
        split, ext = ("train", "jpg") if i < n_train else ("test", "png")
        folder = root / split / f"class{int(k)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(img, dtype=np.uint8), "L").save(folder / f"{i:04d}.{ext}")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("folder"))


def streamed(data: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(model="vit_micro_patch4_32", dataset="imagefolder", data_dir=str(data), out=str(out), epochs=2,
                  batch_size=8, threads=1, progress="off", warmup_epochs=1, save_every=0, data="stream", workers=2,
                  eval_batch_size=16)
    values.update(overrides)
    return TrainConfig.from_mapping(values)


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def rows(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- the choice
def test_memory_or_stream_is_chosen_from_the_budget():
    imagenet = InputSpec(size=(224, 224), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert tensor_bytes(1_281_167, imagenet) == 1_281_167 * 3 * 224 * 224  # ImageNet-1k at 224 px: ~193 GB
    budget = 32 * 2**30
    plan = plan_data("auto", 1_281_167, 50_000, imagenet, budget)
    assert (plan.train_in_memory, plan.eval_in_memory, plan.mode) == (False, True, "stream")  # val: 7.5 GB fits
    small = plan_data("auto", 60_000, 10_000, InputSpec((32, 32), 1, (0.5,), (0.5,)), budget)
    assert (small.train_in_memory, small.eval_in_memory, small.mode) == (True, True, "memory")
    # both splits must fit together; an eval split over the budget streams too
    tight = tensor_bytes(1000, SPEC32)
    assert plan_data("auto", 600, 600, SPEC32, tight).mode == "stream"
    assert plan_data("auto", 500, 500, SPEC32, tight).mode == "memory"
    assert not plan_data("stream", 10, 2000, SPEC32, tight).eval_in_memory
    assert plan_data("stream", 10, 10, SPEC32, tight).eval_in_memory
    forced = plan_data("memory", 10**7, 10**6, SPEC32, 0)
    assert forced.train_in_memory and forced.eval_in_memory
    assert memory_budget_bytes(1.5) == int(1.5 * 2**30)
    ram = physical_memory_bytes()
    assert ram is None or memory_budget_bytes() == int(ram * 0.25)


def test_config_and_cli_options_validate():
    with pytest.raises(AttnlabError, match="data must be one of auto, memory, stream"):
        TrainConfig(model="m", data="disk").validate()
    with pytest.raises(AttnlabError, match="workers must be"):
        TrainConfig(model="m", workers=-1).validate()
    with pytest.raises(AttnlabError, match="amp must be one of auto, bf16, fp16 or off"):
        TrainConfig(model="m", amp_dtype="int8").validate()
    cfg = TrainConfig.from_mapping({"model": "m", "amp": "fp16"})  # YAML amp: fp16
    assert (cfg.amp, cfg.amp_dtype) == (True, "fp16")
    assert TrainConfig.from_mapping({"model": "m", "amp": False}).amp is False
    assert TrainConfig().amp is True and TrainConfig().data == "auto"  # the old defaults


# ----------------------------------------------------------------------------- sampler and seeds
def test_sampler_follows_the_epoch_order_and_starts_anywhere():
    s = EpochBatchSampler(n=50, batch_size=8, steps_per_epoch=6, seed=3)
    s.set_epoch(2)
    batches = list(s)
    perm = epoch_permutation(3, 2, 50)
    assert len(batches) == len(s) == 6
    assert [k[0] for b in batches for k in b] == perm[:48].tolist()  # the in-memory path's order
    assert all(k[1] == 2 for b in batches for k in b) and [k[2] for k in batches[1]] == list(range(8, 16))
    s.set_epoch(2, start_step=4)
    assert list(s) == batches[4:] and len(s) == 2
    s.set_epoch(3)
    assert [k[0] for k in next(iter(s))] != [k[0] for k in batches[0]]
    # two ranks split each global batch between them, strided
    r0 = EpochBatchSampler(50, 8, 6, 3, rank=0, world_size=2)
    r1 = EpochBatchSampler(50, 8, 6, 3, rank=1, world_size=2)
    for r in (r0, r1):
        r.set_epoch(2)
    for full, a, b in zip(batches, r0, r1):
        assert a == full[0::2] and b == full[1::2]


def test_a_sample_augments_the_same_whatever_order_it_is_made_in(folder):
    from attnlab.data import load_dataset

    ds = load_dataset("imagefolder", "train", data_dir=folder)
    cfg = TrainConfig(model="m", randaugment="rand-m9-n2", random_erasing=0.5)
    samples = SeededSamples(ds, stream_transform(cfg, SPEC32), seed=7)
    keys = [(i, 0, i) for i in range(12)]
    first = [samples[k][0] for k in keys]
    torch.manual_seed(123)  # the state of the process's RNGs does not matter
    again = [samples[k][0] for k in reversed(keys)][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert first[0].shape == (3, 32, 32)
    assert not torch.equal(samples[(0, 0, 0)][0], samples[(0, 1, 0)][0])  # another epoch: another augmentation


# ----------------------------------------------------------------------------- whole runs
def test_workers_do_not_change_the_weights(folder, tmp_path):
    """The same run with 0 and 2 workers, RandAugment, random erasing and mixup on: the same weights."""
    extra = dict(epochs=1, recipe="long", random_erasing=0.25)
    train(streamed(folder, tmp_path / "w0", workers=0, **extra), log=None)
    train(streamed(folder, tmp_path / "w2", workers=2, **extra), log=None)
    assert_same_weights(weights(tmp_path / "w0" / "last.pt"), weights(tmp_path / "w2" / "last.pt"))
    state = torch.load(tmp_path / "w2" / "resume.pt", weights_only=True)
    assert state["config"]["data"] == "stream" and state["config"]["workers"] == 2


def cli_args(cfg: TrainConfig) -> list:
    return ["train", "--model", cfg.model, "--dataset", cfg.dataset, "--data-dir", cfg.data_dir, "--out", cfg.out,
            "--epochs", str(cfg.epochs), "--batch-size", str(cfg.batch_size), "--threads", str(cfg.threads),
            "--progress", "off", "--warmup-epochs", str(cfg.warmup_epochs), "--save-every", str(cfg.save_every),
            "--stream", "--workers", str(cfg.workers)]


def test_streamed_resume_after_sigkill_is_bit_identical(folder, tmp_path):
    """Killed mid-epoch (two workers decoding JPEGs), resumed: exactly the weights of an uninterrupted run."""
    extra = ["--ema", "--drop-path", "0.1", "--recipe", "long", "--random-erasing", "0.25"]
    killed = streamed(folder, tmp_path / "killed", save_every=3)
    whole = streamed(folder, tmp_path / "whole", save_every=3)

    state = kill_mid_epoch(cli_args(killed) + extra, tmp_path / "killed", min_step=6, timeout=180)
    assert not state["finished"] and 0 < state["step"] < state["steps_per_epoch"] == 25  # really mid-epoch

    r = runner.invoke(app, ["train", "--out", str(tmp_path / "killed"), "--resume", "--progress", "off",
                            "--workers", "1"])  # the worker count may change on resume
    assert r.exit_code == 0, r.output
    assert "resuming at epoch 1, step" in r.stdout and "streamed from disk by 1 worker" in r.stdout
    r = runner.invoke(app, cli_args(whole) + extra)
    assert r.exit_code == 0, r.output

    for name in ("last.pt", "best.pt"):
        assert_same_weights(weights(tmp_path / "killed" / name), weights(tmp_path / "whole" / name))
    sa = torch.load(tmp_path / "killed" / "resume.pt", weights_only=True)
    sb = torch.load(tmp_path / "whole" / "resume.pt", weights_only=True)
    assert_same_weights(sa["model"], sb["model"])
    assert_same_weights(sa["ema"], sb["ema"])
    same = ["epoch", "train_loss", "test_loss", "top1", "top5", "lr"]
    assert [[r[c] for c in same] for r in rows(tmp_path / "killed" / "metrics.csv")] == \
        [[r[c] for c in same] for r in rows(tmp_path / "whole" / "metrics.csv")]


def test_resume_refuses_another_data_mode(folder, tmp_path, monkeypatch):
    from attnlab.train.loop import NonFiniteLossError, Trainer

    real = Trainer.forward_loss

    def nan_in_epoch_two(self, x, target):
        logits, loss = real(self, x, target)
        return logits, loss * float("nan") if self.global_step >= self.steps_per_epoch else loss

    monkeypatch.setattr(Trainer, "forward_loss", nan_in_epoch_two)
    cfg = streamed(folder, tmp_path / "r", workers=0, epochs=2)
    with pytest.raises(NonFiniteLossError):
        train(cfg, log=None)
    monkeypatch.setattr(Trainer, "forward_loss", real)
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--resume", "--data-in-memory"])
    assert r.exit_code == 2 and "data was 'stream' there, 'memory' here" in r.stderr
    with pytest.raises(AttnlabError, match="different data"):
        train(TrainConfig(**{**cfg.to_dict(), "data": "memory"}), resume=True, log=None)
    lines = []  # data: auto resumes as the run chose (stream), not as the budget would choose now
    result = train(TrainConfig(**{**cfg.to_dict(), "data": "auto"}), resume=True, log=lines.append)
    assert [int(row["epoch"]) for row in result.history] == [1, 2]
    assert any("streamed from disk" in line for line in lines)


def test_streamed_evaluation_gives_the_in_memory_numbers(folder, tmp_path):
    """An eval split over the memory budget is streamed through eval_transform: the same numbers."""
    train(streamed(folder, tmp_path / "mem", epochs=1, workers=0, augment=False), log=None)
    lines = []
    train(streamed(folder, tmp_path / "str", epochs=1, workers=0, augment=False, memory_budget_gb=0.0),
          log=lines.append)
    assert any(line.endswith("evaluation streamed") for line in lines)
    a, b = rows(tmp_path / "mem" / "metrics.csv"), rows(tmp_path / "str" / "metrics.csv")
    assert [(r["test_loss"], r["top1"], r["top5"]) for r in a] == [(r["test_loss"], r["top1"], r["top5"]) for r in b]


def test_images_per_s_counts_the_wait_for_data(folder, tmp_path, monkeypatch):
    """Each image takes 50 ms to load: throughput can be no more than 20 images/s."""
    real = SeededSamples.__getitem__

    def slow(self, key):
        time.sleep(0.05)
        return real(self, key)

    monkeypatch.setattr(SeededSamples, "__getitem__", slow)
    cfg = streamed(folder, tmp_path / "slow", epochs=1, workers=0, subset=48, augment=False)
    result = train(cfg, log=None)
    ips = result.history[0]["images_per_s"]
    assert 0 < ips < 20, ips


def test_cli_stream_options_and_bad_amp(folder, tmp_path):
    out = tmp_path / "cli"
    r = runner.invoke(app, ["train", "--model", "vit_micro_patch4_32", "--dataset", "imagefolder", "--data-dir",
                            str(folder), "--out", str(out), "--epochs", "1", "--batch-size", "16", "--subset", "32",
                            "--stream", "--workers", "0", "--no-amp", "--progress", "off", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "streamed from disk by the main process" in r.stdout
    cfg = torch.load(out / "resume.pt", weights_only=True)["config"]
    assert (cfg["data"], cfg["workers"], cfg["amp"]) == ("stream", 0, False)
    for args, says in ((["--amp", "bf16"], "--amp bf16 needs a CUDA device and this run is on cpu"),
                       (["--amp", "int8"], "amp must be one of auto, bf16, fp16 or off, not 'int8'"),
                       (["--amp", "fp16", "--no-amp"], "contradict")):
        bad = tmp_path / f"bad{len(args)}{args[-1]}"
        r = runner.invoke(app, ["train", "--model", "vit_micro_patch4_32", "--dataset", "imagefolder", "--data-dir",
                                str(folder), "--out", str(bad), "--device", "cpu", *args])
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and says in lines[0], (args, r.stderr)
        assert not bad.exists()


def test_two_gloo_processes_stream_the_same_images_as_one(folder, tmp_path):
    """Each sample's augmentation depends on its place in the global order, not on the process count:
    two DDP processes streaming (flips and crops on) train the weights of one (up to float rounding)."""
    from attnlab.train.launch import launch_local

    common = dict(epochs=1, batch_size=16, workers=1, lr=2e-3, warmup_epochs=0, drop_path=0.0)
    launch_local(streamed(folder, tmp_path / "two", **common), world_size=2, start_method="fork")
    train(streamed(folder, tmp_path / "one", **common), log=None)
    a, b = weights(tmp_path / "two" / "last.pt"), weights(tmp_path / "one" / "last.pt")
    # float rounding (Adam turns it into up to ~1e-5 of weight where a gradient is ~0) leaves mean
    # differences of ~1.5e-6 here, with or without augmentation; per-process augmentation gives ~5e-3
    for k in b:
        assert torch.allclose(a[k], b[k], rtol=0, atol=2e-4), k
        assert (a[k] - b[k]).abs().mean() < 1e-5, k
    ra, rb = rows(tmp_path / "two" / "metrics.csv"), rows(tmp_path / "one" / "metrics.csv")
    assert float(ra[0]["train_loss"]) == pytest.approx(float(rb[0]["train_loss"]), rel=1e-4)
