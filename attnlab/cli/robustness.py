"""``attnlab robustness``: accuracy and consistency under exact shifts and scales."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from .common import (IgnoreClassNamesOption, ModelOption, OfficialConfigOption, PretrainedOption, WorkersOption,
                     main_rank_prints, user_errors, workers_or_default, write_once)
from .progress import progress_bars


DEFAULT_SHIFTS = "0,2,4,8,16"
DEFAULT_SCALES = "0.5,0.75,1,1.25,1.5"


def summary(frame) -> str:  # noqa: ANN001
    """The terminal summary: accuracy and consistency per model and magnitude; a (dx, dy) table
    per model and metric for grid shifts (no averaging over dy)."""
    main = frame[frame["metric"].isin(["accuracy", "consistency"]) & (frame["layer"] == -1)]
    grid = main["transform"].str.startswith("shift-grid")
    parts = []
    if (~grid).any():
        table = main[~grid].pivot_table(index=["model", "metric"], columns=["transform", "magnitude"], values="value",
                                        sort=False)
        parts.append(table.round(3).to_string())
    for (model, metric, transform), d in main[grid].groupby(["model", "metric", "transform"], sort=False):
        table = d.pivot_table(index="magnitude_y", columns="magnitude", values="value")
        table.index = [f"dy={int(v)}" for v in table.index]
        table.columns = [f"dx={int(v)}" for v in table.columns]
        parts.append(f"{model}, {metric} ({transform}, rows dy, columns dx):\n{table.round(3).to_string()}")
    return "\n".join(parts)


@main_rank_prints
@user_errors
def robustness(
    ckpt: Annotated[List[str], typer.Option("--ckpt", help="Checkpoint (repeat for several models).")],
    paths: Annotated[Optional[List[Path]], typer.Argument(help="More image files or folders (with --images).", show_default=False)] = None,
    images: Annotated[Optional[List[Path]], typer.Option("--images", help="Image files or folders (searched recursively); unlabelled: no accuracy.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Labelled dataset: fashion-mnist, cifar10, cifar100, pets, flowers102, imagefolder, imagenet, webdataset.")] = None,
    label: Annotated[Optional[List[str]], typer.Option("--label", help="Name of each model (one per --ckpt).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where the dataset lives.")] = None,
    split: Annotated[str, typer.Option(help="Dataset split.")] = "test",
    num_images: Annotated[Optional[int], typer.Option("--num-images", help="Images to use (default: up to 512).")] = None,
    shifts: Annotated[Optional[str], typer.Option(help="Shifts in whole pixels, comma-separated (negative allowed: --shifts=-4,0,4); none (or \"\") for scales only. Default 0,2,4,8,16.", show_default=False)] = None,
    direction: Annotated[Optional[str], typer.Option(help="h, v, diag, or grid (every (dx, dy) pair of --shifts). Default h.", show_default=False)] = None,
    scales: Annotated[Optional[str], typer.Option(help="Scale factors, comma-separated (<1 zoom out, >1 zoom in); none (or \"\") for shifts only. Default 0.5,0.75,1,1.25,1.5.", show_default=False)] = None,
    fill: Annotated[Optional[str], typer.Option(help="Border fill for shifts: black, reflect, or roll (circular); recorded in the transform name (shift-h:reflect). Default black.", show_default=False)] = None,
    protocol: Annotated[str, typer.Option(help="sweep, revit-random (official ReViT), or consistency (antialiased-CNNs).")] = "sweep",
    attention: Annotated[bool, typer.Option("--attention/--no-attention", help="Also measure attention distance and entropy per layer at every magnitude.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random protocols and the bootstrap.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch (all transformed copies go through together).")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workers: WorkersOption = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/robustness"),
    model: ModelOption = None,
    pretrained: PretrainedOption = False,
    official_config: OfficialConfigOption = None,
    ignore_class_names: IgnoreClassNamesOption = False,
) -> None:
    """Top-1 accuracy, consistency, probability change and JS divergence under pixel-exact shifts and scales.

    Images come from --dataset (labelled) or --images (unlabelled: consistency, JS divergence
    and the probability change of the unshifted top-1 class only). Writes robustness.csv
    (tidy, bootstrap 95% CIs) and figures against shift and scale.
    """
    from ..errors import AttnlabError
    from ..paths import check_output_dir
    from ..studies.robustness import measure_robustness, parse_numbers

    all_images = list(images or []) + list(paths or [])
    if paths and not images:
        raise AttnlabError(f"unexpected argument {paths[0]}; image paths go after --images")
    given = [name for name, value in (("--shifts", shifts), ("--scales", scales), ("--direction", direction),
                                      ("--fill", fill)) if value is not None]
    if protocol == "consistency" and given:
        raise AttnlabError(f"--protocol consistency compares two random crops of each image and takes no "
                           f"{', '.join(given)}; drop {'it' if len(given) == 1 else 'them'}")
    check_output_dir(out)  # before any work
    with progress_bars() as bar:
        result = measure_robustness(
            ckpt, label, images=all_images or None, dataset=dataset, data_dir=data_dir, split=split,
            num_images=num_images, shifts=parse_numbers(DEFAULT_SHIFTS if shifts is None else shifts, "--shifts", int,
                                                        allow_empty=True),
            scales=parse_numbers(DEFAULT_SCALES if scales is None else scales, "--scales", float, allow_empty=True),
            direction=direction or "h", fill=fill or "black", protocol=protocol,
            seed=seed, batch_size=batch_size, device=device, attention=attention, model=model,
            pretrained=pretrained, official_config=official_config, progress_factory=bar,
            ignore_class_names=ignore_class_names, workers=workers_or_default(workers),
        )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    written = write_once(lambda: result.save(out))
    typer.echo(summary(result.frame))
    typer.echo("wrote " + ", ".join(str(p) for p in written))
