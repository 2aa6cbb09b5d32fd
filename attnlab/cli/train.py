"""``attnlab train``: train a ViT / ReViT / CB model from scratch on a dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from ..train.recipe import SHORT_RUN_STEPS
from .common import fail, user_errors

_RECIPE = "Training recipe"
_AUG = "Augmentation"
_SPEED = "Data loading and GPU"
_OFF = ("off", "false", "no", "none", "0")


@user_errors
def train(
    model: Annotated[Optional[str], typer.Option("--model", help="Model name (see `attnlab models`), e.g. revit_micro_patch4_32.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name (fashion-mnist, cifar10, ...); default fashion-mnist.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder holding the dataset in its official layout.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Number of epochs (default 50).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Global batch size (default 128).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default 1e-3).")] = None,
    subset: Annotated[Optional[int], typer.Option("--subset", help="Train on the first N training images.")] = None,
    eval_split: Annotated[Optional[str], typer.Option("--eval-split", help="The split evaluated after each epoch (default test; an image folder's val, say).")] = None,
    eval_subset: Annotated[Optional[int], typer.Option("--eval-subset", help="Test images evaluated after each epoch: the first N (default: all).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (default 0).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda (default auto).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<model>_<dataset>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file with any of these options (flags override it).")] = None,
    model_options: Annotated[Optional[str], typer.Option("--model-options", help="Extra model options, e.g. alpha=0.25,learn_alpha=false or cb_placement=block.")] = None,
    keep_epochs: Annotated[Optional[str], typer.Option("--keep-epochs", help="Also keep epoch_<k>.pt after these epochs: 1,2,4 or all.")] = None,
    recipe: Annotated[Optional[str], typer.Option("--recipe", help=f"Values for label smoothing, drop-path, RandAugment, mixup and cutmix where you give none: long (0.1, 0.1, rand-m9-n2, 0.8, 1.0), short (all off; crops and flips kept), or auto (default: short below {SHORT_RUN_STEPS} optimizer steps, i.e. epochs x (train images // batch size), else long). Options you give always win.", rich_help_panel=_RECIPE)] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="AdamW weight decay (default 0.05).", rich_help_panel=_RECIPE)] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option("--warmup-epochs", help="Linear warm-up epochs (default 5).", rich_help_panel=_RECIPE)] = None,
    label_smoothing: Annotated[Optional[float], typer.Option("--label-smoothing", help="Default: the recipe's (long 0.1, short 0).", rich_help_panel=_RECIPE)] = None,
    drop_path: Annotated[Optional[float], typer.Option("--drop-path", help="Stochastic depth rate (default: the recipe's, long 0.1, short 0).", rich_help_panel=_RECIPE)] = None,
    clip_grad: Annotated[Optional[float], typer.Option("--clip-grad", help="Max gradient norm, 0 = off (default 1.0).", rich_help_panel=_RECIPE)] = None,
    ema: Annotated[Optional[bool], typer.Option("--ema/--no-ema", help="Keep (and evaluate, save) an EMA of the weights.", rich_help_panel=_RECIPE, show_default=False)] = None,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", help="--no-augment switches every augmentation off.", rich_help_panel=_AUG, show_default=False)] = None,
    randaugment: Annotated[Optional[str], typer.Option("--randaugment", help="timm-style rand-m9-n2, or none (default: the recipe's, long rand-m9-n2, short none).", rich_help_panel=_AUG)] = None,
    crop_padding: Annotated[Optional[int], typer.Option("--crop-padding", help="Random-crop padding in pixels, 0 = off (default 4).", rich_help_panel=_AUG)] = None,
    hflip: Annotated[Optional[float], typer.Option("--hflip", help="Horizontal flip probability (default 0.5).", rich_help_panel=_AUG)] = None,
    mixup: Annotated[Optional[float], typer.Option("--mixup", help="Mixup alpha, 0 = off (default: the recipe's, long 0.8, short 0).", rich_help_panel=_AUG)] = None,
    cutmix: Annotated[Optional[float], typer.Option("--cutmix", help="CutMix alpha, 0 = off (default: the recipe's, long 1.0, short 0).", rich_help_panel=_AUG)] = None,
    random_erasing: Annotated[Optional[float], typer.Option("--random-erasing", help="Probability of one random-erasing box per image (timm, pixel mode); default 0.", rich_help_panel=_AUG)] = None,
    crop_scale: Annotated[Optional[float], typer.Option("--crop-scale", help="Streamed data: the random-resized crop keeps this much of the image area up to all of it (default 0.08).", rich_help_panel=_AUG)] = None,
    in_memory: Annotated[Optional[bool], typer.Option("--data-in-memory/--stream", help="Hold the training images in memory as uint8 tensors, or stream them from disk through DataLoader workers (default: in memory when they fit --memory-budget-gb).", rich_help_panel=_SPEED, show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes for streamed data (default min(8, CPU count)); 0 = in the main process.", rich_help_panel=_SPEED)] = None,
    memory_budget_gb: Annotated[Optional[float], typer.Option("--memory-budget-gb", help="GiB the in-memory images may take before training streams (default: a quarter of the RAM).", rich_help_panel=_SPEED)] = None,
    amp: Annotated[Optional[str], typer.Option("--amp", metavar="MODE", help="Mixed precision: auto (bf16 on GPUs that have it, else fp16 with loss scaling; off on CPU), bf16, fp16 or off.", rich_help_panel=_SPEED)] = None,
    no_amp: Annotated[bool, typer.Option("--no-amp", help="The same as --amp off.", hidden=True)] = False,
    compile_model: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model (GPU runs; checkpoints stay plain state dicts).", rich_help_panel=_SPEED, show_default=False)] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", help="Write the resume state every K steps (default 50).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch.")] = None,
    progress: Annotated[Optional[str], typer.Option("--progress", help="Progress bar: auto, on or off.")] = None,
) -> None:
    """Train a model from scratch; writes last.pt, best.pt, metrics.csv and a resume state into --out."""
    from ..train.config import explicit_values, resolve_config

    if no_amp and amp is not None and amp.strip().lower() not in _OFF:
        fail(f"--no-amp and --amp {amp} contradict each other; pass one of them")
    mode = "off" if no_amp else (amp.strip().lower() if amp is not None else None)
    amp_flags = {} if mode is None else {"amp": False} if mode in _OFF else {"amp": True, "amp_dtype": mode}
    flags = {
        "model": model, "dataset": dataset, "data_dir": data_dir, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "subset": subset, "eval_split": eval_split, "eval_subset": eval_subset, "recipe": recipe, "seed": seed, "device": device, "out": out, "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs, "label_smoothing": label_smoothing, "drop_path": drop_path,
        "clip_grad": clip_grad, "ema": ema, "augment": augment, "randaugment": randaugment,
        "crop_padding": crop_padding, "hflip": hflip, "mixup": mixup, "cutmix": cutmix, "save_every": save_every,
        "threads": threads, "progress": progress, "model_options": model_options, "keep_epochs": keep_epochs,
        "random_erasing": random_erasing, "crop_scale": crop_scale, "workers": workers,
        "memory_budget_gb": memory_budget_gb, "compile": compile_model,
        "data": None if in_memory is None else "memory" if in_memory else "stream", **amp_flags,
    }
    if resume:
        explicit = explicit_values(config, flags)
        out_dir = Path(explicit.get("out") or resolve_config(config, flags).out_dir)
        from ..train.run_folder import config_for_resume

        cfg = config_for_resume(out_dir, explicit)
    else:
        cfg = resolve_config(config, flags)
    cfg.validate()

    from ..train.loop import NonFiniteLossError, train as run_training

    try:
        result = run_training(cfg, resume=resume, log=typer.echo)
    except NonFiniteLossError as e:
        fail(str(e), code=1)
        return
    if result.rank != 0:
        return
    typer.echo(f"best top-1 {result.best_top1:.2f}% at epoch {result.best_epoch}; checkpoints {result.best_checkpoint} "
               f"and {result.last_checkpoint}; metrics {result.out_dir / 'metrics.csv'}")
