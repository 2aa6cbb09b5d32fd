"""``attnlab similarity``: linear CKA between block outputs (within and between models) and the logit lens."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from .common import IgnoreClassNamesOption, ModelOption, OfficialConfigOption, PretrainedOption, user_errors
from .progress import progress_bars


def summary(result) -> str:  # noqa: ANN001
    """The terminal summary: the logit lens per model and block, and the CKA of matching blocks of each pair."""
    frame = result.frame
    parts = []
    lens = frame[frame["metric"].str.startswith("logit_lens")]
    if len(lens):
        table = lens.pivot_table(index=["model", "metric"], columns="layer", values="value", sort=False)
        table.columns = [f"L{c + 1}" for c in table.columns]
        parts.append("logit lens per block (top1: accuracy against the labels; agreement: with the final "
                     f"prediction):\n{table.round(3).to_string()}")
    cka = frame[(frame["metric"] == "cka") & frame["model"].str.contains("|", regex=False)
                & (frame["layer"] == frame["head"])]
    if len(cka):
        table = cka.pivot_table(index="model", columns="layer", values="value", sort=False)
        table.columns = [f"L{c + 1}" for c in table.columns]
        parts.append(f"CKA of block i of the first model with block i of the second:\n{table.round(3).to_string()}")
    return "\n".join(parts)


@user_errors
def similarity(
    ckpt: Annotated[List[str], typer.Option("--ckpt", help="Checkpoint (repeat: every pair of models is compared).")],
    paths: Annotated[Optional[List[Path]], typer.Argument(help="More image files or folders (with --images).", show_default=False)] = None,
    label: Annotated[Optional[List[str]], typer.Option("--label", help="Name of each model in tables and figures (one per --ckpt).")] = None,
    images: Annotated[Optional[List[Path]], typer.Option("--images", help="Image files or folders (searched recursively); unlabelled: the logit lens reports agreement with the final prediction.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name: fashion-mnist, cifar10, cifar100, pets, flowers102, imagefolder, imagenet, webdataset.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where the dataset lives (its official layout).")] = None,
    split: Annotated[str, typer.Option(help="Dataset split.")] = "test",
    num_images: Annotated[Optional[int], typer.Option("--num-images", help="Images to use (default: up to 512).")] = None,
    tokens: Annotated[str, typer.Option("--tokens", help="What CKA compares of each block output: cls (the class token), mean (of the patch tokens) or patches (all patch tokens).")] = "cls",
    logit_lens: Annotated[bool, typer.Option("--logit-lens/--no-logit-lens", help="Also apply the final norm and head to every block (top-1 accuracy per block).")] = True,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass and per CKA minibatch (at least 4).")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/similarity"),
    model: ModelOption = None,
    pretrained: PretrainedOption = False,
    official_config: OfficialConfigOption = None,
    ignore_class_names: IgnoreClassNamesOption = False,
) -> None:
    """How alike the blocks' representations are: linear CKA (minibatch, unbiased HSIC) between every
    pair of block outputs within each model and between each pair of models, and the logit lens.
    Writes similarity.csv and the cka_within, cka_between and logit_lens figures."""
    from ..errors import AttnlabError
    from ..paths import check_output_dir
    from ..studies.similarity import measure_similarity

    check_output_dir(out)  # before any work
    all_images = list(images or []) + list(paths or [])
    if paths and not images:
        raise AttnlabError(f"unexpected argument {paths[0]}; image paths go after --images")
    with progress_bars() as bar:
        result = measure_similarity(
            ckpt, label, images=all_images or None, dataset=dataset, data_dir=data_dir, split=split,
            num_images=num_images, tokens=tokens, batch_size=batch_size, device=device, logit_lens=logit_lens,
            model=model, pretrained=pretrained, official_config=official_config,
            ignore_class_names=ignore_class_names, progress_factory=bar,
        )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    written = result.save(out)
    typer.echo(summary(result))
    typer.echo("wrote " + ", ".join(str(p) for p in written))
