"""The training loop: small ViTs from scratch, resumable to the bit, on one or many processes.

``train(config)`` fills the options left to the recipe (``attnlab.train.recipe``), builds
the model for the dataset (channels, classes), holds the splits in memory or streams them
from disk (``attnlab.train.loader``), and trains with AdamW (``attnlab.train.optim``),
label smoothing, RandAugment / crop / flip (on tensors in memory, timm's per-image
pipeline when streamed), mixup + cutmix (timm), drop-path, gradient clipping, mixed
precision and optional torch.compile on GPUs (``attnlab.train.accel``) and an optional EMA.

What it writes into the run folder (rank 0 only):

    last.pt, best.pt   self-describing checkpoints (attnlab.save_checkpoint), after every epoch
    metrics.csv        one row per epoch: epoch, train_loss, test_loss, top1, top5, lr, alpha,
                       images_per_s, seconds
    resume.pt          everything an exact resume needs, every ``save_every`` steps and at
                       every epoch end (resume.json: its counters, for people and scripts)

All files are replaced atomically, so a run killed at any moment leaves the previous
complete versions. ``train(config, resume=True)`` continues from ``resume.pt`` and ends
with the same weights, bit for bit, as a run that was never interrupted (same device).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from ..data.workers import default_workers
from ..errors import AttnlabError, plural
from .accel import amp_name, autocast_dtype, autocast_forward, compile_model, fused_adamw, grad_scaler
from .config import AUTO, TrainConfig
from .data import input_spec_for, load_split, to_tensor_data
from .distributed import init_distributed
from .evaluate import EvalResult, evaluate_batches
from .optim import build_optimizer, build_scheduler
from .plan import build_model, load_eval_split, plan_batches
from .progress import StepProgress
from .recipe import apply_recipe
from .loader import (MemoryBatches, StreamBatches, memory_budget_bytes, memory_eval_batches, plan_data,
                     stream_eval_batches, stream_transform)
from .records import EpochTally, TrainResult, alpha_value, epoch_line, epoch_row, metrics_csv
from .run_folder import check_new_run, check_same_run, resumable_state
from .state import atomic_write_text, capture_rng, epoch_permutation, restore_rng, save_state, seed_all

Log = Optional[Callable[[str], None]]


class NonFiniteLossError(AttnlabError):
    """The loss (or the gradient) stopped being a finite number; the run was stopped."""


class Trainer:
    """One training run; :func:`train` is the way to use it: ``setup()`` then ``fit()``."""

    def __init__(self, config: TrainConfig, resume: bool = False, log: Log = print) -> None:
        self.config = config.validate()
        self.resume = resume
        self.log_fn = log

    def log(self, line: str) -> None:
        if self.log_fn is not None and self.dist.is_main:
            self.log_fn(line)

    # -------------------------------------------------------------- setup: all checks, nothing written
    def setup(self) -> None:
        """Everything that can fail on bad input happens here, before anything is written."""
        cfg = self.config
        out = cfg.out_dir
        if self.resume:
            self.state: Optional[Dict[str, Any]] = resumable_state(out)
        else:
            check_new_run(out)
            self.state = None
        self.dist = init_distributed(cfg.device)
        self.device = self.dist.device

        train_ds = load_split(cfg.dataset, "train", cfg.data_dir, cfg.download, cfg.subset)
        test_ds = load_eval_split(cfg)
        if list(test_ds.classes) != list(train_ds.classes):
            raise AttnlabError(f"{train_ds.name}: the train and {cfg.eval_split} splits name different classes")
        self.classes = list(train_ds.classes)
        self.dataset_name = str(train_ds.name)
        channels = int(train_ds.channels)

        self.config, self.recipe = apply_recipe(cfg, len(train_ds))
        saved = self.state.get("config", {}) if self.state is not None else {}
        if self.config.data == AUTO and saved.get("data") in ("memory", "stream"):
            self.config = dataclasses.replace(self.config, data=saved["data"])  # resume as it was chosen
        cfg = self.config.validate()
        if self.state is not None:
            check_same_run(cfg, saved, out)

        seed_all(cfg.seed)
        self.model = build_model(cfg, channels, self.classes, self.dataset_name)
        self.spec = input_spec_for(self.model, self.dataset_name, channels)
        self.train_images, self.eval_images = len(train_ds), len(test_ds)
        if self.train_images == 0 or self.eval_images == 0:
            raise AttnlabError(f"{self.dataset_name}: the train or {cfg.eval_split} split holds no images")
        self._setup_data(train_ds, test_ds)
        cfg = self.config

        plan = plan_batches(self.train_images, cfg.batch_size, self.dist.world_size, cfg.mixing)
        self.batch_size, self.steps_per_epoch, self.note = plan.batch_size, plan.steps_per_epoch, plan.note
        self.mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(self.spec.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    def _setup_data(self, train_ds: Any, test_ds: Any) -> None:
        """Hold each split in memory or stream it (the config records which), and the precision."""
        cfg = self.config
        plan = self.data_plan = plan_data(cfg.data, self.train_images, self.eval_images, self.spec,
                                          memory_budget_bytes(cfg.memory_budget_gb))
        self.config = dataclasses.replace(cfg, data=plan.mode)
        self.workers = cfg.workers if cfg.workers is not None else default_workers()
        self.autocast_dtype: Optional[torch.dtype] = autocast_dtype(cfg.amp, cfg.amp_dtype, self.device)
        self.train_ds, self.test_ds = train_ds, test_ds
        self.train_data = to_tensor_data(train_ds, self.spec) if plan.train_in_memory else None
        self.test_data = to_tensor_data(test_ds, self.spec) if plan.eval_in_memory else None

    def _build_training(self) -> None:
        """Optimizer, schedule, EMA, mixed precision, mixup and the loss, for the planned batches."""
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy
        from timm.utils import ModelEmaV3

        cfg = self.config
        self.model.to(self.device)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            import warnings

            from torch.nn.parallel import DistributedDataParallel as DDP

            # a 1-channel patch embedding's weight grad [D,1,P,P] has equivalent but different strides
            # from DDP's bucket view: a harmless copy, warned about once per process
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.net = compile_model(self.net, cfg.compile)  # run compiled; self.model (plain) is what is saved
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg, fused=fused_adamw(self.device))
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
        self.scaler = grad_scaler(self.device, self.autocast_dtype)

        self.mixup = None
        if cfg.mixing:
            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                               switch_prob=cfg.mixup_switch_prob, mode="batch",
                               label_smoothing=cfg.label_smoothing, num_classes=len(self.classes))
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.generator = torch.Generator()
        self.nonfinite = torch.zeros(1)  # summed over processes, so that all stop together
        where = (self.batch_size, self.steps_per_epoch, cfg.seed, self.dist.rank, self.dist.world_size,
                 self.generator, self.device)
        self.batches: Any = (MemoryBatches(self.train_data, cfg, self.spec, self.mean, self.std, *where)
                             if self.train_data is not None else
                             StreamBatches(self.train_ds, stream_transform(cfg, self.spec), self.workers, *where))

    # -------------------------------------------------------------- resume state
    def _save_state(self, epoch: int, step: int, perm: Optional[torch.Tensor], tally: EpochTally,
                    finished: bool = False) -> None:
        """Write everything an exact resume at (epoch, step) needs, as tensors and plain data."""
        total = tally.summed(self.dist.all_reduce_sum)  # every rank takes part in the sum
        if not self.dist.is_main:
            return
        save_state({
            "config": self.config.to_dict(),
            "epoch": epoch, "step": step, "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
            "world_size": self.dist.world_size, "finished": finished,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
            "perm": perm if perm is not None else torch.empty(0, dtype=torch.int64),
            "rng": capture_rng(self.generator),
            "accum": total.to_dict(),
            "history": [dict(r) for r in self.history],
            "best_top1": self.best_top1, "best_epoch": self.best_epoch,
        }, self.config.out_dir)

    def _restore(self, state: Dict[str, Any]) -> Tuple[int, int, EpochTally]:
        """Load a resume state; returns where to continue (epoch, step) and the epoch's tally so far."""
        if state.get("steps_per_epoch") != self.steps_per_epoch or state.get("batch_size") != self.batch_size:
            raise AttnlabError(f"cannot resume: the saved run had {state.get('steps_per_epoch')} steps of "
                               f"{state.get('batch_size')} images per epoch, this data gives {self.steps_per_epoch} "
                               f"of {self.batch_size} (did the dataset or --subset change?)")
        if state.get("world_size") != self.dist.world_size:
            self.log(f"note: resuming with {self.dist.world_size} process(es); the run used "
                     f"{state.get('world_size')} (training continues, but not bit-identically)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], self.generator)
        self.global_step = int(state["global_step"])
        self.history = [dict(r) for r in state["history"]]
        self.best_top1 = float(state["best_top1"])
        self.best_epoch = int(state["best_epoch"])
        self.resumed_perm = state["perm"]
        tally = EpochTally.from_dict(state["accum"])
        # the saved sums are global: count them once
        return int(state["epoch"]), int(state["step"]), tally if self.dist.is_main else tally.without_sums()

    # -------------------------------------------------------------- evaluation and writing
    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved: the EMA weights when there is an EMA."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self) -> EvalResult:
        """The eval split through :attr:`eval_model`, each process a strided share, counts summed."""
        idx = torch.arange(self.eval_images)[self.dist.rank::self.dist.world_size]
        bs = self.config.eval_batch_size
        source = (memory_eval_batches(self.test_data, idx, bs, self.device, self.mean, self.std)
                  if self.test_data is not None else
                  stream_eval_batches(self.test_ds, self.spec, idx, bs, self.workers, self.device))
        res = evaluate_batches(self.eval_model, source, self.classes, self.device, self.autocast_dtype)
        if self.dist.enabled:
            res = EvalResult.from_counts(self.dist.all_reduce_sum(res.counts_tensor()), self.classes)
        return res

    def _write_epoch(self, row: Dict[str, Any]) -> None:
        from ..checkpoint import save_checkpoint

        out = self.config.out_dir
        epoch = int(row["epoch"])
        atomic_write_text(out / "metrics.csv", metrics_csv(self.history))
        prov = {
            "dataset": self.dataset_name, "epochs": epoch, "seed": self.config.seed,
            "metrics": dict(row), "config": self.config.to_dict(), "recipe": self.recipe.to_dict(),
            "train_images": self.train_images, "eval_split": self.config.eval_split,
            "eval_images": self.eval_images, "weights": "ema" if self.ema is not None else "model",
        }
        names = ["last.pt"] + [f"epoch_{epoch}.pt"] * (epoch in self.config.kept_epochs())
        names += ["best.pt"] * (epoch == self.best_epoch)
        for name in names:
            save_checkpoint(self.eval_model, out / name, classes=self.classes, input_spec=self.spec, provenance=prov)

    # -------------------------------------------------------------- the loop
    def fit(self) -> TrainResult:
        """Train every remaining epoch: a step at a time, then evaluate, write, save the state."""
        self._build_training()
        made_folder = not self.config.out_dir.exists()
        epoch0, step0, tally = self._start()
        try:
            with StepProgress(self.config.progress, self.dist.is_main) as bar:
                for epoch in range(epoch0, self.config.epochs):
                    first = epoch == epoch0
                    tally = tally if first else EpochTally()
                    self._train_epoch(epoch, step0 if first else 0, tally, bar)
                    self._finish_epoch(epoch, tally)
        except BaseException:
            out = self.config.out_dir
            if made_folder and self.dist.is_main and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # stopped before anything was saved: leave no empty run folder behind
            raise
        return TrainResult(self.config.out_dir, self.history, self.best_top1, self.best_epoch, self.steps_per_epoch,
                           self.batch_size, self.dist.rank)

    def _start(self) -> Tuple[int, int, EpochTally]:
        """Where training begins: step 0, or the saved state; then the run folder and the announcement."""
        self.global_step = 0
        self.history: List[Dict[str, Any]] = []
        self.best_top1, self.best_epoch = -1.0, 0
        self.resumed_perm: Optional[torch.Tensor] = None
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        epoch, step, tally = 0, 0, EpochTally()
        if self.state is not None:
            epoch, step, tally = self._restore(self.state)
            self.state = None
        out = self.config.out_dir
        if self.dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if epoch or step:  # rows written after the saved state are replayed
                atomic_write_text(out / "metrics.csv", metrics_csv(self.history))
        self._announce(epoch, step)
        return epoch, step, tally

    def _epoch_order(self, epoch: int, resumed_mid_epoch: bool) -> torch.Tensor:
        """This epoch's data order (seeded); a resume mid-epoch checks it is the saved one."""
        perm = epoch_permutation(self.config.seed, epoch, self.train_images)
        saved = self.resumed_perm
        if resumed_mid_epoch and saved is not None and saved.numel() and not torch.equal(saved, perm):
            raise AttnlabError("cannot resume: this epoch's data order differs from the saved one "
                               "(did the dataset change?)")
        return perm

    def _train_epoch(self, epoch: int, start_step: int, tally: EpochTally, bar: StepProgress) -> None:
        cfg = self.config
        perm = self._epoch_order(epoch, start_step > 0)
        bar.start_epoch(f"{epoch + 1}/{cfg.epochs}", self.steps_per_epoch, start_step)
        self.net.train()
        tally.restart_clock()
        batches = self.batches.epoch(epoch, start_step, perm)
        for step in range(start_step, self.steps_per_epoch):
            self._train_step(epoch, step, batches, tally)
            if bar.enabled:
                bar.update(step + 1, tally.mean_loss, tally.accuracy, tally.images_per_s(self.dist.world_size))
            if cfg.save_every and self.global_step % cfg.save_every == 0 and step + 1 < self.steps_per_epoch:
                tally.lap()
                self._save_state(epoch, step + 1, perm, tally)

    def forward_loss(self, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits and loss of one batch (under autocast on GPUs)."""
        return autocast_forward(self.net, self.criterion, x, target, self.device, self.autocast_dtype)

    def _train_step(self, epoch: int, step: int, batches: Iterator[Any], tally: EpochTally) -> None:
        """One optimizer step on global batch ``step`` (timed from asking for its batch: waiting for
        data counts); stops the run before a non-finite update."""
        t0 = time.perf_counter()
        x, y = next(batches)  # this process's share: augmented, normalised, on the device, RNGs seeded
        target = y
        if self.mixup is not None:
            x, target = self.mixup(x, y)
        self.last_lr = self.optimizer.param_groups[0]["lr"]

        logits, loss = self.forward_loss(x, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        if self.config.clip_grad > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_grad)
        else:
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        loss_value = float(loss.detach())
        self._stop_if_nonfinite(epoch, step, loss_value, float(gnorm))

        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        correct = float((logits.detach().argmax(-1) == y).sum())
        tally.add(loss_value, correct, int(y.shape[0]), time.perf_counter() - t0)

    def _finish_epoch(self, epoch: int, tally: EpochTally) -> None:
        """Evaluate, log, write metrics and checkpoints, and save the state of the next epoch's start."""
        totals = tally.summed(self.dist.all_reduce_sum)
        result = self.evaluate()
        tally.lap()
        row = epoch_row(epoch + 1, totals, result, self.last_lr, alpha_value(self.eval_model), tally.epoch_seconds)
        self.history.append(row)
        if result.top1 > self.best_top1:
            self.best_top1, self.best_epoch = result.top1, epoch + 1
        if self.dist.is_main:
            self._write_epoch(row)
        self.log(epoch_line(row, self.config.epochs))
        self._save_state(epoch + 1, 0, None, EpochTally(), finished=epoch + 1 == self.config.epochs)

    def _announce(self, start_epoch: int, start_step: int) -> None:
        cfg = self.config
        where = f"{self.device}" + (f" x {self.dist.world_size} processes" if self.dist.enabled else "")
        self.log(f"training {cfg.model} on {self.dataset_name}: {self.train_images} train / {self.eval_images} "
                 f"{cfg.eval_split} images, {len(self.classes)} classes, {plural(cfg.epochs, 'epoch')} of "
                 f"{plural(self.steps_per_epoch, 'step')}, batch {self.batch_size}, on {where} -> {cfg.out_dir}")
        self.log(self.recipe.describe())
        gpu = f"; {amp_name(self.autocast_dtype)}" + ", compiled" * cfg.compile if self.device.type == "cuda" else ""
        self.log(self.data_plan.describe(self.workers) + gpu)
        if self.note:
            self.log(f"note: {self.note}")
        if start_epoch or start_step:
            self.log(f"resuming at epoch {start_epoch + 1}, step {start_step} (global step {self.global_step})")

    def _stop_if_nonfinite(self, epoch: int, step: int, loss_value: float, grad_norm: float) -> None:
        """Raise before the update when the loss (or, without a grad scaler, the gradient) is not finite."""
        bad = not math.isfinite(loss_value) or (not self.scaler.is_enabled() and not math.isfinite(grad_norm))
        if self.dist.enabled:  # all processes stop together
            self.nonfinite.fill_(1.0 if bad else 0.0)
            bad = bool(self.dist.all_reduce_sum(self.nonfinite).item() > 0)
        if not bad:
            return
        last = self.config.out_dir / "last.pt"
        kept = (f"the last good checkpoint {last} (epoch {self.history[-1]['epoch']}) is kept"
                if self.history else "no checkpoint was written yet")
        what = f"loss {loss_value}" if not math.isfinite(loss_value) else "gradient norm"
        raise NonFiniteLossError(
            f"non-finite {what} at epoch {epoch + 1}, step {step + 1} (global step {self.global_step + 1}); "
            f"training stopped before that update; {kept}; try a lower --lr or --clip-grad")


def train(config: TrainConfig, resume: bool = False, log: Log = print) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` into ``config.out_dir``; see the module doc.

    Bad input raises :class:`AttnlabError` before anything is written; a diverging run
    raises :class:`NonFiniteLossError` and leaves the last good checkpoint in place.
    """
    trainer = Trainer(config, resume=resume, log=log)
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        trainer.setup()
        return trainer.fit()
    finally:
        if getattr(trainer, "batches", None) is not None:
            trainer.batches.close()  # the streamed path's worker processes
        if config.threads:
            torch.set_num_threads(previous_threads)
        dist = getattr(trainer, "dist", None)
        if dist is not None:
            dist.close()
