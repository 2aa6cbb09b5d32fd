"""What the commands share: checkpoint options, and turning user errors into one line."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, TypeVar

import typer
from typing_extensions import Annotated

F = TypeVar("F", bound=Callable[..., Any])

CkptOption = Annotated[str, typer.Option(
    "--ckpt", help="Checkpoint file (attnlab .pt/.safetensors, plain state dict with --model, "
    "official ReViT checkpoint), or a timm model name with --pretrained.")]
ModelOption = Annotated[Optional[str], typer.Option(
    "--model", help="Model name for a plain state-dict file (see `attnlab models`).")]
PretrainedOption = Annotated[bool, typer.Option(
    "--pretrained", help="Treat --ckpt as a timm model name and load its published weights.")]
OfficialConfigOption = Annotated[Optional[Path], typer.Option(
    "--official-config", help="YAML config of an official ReViT, ReMViTv2 or ReSwin checkpoint (checked against the weights; gives ReViT its number of heads).")]
IgnoreClassNamesOption = Annotated[bool, typer.Option(
    "--ignore-class-names", help="Score against the dataset's labels even though its class names are not the "
    "model's (relabelled data).")]


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: F) -> F:
    """Run a command; an AttnlabError becomes one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import AttnlabError

        try:
            return fn(*args, **kwargs)
        except AttnlabError as e:
            fail(str(e))

    return wrapper  # type: ignore[return-value]


def load(ckpt: str, model: Optional[str], pretrained: bool, official_config: Optional[Path]):
    """Load a model for a command (lazy torch import)."""
    from ..checkpoint import load_model

    return load_model(ckpt, model=model, pretrained=pretrained, official_config=official_config)
