"""High-norm tokens (Darcet et al. 2024): found by the far-out fence, the attention they draw,
streamed by AttentionStats / AttentionAnalyser, and chosen with ``attnlab globality --metrics``."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import attnlab
from attnlab.capture import run_with_cache
from attnlab.cli import app
from attnlab.layout import TokenLayout
from attnlab.metrics import (HIGH_NORM_METRICS, METRIC_NAMES, AttentionStats, MetricInputError, high_norm_mass,
                             high_norm_share, high_norm_tokens, norm_quantiles, token_norms)
from attnlab.spec import InputSpec
from attnlab.studies.attention import FEATURE_METRICS, GLOBALITY_METRICS

F64 = torch.float64
LAYOUT = TokenLayout(1, (4, 4), 8)  # 1 class token + 16 patches
SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
runner = CliRunner()


def planted(seed=0, image=0, patch=5, scale=20.0):
    """Tokens [2, 17, 8] with one high-norm patch token (image ``image``, patch ``patch``) and a huge class token."""
    t = torch.randn(2, LAYOUT.num_tokens, 8, dtype=F64, generator=torch.Generator().manual_seed(seed))
    t[image, 1 + patch] *= scale
    t[:, 0] *= 50  # prefix tokens are never candidates
    return t


def attention(seed=1, b=2, heads=3):
    n = LAYOUT.num_tokens
    return (3 * torch.randn(b, heads, n, n, dtype=F64, generator=torch.Generator().manual_seed(seed))).softmax(-1)


def test_a_planted_high_norm_token_is_found():
    t = planted()
    found = high_norm_tokens(t, LAYOUT)
    assert found.shape == (2, 16) and found.dtype == torch.bool
    assert found.nonzero().tolist() == [[0, 5]]
    assert high_norm_share(t, LAYOUT).tolist() == [1 / 16, 0.0]
    norms = token_norms(t, LAYOUT)
    assert torch.allclose(norms, t[:, 1:].norm(dim=-1))
    q = norm_quantiles(t, LAYOUT, (0.5, 1.0))
    assert torch.allclose(q[:, 0], norms.median(-1).values.new_tensor(np.median(norms.numpy(), axis=-1)))
    assert torch.allclose(q[:, 1], norms.max(-1).values)
    # the fence: Q3 + 3 IQR of the image's own norms
    q1, q3 = np.quantile(norms[0].numpy(), [0.25, 0.75])
    assert (norms[0].numpy() > q3 + 3 * (q3 - q1)).nonzero()[0].tolist() == [5]


def test_equal_norms_have_no_outliers():
    t = torch.zeros(1, LAYOUT.num_tokens, 4, dtype=F64)
    t[..., 0] = 2.0
    assert not high_norm_tokens(t, LAYOUT).any()


def test_received_mass_equals_a_hand_computation():
    t, a = planted(), attention()
    got = high_norm_mass(a, high_norm_tokens(t, LAYOUT), LAYOUT)
    assert got.shape == (2, 3)
    for h in range(3):
        # image 0: mean over the 16 patch queries (tokens 1..16) of the attention on key 1 + 5
        expected = sum(a[0, h, q, 6].item() for q in range(1, 17)) / 16
        assert got[0, h].item() == pytest.approx(expected, rel=1e-12)
    assert (got[1] == 0).all()  # image 1 has no high-norm token
    with pytest.raises(MetricInputError, match=r"\[B, G\]"):
        high_norm_mass(a, torch.zeros(2, 17, dtype=torch.bool), LAYOUT)


def test_streaming_high_norm_metrics_follow_the_documented_layers():
    """token_norm_* / high_norm_share at layer l: block l's output; high_norm_mass at layer l:
    layer l's attention on the outliers of its input (block l-1's output, the embedded tokens for l = 0)."""
    embedded, out0, out1 = planted(seed=0, patch=2), planted(seed=3, patch=9), planted(seed=4, image=1, patch=11)
    a0, a1 = attention(seed=5), attention(seed=6)
    stats = AttentionStats(metrics=HIGH_NORM_METRICS + ("prefix_mass",))
    stats.update_block_input(0, embedded, LAYOUT)
    stats.update(0, a0, LAYOUT)
    stats.update_tokens(0, out0, LAYOUT)
    stats.update(1, a1, LAYOUT)
    stats.update_tokens(1, out1, LAYOUT)
    rows = {(r["layer"], r["metric"], r["head"]): r for r in stats.rows("m", "c")}
    for layer, (attn, keys) in enumerate([(a0, embedded), (a1, out0)]):
        mass = high_norm_mass(attn, high_norm_tokens(keys, LAYOUT), LAYOUT)  # [B, heads]
        for h in range(3):
            assert rows[(layer, "high_norm_mass", h)]["value"] == pytest.approx(mass[:, h].mean().item(), rel=1e-6)
        assert rows[(layer, "high_norm_mass", -1)]["value"] == pytest.approx(mass.mean().item(), rel=1e-6)
        assert (layer, "prefix_mass", -1) in rows
    for layer, out in enumerate([out0, out1]):
        assert rows[(layer, "high_norm_share", -1)]["value"] == pytest.approx(1 / 32)
        norms = token_norms(out, LAYOUT)
        assert rows[(layer, "token_norm_q50", -1)]["value"] == pytest.approx(norms.quantile(0.5, dim=-1).mean().item())
        assert rows[(layer, "token_norm_max", -1)]["value"] == pytest.approx(norms.max(-1).values.mean().item())
        assert rows[(layer, "token_norm_q25", -1)]["n_images"] == 2
    assert {k[1] for k in rows} == set(HIGH_NORM_METRICS) | {"prefix_mass"}


def test_high_norm_mass_needs_the_input_tokens_first():
    stats = AttentionStats(metrics=["high_norm_mass"])
    with pytest.raises(MetricInputError, match=r"update_tokens\(2, \.\.\.\)"):
        stats.update(3, attention(), LAYOUT)
    stats.update_tokens(2, planted(), LAYOUT)
    stats.update(3, attention(), LAYOUT)
    with pytest.raises(MetricInputError, match="same batch"):  # each batch's outliers are read once
        stats.update(3, attention(), LAYOUT)


def test_defaults_are_unchanged():
    assert not set(HIGH_NORM_METRICS) & set(METRIC_NAMES)
    stats = AttentionStats()
    stats.update(0, attention(), LAYOUT)  # no tokens needed: high_norm_mass is not measured by default
    stats.update_tokens(0, planted(), LAYOUT)
    assert {r["metric"] for r in stats.rows("m", "c")} == set(METRIC_NAMES)
    assert set(FEATURE_METRICS) == {"token_cosine", "effective_rank"} | set(HIGH_NORM_METRICS)
    with pytest.raises(MetricInputError, match="high_norm_share"):
        AttentionStats(metrics=["bogus"])


@pytest.fixture(scope="module")
def sink_model():
    """A micro ViT whose patch 5 gets a huge position embedding: a high-norm token in every block."""
    torch.manual_seed(0)
    net = attnlab.create_model("vit_micro_patch4_32").eval()
    with torch.no_grad():
        net.pos_embed[0, 1 + 5] += 40.0
    return net


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    return d


def test_analyser_measures_the_mass_of_each_layer_on_its_input(sink_model, images):
    result = attnlab.measure_attention([sink_model], ["sink"], images=[images], input_spec=SPEC, batch_size=4,
                                       metrics=["high_norm_share", "high_norm_mass", "prefix_mass"], device="cpu")
    df = result.frame
    x, _ = attnlab.ImageSelection(images=[images]).stacked(SPEC)
    inputs = {}
    handle = sink_model.blocks[0].register_forward_pre_hook(lambda m, args: inputs.setdefault(0, args[0]))
    try:
        _, cache = run_with_cache(sink_model, x, ["*.resid_post", "*.attn.pattern"])
    finally:
        handle.remove()
    layout = cache.layout
    for layer in range(len(sink_model.blocks)):
        keys = inputs[0] if layer == 0 else cache[f"blocks.{layer - 1}.resid_post"]
        outliers = high_norm_tokens(keys, layout)
        assert outliers[:, 5].all()  # the planted token
        expected = high_norm_mass(cache[f"blocks.{layer}.attn.pattern"], outliers, layout)
        got = df[(df.metric == "high_norm_mass") & (df.layer == layer) & (df["head"] >= 0)].sort_values("head")
        np.testing.assert_allclose(got["value"].to_numpy(), expected.mean(0).numpy(), rtol=1e-5)
        share = df[(df.metric == "high_norm_share") & (df.layer == layer)]
        assert share["value"].item() == pytest.approx(high_norm_share(cache[f"blocks.{layer}.resid_post"],
                                                                      layout).mean().item())
    assert set(df[df.metric == "high_norm_share"]["attention"]) == {"-"}
    assert set(df[df.metric == "high_norm_mass"]["attention"]) == {"applied"}


def test_revit_own_attention_gets_its_mass_too(images):
    net = attnlab.create_model("revit_micro_patch4_32")
    result = attnlab.measure_attention([net], images=[images], input_spec=SPEC, batch_size=4,
                                       metrics=["high_norm_mass"], device="cpu")
    df = result.frame
    assert set(df["attention"]) == {"applied", "own"} and set(df["metric"]) == {"high_norm_mass"}
    assert len(df[df["head"] == -1]) == 2 * 6


def test_globality_metrics_option(tmp_path, sink_model, images):
    ckpt = str(attnlab.save_checkpoint(sink_model, tmp_path / "sink.pt", input_spec=SPEC))
    out = tmp_path / "glob"
    result = runner.invoke(app, ["globality", "--ckpt", ckpt, "--images", str(images), "--batch-size", "4",
                                 "--metrics", "mad_px,high_norm_share,high_norm_mass,prefix_mass", "--out", str(out)])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out / "globality.csv")
    assert set(df["metric"]) == {"mad_px", "high_norm_share", "high_norm_mass", "prefix_mass"}
    assert (df[df.metric == "high_norm_share"]["value"] > 0).all()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["globality.csv"] + [f"{s}.{e}" for s in ("mad_per_layer", "mad_per_head") for e in ("png", "pdf")])
    # high-norm metrics alone: the CSV, and the terminal summary of the first one
    out2 = tmp_path / "glob2"
    result = runner.invoke(app, ["globality", "--ckpt", ckpt, "--images", str(images), "--metrics", "high_norm_share",
                                 "--out", str(out2)])
    assert result.exit_code == 0, result.output
    assert "high_norm_share per layer" in result.output
    assert [p.name for p in out2.iterdir()] == ["globality.csv"]


@pytest.mark.parametrize("value, fragment", [("bogus", "unknown --metrics bogus"), (",", "names no metric"),
                                             ("entropy", "unknown --metrics entropy")])
def test_bad_metrics_are_one_line_and_write_nothing(tmp_path, sink_model, images, value, fragment):
    ckpt = str(attnlab.save_checkpoint(sink_model, tmp_path / "sink.pt", input_spec=SPEC))
    out = tmp_path / "out"
    result = runner.invoke(app, ["globality", "--ckpt", ckpt, "--images", str(images), "--metrics", value,
                                 "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0] and "high_norm_mass" in lines[0]
    assert not out.exists()


def test_entropy_takes_no_metrics_option(tmp_path, images):
    result = runner.invoke(app, ["entropy", "--ckpt", "x.pt", "--images", str(images), "--metrics", "entropy"])
    assert result.exit_code == 2 and "No such option" in result.output
    assert list(GLOBALITY_METRICS) == ["mad_px", "mad_px_raw", "nonlocality", "globality", "prefix_mass"]
