"""``attnlab figures``: rerun the analysis scripts (``analyses/NN_*.py``) from existing checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from .common import user_errors


def _default_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "analyses"
    return here if here.is_dir() else Path("analyses")


@user_errors
def figures(
    only: Annotated[Optional[List[str]], typer.Option("--only", help="Run only these scripts (by number, e.g. 01), repeatable.")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset of the checkpoints: fashion-mnist or cifar10.")] = "fashion-mnist",
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Dataset folder.")] = None,
    analyses: Annotated[Optional[Path], typer.Option("--analyses", help="Folder of the analysis scripts.")] = None,
) -> None:
    """Regenerate the paper figures in figures/ from existing checkpoints (one script per claim)."""
    import subprocess
    import sys

    from ..errors import AttnlabError

    folder = analyses or _default_dir()
    scripts = sorted(folder.glob("[0-9][0-9]_*.py"))
    if not scripts:
        raise AttnlabError(f"no analysis scripts (NN_*.py) in {folder}; pass --analyses DIR")
    if only:
        wanted = {o.zfill(2) for o in only}
        scripts = [s for s in scripts if s.name[:2] in wanted]
        if not scripts:
            raise AttnlabError(f"no analysis script numbered {', '.join(sorted(wanted))} in {folder}")
    failed = []
    for script in scripts:
        typer.echo(f"== {script.name}")
        args = [sys.executable, str(script), "--dataset", dataset] + (["--data-dir", str(data_dir)] if data_dir else [])
        if subprocess.run(args, cwd=folder.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        raise AttnlabError(f"{len(failed)} analysis script(s) failed: {', '.join(failed)}")
