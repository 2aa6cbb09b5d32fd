"""``attnlab demo``: the main job on the embedded default (Fashion-MNIST)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from .common import user_errors


@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/demo"),
    epochs: Annotated[int, typer.Option(help="Training epochs per model.")] = 2,
    subset: Annotated[Optional[int], typer.Option(help="Training images per epoch (default 20000 of 60000).")] = 20000,
    images: Annotated[int, typer.Option("--images", help="Test images for the attention and robustness analyses.")] = 512,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Fashion-MNIST files (default: the Debian package, or a download).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over instead of reusing finished checkpoints and results.")] = False,
) -> None:
    """Train ViT, ReViT and ViT+CB on Fashion-MNIST, then run globality, entropy, robustness and GradCAM, with a report."""
    from ..demo import DemoConfig, run_demo

    cfg = DemoConfig(epochs=epochs, subset=subset, seed=seed, analysis_images=images, robustness_images=images,
                     data_dir=str(data_dir) if data_dir else None, device=device)
    run_demo(out, cfg, fresh=fresh, log=typer.echo)
