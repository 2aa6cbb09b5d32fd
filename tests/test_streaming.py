"""AttentionStats: streaming means/stds equal the direct metrics on the concatenated batches."""
import math

import pandas as pd
import pytest
import torch

from attnlab.layout import TokenLayout
from attnlab.metrics import (
    METRIC_NAMES,
    ROW_COLUMNS,
    AttentionStats,
    attention_entropy_per_image,
    effective_rank,
    globality_curve_per_image,
    mean_attention_distance_per_image,
    nonlocality_per_image,
    prefix_mass_per_image,
    token_cosine_similarity,
)

RADII = (0.0, 1.0, 1.5, 3.0)


def batches(layout, heads, sizes, dtype=torch.float32):
    n = layout.num_tokens
    return [(3 * torch.randn(b, heads, n, n)).softmax(-1).to(dtype) for b in sizes]


def direct_per_image(a, layout):
    """name -> [B, heads] (or [B, heads, R]) from the public functions."""
    out = {
        "entropy": attention_entropy_per_image(a),
        "entropy_norm": attention_entropy_per_image(a, normalized=True),
        "entropy_patch": attention_entropy_per_image(a, query="patch", layout=layout),
        "mad_px": mean_attention_distance_per_image(a, layout=layout),
        "mad_px_raw": mean_attention_distance_per_image(a, layout=layout, renormalize=False),
        "nonlocality": nonlocality_per_image(a, layout),
        "prefix_mass": prefix_mass_per_image(a, layout),
        "globality": globality_curve_per_image(a, layout, RADII),
    }
    if layout.num_prefix_tokens:
        out["entropy_prefix"] = attention_entropy_per_image(a, query="prefix", layout=layout)
    return out


def index_rows(rows):
    return {(r["layer"], r["metric"], r["head"], None if math.isnan(r["radius"]) else r["radius"]): r for r in rows}


@pytest.mark.parametrize("num_prefix", [0, 1, 2])
def test_streaming_equals_direct_metrics_on_concatenated_batches(num_prefix):
    layout = TokenLayout(num_prefix, (3, 4), (8, 12))
    heads = 3
    parts = batches(layout, heads, [2, 3, 1, 4])
    tok_parts = [torch.randn(a.shape[0], layout.num_tokens, 16) for a in parts]
    stats = AttentionStats(radii=RADII)
    for a, t in zip(parts, tok_parts):
        stats.update(5, a, layout)
        stats.update_tokens(5, t, layout)
    rows = index_rows(stats.rows("vit", "ckpt.pt"))

    whole = torch.cat(parts)
    expected = direct_per_image(whole, layout)
    assert {k[1] for k in rows} == set(expected) | {"token_cosine", "effective_rank"}
    for name, per_image in expected.items():
        for h in range(heads):
            if name == "globality":
                cells = [(r, per_image[:, h, k]) for k, r in enumerate(RADII)]
            else:
                cells = [(None, per_image[:, h])]
            for radius, values in cells:
                row = rows[(5, name, h, radius)]
                assert row["n_images"] == 10
                assert row["value"] == pytest.approx(values.mean().item(), rel=1e-5, abs=1e-6)
                assert row["std"] == pytest.approx(torch.std(values).item(), rel=1e-4, abs=1e-6)
        # head -1: the layer as a whole, the per-image mean over heads
        layer_values = per_image.mean(dim=1)
        cells = [(r, layer_values[:, k]) for k, r in enumerate(RADII)] if name == "globality" \
            else [(None, layer_values)]
        for radius, values in cells:
            row = rows[(5, name, -1, radius)]
            assert row["value"] == pytest.approx(values.mean().item(), rel=1e-5, abs=1e-6)
            assert row["std"] == pytest.approx(torch.std(values).item(), rel=1e-4, abs=1e-6)
    tokens = torch.cat(tok_parts)
    for name, values in (("token_cosine", token_cosine_similarity(tokens, layout)),
                         ("effective_rank", effective_rank(tokens, layout))):
        row = rows[(5, name, -1, None)]
        assert row["value"] == pytest.approx(values.mean().item(), rel=1e-12)
        assert row["std"] == pytest.approx(torch.std(values).item(), rel=1e-9)
        assert row["n_images"] == 10
    # number of rows: per-head metrics (+ entropy_prefix) x (heads + the layer as a whole),
    # globality x radii x (heads + whole layer), 2 per-layer feature metrics
    per_head = 7 + (1 if num_prefix else 0)
    assert len(rows) == per_head * (heads + 1) + (heads + 1) * len(RADII) + 2


def test_rows_columns_labels_and_order():
    layout = TokenLayout(1, 2, 16)
    stats = AttentionStats(radii=(0.0, 1.0))
    for layer in (2, 0):
        for a in batches(layout, 2, [2, 2]):
            stats.update(layer, a, layout)
    stats.update_tokens(0, torch.randn(4, 5, 8), layout)
    rows = stats.rows("revit_b", "revit.pt", attention="own")
    assert all(tuple(r) == ROW_COLUMNS for r in rows)
    assert {(r["model"], r["checkpoint"], r["attention"]) for r in rows} == {("revit_b", "revit.pt", "own")}
    assert [r["layer"] for r in rows] == sorted(r["layer"] for r in rows)
    assert stats.layers == [0, 2]
    names = [r["metric"] for r in rows if r["layer"] == 0]
    assert names == sorted(names, key=METRIC_NAMES.index)
    assert set(names) == set(METRIC_NAMES)
    for r in rows:
        assert isinstance(r["layer"], int) and isinstance(r["head"], int) and isinstance(r["n_images"], int)
        if r["metric"] in ("token_cosine", "effective_rank"):
            assert r["head"] == -1
        assert math.isnan(r["radius"]) == (r["metric"] != "globality")
    assert sorted({r["radius"] for r in rows if r["metric"] == "globality"}) == [0.0, 1.0]
    frame = stats.to_frame("revit_b", "revit.pt", attention="own")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(ROW_COLUMNS)
    assert len(frame) == len(rows)
    assert frame["value"].tolist() == pytest.approx([r["value"] for r in rows])
    assert list(AttentionStats().to_frame("m", "c").columns) == list(ROW_COLUMNS)  # empty but typed


def test_no_prefix_means_no_prefix_entropy_and_zero_prefix_mass():
    layout = TokenLayout(0, 3, 16)
    stats = AttentionStats()
    stats.update(0, batches(layout, 2, [3])[0], layout)
    rows = stats.rows("m", "c")
    assert "entropy_prefix" not in {r["metric"] for r in rows}
    assert all(r["value"] == 0 and r["std"] == 0 for r in rows if r["metric"] == "prefix_mass")


def test_state_size_does_not_grow_with_images():
    layout = TokenLayout(1, (3, 3), 16)
    stats = AttentionStats()
    sizes = []
    for k, a in enumerate(batches(layout, 4, [3] * 20)):
        for layer in range(2):
            stats.update(layer, a, layout)
            stats.update_tokens(layer, torch.randn(3, layout.num_tokens, 8), layout)
        sizes.append(stats.state_numel())
    assert sizes[1] > 0
    assert sizes[1] == sizes[19]
    assert all(r["n_images"] == 60 for r in stats.rows("m", "c"))


def test_single_image_std_is_nan_like_torch_std():
    layout = TokenLayout(0, 2, 16)
    stats = AttentionStats()
    stats.update(0, batches(layout, 1, [1])[0], layout)
    assert all(math.isnan(r["std"]) and r["n_images"] == 1 for r in stats.rows("m", "c"))


def test_large_offset_values_keep_precise_std():
    # Chan's update in float64: a tiny spread on a large mean survives many batches.
    stats = AttentionStats()
    layout = TokenLayout(0, 2, 16)
    base = torch.eye(4, dtype=torch.float64)
    maps = []
    for k in range(50):
        w = 0.5 + 1e-4 * (k % 7)
        a = (w * base + (1 - w) / 4).expand(1, 1, 4, 4)
        maps.append(a)
        stats.update(0, a, layout)
    row = index_rows(stats.rows("m", "c"))[(0, "entropy", 0, None)]
    direct = attention_entropy_per_image(torch.cat(maps))[:, 0]
    assert row["std"] == pytest.approx(torch.std(direct).item(), rel=1e-9)


def test_inconsistent_updates_raise_and_leave_state_alone():
    layout = TokenLayout(1, 2, 16)
    stats = AttentionStats()
    stats.update(0, batches(layout, 2, [2])[0], layout)
    before = stats.to_frame("m", "c")
    other = TokenLayout(1, (1, 4), 16)  # same N, different grid
    with pytest.raises(ValueError, match="one AttentionStats per input size"):
        stats.update(0, batches(other, 2, [2])[0], other)
    with pytest.raises(ValueError, match="heads"):
        stats.update(0, batches(layout, 3, [2])[0], layout)
    with pytest.raises(ValueError, match="sum to 1"):
        stats.update(0, torch.rand(2, 2, 5, 5), layout)
    with pytest.raises(ValueError, match="N=6"):
        stats.update(0, batches(TokenLayout(2, 2, 16), 2, [2])[0], layout)
    with pytest.raises(ValueError, match="layer must be an int"):
        stats.update("0", batches(layout, 2, [2])[0], layout)
    with pytest.raises(ValueError, match="N=4"):
        stats.update_tokens(0, torch.randn(2, 4, 8), layout)
    assert stats.to_frame("m", "c").equals(before)
    with pytest.raises(ValueError, match="radii"):
        AttentionStats(radii=[-1.0])


def test_updates_leave_maps_untouched_and_scratch_follows_dtype():
    """The reused scratch never writes into the caller's map, whatever its dtype or size."""
    layout = TokenLayout(1, (2, 3), 8)
    stats = AttentionStats(radii=RADII)
    n = layout.num_tokens
    maps = batches(layout, 2, [3]) + [torch.randn(5, 2, n, n, dtype=torch.float64).softmax(-1)] + batches(layout, 2, [2])
    copies = [a.clone() for a in maps]
    for layer, a in enumerate(maps):
        stats.update(layer, a, layout)
    assert all(torch.equal(a, c) for a, c in zip(maps, copies))
    rows = index_rows(stats.rows("m", "c"))
    for layer, a in enumerate(maps):
        direct = direct_per_image(a, layout)
        for name in ("entropy", "mad_px"):
            got = torch.tensor([rows[(layer, name, h, None)]["value"] for h in range(2)], dtype=torch.float64)
            assert torch.allclose(got, direct[name].mean(0), atol=1e-5), (layer, name)
