"""The GradCAM grid: full names (wrapped, not cut), the layer of each CAM, one colour bar; progress and hints."""
import numpy as np
import pytest
import torch
from PIL import Image

import attnlab
from attnlab.plots.gradcam import gradcam_grid
from attnlab.spec import InputSpec

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
LONG = "a_model_label_much_longer_than_sixteen_characters"


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"a_rather_long_file_name_{i}.png")
    torch.manual_seed(0)
    calls = []
    result = attnlab.explain([attnlab.create_model("vit_micro_patch4_32")], [LONG], images=[d], input_spec=SPEC,
                             methods=["gradcam"], metrics=True,
                             progress_factory=lambda label, total: (lambda done: calls.append((label, total, done))))
    return result, calls


def test_titles_are_whole_and_name_the_layer(explained):
    result, _ = explained
    fig = gradcam_grid(result)
    titles = [ax.get_title().replace("\n", "") for ax in fig.axes if ax.get_title()]
    assert any(LONG in t for t in titles)
    assert any(f"gradcam @ {result.models[0].layer}" in t for t in titles)
    assert any("a_rather_long_file_name_0.png" in t for t in titles)
    assert any("relevance" in ax.get_ylabel() for ax in fig.axes)  # the colour bar


def test_progress_counts_every_map_and_its_faithfulness(explained):
    _, calls = explained
    assert [c[2] for c in calls] == [1, 2, 3, 4] and {c[1] for c in calls} == {4} and {c[0] for c in calls} == {LONG}


def test_zero_map_hint_names_auto_only_when_another_layer_was_used():
    from attnlab.studies.attribution.study import _zero_map_note

    assert "use --layer auto, which picks blocks.5.norm1" in _zero_map_note("m", "gradcam", "blocks.5", "blocks.5.norm1",
                                                                             1, 4)
    auto = _zero_map_note("m", "gradcam", "blocks.5.norm1", "blocks.5.norm1", 1, 4)
    assert "--layer auto" not in auto and "another --method" in auto


def test_faithfulness_curves_figure_and_attention_gradient_titles(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    torch.manual_seed(0)
    result = attnlab.explain([attnlab.create_model("vit_micro_patch4_32", depth=2)], ["tiny"], images=[tmp_path],
                             input_spec=SPEC, methods="chefer,eigencam", faithfulness="perturbation,deletion")
    figures = result.figures()
    assert list(figures) == ["gradcam", "faithfulness_curves"]
    grid_titles = [ax.get_title().replace("\n", " ") for ax in figures["gradcam"].axes]
    assert any("chefer (all layers)" in t for t in grid_titles) and any("eigencam @ blocks.1.norm1" in t
                                                                         for t in grid_titles)
    panels = [ax for ax in figures["faithfulness_curves"].axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["positive perturbation", "negative perturbation",
                                                                "deletion (RISE)", "insertion (RISE)"]
    for ax in panels:   # one line per model x method (rollout included), its area in the legend
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert [label.split(" (AUC")[0] for label in labels] == ["tiny · chefer", "tiny · eigencam",
                                                                 "tiny · rollout"]
        assert all("AUC" in label for label in labels) and len(ax.get_lines()) == 3
    for fig in figures.values():
        plt.close(fig)
