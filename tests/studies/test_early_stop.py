"""The streaming analyser stops each pass after the last hook point it measures, and measures the same."""
import pandas as pd
import pytest
import torch
from torch import nn

from attnlab.models import create_model
from attnlab.studies.stream import AttentionAnalyser

METRICS = ["entropy", "mad_px", "globality", "token_cosine", "high_norm_mass"]


def analyse(model, batches, metrics=METRICS):
    calls = []
    handle = model.head.register_forward_hook(lambda *a: calls.append(1))
    try:
        with AttentionAnalyser(model, label="m", checkpoint="-", metrics=metrics) as a:
            for x in batches:
                a.update(x)
    finally:
        handle.remove()
    return a.result(), len(calls)


def values(frame):
    keys = ["layer", "head", "metric", "attention", "radius"]
    return frame.sort_values(keys, na_position="first").reset_index(drop=True)


@pytest.mark.parametrize("name", ["vit_micro_patch4_32", "revit_micro_patch4_32", "vit_cb_micro_patch4_32"])
def test_later_passes_stop_after_the_last_point_and_measure_the_same(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(12, 3, 32, 32)
    streamed, head_calls = analyse(model, x.split(4))
    assert head_calls == 1  # only the first pass ran the head: the others stopped once measured
    whole, whole_calls = analyse(model, [x])
    assert whole_calls == 1 and streamed.n_images == whole.n_images == 12
    a, b = values(streamed.frame), values(whole.frame)
    assert len(a) == len(b) and set(a["layer"]) == set(range(len(model.blocks)))
    measured = ["value", "std", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(a.drop(columns=measured), b.drop(columns=measured))  # n_images included
    for column in measured:  # float32 maps: the batch size moves the last bits
        assert a[column].isna().equals(b[column].isna()), column
        assert ((a[column] - b[column]).abs() < 1e-5).where(a[column].notna(), True).all(), column


def test_a_point_that_fires_twice_a_pass_keeps_whole_passes():
    torch.manual_seed(0)
    model = create_model("vit_micro_patch4_32").eval()
    model.blocks = nn.Sequential(model.blocks[0], model.blocks[0])  # one block applied twice: its points fire twice
    x = torch.randn(8, 3, 32, 32)
    result, head_calls = analyse(model, x.split(4), metrics=["entropy"])
    assert head_calls == 2  # no pass was cut short: the second firing would have been lost
    assert result.n_images == 8
