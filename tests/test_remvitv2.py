"""ReMViTv2: residual attention on timm's MViTv2, its official checkpoints, and capture on it."""
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from timm.models.mvitv2 import MultiScaleVit

import attnlab
from attnlab import adapters
from attnlab.adapters import remvitv2 as remvitv2_adapter
from attnlab.capture import run_with_cache
from attnlab.errors import CheckpointError
from attnlab.models import remvitv2 as R
from attnlab.models.official_remvitv2 import (convert_official_remvitv2, is_official_remvitv2,
                                              unwrap_official_remvitv2)
from attnlab.spec import InputSpec

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
ALPHA = 0.3  # not the default 0.5


@pytest.fixture
def registered(monkeypatch):
    """The ReMViTv2 adapter in ADAPTERS before MViTv2's (as the package will have it)."""
    if remvitv2_adapter.ADAPTER not in adapters.ADAPTERS:
        monkeypatch.setattr(adapters, "ADAPTERS", [remvitv2_adapter.ADAPTER] + list(adapters.ADAPTERS))


def micro(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("remvitv2_micro_32", **kwargs).eval()


# ----------------------------------------------------------------------------- residual off = timm

@pytest.mark.parametrize("name,size,off", [("micro_32", 32, dict(residual=False)),
                                           ("micro_32", 32, dict(alpha=1.0, learn_alpha=False)),
                                           ("tiny", 224, dict(residual=False))])
def test_with_the_residual_off_it_is_timms_mvitv2_exactly(name, size, off):
    torch.manual_seed(0)
    if name == "micro_32":
        ref = MultiScaleVit(R.MICRO_32, img_size=32, num_classes=10).eval()
    else:
        ref = timm.create_model("mvitv2_tiny").eval()
    torch.manual_seed(0)
    net = timm.create_model(f"remvitv2_{name}", **off).eval()
    ours = {k: v for k, v in net.state_dict().items() if k != "alpha"}
    assert ours.keys() == ref.state_dict().keys()
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.items())  # same init, same seed
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))


def test_residual_changes_the_output_and_alpha_is_shared_without_weight_decay():
    net = micro()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        on = net(x)
        net.residual = False
        off = net(x)
    assert not torch.allclose(on, off)
    assert [n for n, p in net.named_parameters() if p.numel() == 1] == ["alpha"]
    assert float(net.alpha.detach()) == 0.5 and "alpha" in net.no_weight_decay()
    for name in ("remvitv2_tiny", "remvitv2_small", "remvitv2_base", "remvitv2_micro_32"):
        assert timm.is_model(name)
    assert timm.get_pretrained_cfg("remvitv2_micro_32").input_size == (3, 32, 32)
    assert timm.get_pretrained_cfg("remvitv2_tiny").input_size == (3, 224, 224)
    assert net.stage_summary() == dict(stages=[1, 2, 1], widths=[32, 64, 128], heads_per_stage=[1, 2, 4],
                                       residual="learnable alpha, shared")


def test_it_trains_with_and_without_gradient_checkpointing_and_gives_stage_features():
    net = micro().train()
    x = torch.randn(4, 3, 32, 32)
    grads = []
    for on in (False, True):
        net.zero_grad()
        net.set_grad_checkpointing(on)
        net(x).logsumexp(-1).mean().backward()
        grads.append(net.alpha.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs() > 0
    feats = timm.create_model("remvitv2_micro_32", features_only=True)(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 8, 8), (64, 4, 4), (128, 2, 2)]


# ----------------------------------------------------------------------------- T, the resampling rule

def test_resampling_pools_queries_and_keys_and_upsamples_keys():
    res = torch.randn(2, 3, 16, 4)
    # heads change: the mean over heads, broadcast later
    out = R.resample_carried(res, heads=6, n_q=16, n_k=4)
    assert out.shape == (2, 1, 16, 4) and torch.allclose(out[:, 0], res.mean(1))
    # query grid 4x4 -> 2x2: the mean of each 2x2 block of queries, per key
    out = R.resample_carried(res, heads=3, n_q=4, n_k=4)
    q = res.reshape(2, 3, 2, 2, 2, 2, 4)                         # (qi, di, qj, dj, key)
    assert torch.allclose(out.reshape(2, 3, 2, 2, 4), q.mean((3, 5)))
    # key grid 2x2 -> 4x4: nearest, key (i, j) takes old key (i // 2, j // 2)
    out = R.resample_carried(res, heads=3, n_q=16, n_k=16)
    for i in range(4):
        for j in range(4):
            assert torch.equal(out[..., i * 4 + j], res[..., (i // 2) * 2 + j // 2])
    # key grid 4x4 -> 2x2: the mean of each 2x2 block of keys
    wide = torch.randn(1, 2, 4, 16)
    out = R.resample_carried(wide, heads=2, n_q=4, n_k=4)
    assert torch.allclose(out.reshape(1, 2, 4, 2, 2), wide.reshape(1, 2, 4, 2, 2, 2, 2).mean((4, 6)))
    # kernel = stride = floor(sqrt(N') / sqrt(N)), no padding: 7x7 -> 3x3 drops the last row/column
    odd = torch.randn(1, 1, 4, 49)
    out = R.resample_carried(odd, heads=1, n_q=4, n_k=9)
    assert torch.allclose(out[0, 0, :, 0], odd[0, 0].reshape(4, 7, 7)[:, :2, :2].mean((1, 2)))
    with pytest.raises(ValueError, match="square token grids"):
        R.resample_carried(torch.randn(1, 1, 17, 4), heads=1, n_q=4, n_k=4)


def test_a_class_token_configuration_is_refused_in_one_line():
    with pytest.raises(ValueError, match="3137") as e:
        timm.create_model("remvitv2_micro_32", mvit_cfg=dict(use_cls_token=True))
    assert "\n" not in str(e.value) and "class-token" in str(e.value)


# ----------------------------------------------------------------------------- official layout

def official_layout(net):
    """The keys the official code writes for ``net``: blocks numbered through, ``proj`` for the width
    change, ``head.projection`` (the inverse of the mapping, written here on its own)."""
    sd, n, names = {}, 0, {}
    for s, stage in enumerate(net.stages):
        for b in range(len(stage.blocks)):
            names[f"stages.{s}.blocks.{b}."] = f"blocks.{n}."
            n += 1
    for k, v in net.state_dict().items():
        for new, old in names.items():
            if k.startswith(new):
                k = old + k[len(new):].replace("shortcut_proj_attn.", "proj.")
        sd[k.replace("head.fc.", "head.projection.")] = v.clone()
    return sd


def official_micro():
    net = micro()
    sd = official_layout(net)
    sd["alpha"] = torch.tensor([ALPHA])
    return sd


def _ln(x, sd, key, eps=1e-6):
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], eps)


def _pool(t, sd, key, stride, grid):
    """Depthwise 3x3 conv pooling of ``[B, heads, H*W, d]`` on ``grid``, then LayerNorm over d."""
    B, h, _, d = t.shape
    g = t.reshape(B * h, grid[0], grid[1], d).permute(0, 3, 1, 2)
    g = F.conv2d(g, sd[f"{key}.weight"], stride=stride, padding=1, groups=d)
    size = g.shape[-2:]
    t = g.reshape(B, h, d, -1).transpose(2, 3)
    return _ln(t, sd, key.replace("pool_", "norm_")), tuple(size)


def _rel_pos(q, qs, ks, rh, rw):
    """P_l[(i, j), (m, n)] = q . Rh[dh(i, m)] + q . Rw[dw(j, n)] (MViTv2's decomposed relative positions)."""
    def table(nq, nk, r):
        qr, kr = max(nk / nq, 1.0), max(nq / nk, 1.0)
        dist = torch.tensor([[int(i * qr - m * kr + (nk - 1) * kr) for m in range(nk)] for i in range(nq)])
        return r[dist]                                              # [nq, nk, d]

    B, h, _, d = q.shape
    qg = q.reshape(B, h, qs[0], qs[1], d)
    ph = torch.einsum("bhijd,imd->bhijm", qg, table(qs[0], ks[0], rh))
    pw = torch.einsum("bhijd,jnd->bhijn", qg, table(qs[1], ks[1], rw))
    return (ph[..., :, None] + pw[..., None, :]).reshape(B, h, qs[0] * qs[1], ks[0] * ks[1])


def _resample(res, heads, nq, nk):
    """T written out: block means over grids (pooling), repetition (nearest upsampling)."""
    if res.shape[1] != heads:
        res = res.mean(1, keepdim=True)
    B, h, nq0, nk0 = res.shape
    s0, s = math.isqrt(nq0), math.isqrt(nq)
    if nq0 > nq:
        r = s0 // s
        res = res.reshape(B, h, s, r, s, r, nk0).mean((3, 5)).reshape(B, h, nq, nk0)
    s0, s = math.isqrt(nk0), math.isqrt(nk)
    if nk0 > nk:
        r = s0 // s
        res = res.reshape(B, h, nq, s, r, s, r).mean((4, 6)).reshape(B, h, nq, nk)
    elif nk0 < nk:
        r = s // s0
        res = res.reshape(B, h, nq, s0, s0).repeat_interleave(r, -2).repeat_interleave(r, -1).reshape(B, h, nq, nk)
    return res


def reference_forward(sd, x, depths=(1, 2, 1), heads=(1, 2, 4), kv_adaptive=4):
    """The official ReMViTv2 forward from the formulas (methods.md section 7), on official keys."""
    alpha = float(sd["alpha"])
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=4, padding=3)
    grid = tuple(x.shape[-2:])
    x = x.flatten(2).transpose(1, 2)
    carried, patterns, n, kv = None, [], 0, kv_adaptive
    for stage, depth in enumerate(depths):
        for b in range(depth):
            p, h = f"blocks.{n}.", heads[stage]
            sq = 2 if (b == 0 and stage > 0) else 1
            if sq > 1:
                kv = max(kv // 2, 1)
            xn = _ln(x, sd, p + "norm1")
            B, N, _ = xn.shape
            qkv = F.linear(xn, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
            q, k, v = qkv.reshape(B, N, 3, h, -1).permute(2, 0, 3, 1, 4)
            q, qs = _pool(q, sd, p + "attn.pool_q", sq, grid)
            k, ks = _pool(k, sd, p + "attn.pool_k", kv, grid)
            v, _ = _pool(v, sd, p + "attn.pool_v", kv, grid)
            s_l = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)        # S_l
            if carried is None:
                c_l = s_l                                               # C_1 = S_1
            else:
                c_l = alpha * s_l + (1 - alpha) * _resample(carried, h, s_l.shape[-2], s_l.shape[-1])
            c_l = c_l + _rel_pos(q, qs, ks, sd[p + "attn.rel_pos_h"], sd[p + "attn.rel_pos_w"])  # C_l += P_l
            carried = c_l
            a_l = c_l.softmax(-1)
            patterns.append(a_l)
            y = (a_l @ v + q).transpose(1, 2).reshape(B, a_l.shape[-2], -1)
            y = F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
            short = F.linear(xn, sd[p + "proj.weight"], sd[p + "proj.bias"]) if p + "proj.weight" in sd else x
            if sq > 1:
                g = short.transpose(1, 2).reshape(B, -1, *grid)
                short = F.max_pool2d(g, sq + 1, sq, (sq + 1) // 2).flatten(2).transpose(1, 2)
            x = short + y
            m = F.gelu(F.linear(_ln(x, sd, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
            x = x + F.linear(m, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
            grid, n = qs, n + 1
    x = _ln(x, sd, "norm").mean(1)
    return F.linear(x, sd["head.projection.weight"], sd["head.projection.bias"]), patterns


def converted(sd):
    spec, state = convert_official_remvitv2(sd, source="test.pth")
    net = timm.create_model(spec.arch, **spec.options).eval()
    net.load_state_dict(state)
    return spec, net


def test_converted_official_weights_match_a_reference_forward_written_from_the_formulas():
    sd = official_micro()
    spec, net = converted(sd)
    assert spec.arch == "remvitv2_micro_32" and float(net.alpha.detach()) == pytest.approx(ALPHA)
    x = torch.randn(2, 3, 32, 32)
    seen = []
    for blk in (b for s in net.stages for b in s.blocks):
        blk.attn.observer = lambda kind, t: seen.append(t) if kind == "pattern" else None
    with torch.no_grad():
        logits = net(x)
        ref_logits, ref_patterns = reference_forward(sd, x)
    assert len(seen) == len(ref_patterns) == 4
    assert [tuple(p.shape[-2:]) for p in seen] == [(64, 4), (16, 16), (16, 4), (4, 16)]  # every T rule
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    for got, want in zip(seen, ref_patterns):
        torch.testing.assert_close(got, want.expand_as(got), atol=1e-5, rtol=0)


@pytest.mark.parametrize("container", ["model_state_dict", "model", "model_state", "bare"])
def test_each_official_container_loads_to_the_same_logits(container, tmp_path):
    sd = official_micro()
    ddp = {f"module.{k}": v for k, v in sd.items()}
    obj = ddp if container == "bare" else {"epoch": 3, container: ddp if container != "model_state" else sd}
    torch.save(obj, tmp_path / "ckpt.pth")
    found = unwrap_official_remvitv2(torch.load(tmp_path / "ckpt.pth", weights_only=True))
    assert found is not None and is_official_remvitv2(found)
    _, net = converted(found)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference_forward(sd, x)[0], atol=1e-5, rtol=0)


def test_the_official_tiny_layout_reads_as_remvitv2_tiny():
    torch.manual_seed(0)
    sd = official_layout(timm.create_model("remvitv2_tiny"))
    assert len(sd) == 243 and "blocks.1.proj.weight" in sd and "blocks.8.proj.weight" in sd
    official_yaml = {  # the ReViT and DATA sections of the official config-ReMViTv2-T.yaml
        "ReViT": {"mode": "conv", "pool_first": False, "embed_dim": 96, "num_heads": 1, "mlp_ratio": 4,
                  "qkv_bias": True, "depth": 10, "dim_mul": [[1, 2.0], [3, 2.0], [8, 2.0]], "use_abs_pos": False,
                  "use_rel_pos": True, "residual_pooling": True, "cls_embed_on": False},
        "DATA": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_size": 224,
                 "VAL_CROP_RATIO": 0.875}}
    spec, state = convert_official_remvitv2(sd, config=official_yaml)
    assert spec.arch == "remvitv2_tiny" and "mvit_cfg" not in spec.options and spec.input.size == (224, 224)
    assert "stages.2.blocks.0.shortcut_proj_attn.weight" in state and "head.fc.weight" in state
    net = timm.create_model(spec.arch, **spec.options)
    assert [s.blocks[0].attn.num_heads for s in net.stages] == [1, 2, 4, 8]
    net.load_state_dict(state)


def test_other_sizes_carry_their_config_as_an_option():
    torch.manual_seed(0)
    sd = official_layout(timm.create_model("remvitv2_micro_32", mvit_cfg=dict(depths=[2, 1, 1], num_heads=[2, 4, 8])))
    spec, state = convert_official_remvitv2(sd)
    assert spec.options["mvit_cfg"]["depths"] == [2, 1, 1] and spec.options["mvit_cfg"]["num_heads"] == [2, 4, 8]
    timm.create_model(spec.arch, **spec.options).load_state_dict(state)


def _one_line(fn):
    with pytest.raises(CheckpointError) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_official_files_fail_in_one_line():
    sd = official_micro()
    pool_first = {k.replace("attn.qkv.", "attn.q."): v for k, v in sd.items()}
    assert "pool_first" in _one_line(lambda: convert_official_remvitv2(pool_first))
    with_cls = dict(sd, cls_token=torch.zeros(1, 1, 32))
    assert "class token" in _one_line(lambda: convert_official_remvitv2(with_cls))
    gap = {k.replace("blocks.3.", "blocks.7."): v for k, v in sd.items()}
    assert "fit no ReMViTv2" in _one_line(lambda: convert_official_remvitv2(gap))
    no_alpha = {k: v for k, v in sd.items() if k != "alpha"}
    assert "mvitv2" in _one_line(lambda: convert_official_remvitv2(no_alpha))
    config = {"ReViT": {"embed_dim": 96, "depth": 4}, "DATA": {"crop_size": 32}}
    msg = _one_line(lambda: convert_official_remvitv2(sd, config=config))
    assert "embed_dim 96" in msg and "32" in msg
    assert _one_line(lambda: convert_official_remvitv2(sd, config={"ReViT": {"cls_embed_on": True}}))
    assert "residual_pooling" in _one_line(
        lambda: convert_official_remvitv2(sd, config={"ReViT": {"residual_pooling": False}}))
    assert "dim_mul" in _one_line(lambda: convert_official_remvitv2(sd, config={"ReViT": {"dim_mul": [[1, 2.0]]}}))
    good = {"ReViT": {"embed_dim": 32, "dim_mul": [[1, 2.0], [3, 2.0]], "num_heads": 1, "depth": 4, "mlp_ratio": 4, "qkv_bias": True},
            "DATA": {"crop_size": 32, "VAL_CROP_RATIO": 1.0}}
    assert convert_official_remvitv2(sd, config=good)[0].input.crop_pct == 1.0


# ----------------------------------------------------------------------------- capture and analysis

def test_the_adapter_reports_each_point_and_leaves_the_model_as_it_was(registered):
    from contextlib import ExitStack

    net = micro()
    x = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        plain = net(x)
        found = adapters.find_attention(net)
        assert [f.adapter for f in found] == [remvitv2_adapter.ADAPTER] * 4
        assert found[1].path == "stages.1.blocks.0.attn" and found[1].block == "stages.1.blocks.0"
        seen = {}
        with ExitStack() as stack:
            for i, f in enumerate(found):
                f.adapter.install(f.module, lambda kind, t, i=i: seen.setdefault((i, kind), t), stack)
            assert torch.equal(net(x), plain)
        out, cache = run_with_cache(net, x, "*.attn.pattern")
    assert torch.equal(out, plain)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all("observer" not in b.attn.__dict__ for s in net.stages for b in s.blocks)
    for i in range(4):
        scores, mixed, pattern = seen[i, "scores"], seen[i, "mixed_scores"], seen[i, "pattern"]
        torch.testing.assert_close(pattern, mixed.softmax(-1))
        torch.testing.assert_close(pattern, cache[f"{found[i].path}.pattern"])
        if i == 0:
            torch.testing.assert_close(mixed, scores)                 # C_1 = S_1 (+ P_1 in both)
        else:
            assert not torch.allclose(mixed, scores.expand_as(mixed))
    assert torch.equal(seen[0, "pattern"].sum(-1).round(), torch.ones(2, 1, 64))


def test_measure_attention_gives_a_finite_distance_per_layer(registered, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    result = attnlab.measure_attention([micro()], ["ReMViTv2"], images=[tmp_path], input_spec=SPEC, batch_size=2,
                                       metrics=["mad_px"], device="cpu")
    df = result.frame
    mad = df[(df.metric == "mad_px") & (df["head"] == -1)] if "head" in df else df[df.metric == "mad_px"]
    assert sorted(mad["layer"].unique()) == [0, 1, 2, 3]
    assert np.isfinite(mad["value"]).all() and (mad["value"] > 0).all()


def test_load_model_reads_an_official_remvitv2_file(tmp_path):
    import attnlab

    sd = official_micro()
    path = tmp_path / "remvitv2.pth"
    torch.save({"epoch": 1, "model_state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    net, spec = attnlab.load_model(path)
    assert spec.kind == "official-remvitv2" and float(net.alpha) == pytest.approx(ALPHA)
    with torch.no_grad():
        assert torch.isfinite(net(torch.randn(2, 3, 32, 32))).all()
