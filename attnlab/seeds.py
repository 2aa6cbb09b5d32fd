"""Statistics over training runs: what a claim about a model family needs beyond one run.

A study's interval is over the images of one trained model; it says nothing about how much
another seed of the same recipe would differ. Here the unit is the run:

    runs = stack_runs({0: frame_seed0, 1: frame_seed1, 2: frame_seed2})   # the seeds column filled
    summary = over_seeds(runs)                   # mean over runs, t interval over runs, n_seeds
    diff = paired_differences(runs, "ReViT", "ViT")   # per seed ReViT - ViT, then over seeds

Rows stay in the tidy schema (:mod:`attnlab.tables`): ``value`` is the mean over runs of each
run's value, ``std`` the sample standard deviation over runs, ``ci_low`` / ``ci_high`` the
two-sided t interval ``mean +- t_{n-1} * std / sqrt(n)`` over runs, ``n_seeds`` and ``seeds``
say which runs. Only whole-layer rows (``head == -1``) are summarised by default: head ``k``
of one run has nothing to do with head ``k`` of another, so a per-head mean over seeds would
mean nothing.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence, Tuple

from .errors import AttnlabError
from .tables import COLUMNS, tidy

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["KEYS", "describe", "over_seeds", "paired_differences", "shown", "stack_runs", "t_interval"]

#: Columns that say what a row observes; rows of different runs with equal keys are the same observation.
KEYS: Tuple[str, ...] = tuple(c for c in COLUMNS if c not in (
    "checkpoint", "value", "std", "ci_low", "ci_high", "n_images", "n_seeds", "seeds"))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float, float, float]:
    """``(mean, std, low, high)`` of ``values`` (one per run): the two-sided Student t interval of
    the mean with ``n - 1`` degrees of freedom; std, low and high are NaN for a single value."""
    from scipy import stats

    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        raise AttnlabError("no values to summarise over seeds")
    mean = math.fsum(v) / n
    if n == 1:
        return mean, math.nan, math.nan, math.nan
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def stack_runs(frames: Mapping[int, "pd.DataFrame"]) -> "pd.DataFrame":
    """One frame of every run's rows, ``seeds`` set to each run's seed (``{seed: frame}``)."""
    import pandas as pd

    if not frames:
        raise AttnlabError("no runs to stack: pass {seed: frame} with at least one run")
    parts = []
    for seed, frame in frames.items():
        f = frame.copy()
        f["seeds"], f["n_seeds"] = str(int(seed)), 1
        parts.append(f)
    return tidy(pd.concat(parts, ignore_index=True))


def _runs_by_key(runs: "pd.DataFrame", heads: bool) -> "pd.DataFrame":
    if "seeds" not in runs.columns or runs["seeds"].isna().any() or runs["seeds"].astype(str).isin(["", "-"]).any():
        raise AttnlabError("rows without a seed: build the runs with attnlab.seeds.stack_runs({seed: frame})")
    if "n_seeds" in runs.columns and (runs["n_seeds"] > 1).any():
        raise AttnlabError("these rows are already summaries over seeds (n_seeds > 1): pass the runs, "
                           "as attnlab.seeds.stack_runs makes them")
    d = runs if heads else runs[runs["head"] == -1]
    d = d.assign(seeds=d["seeds"].astype(str))
    dup = d.duplicated(list(KEYS) + ["seeds"])
    if dup.any():
        row = d[dup].iloc[0]
        raise AttnlabError(f"seed {row['seeds']} has {row['model']} {row['metric']} layer {row['layer']} twice: "
                           "one row per run and observation")
    return d


def _summary_row(keys: Mapping, group: "pd.DataFrame", confidence: float) -> dict:
    images = sorted(set(int(n) for n in group["n_images"]))
    if len(images) > 1:
        raise AttnlabError(f"{keys['model']} {keys['metric']}: the runs measured different image counts {images}; "
                           "measure every seed on the same images")
    order = sorted(range(len(group)), key=lambda i: int(group["seeds"].iloc[i]))
    values = [float(group["value"].iloc[i]) for i in order]
    mean, std, low, high = t_interval(values, confidence)
    return {**keys, "checkpoint": "+".join(str(group["checkpoint"].iloc[i]) for i in order), "value": mean,
            "std": std, "ci_low": low, "ci_high": high, "n_images": images[0], "n_seeds": len(values),
            "seeds": ",".join(str(group["seeds"].iloc[i]) for i in order)}


def over_seeds(runs: "pd.DataFrame", confidence: float = 0.95, heads: bool = False) -> "pd.DataFrame":
    """Each observation's mean over runs with its t interval (see the module docstring).

    ``runs`` comes from :func:`stack_runs`; ``heads=True`` also summarises per-head rows (only
    meaningful where heads correspond across runs). Observations whose value is NaN in a run are
    summarised over the runs that have one (``n_seeds`` says how many)."""
    import pandas as pd

    d = _runs_by_key(runs, heads)
    d = d[d["value"].notna()]
    rows = [_summary_row(dict(zip(KEYS, key)), group, confidence)
            for key, group in d.groupby(list(KEYS), sort=False, dropna=False)]
    return tidy(pd.DataFrame(rows, columns=list(COLUMNS))) if rows else tidy(pd.DataFrame(columns=list(COLUMNS)))


def paired_differences(runs: "pd.DataFrame", a: str, b: str, confidence: float = 0.95,
                       heads: bool = False) -> "pd.DataFrame":
    """``a - b`` for every observation both models have, paired by seed (run ``k`` of ``a`` minus run
    ``k`` of ``b``: same seed, same data order), then over seeds as in :func:`over_seeds`; rows are
    labelled ``model = "a - b"``. Pairing removes the seed-to-seed variation the two share."""
    import pandas as pd

    d = _runs_by_key(runs, heads)
    missing = [m for m in (a, b) if m not in set(d["model"])]
    if missing:
        raise AttnlabError(f"no runs of {', '.join(missing)}; the runs have {', '.join(map(str, d['model'].unique()))}")
    keys = [k for k in KEYS if k not in ("model", "arch")]   # the two differ in architecture by design
    left = d[d["model"] == a].set_index(keys + ["seeds"])
    right = d[d["model"] == b].set_index(keys + ["seeds"])
    both = left.join(right, how="inner", suffixes=("_a", "_b"))
    both = both[both["value_a"].notna() & both["value_b"].notna()].reset_index()
    if both.empty:
        raise AttnlabError(f"{a} and {b} share no seed and observation to pair")
    pairs = pd.DataFrame({**{k: both[k] for k in keys}, "model": f"{a} - {b}", "seeds": both["seeds"],
                          "arch": both["arch_a"].astype(str) + " - " + both["arch_b"].astype(str),
                          "value": both["value_a"] - both["value_b"],
                          "checkpoint": both["checkpoint_a"].astype(str) + "-" + both["checkpoint_b"].astype(str),
                          "n_images": both["n_images_a"]})
    rows = [_summary_row(dict(zip(KEYS, key)), group, confidence)
            for key, group in pairs.groupby(list(KEYS), sort=False, dropna=False)]
    return tidy(pd.DataFrame(rows, columns=list(COLUMNS)))


def shown(row: Mapping) -> bool:
    """Whether a difference row's interval excludes zero (a difference the seeds support)."""
    low, high = float(row["ci_low"]), float(row["ci_high"])
    return math.isfinite(low) and math.isfinite(high) and (low > 0 or high < 0)


def describe(row: Mapping, unit: str = "", digits: int = 2) -> str:
    """A reading of one summary or difference row: ``+1.23 px (95% CI 0.50 to 1.96, seeds 0,1,2)``,
    prefixed ``no difference shown:`` for a difference whose interval covers zero."""
    f = f"{{:+.{digits}f}}" if " - " in str(row["model"]) else f"{{:.{digits}f}}"
    unit = f" {unit}" if unit else ""
    text = (f"{f.format(float(row['value']))}{unit} (95% CI {float(row['ci_low']):.{digits}f} to "
            f"{float(row['ci_high']):.{digits}f}, seeds {row['seeds']})")
    if " - " in str(row["model"]) and not shown(row):
        return f"no difference shown: {text}"
    return text
