"""``attnlab evaluate``: top-1 / top-5 and per-class accuracy of a checkpoint on a dataset split."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from .common import (CkptOption, IgnoreClassNamesOption, ModelOption, OfficialConfigOption, PretrainedOption,
                     WorkersOption, main_rank_prints, user_errors, workers_or_default, write_once)


@main_rank_prints
@user_errors
def evaluate(
    ckpt: CkptOption,
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name (fashion-mnist, cifar10, ...).")],
    label: Annotated[Optional[str], typer.Option("--label", help="Name of the model in the CSV's model column (default: the checkpoint's file name).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder holding the dataset in its official layout.")] = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate.")] = "test",
    num_images: Annotated[Optional[int], typer.Option("--num-images", help="Evaluate the first N images only (default: all).")] = None,
    subset: Annotated[Optional[int], typer.Option("--subset", hidden=True, help="Old name of --num-images.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 256,
    out: Annotated[Path, typer.Option("--out", help="Output folder for per_class_accuracy.csv.")] = Path("out/evaluate"),
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    workers: WorkersOption = None,
    model: ModelOption = None,
    pretrained: PretrainedOption = False,
    official_config: OfficialConfigOption = None,
    ignore_class_names: IgnoreClassNamesOption = False,
) -> None:
    """Print top-1 / top-5 accuracy and write per-class accuracy (model, class, n, correct, accuracy %) as CSV."""
    from ..errors import AttnlabError, plural
    from ..paths import check_output_dir
    from ..train.evaluate import evaluate_checkpoint, save_per_class_accuracy

    if subset is not None:
        if num_images is not None:
            raise AttnlabError("--subset is the old name of --num-images; pass --num-images alone")
        typer.echo("note: --subset is deprecated; use --num-images", err=True)
        num_images = subset
    check_output_dir(out)
    result, spec = evaluate_checkpoint(ckpt, dataset, data_dir=data_dir, split=split, batch_size=batch_size,
                                       device=device, num_images=num_images, model=model, pretrained=pretrained,
                                       official_config=official_config, label=label,
                                       ignore_class_names=ignore_class_names, workers=workers_or_default(workers))
    path = write_once(lambda: save_per_class_accuracy(result, out))
    k = min(5, len(result.classes))
    typer.echo(f"{result.model} ({spec.arch}) on {dataset}/{split}: {plural(result.n, 'image')}")
    typer.echo(f"top-1 {result.top1:.2f}%  ({result.correct1}/{result.n})")
    typer.echo(f"top-{k} {result.top5:.2f}%  ({result.correct5}/{result.n})")
    typer.echo(f"loss  {result.loss:.4f}")
    typer.echo(f"per-class accuracy -> {path}")
