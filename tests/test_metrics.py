"""Attention and feature metrics against their closed forms (README, "Attention metrics")."""
import itertools
import math

import pytest
import torch

from attnlab.layout import TokenLayout
from attnlab.metrics import (
    MetricInputError,
    attention_entropy,
    attention_entropy_per_image,
    effective_rank,
    globality_curve,
    globality_curve_per_image,
    mean_attention_distance,
    mean_attention_distance_per_image,
    nonlocality,
    nonlocality_per_image,
    prefix_mass,
    prefix_mass_per_image,
    token_cosine_similarity,
)


# --------------------------------------------------------------------------- helpers


def grid_points(gh, gw):
    return [(r, c) for r in range(gh) for c in range(gw)]


def brute_mean_distance(gh, gw, ph=1, pw=1):
    """Mean over ALL ordered pairs (i, j), i == j included, of the (scaled) grid distance."""
    pts = grid_points(gh, gw)
    total = sum(math.hypot(ph * (a[0] - b[0]), pw * (a[1] - b[1])) for a in pts for b in pts)
    return total / len(pts) ** 2


def brute_share_beyond(gh, gw, r):
    pts = grid_points(gh, gw)
    return sum(math.dist(a, b) > r for a in pts for b in pts) / len(pts) ** 2


def with_prefix(block, num_prefix):
    """Embed a patch-to-patch map [.., G, G] in an N x N map; prefix rows attend uniformly."""
    *lead, g, _ = block.shape
    n = num_prefix + g
    out = torch.zeros(*lead, n, n, dtype=block.dtype)
    out[..., num_prefix:, num_prefix:] = block
    out[..., :num_prefix, :] = 1.0 / n
    return out


def uniform(b, h, n):
    return torch.full((b, h, n, n), 1.0 / n, dtype=torch.float64)


def identity(b, h, n):
    return torch.eye(n, dtype=torch.float64).expand(b, h, n, n).clone()


def one_hot_offset(gh, gw, delta):
    """[G, G] map where every query attends to the patch at offset +-delta (per component,
    +delta when it is on the grid, -delta otherwise), so every query sits at distance |delta|."""
    dr, dc = delta
    assert gh >= 2 * abs(dr) and gw >= 2 * abs(dc), "every query needs a target at +-delta"
    a = torch.zeros(gh * gw, gh * gw, dtype=torch.float64)
    for r, c in grid_points(gh, gw):
        tr = r + dr if 0 <= r + dr < gh else r - dr
        tc = c + dc if 0 <= c + dc < gw else c - dc
        a[r * gw + c, tr * gw + tc] = 1.0
    return a


def random_attention(b, h, n, dtype=torch.float64, sharp=3.0):
    return (sharp * torch.randn(b, h, n, n, dtype=torch.float64)).softmax(-1).to(dtype)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("num_prefix", [0, 2])
def test_identity_attention_is_zero_entropy_zero_distance(num_prefix):
    layout = TokenLayout(num_prefix, (3, 4), (8, 12))
    a = identity(2, 3, layout.num_tokens)
    for query in ["all", "patch"] + (["prefix"] if num_prefix else []):
        assert torch.equal(attention_entropy(a, query=query, layout=layout), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(attention_entropy(a, normalized=True), torch.zeros(3, dtype=torch.float64))
    for renorm in (True, False):
        assert torch.equal(mean_attention_distance(a, layout=layout, renormalize=renorm), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(nonlocality(a, layout), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(prefix_mass(a, layout), torch.zeros(3, dtype=torch.float64))
    # all mass on the own patch: nothing beyond r = 0
    assert torch.equal(globality_curve(a, layout, [0.0, 1.0]), torch.zeros(3, 2, dtype=torch.float64))


@pytest.mark.parametrize("g,p", [(2, 16), (4, 16), (5, 14)])
def test_uniform_attention_over_square_grid(g, p):
    n = g * g
    a = uniform(2, 3, n)
    layout = TokenLayout(0, g, p)
    expected_mad = p * brute_mean_distance(g, g)
    assert torch.allclose(attention_entropy(a), torch.full((3,), math.log(n), dtype=torch.float64))
    assert torch.allclose(attention_entropy(a, normalized=True), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(mean_attention_distance(a, grid_size=(g, g), patch_size=p, num_prefix_tokens=0),
                          torch.full((3,), expected_mad, dtype=torch.float64))
    # no prefix tokens: raw and renormalised agree
    assert torch.allclose(mean_attention_distance(a, layout=layout, renormalize=False),
                          torch.full((3,), expected_mad, dtype=torch.float64))
    assert torch.allclose(nonlocality(a, layout), torch.full((3,), expected_mad / p, dtype=torch.float64))
    radii = [0.0, 1.0, 1.5, 2.0, 100.0]
    curve = globality_curve(a, layout, radii)
    expected = torch.tensor([brute_share_beyond(g, g, r) for r in radii], dtype=torch.float64)
    assert torch.allclose(curve, expected.expand(3, -1))
    assert curve[0, 0] == pytest.approx(1 - 1 / n)  # r = 0: everything but the own patch
    assert curve[0, -1] == 0


@pytest.mark.parametrize("delta", [(0, 1), (1, 0), (1, 2), (2, 1), (3, 3)])
def test_one_hot_offset_gives_patch_times_offset(delta):
    gh, gw, p = 6, 7, 16
    block = one_hot_offset(gh, gw, delta).expand(2, 2, -1, -1)
    expected = p * math.hypot(*delta)
    for num_prefix in (0, 1):
        a = with_prefix(block, num_prefix)
        layout = TokenLayout(num_prefix, (gh, gw), p)
        assert torch.allclose(mean_attention_distance(a, layout=layout), torch.full((2,), expected, dtype=torch.float64))
        assert torch.allclose(nonlocality(a, layout), torch.full((2,), math.hypot(*delta), dtype=torch.float64))
        assert torch.allclose(attention_entropy(a, query="patch", layout=layout), torch.zeros(2, dtype=torch.float64))
        # all mass exactly |delta| away: beyond any r < |delta|, none beyond |delta|
        d = math.hypot(*delta)
        assert torch.allclose(globality_curve(a, layout, [0.0, d - 1e-9, d]),
                              torch.tensor([[1.0, 1.0, 0.0]] * 2, dtype=torch.float64))


def test_hand_computed_case_with_class_token():
    # 1 class token + 2x2 grid: token 0 = cls, 1 = (0,0), 2 = (0,1), 3 = (1,0), 4 = (1,1).
    A = torch.tensor([
        [0.20, 0.20, 0.20, 0.20, 0.20],  # cls: uniform
        [0.50, 0.25, 0.25, 0.00, 0.00],  # (0,0): half on cls, self .25, (0,1) at d=1 .25
        [0.50, 0.00, 0.00, 0.00, 0.50],  # (0,1): half on cls, (1,1) at d=1 .5
        [0.00, 0.00, 1.00, 0.00, 0.00],  # (1,0): all on (0,1) at d=sqrt2
        [0.25, 0.25, 0.25, 0.25, 0.00],  # (1,1): cls, (0,0) d=sqrt2, (0,1) d=1, (1,0) d=1
    ], dtype=torch.float64)[None, None]
    layout = TokenLayout(1, (2, 2), 16)
    ln2, s2 = math.log(2), math.sqrt(2)
    # Row entropies: log5, 1.5 log2, log2, 0, 2 log2.
    assert attention_entropy(A, layout=layout).item() == pytest.approx((math.log(5) + 4.5 * ln2) / 5)
    assert attention_entropy(A, normalized=True).item() == pytest.approx((math.log(5) + 4.5 * ln2) / 5 / math.log(5))
    assert attention_entropy(A, query="patch", layout=layout).item() == pytest.approx(4.5 * ln2 / 4)
    assert attention_entropy(A, query="prefix", layout=layout).item() == pytest.approx(math.log(5))
    assert attention_entropy(A, query="prefix", num_prefix_tokens=1).item() == pytest.approx(math.log(5))
    # Prefix mass: (.5 + .5 + 0 + .25) / 4.
    assert prefix_mass(A, layout).item() == pytest.approx(0.3125)
    # Raw sum_j A_ij d_ij (patch units): .25, .5, sqrt2, .5 + .25 sqrt2.
    raw = [0.25, 0.5, s2, 0.5 + 0.25 * s2]
    assert nonlocality(A, layout).item() == pytest.approx(sum(raw) / 4)
    assert mean_attention_distance(A, layout=layout, renormalize=False).item() == pytest.approx(16 * sum(raw) / 4)
    # Renormalised by patch mass .5, .5, 1, .75.
    renorm = [0.25 / 0.5, 0.5 / 0.5, s2, (0.5 + 0.25 * s2) / 0.75]
    mad = mean_attention_distance(A, grid_size=2, patch_size=16, num_prefix_tokens=1)
    assert mad.item() == pytest.approx(16 * sum(renorm) / 4)
    assert mad.item() > mean_attention_distance(A, layout=layout, renormalize=False).item()
    # Globality: r=0 -> 1 - A~_ii = .5, 1, 1, 1; r=1 -> 0, 0, 1, (.25/.75); r=1.5 -> 0.
    curve = globality_curve(A, layout, [0, 1, 1.5])
    assert curve[0].tolist() == pytest.approx([0.875, (1 + 1 / 3) / 4, 0.0])


def test_globality_at_zero_is_one_minus_self_mass():
    layout = TokenLayout(2, (3, 5), 16)
    a = random_attention(3, 4, layout.num_tokens)
    block = a[..., 2:, 2:]
    self_share = block.diagonal(dim1=-2, dim2=-1) / block.sum(-1)  # A~_ii, [B, H, G]
    expected = 1 - self_share.mean(-1)
    got = globality_curve_per_image(a, layout, [0.0])[..., 0]
    assert torch.allclose(got, expected)
    curve = globality_curve(a, layout, [0, 0.5, 1, 1.2, 1.5, 2, 3, 10])
    assert (curve[:, 1:] <= curve[:, :-1] + 1e-12).all()  # non-increasing in r
    assert torch.equal(curve[:, 0], curve[:, 1])  # no grid distance in (0, 0.5]
    assert torch.all(curve[:, -1] == 0)


def test_mad_and_globality_match_brute_force_on_random_maps():
    layout = TokenLayout(1, (3, 4), (8, 12))
    a = random_attention(2, 3, layout.num_tokens)
    pts = grid_points(3, 4)
    dpx = torch.tensor([[math.hypot(8 * (x[0] - y[0]), 12 * (x[1] - y[1])) for y in pts] for x in pts], dtype=torch.float64)
    dpu = torch.tensor([[math.dist(x, y) for y in pts] for x in pts], dtype=torch.float64)
    block = a[..., 1:, 1:]
    renorm = block / block.sum(-1, keepdim=True)
    assert torch.allclose(mean_attention_distance_per_image(a, layout=layout), (renorm * dpx).sum(-1).mean(-1))
    assert torch.allclose(mean_attention_distance_per_image(a, layout=layout, renormalize=False), (block * dpx).sum(-1).mean(-1))
    assert torch.allclose(nonlocality_per_image(a, layout), (block * dpu).sum(-1).mean(-1))
    assert torch.allclose(prefix_mass_per_image(a, layout), a[..., 1:, :1].sum(-1).mean(-1))
    expected = torch.stack([(renorm * (dpu > r)).sum(-1).mean(-1) for r in (0.0, 1.0, 2.0)], dim=-1)
    assert torch.allclose(globality_curve_per_image(a, layout, torch.tensor([0.0, 1.0, 2.0])), expected)


def test_non_square_grid_and_non_square_patch():
    gh, gw, ph, pw = 3, 5, 8, 12
    layout = TokenLayout(0, (gh, gw), (ph, pw))
    a = uniform(1, 2, gh * gw)
    expected = brute_mean_distance(gh, gw, ph, pw)
    assert torch.allclose(mean_attention_distance(a, layout=layout), torch.full((2,), expected, dtype=torch.float64))
    assert torch.allclose(mean_attention_distance(a, grid_size=(gh, gw), patch_size=(ph, pw)),
                          torch.full((2,), expected, dtype=torch.float64))
    # rows scaled by ph, columns by pw: swapping the patch sides changes the answer
    swapped = mean_attention_distance(a, grid_size=(gh, gw), patch_size=(pw, ph))
    assert not torch.allclose(swapped, torch.full((2,), expected, dtype=torch.float64))
    # one-hot offset on the non-square grid with a non-square patch
    for delta in [(1, 0), (0, 1), (1, 2)]:
        b = one_hot_offset(gh, gw, delta)[None, None]
        assert mean_attention_distance(b, layout=layout).item() == pytest.approx(math.hypot(ph * delta[0], pw * delta[1]))


def test_batch_and_head_averaging():
    g = 3
    n = g * g
    layout = TokenLayout(0, g, 10)
    off = one_hot_offset(g, g, (0, 1))
    # heads: 0 identity in both images; 1 identity then uniform; 2 offset then uniform
    a = torch.stack([
        torch.stack([torch.eye(n, dtype=torch.float64), torch.eye(n, dtype=torch.float64), off]),
        torch.stack([torch.eye(n, dtype=torch.float64), torch.full((n, n), 1 / n, dtype=torch.float64),
                     torch.full((n, n), 1 / n, dtype=torch.float64)]),
    ])
    assert a.shape == (2, 3, n, n)
    mad_u = 10 * brute_mean_distance(g, g)
    per_img = attention_entropy_per_image(a)
    assert per_img.shape == (2, 3)
    assert torch.allclose(per_img, torch.tensor([[0, 0, 0], [0, math.log(n), math.log(n)]], dtype=torch.float64))
    assert torch.allclose(attention_entropy(a), torch.tensor([0, math.log(n) / 2, math.log(n) / 2], dtype=torch.float64))
    mad = mean_attention_distance(a, layout=layout)
    assert mad.shape == (3,)
    assert torch.allclose(mad, torch.tensor([0, mad_u / 2, (10 + mad_u) / 2], dtype=torch.float64))
    assert torch.allclose(mean_attention_distance_per_image(a, layout=layout),
                          torch.tensor([[0, 0, 10], [0, mad_u, mad_u]], dtype=torch.float64))
    # every function: mean over the batch of the per-image twin
    pairs = [
        (attention_entropy(a, query="patch", layout=layout), attention_entropy_per_image(a, query="patch", layout=layout)),
        (nonlocality(a, layout), nonlocality_per_image(a, layout)),
        (prefix_mass(a, layout), prefix_mass_per_image(a, layout)),
        (globality_curve(a, layout, [0, 1]), globality_curve_per_image(a, layout, [0, 1])),
    ]
    for mean, per in pairs:
        assert torch.allclose(mean, per.mean(0))
    assert globality_curve_per_image(a, layout, [0, 1]).shape == (2, 3, 2)


def test_layout_and_int_forms_agree_and_float32_matches_float64():
    layout = TokenLayout(1, (4, 3), 16)
    a64 = random_attention(2, 3, layout.num_tokens)
    a32 = a64.to(torch.float32)
    ref = mean_attention_distance(a64, layout=layout)
    assert torch.allclose(mean_attention_distance(a64, grid_size=(4, 3), patch_size=(16, 16), num_prefix_tokens=1), ref)
    out32 = mean_attention_distance(a32, layout=layout)
    assert out32.dtype == torch.float64
    assert torch.allclose(out32, ref, rtol=1e-5)
    assert torch.allclose(attention_entropy(a32), attention_entropy(a64), rtol=1e-5)


def test_softmax_entropy_is_below_log_n_and_normalised_in_unit_interval():
    a = random_attention(2, 4, 17)
    h = attention_entropy(a, normalized=True)
    assert torch.all((h > 0) & (h < 1))


# --------------------------------------------------------------------------- validation


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def test_wrong_rank_and_shape_raise():
    layout = TokenLayout(0, 2, 16)
    with pytest.raises(ValueError, match=r"\[B, heads, N, N\]") as e:
        attention_entropy(torch.full((4, 4), 0.25))
    _one_line(e)
    with pytest.raises(ValueError, match="square"):
        mean_attention_distance(torch.full((1, 1, 4, 5), 0.2), layout=layout)
    with pytest.raises(ValueError, match="floating"):
        nonlocality(torch.ones(1, 1, 4, 4, dtype=torch.long), layout)
    with pytest.raises(ValueError, match="empty"):
        attention_entropy(torch.zeros(0, 2, 4, 4))
    with pytest.raises(ValueError, match="torch.Tensor"):
        attention_entropy([[0.5, 0.5]])


def test_n_not_matching_layout_raises():
    a = uniform(1, 2, 5)
    layout = TokenLayout(0, 2, 16)  # 4 tokens
    for call in (
        lambda: mean_attention_distance(a, layout=layout),
        lambda: mean_attention_distance(a, grid_size=2, patch_size=16),  # forgot num_prefix_tokens=1
        lambda: nonlocality(a, layout),
        lambda: prefix_mass(a, layout),
        lambda: globality_curve(a, layout, [1]),
        lambda: attention_entropy(a, query="patch", layout=layout),
    ):
        with pytest.raises(ValueError, match="N=5") as e:
            call()
        assert "1 prefix" not in _one_line(e)  # reports the layout that was given
    assert mean_attention_distance(a, grid_size=2, patch_size=16, num_prefix_tokens=1).shape == (2,)


def test_rows_not_summing_to_one_raise_only_when_checked():
    layout = TokenLayout(0, 2, 16)
    logits = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="sum to 1") as e:
        attention_entropy(logits.abs())
    _one_line(e)
    with pytest.raises(ValueError, match="negative"):
        mean_attention_distance(logits, layout=layout)
    with pytest.raises(ValueError, match="NaN"):
        prefix_mass(torch.full((1, 1, 4, 4), math.nan), layout)
    half = uniform(1, 2, 4) * 0.5
    with pytest.raises(ValueError, match="sum to 1"):
        globality_curve(half, layout, [0])
    # check=False measures whatever it is given
    assert torch.allclose(nonlocality(half, layout, check=False), 0.5 * nonlocality(uniform(1, 2, 4), layout))
    # float32 softmax rounding is within tolerance
    attention_entropy(torch.randn(2, 3, 50, 50).softmax(-1))


def test_bad_arguments_raise():
    a = uniform(1, 1, 5)
    layout = TokenLayout(1, 2, 16)
    with pytest.raises(ValueError, match="query"):
        attention_entropy(a, query="cls", layout=layout)
    with pytest.raises(ValueError, match="layout"):
        attention_entropy(a, query="patch")
    with pytest.raises(ValueError, match="no prefix tokens"):
        attention_entropy(uniform(1, 1, 4), query="prefix", layout=TokenLayout(0, 2, 16))
    with pytest.raises(ValueError, match="disagrees"):
        attention_entropy(a, query="patch", layout=layout, num_prefix_tokens=2)
    with pytest.raises(ValueError, match="outside"):
        attention_entropy(a, query="patch", num_prefix_tokens=9)
    with pytest.raises(ValueError, match="not both"):
        mean_attention_distance(a, layout=layout, grid_size=2)
    with pytest.raises(ValueError, match="grid_size"):
        mean_attention_distance(a, grid_size=2)
    with pytest.raises(ValueError, match="layout"):
        mean_attention_distance(a, grid_size=0, patch_size=16, num_prefix_tokens=1)
    with pytest.raises(ValueError, match="TokenLayout"):
        nonlocality(a, (1, 2, 16))
    with pytest.raises(ValueError, match="radii"):
        globality_curve(a, layout, [-1.0])
    with pytest.raises(ValueError, match="radii"):
        globality_curve(a, layout, [])
    with pytest.raises(ValueError, match="log N"):
        attention_entropy(torch.ones(1, 1, 1, 1), normalized=True)
    with pytest.raises(MetricInputError):  # also an AttnlabError for the CLI
        attention_entropy(a, query="cls")


# --------------------------------------------------------------------------- features


def test_token_cosine_matches_brute_force_and_ignores_prefix():
    layout = TokenLayout(1, (2, 3), 16)
    tokens = torch.randn(3, layout.num_tokens, 8)
    got = token_cosine_similarity(tokens, layout)
    assert got.shape == (3,) and got.dtype == torch.float64
    for b in range(3):
        x = tokens[b, 1:].double()
        pairs = [torch.nn.functional.cosine_similarity(x[i], x[j], dim=0)
                 for i, j in itertools.permutations(range(6), 2)]
        assert got[b].item() == pytest.approx(torch.stack(pairs).mean().item())
    changed = tokens.clone()
    changed[:, 0] = 1e6  # prefix token does not count
    assert torch.allclose(token_cosine_similarity(changed, layout), got)


def test_token_cosine_closed_forms():
    layout = TokenLayout(0, 2, 16)
    same = torch.randn(1, 1, 5).expand(2, 4, 5)
    assert torch.allclose(token_cosine_similarity(same, layout), torch.ones(2, dtype=torch.float64))
    ortho = torch.eye(4)[None]
    assert torch.allclose(token_cosine_similarity(ortho, layout), torch.zeros(1, dtype=torch.float64))
    pm = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])
    # pairs: 2 equal pairs (x2 orders) = +4, 8 opposite ordered pairs = -8 -> -4/12
    assert token_cosine_similarity(pm, layout).item() == pytest.approx(-1 / 3)


def test_effective_rank_closed_forms_and_no_centring():
    layout = TokenLayout(1, 2, 16)
    # identical patch tokens: rank 1 (centring would give a zero matrix instead)
    same = torch.randn(1, 1, 6).expand(2, 5, 6).clone()
    same[:, 0] = torch.randn(6)  # the class token differs and must be ignored
    assert torch.allclose(effective_rank(same, layout), torch.ones(2, dtype=torch.float64))
    # orthogonal patch tokens of equal norm: rank G
    ortho = torch.zeros(1, 5, 6)
    ortho[0, 1:, :4] = 3 * torch.eye(4)
    assert effective_rank(ortho, layout).item() == pytest.approx(4.0)
    # against a direct SVD
    x = torch.randn(3, 5, 6)
    s = torch.linalg.svdvals(x[:, 1:].double())
    p = s / s.sum(-1, keepdim=True)
    assert torch.allclose(effective_rank(x, layout), torch.exp(-(p * p.log()).sum(-1)))
    assert effective_rank(torch.zeros(1, 5, 6), layout).item() == 0.0


def test_feature_input_validation():
    layout = TokenLayout(1, 2, 16)
    with pytest.raises(ValueError, match=r"\[B, N, C\]"):
        effective_rank(torch.randn(5, 6), layout)
    with pytest.raises(ValueError, match="N=4"):
        token_cosine_similarity(torch.randn(2, 4, 6), layout)
    with pytest.raises(ValueError, match="at least 2"):
        token_cosine_similarity(torch.randn(2, 2, 6), TokenLayout(1, 1, 16))
    with pytest.raises(ValueError, match="TokenLayout"):
        effective_rank(torch.randn(2, 5, 6), None)


def test_metrics_import_no_model_code():
    """Metrics work on tensors plus a token layout: no model, capture or study code (nor pandas)."""
    import subprocess
    import sys

    code = ("import sys, attnlab.metrics; "
            "heavy = ('timm', 'pandas', 'attnlab.models', 'attnlab.capture', 'attnlab.studies'); "
            "bad = [m for m in sys.modules if m in heavy or m.startswith(tuple(h + '.' for h in heavy))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_metric_modules_share_only_public_names():
    """Modules of attnlab.metrics import no underscore name from one another (the kernels are public)."""
    import ast
    from pathlib import Path

    import attnlab.metrics

    folder = Path(attnlab.metrics.__file__).parent
    private = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                private += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not private, private


def test_softmax_jacobian_norm_closed_form_matches_autograd():
    from attnlab.metrics import softmax_jacobian_sq_norm, uniform_jacobian_sq_norm

    torch.manual_seed(0)
    for temperature in (0.1, 1.0, 10.0):
        z = torch.randn(7, dtype=torch.float64) / temperature
        jac = torch.autograd.functional.jacobian(lambda v: v.softmax(-1), z)
        got = softmax_jacobian_sq_norm(z.softmax(-1)[None])[0]
        assert torch.isclose(got, jac.pow(2).sum(), rtol=1e-10)
    uniform = torch.full((1, 16), 1 / 16)
    assert softmax_jacobian_sq_norm(uniform).item() == pytest.approx(uniform_jacobian_sq_norm(16))
    assert softmax_jacobian_sq_norm(torch.eye(5)).abs().max().item() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_globality_on_random_maps_matches_pairwise_loop(dtype):
    """Unsorted and repeated radii, a prefix token, float32 and float64, both ring-sum paths."""
    from attnlab.metrics.kernels import distance_rings, ring_mass

    torch.manual_seed(0)
    gh, gw, num_prefix = 3, 4, 1
    layout = TokenLayout(num_prefix, (gh, gw), 8)
    a = torch.randn(2, 3, 13, 13, dtype=torch.float64).mul(3).softmax(-1)
    a[0, 0, 5, 7] = 0.0  # an exact zero
    a = (a / a.sum(-1, keepdim=True)).to(dtype)
    radii = [2.0, 0.0, 1.0, 2.0, 1.5, 10.0]
    pts = grid_points(gh, gw)
    block = a[..., num_prefix:, num_prefix:].double()
    expected = torch.empty(2, 3, len(radii), dtype=torch.float64)
    for k, r in enumerate(radii):
        far = torch.tensor([[math.dist(p, q) > r for q in pts] for p in pts], dtype=torch.float64)
        expected[..., k] = ((block * far).sum(-1) / block.sum(-1)).mean(-1)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.allclose(globality_curve_per_image(a, layout, radii), expected, atol=tol)
    ring, _, n_rings = distance_rings(layout, tuple(radii))
    by_scatter = ring_mass(a[..., 1:, 1:], ring, n_rings, scatter=True)
    by_onehot = ring_mass(a[..., 1:, 1:], ring, n_rings, scatter=False)
    assert torch.allclose(by_scatter, by_onehot, atol=tol)
    assert torch.allclose(by_scatter.sum(-1), a[..., 1:, 1:].sum(-1), atol=tol)
    # the accumulator's one product: the distance sums (pixels) and the same ring masses, with or without scratch
    from attnlab.metrics.kernels import pair_sums

    px = torch.tensor([[math.dist(p, q) * 8 for q in pts] for p in pts], dtype=torch.float64)
    # a block sliced out of the map (read in place), a contiguous copy and a transposed copy (strides BLAS
    # cannot take: copied first) all give the same sums
    sliced = a[..., 1:, 1:]
    for b in (sliced, sliced.contiguous(), sliced.transpose(0, 1).contiguous().transpose(0, 1)):
        sums = pair_sums(b, layout, tuple(radii))
        assert sums.shape == (2, 3, gh * gw, 1 + n_rings)
        assert sums.dtype == dtype and torch.allclose(sums[..., 0].double(), (block * px).sum(-1), atol=tol * 100)
        assert torch.allclose(sums[..., 1:], by_scatter, atol=tol)


def test_entropy_with_exact_zeros_matches_xlogy():
    torch.manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        a = torch.rand(2, 2, 9, 9, dtype=torch.float64)
        a[a < 0.5] = 0.0
        a[..., 0] += 1e-3  # no all-zero rows
        a = (a / a.sum(-1, keepdim=True)).to(dtype)
        reference = -torch.special.xlogy(a.double(), a.double()).sum(-1).mean(-1)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert torch.allclose(attention_entropy_per_image(a), reference, atol=tol)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_one_non_finite_entry_is_refused(bad):
    a = uniform(2, 2, 5).clone()
    a[1, 0, 3, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf") as e:
        attention_entropy(a)
    _one_line(e)
    with pytest.raises(ValueError, match="NaN or inf"):
        globality_curve(a.float(), TokenLayout(1, 2, 16), [1.0])


def test_scratch_buffer_reuses_its_storage():
    from attnlab.metrics.kernels import ScratchBuffer

    buffer = ScratchBuffer()
    big = buffer.like(torch.empty(2, 3, 4))
    small = buffer.like(torch.empty(5))
    assert small.shape == (5,) and small.data_ptr() == big.data_ptr()  # smaller: same storage
    assert buffer.like(torch.empty(5, dtype=torch.float64)).dtype == torch.float64  # new dtype: new storage
    assert buffer.like(torch.empty(100, dtype=torch.float64)).numel() == 100  # larger: grows
