"""The training loop: small ViTs from scratch, resumable to the bit, on one or many processes.

``train(config)`` loads both splits into memory (``attnlab.train.data``), builds the
model for the dataset (channels, classes), and trains with AdamW (no weight decay on 1-D
parameters, ReViT's ``a``, position embedding and class token), a per-step warm-up +
cosine schedule, label smoothing, RandAugment / crop / flip on tensors, mixup + cutmix
(timm), drop-path, gradient clipping, mixed precision on GPUs and an optional EMA.

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

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..errors import AttnlabError
from .config import RUNTIME_KEYS, TrainConfig
from .state import STATE_FILE

if TYPE_CHECKING:
    from .evaluate import EvalResult

METRIC_COLUMNS = ["epoch", "train_loss", "test_loss", "top1", "top5", "lr", "alpha", "images_per_s", "seconds"]
RUN_FILES = (STATE_FILE, "last.pt", "best.pt", "metrics.csv")

Log = Optional[Callable[[str], None]]


class NonFiniteLossError(AttnlabError):
    """The loss (or the gradient) stopped being a finite number; the run was stopped."""


@dataclass
class TrainResult:
    """Where a run wrote its files and what it measured."""

    out_dir: Path
    history: List[Dict[str, Any]]
    best_top1: float
    best_epoch: int
    steps_per_epoch: int
    batch_size: int
    rank: int = 0

    @property
    def last_checkpoint(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / "best.pt"


class WarmupCosine:
    """LR multiplier per optimizer step: linear warm-up to 1, then cosine down to ``min_ratio``.

    A plain object with plain attributes, so LambdaLR's state dict stays weights_only-safe.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: decayed weights, and everything timm says must not decay
    (1-D parameters: norms, biases, ReViT's ``a``; plus ``model.no_weight_decay()``)."""
    from timm.optim import param_groups_weight_decay

    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups = param_groups_weight_decay(model, weight_decay=config.weight_decay, no_weight_decay_list=skip)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine; the warm-up is at most a fifth of the run."""
    total = config.epochs * steps_per_epoch
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total // 5)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, config.min_lr / config.lr))


def alpha_text(model: nn.Module) -> str:
    """ReViT's learned ``a`` for the metrics file ('' for models without one)."""
    a = getattr(model, "alpha", None)
    if not isinstance(a, torch.Tensor):
        return ""
    values = [float(v) for v in a.detach().float().flatten().cpu()]
    return ";".join(f"{v:.6f}" for v in values)


def metrics_csv(history: List[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRIC_COLUMNS)
    for row in history:
        w.writerow([_fmt(c, row.get(c, "")) for c in METRIC_COLUMNS])
    return buf.getvalue()


def _fmt(column: str, v: Any) -> str:
    if isinstance(v, str) or v is None:
        return v or ""
    if column == "epoch":
        return str(int(v))
    if column == "lr":
        return f"{v:.6g}"
    if column in ("images_per_s", "seconds"):
        return f"{v:.2f}"
    return f"{v:.6f}"


def config_for_resume(out_dir: Path, explicit: Mapping[str, Any]) -> TrainConfig:
    """The saved config of the run in ``out_dir``, with the explicitly given runtime keys.

    Options that change the numbers (model, lr, epochs...) cannot change on resume: a
    different value is an error rather than a silently different run.
    """
    from .state import load_state

    state = load_state(out_dir)
    cfg = TrainConfig.from_mapping(state["config"], f"{out_dir / STATE_FILE}")
    for key, value in explicit.items():
        if key in RUNTIME_KEYS:
            setattr(cfg, key, value)
        elif getattr(cfg, key) != value:
            raise AttnlabError(f"--resume continues the run in {out_dir} as configured; {key} was "
                               f"{getattr(cfg, key)!r} there, {value!r} here (drop it, or start a new run with "
                               "another --out)")
    cfg.out = str(out_dir)
    return cfg


class Trainer:
    """One training run; :func:`train` is the way to use it."""

    def __init__(self, config: TrainConfig, resume: bool = False, log: Log = print) -> None:
        self.config = config.validate()
        self.resume = resume
        self.log_fn = log

    # -------------------------------------------------------------- small helpers
    def log(self, line: str) -> None:
        if self.log_fn is not None and self.dist.is_main:
            self.log_fn(line)

    def forward_loss(self, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits and loss of one batch (under autocast on GPUs)."""
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                logits = self.net(x)
                loss = self.criterion(logits.float(), target)
        else:
            logits = self.net(x)
            loss = self.criterion(logits, target)
        return logits, loss

    # -------------------------------------------------------------- setup
    def _check_out_dir(self) -> Optional[Dict[str, Any]]:
        from .state import load_state

        out = self.config.out_dir
        if self.resume:
            state = load_state(out)
            if state.get("finished"):
                raise AttnlabError(f"nothing to resume: the run in {out} already finished all "
                                   f"{state['config']['epochs']} epochs")
            saved = state.get("config", {})
            for key, value in self.config.to_dict().items():
                if key not in RUNTIME_KEYS and key in saved and saved[key] != value:
                    raise AttnlabError(f"cannot resume the run in {out} with a different {key} ({saved[key]!r} "
                                       f"there, {value!r} here); resume with its own config or start a new run")
            return state
        if out.exists() and not out.is_dir():
            raise AttnlabError(f"--out {out} is a file, not a folder")
        found = [n for n in RUN_FILES if (out / n).exists()]
        if found:
            raise AttnlabError(f"{out} already holds a training run ({found[0]}); pass --resume to continue it, "
                               "or choose another --out")
        return None

    def setup(self) -> None:
        """Everything that can fail on bad input happens here, before anything is written."""
        from .augment import TensorAugment
        from .data import input_spec_for, load_split, to_tensor_data
        from .distributed import init_distributed
        from .state import seed_all

        cfg = self.config
        self.state = self._check_out_dir()
        self.dist = init_distributed(cfg.device)
        self.device = self.dist.device

        train_ds = load_split(cfg.dataset, "train", cfg.data_dir, cfg.download, cfg.subset)
        test_ds = load_split(cfg.dataset, cfg.eval_split, cfg.data_dir, cfg.download)
        if list(test_ds.classes) != list(train_ds.classes):
            raise AttnlabError(f"{train_ds.name}: the train and {cfg.eval_split} splits name different classes")
        self.classes = list(train_ds.classes)
        self.dataset_name = str(train_ds.name)
        channels = int(train_ds.channels)

        seed_all(cfg.seed)
        self.model = self._build_model(channels)
        self.spec = input_spec_for(self.model, self.dataset_name, channels)
        self.train_data = to_tensor_data(train_ds, self.spec)
        self.test_data = to_tensor_data(test_ds, self.spec)
        if len(self.train_data) == 0 or len(self.test_data) == 0:
            raise AttnlabError(f"{self.dataset_name}: the train or {cfg.eval_split} split holds no images")

        self._plan_batches()
        self.mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(self.spec.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        fill = [int(round(255 * m)) for m in self.spec.mean]
        self.augment = TensorAugment(cfg.randaugment if cfg.augment else None,
                                     cfg.crop_padding if cfg.augment else 0,
                                     cfg.hflip if cfg.augment else 0.0, fill=fill)

    def _build_model(self, channels: int) -> nn.Module:
        from ..errors import ModelNameError
        from ..models import create_model

        cfg = self.config
        try:
            return create_model(cfg.model, in_chans=channels, num_classes=len(self.classes),
                                drop_path_rate=cfg.drop_path, **cfg.parsed_model_options())
        except ModelNameError:
            raise
        except (TypeError, ValueError, AssertionError, RuntimeError) as e:
            first = " ".join(str(e).split())[:200]
            raise AttnlabError(f"cannot build {cfg.model} for {self.dataset_name} ({channels} channels, "
                               f"{len(self.classes)} classes): {first}") from None

    def _plan_batches(self) -> None:
        cfg = self.config
        w = self.dist.world_size
        n = len(self.train_data)
        if cfg.batch_size % w:
            raise AttnlabError(f"batch_size {cfg.batch_size} is the global batch; it must be divisible by the "
                               f"{w} processes")
        batch = min(cfg.batch_size, n - n % w)
        per_rank = batch // w
        if cfg.mixing and per_rank % 2:
            per_rank -= 1  # timm's Mixup pairs images: each process needs an even batch
        if per_rank < 1:
            raise AttnlabError(f"{n} training images cannot make a batch for {w} processes"
                               + (" with mixup/cutmix (needs 2 per process)" if cfg.mixing else ""))
        self.batch_size = per_rank * w
        self.per_rank = per_rank
        self.steps_per_epoch = n // self.batch_size
        if self.batch_size != cfg.batch_size:
            self.note = f"batch size {self.batch_size} (asked {cfg.batch_size}; the training set has {n} images)"
        else:
            self.note = ""

    def _build_training(self) -> None:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy
        from timm.utils import ModelEmaV3

        cfg = self.config
        self.model.to(self.device)
        self.net = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            import warnings

            # a 1-channel patch embedding's weight grad [D,1,P,P] has equivalent but different strides
            # from DDP's bucket view: a harmless copy, warned about once per process
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None

        on_gpu = self.device.type == "cuda"
        self.autocast_dtype: Optional[torch.dtype] = None
        if cfg.amp and on_gpu:
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)

        self.mixup = None
        if cfg.mixing:
            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                               switch_prob=cfg.mixup_switch_prob, mode="batch",
                               label_smoothing=cfg.label_smoothing, num_classes=len(self.classes))
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.generator = torch.Generator()

    # -------------------------------------------------------------- state
    def _state(self, epoch: int, step: int, perm: Optional[torch.Tensor], accum: Dict[str, float],
               finished: bool) -> Dict[str, Any]:
        from .state import capture_rng

        return {
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
            "accum": dict(accum),
            "history": [dict(r) for r in self.history],
            "best_top1": self.best_top1, "best_epoch": self.best_epoch,
        }

    def _global_accum(self, accum: Dict[str, float]) -> Dict[str, float]:
        """This epoch's running sums over all processes (times are rank 0's)."""
        t = torch.tensor([accum["loss_sum"], accum["correct"], accum["seen"]], dtype=torch.float64)
        t = self.dist.all_reduce_sum(t)
        return {**accum, "loss_sum": float(t[0]), "correct": float(t[1]), "seen": float(t[2])}

    def _save_state(self, epoch: int, step: int, perm: Optional[torch.Tensor], accum: Dict[str, float],
                    finished: bool = False) -> None:
        from .state import save_state

        total = self._global_accum(accum)  # every rank takes part in the sum
        if self.dist.is_main:
            save_state(self._state(epoch, step, perm, total, finished), self.config.out_dir)

    def _load_state(self, state: Dict[str, Any]) -> Tuple[int, int, Dict[str, float]]:
        from .state import restore_rng

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
        accum = dict(state["accum"])
        if not self.dist.is_main:  # the saved sums are global: count them once
            accum.update(loss_sum=0.0, correct=0.0, seen=0.0)
        self.resumed_perm = state["perm"]
        return int(state["epoch"]), int(state["step"]), accum

    # -------------------------------------------------------------- evaluation
    def evaluate(self) -> "EvalResult":
        from .evaluate import EvalResult, evaluate_batches

        model = self.eval_model
        idx = torch.arange(len(self.test_data))[self.dist.rank::self.dist.world_size]
        bs = self.config.eval_batch_size

        def batches():
            for i in range(0, len(idx), bs):
                j = idx[i:i + bs]
                x = self.test_data.images[j].to(self.device, non_blocking=True)
                yield self._normalize(x), self.test_data.targets[j]

        res = evaluate_batches(model, batches(), self.classes, self.device, self.autocast_dtype)
        if self.dist.enabled:
            res = EvalResult.from_counts(self.dist.all_reduce_sum(res.counts_tensor()), self.classes)
        return res

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved: the EMA weights when there is an EMA."""
        return self.ema.module if self.ema is not None else self.model

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        from .augment import normalize

        return normalize(x, self.mean, self.std)

    # -------------------------------------------------------------- writing
    def _write_epoch(self, row: Dict[str, Any]) -> None:
        from ..checkpoint import save_checkpoint
        from .state import atomic_write_text

        out = self.config.out_dir
        atomic_write_text(out / "metrics.csv", metrics_csv(self.history))
        prov = {
            "dataset": self.dataset_name, "epochs": int(row["epoch"]), "seed": self.config.seed,
            "metrics": {k: row[k] for k in METRIC_COLUMNS}, "config": self.config.to_dict(),
            "train_images": len(self.train_data), "eval_split": self.config.eval_split,
            "weights": "ema" if self.ema is not None else "model",
        }
        save_checkpoint(self.eval_model, out / "last.pt", classes=self.classes, input_spec=self.spec, provenance=prov)
        if int(row["epoch"]) in self.config.kept_epochs():
            save_checkpoint(self.eval_model, out / f"epoch_{int(row['epoch'])}.pt", classes=self.classes,
                            input_spec=self.spec, provenance=prov)
        if int(row["epoch"]) == self.best_epoch:
            save_checkpoint(self.eval_model, out / "best.pt", classes=self.classes, input_spec=self.spec,
                            provenance=prov)

    # -------------------------------------------------------------- the loop
    def fit(self) -> TrainResult:
        from .distributed import shard
        from .progress import StepProgress
        from .state import atomic_write_text, epoch_permutation, seed_step

        cfg = self.config
        self._build_training()
        self.global_step = 0
        self.history: List[Dict[str, Any]] = []
        self.best_top1, self.best_epoch = -1.0, 0
        start_epoch, start_step = 0, 0
        accum = _fresh_accum()
        self.resumed_perm = None
        if self.state is not None:
            start_epoch, start_step, accum = self._load_state(self.state)
            self.state = None
        out = cfg.out_dir
        if self.dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if start_epoch or start_step:  # rows written after the saved state are replayed
                atomic_write_text(out / "metrics.csv", metrics_csv(self.history))
        self._announce(start_epoch, start_step)

        n = len(self.train_data)
        b, w, rank = self.batch_size, self.dist.world_size, self.dist.rank
        params = [p for p in self.model.parameters() if p.requires_grad]
        nonfinite = torch.zeros(1)
        with StepProgress(cfg.progress, self.dist.is_main) as bar:
            for epoch in range(start_epoch, cfg.epochs):
                perm = epoch_permutation(cfg.seed, epoch, n)
                if start_step and self.resumed_perm is not None and self.resumed_perm.numel():
                    if not torch.equal(self.resumed_perm, perm):
                        raise AttnlabError("cannot resume: this epoch's data order differs from the saved one "
                                           "(did the dataset change?)")
                bar.start_epoch(f"{epoch + 1}/{cfg.epochs}", self.steps_per_epoch, start_step)
                self.net.train()
                t_epoch = time.perf_counter()
                lr_used = self.optimizer.param_groups[0]["lr"]
                for step in range(start_step, self.steps_per_epoch):
                    t_step = time.perf_counter()
                    seed_step(cfg.seed, epoch, step, rank, self.generator)
                    idx = shard(perm[step * b:(step + 1) * b], rank, w)
                    x = self.train_data.images[idx]
                    y = self.train_data.targets[idx]
                    if self.augment.active:
                        x = self.augment(x, self.generator)
                    x = self._normalize(x.to(self.device, non_blocking=True))
                    y = y.to(self.device, non_blocking=True)
                    target = y
                    if self.mixup is not None:
                        x, target = self.mixup(x, y)
                    lr_used = self.optimizer.param_groups[0]["lr"]

                    logits, loss = self.forward_loss(x, target)
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scaler.scale(loss).backward()
                    if self.scaler.is_enabled():
                        self.scaler.unscale_(self.optimizer)
                    if cfg.clip_grad > 0:
                        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                    else:
                        gnorm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
                    loss_value = float(loss.detach())
                    bad = not math.isfinite(loss_value) or (not self.scaler.is_enabled()
                                                            and not math.isfinite(float(gnorm)))
                    if self.dist.enabled:  # all processes stop together
                        nonfinite.fill_(1.0 if bad else 0.0)
                        bad = bool(self.dist.all_reduce_sum(nonfinite).item() > 0)
                    if bad:
                        self._stop_nonfinite(epoch, step, loss_value)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.scheduler.step()
                    self.global_step += 1
                    if self.ema is not None:
                        self.ema.update(self.model, step=self.global_step)

                    bs = int(y.shape[0])
                    accum["loss_sum"] += loss_value * bs
                    accum["correct"] += float((logits.detach().argmax(-1) == y).sum())
                    accum["seen"] += bs
                    accum["train_seconds"] += time.perf_counter() - t_step
                    if bar.enabled:
                        bar.update(step + 1, accum["loss_sum"] / max(1.0, accum["seen"]),
                                   100.0 * accum["correct"] / max(1.0, accum["seen"]),
                                   accum["seen"] * w / max(1e-9, accum["train_seconds"]))
                    if cfg.save_every and self.global_step % cfg.save_every == 0 and step + 1 < self.steps_per_epoch:
                        accum["epoch_seconds"] += time.perf_counter() - t_epoch
                        t_epoch = time.perf_counter()
                        self._save_state(epoch, step + 1, perm, accum)

                totals = self._global_accum(accum)
                result = self.evaluate()
                accum["epoch_seconds"] += time.perf_counter() - t_epoch
                row = {
                    "epoch": epoch + 1,
                    "train_loss": totals["loss_sum"] / max(1.0, totals["seen"]),
                    "test_loss": result.loss, "top1": result.top1, "top5": result.top5,
                    "lr": lr_used, "alpha": alpha_text(self.eval_model),
                    "images_per_s": totals["seen"] / max(1e-9, totals["train_seconds"]),
                    "seconds": accum["epoch_seconds"],
                }
                self.history.append(row)
                if result.top1 > self.best_top1:
                    self.best_top1, self.best_epoch = result.top1, epoch + 1
                if self.dist.is_main:
                    self._write_epoch(row)
                self.log(_epoch_line(row, cfg.epochs))
                start_step = 0
                accum = _fresh_accum()
                self._save_state(epoch + 1, 0, None, accum, finished=epoch + 1 == cfg.epochs)
        return TrainResult(out, self.history, self.best_top1, self.best_epoch, self.steps_per_epoch, self.batch_size,
                           self.dist.rank)

    def _announce(self, start_epoch: int, start_step: int) -> None:
        cfg = self.config
        where = f"{self.device}" + (f" x {self.dist.world_size} processes" if self.dist.enabled else "")
        self.log(f"training {cfg.model} on {self.dataset_name}: {len(self.train_data)} train / {len(self.test_data)} "
                 f"{cfg.eval_split} images, {len(self.classes)} classes, {cfg.epochs} epochs of {self.steps_per_epoch} "
                 f"steps, batch {self.batch_size}, on {where} -> {cfg.out_dir}")
        if self.note:
            self.log(f"note: {self.note}")
        if start_epoch or start_step:
            self.log(f"resuming at epoch {start_epoch + 1}, step {start_step} (global step {self.global_step})")

    def _stop_nonfinite(self, epoch: int, step: int, loss_value: float) -> None:
        last = self.config.out_dir / "last.pt"
        kept = (f"the last good checkpoint {last} (epoch {self.history[-1]['epoch']}) is kept"
                if self.history else "no checkpoint was written yet")
        what = f"loss {loss_value}" if not math.isfinite(loss_value) else "gradient norm"
        raise NonFiniteLossError(
            f"non-finite {what} at epoch {epoch + 1}, step {step + 1} (global step {self.global_step + 1}); "
            f"training stopped before that update; {kept}; try a lower --lr or --clip-grad")


def _fresh_accum() -> Dict[str, float]:
    return {"loss_sum": 0.0, "correct": 0.0, "seen": 0.0, "train_seconds": 0.0, "epoch_seconds": 0.0}


def _epoch_line(row: Mapping[str, Any], epochs: int) -> str:
    alpha = f"  a {row['alpha']}" if row.get("alpha") else ""
    return (f"epoch {int(row['epoch'])}/{epochs}  train_loss {row['train_loss']:.4f}  test_loss {row['test_loss']:.4f}  "
            f"top1 {row['top1']:.2f}%  top5 {row['top5']:.2f}%  lr {row['lr']:.3g}{alpha}  "
            f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f} s")


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
        if config.threads:
            torch.set_num_threads(previous_threads)
        dist = getattr(trainer, "dist", None)
        if dist is not None:
            dist.close()
