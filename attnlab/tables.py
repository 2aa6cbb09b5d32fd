"""The one tidy table schema every command writes: one row per observation.

Columns (in this order):

    model       label of the model (``--label``, else the checkpoint's file name)
    checkpoint  short sha256 of the checkpoint file (or ``timm:<name>`` for hub weights)
    arch        registered architecture name
    attention   which map was measured: ``applied`` (what the layer applies: softmax(R_l) for
                ReViT), ``own`` (ReViT's softmax(S_l)), or ``-`` for non-attention metrics
    transform   input transform (``none``, ``shift``, ``scale``, ...)
    magnitude   size of the transform (pixels, factor); NaN when there is none
    magnitude_y second component of a 2-D magnitude (a (dx, dy) shift grid: dy); NaN otherwise
    layer       block index (0-based); -1 for whole-model metrics
    head        head index; -1 for the whole layer (mean over heads, or a per-layer metric)
    metric      metric name
    radius      radius in patch units (globality curves); NaN otherwise
    value       mean over images
    std         sample standard deviation over images
    ci_low, ci_high  95% confidence interval of the mean (normal approximation unless a
                command says it bootstraps)
    n_images    number of images behind the value

CSV files are written atomically (a temporary file renamed into place).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Union

import pandas as pd

from .atomic import atomic_path

COLUMNS = ("model", "checkpoint", "arch", "attention", "transform", "magnitude", "magnitude_y", "layer", "head",
           "metric", "radius", "value", "std", "ci_low", "ci_high", "n_images")

DEFAULTS: Dict[str, Any] = {"arch": "", "attention": "-", "transform": "none", "magnitude": math.nan,
                            "magnitude_y": math.nan,
                            "layer": -1, "head": -1, "radius": math.nan, "std": math.nan,
                            "ci_low": math.nan, "ci_high": math.nan}
_REQUIRED = ("model", "checkpoint", "metric", "value", "n_images")
Z95 = 1.959963984540054


def tidy(rows: Union[pd.DataFrame, Iterable[Mapping[str, Any]]], **constants: Any) -> pd.DataFrame:
    """Rows in the common schema: fill defaults and constants, add normal 95% CIs where missing."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for k, v in constants.items():
        df[k] = v
    missing = [c for c in _REQUIRED if c not in df.columns]
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
    half = Z95 * df["std"] / df["n_images"].clip(lower=1) ** 0.5
    df["ci_low"] = df["ci_low"].fillna(df["value"] - half)
    df["ci_high"] = df["ci_high"].fillna(df["value"] + half)
    df = df[list(COLUMNS)]
    return df.astype({"layer": "int64", "head": "int64", "n_images": "int64"})


def write_csv(df: pd.DataFrame, path: Union[str, os.PathLike]) -> Path:
    """Write a table atomically: readers never see half a file."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)
