"""Layer geometry of windowed, pooled and class attention, against closed forms and timm's own partition."""
import math

import pytest
import timm
import torch

from attnlab.geometry import class_queries, grid_positions, pooled_attention, pooled_grid, swin_windows
from attnlab.metrics.geometric import entropy, mean_distance, reachable_keys, uniform_in_windows


def window_mean_distance(w: int, px: float) -> float:
    """Mean distance between two tokens drawn uniformly from a w x w window (brute force)."""
    pts = [(i, j) for i in range(w) for j in range(w)]
    return px * sum(math.dist(a, b) for a in pts for b in pts) / len(pts) ** 2


def test_uniform_attention_in_a_window_has_the_window_mean_distance():
    g = swin_windows((8, 8), (4, 4), (0, 0), (4.0, 4.0))
    assert g.windows == 4 and g.query_pos.shape == (4, 16, 2)
    attn = torch.full((2 * 4, 3, 16, 16), 1 / 16)
    expected = window_mean_distance(4, 4.0)
    assert torch.allclose(mean_distance(attn, g), torch.full((3,), expected, dtype=torch.float64))
    assert uniform_in_windows(g) == pytest.approx(expected)


def test_shifted_window_positions_are_the_tokens_before_the_roll():
    g = swin_windows((8, 8), (4, 4), (2, 2), (1.0, 1.0))
    # window 0 of the rolled grid starts at token (2, 2) of the image
    assert g.query_pos[0, 0].tolist() == [2.5, 2.5]
    # the last window wraps: its first token is image token (6, 6), its last is (1, 1)
    assert g.query_pos[3, 0].tolist() == [6.5, 6.5] and g.query_pos[3, -1].tolist() == [1.5, 1.5]
    # one-hot attention from every query to a key at the same image position: distance 0
    onehot = torch.eye(16).expand(4, 2, 16, 16).reshape(4, 2, 16, 16)
    assert torch.equal(mean_distance(onehot, g), torch.zeros(2, dtype=torch.float64))


def test_window_positions_follow_timm_partition():
    from timm.models.swin_transformer import window_partition

    gh, gw, w, s = 6, 6, 3, 1
    pos = grid_positions((gh, gw), (1.0, 1.0)).reshape(1, gh, gw, 2)
    ref = window_partition(torch.roll(pos, shifts=(-s, -s), dims=(1, 2)), (w, w)).reshape(-1, w * w, 2)
    assert torch.equal(swin_windows((gh, gw), (w, w), (s, s), (1.0, 1.0)).query_pos, ref.double())


def test_padding_tokens_have_no_position():
    g = swin_windows((5, 5), (4, 4), (0, 0), (1.0, 1.0))
    assert g.windows == 4 and torch.isnan(g.key_pos).any(-1).sum() == 4 * 16 - 25


def test_mvitv2_positions_against_hand_computed_strides():
    size, pos = pooled_grid((8, 8), (2, 2), (4.0, 4.0))
    assert size == (4, 4)
    assert pos[:4, 1].tolist() == [2.0, 10.0, 18.0, 26.0]  # (i * 2 + 0.5) * 4
    g = pooled_attention((8, 8), (1, 1), (4, 4), (4.0, 4.0))
    assert g.query_pos.shape == (1, 64, 2) and g.key_pos.shape == (1, 4, 2)
    assert g.key_pos[0, :2, 1].tolist() == [2.0, 18.0]


def test_class_attention_distance_is_undefined_not_zero():
    g = class_queries(1 + 16, (4, 4), (4.0, 4.0))
    attn = torch.full((2, 3, 1, 17), 1 / 17)
    assert torch.isnan(mean_distance(attn, g)).all()


def test_entropy_normalised_by_the_keys_a_query_can_reach():
    scores = torch.zeros(1, 1, 2, 4)
    scores[..., 0, 2:] = -100.0                 # query 0 reaches 2 keys, query 1 all 4
    attn = scores.softmax(-1)
    h, norm = entropy(attn, reachable_keys(scores, attn))
    assert norm.item() == pytest.approx(1.0, abs=1e-6)   # uniform over what each can reach
    assert h.item() == pytest.approx((math.log(2) + math.log(4)) / 2, abs=1e-6)


def test_swin_model_windows_match_the_captured_maps():
    from attnlab.capture import run_with_cache

    torch.manual_seed(0)
    m = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=56, depths=(2,), num_heads=(2,),
                          embed_dim=16, num_classes=3).eval()
    with torch.no_grad():
        _, cache = run_with_cache(m, torch.randn(2, 3, 56, 56), "*.pattern")
    blk = m.layers[0].blocks[1]
    g = swin_windows(tuple(blk.input_resolution), tuple(blk.window_size), tuple(blk.shift_size), (4.0, 4.0))
    attn = cache["layers.0.blocks.1.attn.pattern"]
    assert attn.shape[0] == 2 * g.windows and attn.shape[-1] == g.key_pos.shape[1]
    assert torch.isfinite(mean_distance(attn, g)).all()


def test_geometric_stats_stream_over_batches_like_one_pass():
    from attnlab.metrics.geometric import GeometricStats, per_image

    g = swin_windows((8, 8), (4, 4), (2, 2), (4.0, 4.0))
    torch.manual_seed(0)
    attn = torch.randn(3 * 4, 2, 16, 16).softmax(-1)
    whole = GeometricStats()
    whole.update(0, attn, g)
    parts = GeometricStats()
    parts.update(0, attn[:4], g)
    parts.update(0, attn[4:], g)
    a, b = whole.rows("m", "c"), parts.rows("m", "c")
    assert [r["value"] for r in a] == pytest.approx([r["value"] for r in b])
    mad, _, _ = per_image(attn, g)
    row = next(r for r in a if r["metric"] == "mad_px" and r["head"] == 0)
    assert row["value"] == pytest.approx(float(mad[:, 0].mean())) and row["n_images"] == 3
    assert torch.allclose(mad.mean(0), mean_distance(attn, g))


def test_stage_of_a_module_path():
    from attnlab.geometry import stage_of, stage_path

    assert (stage_of("layers.2.blocks.0.attn"), stage_path("layers.2.blocks.0.attn")) == (2, "layers.2")
    assert (stage_of("stages.1.blocks.3.attn"), stage_path("stages.1.blocks.3.attn")) == (1, "stages.1")
    # one stage: ViT blocks, CaiT's class attention, Hugging Face's encoder layers (blocks, not stages)
    for path in ("blocks.7.attn", "blocks_token_only.1.attn", "hf.vit.layers.5.attention",
                 "hf.encoder.layers.3.self_attn", "hf.encoder.layer.2.attention"):
        assert (stage_of(path), stage_path(path)) == (0, None), path


def test_the_stages_of_a_swin_and_an_mvitv2():
    from attnlab.adapters import find_attention
    from attnlab.geometry import stage_of

    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=56, depths=(2, 2),
                             num_heads=(2, 4), embed_dim=16, num_classes=3)
    assert [stage_of(f.path) for f in find_attention(swin)] == [0, 0, 1, 1]
    mvit = timm.create_model("mvitv2_tiny", pretrained=False, img_size=64, num_classes=3)
    assert [stage_of(f.path) for f in find_attention(mvit)] == [0, 1, 1, 2, 2, 2, 2, 2, 3, 3]


def test_distance_terms_are_computed_once_and_leave_equality_alone():
    g = swin_windows((5, 5), (4, 4), (0, 0), (2.0, 2.0))
    d, keys, queries = g.distance_terms()
    assert g.distance_terms() is g.distance_terms() and d is g.distance_terms()[0]
    assert not torch.isnan(d).any() and keys.sum() == 25 and torch.equal(keys, queries)
    both = queries[:, :, None] & keys[:, None, :]                     # [W, Nq, Nk]: query and key have a position
    assert torch.equal(d[both], g.distances()[~torch.isnan(g.distances())]) and (d[~both] == 0).all()
    twin = swin_windows((5, 5), (4, 4), (0, 0), (2.0, 2.0))
    assert "_terms" not in twin.__dict__ and torch.equal(twin.query_pos.nan_to_num(-1), g.query_pos.nan_to_num(-1))


def test_padded_windows_renormalise_over_the_keys_with_a_position():
    from attnlab.metrics.geometric import per_image

    g = swin_windows((5, 5), (4, 4), (0, 0), (1.0, 1.0))   # 4 windows, 39 padding tokens
    torch.manual_seed(0)
    attn = torch.randn(2 * 4, 2, 16, 16).softmax(-1).double()
    d, keys, queries = g.distance_terms()
    a = attn.reshape(2, 4, 2, 16, 16)
    per_query = (a * d[None, :, None]).sum(-1) / (a * keys[None, :, None, None]).sum(-1)   # [B, W, H, Nq]
    q = queries[None, :, None].expand_as(per_query)
    expected = torch.stack([per_query[b].permute(1, 0, 2)[q[b].permute(1, 0, 2)].reshape(2, -1).mean(-1)
                            for b in range(2)])
    torch.testing.assert_close(per_image(attn, g)[0], expected)


def test_globality_nonlocality_and_prefix_mass_on_geometry():
    from attnlab.metrics.geometric import GeometricStats, per_image_extra

    g = swin_windows((4, 4), (2, 2), (0, 0), (8.0, 8.0))  # 4 windows of 2x2 tokens, 8 px each
    g = type(g)(g.query_pos, g.key_pos, unit_px=8.0)
    onehot = torch.zeros(4, 1, 4, 4)
    onehot[..., 0] = 1.0                                  # every query looks at its window's first token
    extra = per_image_extra(onehot, g, radii=[0.0, 1.0, 1.5])
    # distances to token 0 of a 2x2 window: 0, 1, 1, sqrt(2) tokens
    assert extra["nonlocality"].item() == pytest.approx((0 + 1 + 1 + math.sqrt(2)) / 4)
    assert extra["globality"][0, 0].tolist() == pytest.approx([3 / 4, 1 / 4, 0.0])
    assert extra["prefix_mass"].item() == 0.0
    stats = GeometricStats({"globality", "nonlocality", "mad_px"}, radii=[0.0, 1.0])
    stats.update(0, onehot, g)
    rows = stats.rows("m", "c")
    glob = [r for r in rows if r["metric"] == "globality" and r["head"] == -1]
    assert [r["radius"] for r in glob] == [0.0, 1.0] and glob[0]["value"] == pytest.approx(0.75)


def test_class_attention_has_no_query_metrics_but_entropy():
    from attnlab.metrics.geometric import GeometricStats

    g = class_queries(1 + 4, (2, 2), (4.0, 4.0))
    stats = GeometricStats(None)
    stats.update(0, torch.full((2, 1, 1, 5), 0.2), g)
    assert {r["metric"] for r in stats.rows("m", "c")} == {"entropy", "entropy_norm"}
