"""What the commands share: checkpoint options, turning user errors into one line, and
under torchrun, one process (rank 0) that prints."""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

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
WorkersOption = Annotated[Optional[int], typer.Option(
    "--workers", help="Processes decoding images (DataLoader workers; 0: the main process). "
    "Default: min(8, CPU cores / processes on this machine).", show_default=False)]
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


def workers_or_default(workers: Optional[int]) -> int:
    """``--workers`` as given, else min(8, the CPU cores this process's share of the machine has)."""
    if workers is not None:
        return workers
    from ..data.workers import default_workers

    return default_workers()


def main_rank_prints(fn: F) -> F:
    """Under torchrun only rank 0 prints: the other ranks' output (and their copy of an error
    line, which rank 0 prints too) goes nowhere. Put it outside :func:`user_errors`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or os.environ.get("RANK", "0") == "0":
            return fn(*args, **kwargs)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
                contextlib.redirect_stderr(devnull):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def write_once(save: Callable[[], Any]) -> Any:
    """Run ``save`` (rank 0 writes; a study's save writes nothing on the other ranks) and, under
    torchrun, let every rank hear whether it worked: a failed write fails every rank alike."""
    from ..studies.sharding import current_world

    return current_world().run(save)
