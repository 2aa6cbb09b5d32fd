"""``attnlab demo``: the main job on the embedded default."""
from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated

from .common import user_errors


@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/demo"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Build, save and reload the four model families (ViT, ReViT, ViT+CB, ReViT+CB) at the micro size."""
    from ..demo import run_demo

    typer.echo(f"attnlab demo: building the four families for 1x32x32 input and writing checkpoints to {out}/checkpoints")
    run_demo(out, seed=seed, log=typer.echo)
    typer.echo("Inspect one with: attnlab info --ckpt " + str(out / "checkpoints" / "revit_micro_patch4_32.pt"))
