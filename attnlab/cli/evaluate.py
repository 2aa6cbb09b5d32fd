"""``attnlab evaluate``: top-1 / top-5 and per-class accuracy of a checkpoint on a dataset split."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from .common import user_errors


@user_errors
def evaluate(
    ckpt: Annotated[Path, typer.Option("--ckpt", help="attnlab checkpoint (.pt / .safetensors) to evaluate.")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name (fashion-mnist, cifar10, ...).")],
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder holding the dataset in its official layout.")] = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate.")] = "test",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 256,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for per_class_accuracy.csv (default: the checkpoint's folder).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    subset: Annotated[Optional[int], typer.Option("--subset", help="Evaluate the first N images only.")] = None,
) -> None:
    """Print top-1 / top-5 accuracy and write per-class accuracy (class, n, correct, accuracy %) as CSV."""
    from ..errors import AttnlabError
    from ..train.evaluate import evaluate_checkpoint, write_per_class_csv

    if device not in ("auto", "cpu", "cuda"):
        raise AttnlabError(f"device must be auto, cpu or cuda, not {device!r}")
    if subset is not None and subset < 1:
        raise AttnlabError(f"subset must be a whole number >= 1, not {subset}")
    result, spec = evaluate_checkpoint(ckpt, dataset, data_dir=data_dir, split=split, batch_size=batch_size,
                                       device=device, subset=subset)
    folder = out if out is not None else Path(ckpt).parent
    path = write_per_class_csv(result, folder / "per_class_accuracy.csv")
    k = min(5, len(result.classes))
    typer.echo(f"{spec.arch} on {dataset}/{split}: {result.n} images")
    typer.echo(f"top-1 {result.top1:.2f}%  ({result.correct1}/{result.n})")
    typer.echo(f"top-{k} {result.top5:.2f}%  ({result.correct5}/{result.n})")
    typer.echo(f"loss  {result.loss:.4f}")
    typer.echo(f"per-class accuracy -> {path}")
