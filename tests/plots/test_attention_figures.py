"""Each attention figure drawn from a small tidy frame: the axes, titles and legend entries it promises."""
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

import attnlab
from attnlab.plots import attention as fig
from attnlab.spec import InputSpec

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    torch.manual_seed(0)
    nets = [attnlab.create_model("vit_micro_patch4_32"), attnlab.create_model("revit_micro_patch4_32")]
    return attnlab.measure_attention(nets, ["ViT", "ReViT"], images=[d], input_spec=SPEC).frame


def legend_texts(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_mad_per_layer(frame):
    f = fig.mad_per_layer(frame)
    ax = f.axes[0]
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "mean attention distance (px)"
    assert legend_texts(ax) == ["ViT", "ReViT", "ReViT (own softmax(S))"]
    f = fig.mad_per_layer(frame, uniform=16.5)
    assert legend_texts(f.axes[0])[-1] == "uniform attention (16.5 px)"
    assert [int(t) for t in ax.get_xticks()] == [1, 2, 3, 4, 5, 6]


def test_mad_per_head(frame):
    ax = fig.mad_per_head(frame).axes[0]
    assert ax.get_ylabel() == "mean attention distance (px)"
    assert legend_texts(ax) == ["ViT", "ReViT"]


def test_globality_curves_one_panel_per_model(frame):
    f = fig.globality_curves(frame)
    titled = [a for a in f.axes if a.get_title()]
    assert [a.get_title() for a in titled] == ["ViT", "ReViT"]
    assert titled[0].get_xlabel() == "radius r (patches)" and titled[0].get_ylabel() == "attention beyond r, G(r)"
    assert legend_texts(titled[-1])[:2] == ["layer 1", "layer 2"]


def test_entropy_per_layer(frame):
    f = fig.entropy_per_layer(frame)
    labels = [t for a in f.axes for t in legend_texts(a)]
    assert "ViT" in labels and "ReViT (own softmax(S))" in labels
    assert all(a.get_xlabel() == "layer" for a in f.axes if a.has_data())


def test_entropy_heatmaps(frame):
    f = fig.entropy_heatmaps(frame)
    heat = [a for a in f.axes if a.get_title()]
    assert [a.get_title() for a in heat] == ["ViT", "ReViT"]
    assert heat[0].get_xlabel() == "head" and heat[0].get_ylabel() == "layer"
    assert isinstance(f, matplotlib.figure.Figure)


def test_reference_lines_from_the_layouts(frame, tmp_path):
    from attnlab.studies.attention import AttentionResult

    lay = attnlab.TokenLayout(num_prefix_tokens=1, grid_size=(8, 8), patch_size=(4, 4))
    result = AttentionResult(frame, layouts={"ViT": lay, "ReViT": lay})
    assert result.uniform_distance() == pytest.approx(float(frame[(frame["metric"] == "mad_px")]["value"].max()), abs=2)
    assert result.log_tokens() == pytest.approx(np.log(65))
    figs = result.figures()
    assert legend_texts(figs["entropy_per_layer"].axes[0])[-1] == "uniform: ln N = 4.17"
    other = attnlab.TokenLayout(num_prefix_tokens=0, grid_size=(4, 4), patch_size=(8, 8))
    assert AttentionResult(frame, layouts={"ViT": lay, "ReViT": other}).uniform_distance() is None
