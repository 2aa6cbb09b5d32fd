"""All-or-nothing output folders: a failed run leaves no partial CSV or figure behind."""
from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence, Union


@contextmanager
def staged_outputs(out_dir: Union[str, os.PathLike], owned: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a staging folder; on success move everything in it into ``out_dir``.

    Files are written to a hidden sibling folder first and renamed into place only when
    the block finishes without error; on error the staging folder is removed and
    ``out_dir`` is left as it was. Files directly in ``out_dir`` that match a pattern of
    ``owned`` (``robustness_*.png``) and that this run did not write are removed: they are
    an earlier run's, and would no longer match the new tables.
    """
    from .paths import check_output_dir

    out = check_output_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        written = {p.name for p in stage.iterdir()}
        for old in out.iterdir():
            if old.is_file() and old.name not in written and any(fnmatch.fnmatch(old.name, pat) for pat in owned):
                old.unlink()
        for src in sorted(stage.rglob("*")):
            if src.is_file():
                dst = out / src.relative_to(stage)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
    finally:  # on success the stage is empty; on any error (Ctrl-C included) nothing of it stays
        shutil.rmtree(stage, ignore_errors=True)
