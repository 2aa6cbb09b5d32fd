"""``attnlab explore``: an interactive attention explorer of one or more checkpoints, in one HTML file."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from .common import ModelOption, OfficialConfigOption, PretrainedOption, user_errors


@user_errors
def explore(
    ckpt: Annotated[List[str], typer.Option("--ckpt", help="Checkpoint (repeat to put models side by side).")],
    paths: Annotated[Optional[List[Path]], typer.Argument(help="More image files or folders (with --images).", show_default=False)] = None,
    label: Annotated[Optional[List[str]], typer.Option("--label", help="Name of each model on the page (one per --ckpt).")] = None,
    images: Annotated[Optional[List[Path]], typer.Option("--images", help="Image files or folders (searched recursively).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name: fashion-mnist, cifar10, cifar100, pets, flowers102, imagefolder, imagenet, webdataset.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where the dataset lives (its official layout).")] = None,
    split: Annotated[str, typer.Option(help="Dataset split.")] = "test",
    num_images: Annotated[Optional[int], typer.Option("--num-images", help="Images on the page (default: up to 8).")] = None,
    layers: Annotated[Optional[List[str]], typer.Option("--layers", help="Attention layers (forward order) whose per-head attention the page stores, e.g. 0,5,11 or all (default: first, middle, last; -1 is the last).")] = None,
    max_mb: Annotated[float, typer.Option("--max-mb", help="Refuse a page estimated larger than this many MB.")] = 25.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/explore"),
    model: ModelOption = None,
    pretrained: PretrainedOption = False,
    official_config: OfficialConfigOption = None,
) -> None:
    """Point at a patch and see where it looks: every model side by side on the same images, block by block
    and head by head, with rollout and GradCAM; Swin windows and MViTv2 pooled grids in image coordinates.
    Writes explore.html (one self-contained file, opens offline)."""
    from ..errors import AttnlabError
    from ..explore import explore as run_explore
    from ..paths import check_output_dir

    check_output_dir(out)  # before any work
    all_images = list(images or []) + list(paths or [])
    if paths and not images:
        raise AttnlabError(f"unexpected argument {paths[0]}; image paths go after --images")
    result = run_explore(ckpt, label, images=all_images or None, dataset=dataset, data_dir=data_dir, split=split,
                         num_images=num_images, layers=layers, device=device, model=model, pretrained=pretrained,
                         official_config=official_config, max_bytes=max_mb * 1e6, batch_size=batch_size,
                         log=lambda line: typer.echo(line, err=True))
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    written = result.save(out)
    typer.echo(f"wrote {written[0]} ({result.size_bytes / 1e6:.1f} MB; open it in a browser, no server needed)")
