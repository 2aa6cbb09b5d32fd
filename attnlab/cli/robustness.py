"""``attnlab robustness``: accuracy and consistency under exact shifts and scales."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from .common import ModelOption, OfficialConfigOption, PretrainedOption, user_errors
from .progress import progress_bars


@user_errors
def robustness(
    ckpt: Annotated[List[str], typer.Option("--ckpt", help="Checkpoint (repeat for several models).")],
    paths: Annotated[Optional[List[Path]], typer.Argument(help="More image files or folders (with --images).", show_default=False)] = None,
    images: Annotated[Optional[List[Path]], typer.Option("--images", help="Image files or folders (searched recursively); unlabelled: no accuracy.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Labelled dataset: fashion-mnist, cifar10, cifar100, pets, flowers102, imagefolder.")] = None,
    label: Annotated[Optional[List[str]], typer.Option("--label", help="Name of each model (one per --ckpt).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where the dataset lives.")] = None,
    split: Annotated[str, typer.Option(help="Dataset split.")] = "test",
    num_images: Annotated[Optional[int], typer.Option("--num-images", help="Images to use (default: up to 512).")] = None,
    shifts: Annotated[str, typer.Option(help="Shifts in pixels, comma-separated (negative allowed: --shifts=-4,0,4).")] = "0,2,4,8,16",
    direction: Annotated[str, typer.Option(help="h, v, diag, or grid (every (dx, dy) pair of --shifts).")] = "h",
    scales: Annotated[str, typer.Option(help="Scale factors, comma-separated (<1 zoom out, >1 zoom in).")] = "0.5,0.75,1,1.25,1.5",
    fill: Annotated[str, typer.Option(help="Border fill for shifts: black, reflect, or roll (circular); recorded in the transform name (shift-h:reflect).")] = "black",
    protocol: Annotated[str, typer.Option(help="sweep, revit-random (official ReViT), or consistency (antialiased-CNNs).")] = "sweep",
    attention: Annotated[bool, typer.Option("--attention/--no-attention", help="Also measure attention distance and entropy per layer at every magnitude.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random protocols and the bootstrap.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch (all transformed copies go through together).")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/robustness"),
    model: ModelOption = None,
    pretrained: PretrainedOption = False,
    official_config: OfficialConfigOption = None,
) -> None:
    """Top-1 accuracy, consistency, probability change and JS divergence under pixel-exact shifts and scales.

    Images come from --dataset (labelled) or --images (unlabelled: consistency, JS divergence
    and the probability change of the unshifted top-1 class only). Writes robustness.csv
    (tidy, bootstrap 95% CIs) and figures against shift and scale.
    """
    from ..errors import AttnlabError
    from ..studies.robustness import measure_robustness, parse_numbers

    all_images = list(images or []) + list(paths or [])
    if paths and not images:
        raise AttnlabError(f"unexpected argument {paths[0]}; image paths go after --images")
    with progress_bars() as bar:
        result = measure_robustness(
            ckpt, label, images=all_images or None, dataset=dataset, data_dir=data_dir, split=split,
            num_images=num_images, shifts=parse_numbers(shifts, "--shifts", int),
            scales=parse_numbers(scales, "--scales", float), direction=direction, fill=fill, protocol=protocol,
            seed=seed, batch_size=batch_size, device=device, attention=attention, model=model,
            pretrained=pretrained, official_config=official_config, progress_factory=bar,
        )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    written = result.save(out)
    frame = result.frame
    main = frame[frame["metric"].isin(["accuracy", "consistency"]) & (frame["layer"] == -1)]
    table = main.pivot_table(index=["model", "metric"], columns=["transform", "magnitude"], values="value", sort=False)
    typer.echo(table.round(3).to_string())
    typer.echo("wrote " + ", ".join(str(p) for p in written))
