"""The ``attnlab`` command line: a thin typer layer over the Python API.

Each command lives in its own module and imports torch / timm only when it runs, so
``attnlab --help`` stays instant.
"""
from __future__ import annotations

import typer

from .attention import entropy, globality
from .demo import demo
from .gradcam import gradcam
from .evaluate import evaluate
from .figures import figures
from .info import info
from .models import models
from .robustness import robustness
from .train import train

app = typer.Typer(
    name="attnlab",
    help="Measure and draw what attention in Vision Transformers does (ViT, ReViT, CB).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(models)
app.command()(info)
app.command()(globality)
app.command()(entropy)
app.command()(robustness)
app.command()(gradcam)
app.command()(demo)
app.command()(figures)
app.command()(train)
app.command()(evaluate)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"attnlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Measure and draw what attention in Vision Transformers does (ViT, ReViT, CB)."""


def main() -> None:
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")  # the commands write figure files; they never need a display
    app()
