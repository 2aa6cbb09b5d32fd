"""The one tidy table schema every command writes: one row per observation.

:data:`SCHEMA` is the schema as data: every column in order, what it means and its
default (required columns have none); :data:`COLUMNS` is the column names. Everything
that makes rows (the streaming accumulator included) takes its columns from here, so
there is one schema to change. CSV files are written atomically (a temporary file
renamed into place). pandas is imported on first use: the metrics import this module
for the column names and should not pay for pandas.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Mapping, Tuple, Union

from .atomic import atomic_path
from .paths import PathLike

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["COLUMNS", "Column", "DEFAULTS", "REQUIRED", "SCHEMA", "Z95", "columns_except", "tidy", "write_csv"]


@dataclass(frozen=True)
class Column:
    """One column of the tidy schema: its name, what it holds, and the value of a row that lacks it."""

    name: str
    meaning: str
    required: bool = False
    default: Any = None  # used only when not required


SCHEMA: Tuple[Column, ...] = (
    Column("model", "label of the model (--label, else the checkpoint's file name)", required=True),
    Column("checkpoint", "short sha256 of the checkpoint file (or timm:<name> for hub weights)", required=True),
    Column("arch", "registered architecture name", default=""),
    Column("attention", "which map was measured: applied (what the layer applies: softmax(R_l) for ReViT), "
                        "own (ReViT's softmax(S_l)), or - for non-attention metrics", default="-"),
    Column("transform", "input transform (none, shift-h, shift-grid, scale, ...; a non-black fill after a "
                        "colon: shift-h:reflect), the method in gradcam.csv, or the tokens compared in "
                        "similarity.csv (cls, mean, patches)", default="none"),
    Column("magnitude", "size of the transform (pixels, factor); NaN when there is none", default=math.nan),
    Column("magnitude_y", "second component of a 2-D magnitude (a (dx, dy) shift grid: dy); NaN otherwise",
           default=math.nan),
    Column("layer", "block index (0-based); -1 for whole-model metrics", default=-1),
    Column("head", "head index; -1 for the whole layer (mean over heads, or a per-layer metric)", default=-1),
    Column("metric", "metric name", required=True),
    Column("radius", "radius in patch units (globality curves); NaN otherwise", default=math.nan),
    Column("value", "mean over images", required=True),
    Column("std", "sample standard deviation over images", default=math.nan),
    Column("ci_low", "lower end of the 95% confidence interval of the mean (normal approximation "
                     "unless a command says it bootstraps)", default=math.nan),
    Column("ci_high", "upper end of that interval", default=math.nan),
    Column("n_images", "number of images behind the value", required=True),
    Column("stage", "model stage the layer belongs to (0-based: Swin's layers.i, MViTv2's stages.i; distances in "
                    "pixels grow with the stage's stride); 0 for every layer of a single-stage model and for "
                    "whole-model metrics", default=0),
    Column("n_seeds", "training runs behind the value: 1 for one model; above 1 (attnlab.seeds.over_seeds) the "
                      "value is the mean over runs of each run's value, std the standard deviation over runs and "
                      "ci_low / ci_high a t interval over runs, not over images", default=1),
    Column("seeds", "the training seed(s) of the run(s) behind the value, comma-separated (- when not given)",
           default="-"),
)

#: Column names, in the order of every table.
COLUMNS: Tuple[str, ...] = tuple(c.name for c in SCHEMA)
#: Columns every row must bring.
REQUIRED: Tuple[str, ...] = tuple(c.name for c in SCHEMA if c.required)
#: What :func:`tidy` puts in the other columns when a row lacks them.
DEFAULTS: Dict[str, Any] = {c.name: c.default for c in SCHEMA if not c.required}
#: The standard normal's 97.5% quantile: a 95% interval is value +- Z95 * std / sqrt(n).
Z95 = 1.959963984540054

_INTEGER_COLUMNS = {"layer": "int64", "head": "int64", "n_images": "int64", "stage": "int64", "n_seeds": "int64"}


def columns_except(*names: str) -> Tuple[str, ...]:
    """:data:`COLUMNS` without ``names``, in schema order (a table that leaves some to the caller)."""
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise ValueError(f"columns {unknown} are not in the schema {COLUMNS}")
    return tuple(c for c in COLUMNS if c not in names)


def tidy(rows: Union["pd.DataFrame", Iterable[Mapping[str, Any]]], **constants: Any) -> "pd.DataFrame":
    """Rows in the common schema: fill defaults and constants, add normal 95% CIs where missing."""
    import pandas as pd

    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for k, v in constants.items():
        df[k] = v
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"tidy rows lack required columns {missing}")
    extra = [c for c in df.columns if c not in COLUMNS]
    if extra:
        raise ValueError(f"columns {extra} are not in the schema {COLUMNS}")
    for c, v in DEFAULTS.items():
        if c not in df.columns:
            df[c] = v
        elif not (isinstance(v, float) and math.isnan(v)):
            df[c] = df[c].fillna(v)  # rows concatenated from frames that lacked the column
    half = Z95 * df["std"] / df["n_images"].clip(lower=1) ** 0.5  # Z95 * std / sqrt(n)
    df["ci_low"] = df["ci_low"].fillna(df["value"] - half)
    df["ci_high"] = df["ci_high"].fillna(df["value"] + half)
    df = df[list(COLUMNS)]
    return df.astype(_INTEGER_COLUMNS)


def write_csv(df: "pd.DataFrame", path: PathLike) -> Path:
    """Write a table atomically: readers never see half a file."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)
