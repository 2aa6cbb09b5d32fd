"""Figures over training runs: bands are the t intervals over seeds, the titles say how many seeds."""
import numpy as np
import pandas as pd
import pytest

from attnlab.plots import seeds as fig
from attnlab.seeds import over_seeds, paired_differences, stack_runs
from attnlab.tables import tidy


def _run(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for model, shift in (("ViT", 0.0), ("ReViT", -1.0)):
        for layer in range(3):
            for head in (-1, 0, 1):
                rows.append(dict(model=model, checkpoint=f"c{seed}", arch=model, metric="mad_px", layer=layer, head=head,
                                 attention="applied", value=10 + layer + shift + rng.normal(0, 0.1), n_images=8))
        rows.append(dict(model=model, checkpoint=f"c{seed}", arch=model, metric="top1", value=80 + shift + seed,
                         n_images=100))
        for m in (0, 4):
            rows.append(dict(model=model, checkpoint=f"c{seed}", transform="shift-h", magnitude=float(m),
                             metric="accuracy", value=0.8 - 0.1 * m + 0.01 * seed, n_images=8))
    return tidy(rows)


@pytest.fixture(scope="module")
def runs():
    return stack_runs({s: _run(s) for s in (0, 1, 2)})


def _band_y(ax):
    """The y values of the first filled band's outline."""
    return ax.collections[0].get_paths()[0].vertices[:, 1]


def test_per_layer_bands_are_the_t_intervals_over_seeds(runs):
    summary = over_seeds(runs)
    f = fig.per_layer(summary, ["mad_px"], ["distance (px)"], "Distance", "here: tiny data")
    ax = f.axes[0]
    vit = summary[(summary["model"] == "ViT") & (summary["metric"] == "mad_px")].sort_values("layer")
    y = _band_y(ax)
    for v in list(vit["ci_low"]) + list(vit["ci_high"]):
        assert np.isclose(y, v).any(), v
    assert not np.isclose(y, vit["value"].iloc[0]).any()      # the band is not the line
    title = f._suptitle.get_text()
    assert "95% t interval over 3 seeds (0, 1, 2)" in title and "here: tiny data" in title
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ViT", "ReViT"]


def test_differences_mark_what_the_seeds_support(runs):
    diff = paired_differences(runs, "ReViT", "ViT")
    f = fig.differences(diff, ["mad_px"], ["difference (px)"], "Paired")
    ax = f.axes[0]
    filled = ax.collections[1].get_offsets()       # interval excludes 0: filled markers
    assert len(filled) == 3 and np.allclose(np.asarray(filled)[:, 1], -1.0, atol=0.5)
    assert any(line.get_ydata()[0] == 0.0 for line in ax.get_lines())      # the zero line


def test_heads_per_layer_one_panel_per_model_a_dot_per_head_and_seed(runs):
    f = fig.heads_per_layer(runs, "mad_px", uniform=12.0)
    assert [ax.get_title() for ax in f.axes] == ["ViT", "ReViT"]
    dots = sum(len(c.get_offsets()) for c in f.axes[0].collections)
    assert dots == 3 * 3 * 2                        # 3 seeds x 3 layers x 2 heads
    assert "3 seeds" in f._suptitle.get_text()


def test_bars_and_magnitude_curves(runs):
    summary = over_seeds(runs)
    f = fig.bars(summary, runs, "top1", "top-1 (%)", "Accuracy")
    ax = f.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ViT", "ReViT"]
    assert [p.get_height() for p in ax.patches] == pytest.approx([81.0, 80.0])
    f = fig.against_magnitude(summary, "shift-h", chance=0.1)
    assert f.axes[0].get_xlabel() == "shift-h (px)" and "chance (10%)" in [t.get_text() for t in f.axes[0].get_legend().get_texts()]
