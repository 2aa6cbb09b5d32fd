"""The demo's report: one Markdown page with every figure, a caption each, and the headline numbers."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pandas as pd

from .atomic import atomic_path


@dataclass
class Section:
    title: str
    text: str = ""
    figures: List[Tuple[Path, str]] = field(default_factory=list)   # (png, one-line caption)
    table: Optional[pd.DataFrame] = None


def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(path: Path, title: str, intro: str, sections: Sequence[Section]) -> Path:
    """Write ``path`` (Markdown) atomically; figure links are relative to its folder."""
    path = Path(path)
    parts = [f"# {title}", "", intro, ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        if s.text:
            parts += [s.text, ""]
        if s.table is not None:
            parts += [_md_table(s.table), ""]
        for png, caption in s.figures:
            rel = os.path.relpath(png, path.parent)
            parts += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))
    return path
