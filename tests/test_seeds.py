"""Statistics over training runs (attnlab.seeds): t intervals, paired differences, readings."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from attnlab.errors import AttnlabError
from attnlab.seeds import describe, over_seeds, paired_differences, shown, stack_runs, t_interval
from attnlab.tables import COLUMNS, tidy

T_975_2 = 4.302652729911275   # Student t, 97.5% quantile, 2 degrees of freedom (tables)


def _frame(values: dict, seed_offset: float = 0.0, n_images: int = 100) -> pd.DataFrame:
    """Rows {(model, layer): value}, plus per-head rows and a radius-keyed globality row."""
    rows = []
    for (model, layer), v in values.items():
        rows.append(dict(model=model, checkpoint=f"{model}{seed_offset}", metric="mad_px", layer=layer, head=-1,
                         value=v + seed_offset, std=1.0, n_images=n_images, arch=model.lower()))
        rows.append(dict(model=model, checkpoint=f"{model}{seed_offset}", metric="mad_px", layer=layer, head=0,
                         value=99.0, std=1.0, n_images=n_images))
        rows.append(dict(model=model, checkpoint=f"{model}{seed_offset}", metric="globality", layer=layer, head=-1,
                         radius=2.0, value=0.5, n_images=n_images))
    return tidy(rows)


def test_t_interval_by_hand():
    mean, std, low, high = t_interval([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert high - mean == pytest.approx(T_975_2 * std / math.sqrt(3), rel=1e-9) and mean - low == pytest.approx(high - mean)
    one = t_interval([5.0])
    assert one[0] == 5.0 and all(math.isnan(v) for v in one[1:])
    with pytest.raises(AttnlabError):
        t_interval([])


def test_over_seeds_averages_runs_not_images_and_skips_heads():
    runs = stack_runs({0: _frame({("ViT", 0): 1.0}), 1: _frame({("ViT", 0): 2.0}), 2: _frame({("ViT", 0): 4.0})})
    assert tuple(runs.columns) == COLUMNS and sorted(runs["seeds"].unique()) == ["0", "1", "2"]
    summary = over_seeds(runs)
    assert (summary["head"] == -1).all() and len(summary) == 2          # mad_px and globality at r = 2
    mad = summary[summary["metric"] == "mad_px"].iloc[0]
    mean, std, low, high = t_interval([1.0, 2.0, 4.0])
    assert (mad["value"], mad["std"], mad["ci_low"], mad["ci_high"]) == pytest.approx((mean, std, low, high))
    assert mad["n_seeds"] == 3 and mad["seeds"] == "0,1,2" and mad["n_images"] == 100
    assert mad["checkpoint"] == "ViT0.0+ViT0.0+ViT0.0"
    glob = summary[summary["metric"] == "globality"].iloc[0]
    assert glob["radius"] == 2.0 and glob["value"] == 0.5 and glob["std"] == 0.0
    assert len(over_seeds(runs, heads=True)) == 3


def test_paired_differences_pair_by_seed():
    # ReViT is 1 above ViT in every seed although the seeds vary a lot: the paired interval is tight
    frames = {s: _frame({("ViT", 0): base, ("ReViT", 0): base + 1.0 + 0.01 * s}) for s, base in enumerate([1.0, 5.0, 9.0])}
    runs = stack_runs(frames)
    diff = paired_differences(runs, "ReViT", "ViT")
    row = diff[diff["metric"] == "mad_px"].iloc[0]
    assert row["model"] == "ReViT - ViT" and row["value"] == pytest.approx(1.01) and row["n_seeds"] == 3
    assert row["arch"] == "revit - vit"                      # models of different architectures pair
    assert shown(row) and row["ci_high"] - row["ci_low"] < 0.1
    assert describe(row, "px").startswith("+1.01 px (95% CI")
    unpaired = over_seeds(runs)
    assert unpaired[unpaired["model"] == "ViT"]["ci_high"].iloc[0] - unpaired[unpaired["model"] == "ViT"]["ci_low"].iloc[0] > 10
    same = diff[diff["metric"] == "globality"].iloc[0]          # equal in every run: a zero difference
    assert same["value"] == 0.0 and not shown(same)


def test_a_difference_the_seeds_do_not_support_says_so():
    frames = {s: _frame({("ViT", 0): 1.0, ("ViT+CB", 0): 1.0 + d}) for s, d in enumerate([0.5, -0.4, 0.2])}
    row = paired_differences(stack_runs(frames), "ViT+CB", "ViT").query("metric == 'mad_px'").iloc[0]
    assert not shown(row) and row["ci_low"] < 0 < row["ci_high"]
    assert describe(row).startswith("no difference shown: +0.10 (95% CI")


def test_bad_runs_are_refused_in_one_line():
    with pytest.raises(AttnlabError, match="without a seed"):
        over_seeds(_frame({("ViT", 0): 1.0}))
    runs = stack_runs({0: _frame({("ViT", 0): 1.0}), 1: _frame({("ViT", 0): 2.0}, n_images=50)})
    with pytest.raises(AttnlabError, match="different image counts \\[50, 100\\]"):
        over_seeds(runs)
    with pytest.raises(AttnlabError, match="no runs of ReViT; the runs have ViT"):
        paired_differences(runs, "ReViT", "ViT")
    with pytest.raises(AttnlabError, match="already summaries over seeds"):
        over_seeds(over_seeds(stack_runs({0: _frame({("ViT", 0): 1.0}), 1: _frame({("ViT", 0): 2.0})})))
    twice = stack_runs({0: pd.concat([_frame({("ViT", 0): 1.0})] * 2)})
    with pytest.raises(AttnlabError, match="twice"):
        over_seeds(twice)
