"""The ``attnlab`` command line: a thin typer layer over the Python API.

Each command lives in its own module and imports torch / timm only when it runs, so
``attnlab --help`` stays instant.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from .attention import entropy, globality
from .demo import demo
from .download import download
from .gradcam import gradcam
from .evaluate import evaluate
from .explore import explore
from .figures import figures
from .info import info
from .models import models
from .robustness import robustness
from .similarity import similarity
from .train import train

def _flags_take_no_value() -> None:
    """typer's help shows every flag (``--json``, ``--help``) as taking a ``<bool>``; a flag takes none."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_attnlab", False):
        return

    def display_type_rich(self, ctx):  # noqa: ANN001, ANN202
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._attnlab = True
    TyperOption.display_type_rich = display_type_rich


_flags_take_no_value()

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
app.command()(similarity)
app.command()(explore)
app.command()(demo)
app.command()(figures)
app.command()(train)
app.command()(evaluate)
app.command()(download)


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


def main(argv: Optional[List[str]] = None) -> None:
    """Run the command line: every failure is one ``error:`` line and a non-zero exit.

    Usage errors (unknown option, bad value) exit 2, Ctrl-C exits 130 saying that the
    command stopped (outputs are all or nothing), and a closed pipe (``attnlab --help |
    head``) is not an error.
    """
    import os

    try:  # typer >= 0.23 carries its own click
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older typer on click
        from click.exceptions import UsageError

        NoArgsIsHelpError = ()  # noqa: N806

    os.environ.setdefault("MPLBACKEND", "Agg")  # the commands write figure files; they never need a display
    _quiet_broken_pipe_in_rich()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args=args, prog_name="attnlab", standalone_mode=False)
    except NoArgsIsHelpError as e:
        print(e.ctx.get_help())
        code = 0
    except UsageError as e:
        command = e.ctx.command_path if e.ctx is not None else "attnlab"
        _stderr(f"error: {' '.join(e.format_message().split())} (see `{command} --help`)")
        code = 2
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except BrokenPipeError:
        code = 0
    if code == 130:  # typer turns Ctrl-C into exit code 130
        _stderr("stopped: interrupted before the end; nothing partial was written "
                "(`attnlab train --resume DIR` continues an interrupted training run)")
    _flush_quietly()
    sys.exit(code if isinstance(code, int) else 0)


def _quiet_broken_pipe_in_rich() -> None:
    """rich (typer's help) exits 1 when the reader of its output goes away; that is no error."""
    try:
        from rich.console import Console
    except ImportError:  # pragma: no cover - typer without rich prints plain help
        return

    def on_broken_pipe(self) -> None:  # noqa: ANN001
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0)

    Console.on_broken_pipe = on_broken_pipe


def _stderr(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except BrokenPipeError:
        pass


def _flush_quietly() -> None:
    """After a closed pipe, stop Python from reporting it again at exit."""
    import os

    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
