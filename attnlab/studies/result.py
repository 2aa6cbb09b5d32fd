"""One result type for every study: a tidy frame, notes, figures on demand, and ``save``.

    result = measure_attention(["vit.pt"], dataset="fashion-mnist")
    result.frame                  # tidy rows (attnlab.tables schema)
    figs = result.figures()       # {"mad_per_layer": Figure, ...} for a notebook
    result.save("out/globality")  # the CSVs, arrays and figures the CLI writes, all or nothing

A study subclasses :class:`StudyResult` and says what it writes, as data: ``tables()``
(file name -> frame), ``arrays()`` (npz file name -> arrays) and ``figure_makers()``
(stem -> a function drawing one figure). ``save`` is the one writer of them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pandas as pd

from ..paths import PathLike

FigureMaker = Callable[[], "object"]  # () -> matplotlib Figure


@dataclass
class StudyResult:
    """What a study measured: ``frame`` (tidy) and ``notes`` (what the user should know)."""

    frame: pd.DataFrame
    notes: List[str] = field(default_factory=list)

    # what a study writes: override these
    def tables(self) -> Dict[str, pd.DataFrame]:
        """CSV file name -> the rows it holds."""
        return {}

    def arrays(self) -> Dict[str, Dict[str, np.ndarray]]:
        """npz file name -> the arrays it holds."""
        return {}

    def figure_makers(self) -> Dict[str, FigureMaker]:
        """Figure stem -> a function that draws it (called only when the figure is wanted)."""
        return {}

    # what every study gets
    def figures(self) -> Dict[str, "object"]:
        """Every figure as a matplotlib Figure, by stem (for notebooks: nothing is written)."""
        return {stem: make() for stem, make in self.figure_makers().items()}

    def save(self, out: PathLike) -> List[Path]:
        """Write the tables, arrays and figures (PNG and PDF) into ``out``, all or nothing.

        Files of an earlier run of the same kind that this run does not write (a figure of a
        transform not measured this time) are removed, so the folder never mixes runs.
        Returns the paths written, sorted. Under torchrun only rank 0 writes: the other ranks
        (which hold the same merged result) write nothing and get ``[]``.
        """
        from ..outputs import staged_outputs
        from ..plots import save_figure
        from ..tables import write_csv
        from .sharding import writes_here

        if not writes_here():
            return []

        with staged_outputs(out, owned=self.owned_patterns()) as stage:
            for name, table in self.tables().items():
                write_csv(table, stage / name)
            for name, arrays in self.arrays().items():
                np.savez_compressed(stage / name, **arrays)
            for stem, make in self.figure_makers().items():
                save_figure(make(), stage, stem)
            names = sorted(p.name for p in stage.iterdir())
        return [Path(out) / n for n in names]

    def owned_patterns(self) -> List[str]:
        """File name patterns this kind of result owns in its output folder (replaced on save)."""
        return []
