"""Fidelity of the ViT / ReViT / CB families: they differ only in the mechanism under study."""
import pytest
import timm
import torch

import attnlab  # noqa: F401  (registers the families)
from attnlab.models import ENTRIES, create_model
from attnlab.models.broadcast import ContextBroadcast


def _qk_logits(attn, x):
    """S = scale * Q K^T computed by hand from a timm attention module and its input."""
    B, N, C = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    return (q * attn.scale) @ k.transpose(-2, -1)


def _record_attn_inputs(model):
    inputs, handles = [], []
    for blk in model.blocks:
        handles.append(blk.attn.register_forward_hook(lambda m, args, out: inputs.append(args[0])))
    return inputs, handles


def _record_revit_logits(model):
    logits = []
    handles = [blk.attn.register_forward_hook(lambda m, args, out: logits.append(out[1])) for blk in model.blocks]
    return logits, handles


def test_revit_with_a_equal_one_is_vit():
    vit = create_model("vit_micro_patch4_32").eval()
    revit = create_model("revit_micro_patch4_32", alpha=1.0, learn_alpha=False).eval()
    revit.load_state_dict(vit.state_dict())  # same layout: a fixed `a` is not a weight
    x = torch.randn(3, 3, 32, 32)

    inputs, hv = _record_attn_inputs(vit)
    logits, hr = _record_revit_logits(revit)
    with torch.no_grad():
        out_vit, out_revit = vit(x), revit(x)
        vit_logits = [_qk_logits(blk.attn, i) for blk, i in zip(vit.blocks, inputs)]
    assert len(logits) == len(vit_logits) == 6
    for s_vit, r in zip(vit_logits, logits):
        torch.testing.assert_close(r, s_vit, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_revit, out_vit, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_layer", [False, True])
def test_revit_mixes_logits_recursively(per_layer):
    """R_1 = S_1, R_l = a S_l + (1 - a) R_{l-1}: the mixed logits are passed on."""
    revit = create_model("revit_micro_patch4_32", alpha_per_layer=per_layer).eval()
    with torch.no_grad():
        revit.alpha.uniform_(0.2, 0.9)
    x = torch.randn(2, 3, 32, 32)
    inputs, h1 = _record_attn_inputs(revit)
    logits, h2 = _record_revit_logits(revit)
    with torch.no_grad():
        revit(x)
        prev = None
        for i, (blk, inp, r) in enumerate(zip(revit.blocks, inputs, logits)):
            s = _qk_logits(blk.attn, inp)
            a = revit.block_alpha(i)
            expected = s if prev is None else a * s + (1 - a) * prev
            torch.testing.assert_close(r, expected, rtol=1e-5, atol=1e-5)
            prev = expected
    assert revit.alpha.numel() == (5 if per_layer else 1)


def test_revit_applies_softmax_of_mixed_logits():
    """The block output is softmax(R_l) V_l projected: check one block by hand."""
    revit = create_model("revit_micro_patch4_32").eval()
    blk = revit.blocks[1]
    x = torch.randn(2, 65, 128)
    prev = torch.randn(2, 4, 65, 65)
    with torch.no_grad():
        out, r = blk.attn(x, prev, revit.alpha[0])
        B, N, C = x.shape
        qkv = blk.attn.qkv(x).reshape(B, N, 3, 4, 32).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        s = (q * 32 ** -0.5) @ k.transpose(-2, -1)
        expected_r = 0.5 * s + 0.5 * prev
        expected = blk.attn.proj((expected_r.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C))
    torch.testing.assert_close(r, expected_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_alpha_gets_gradients_and_no_weight_decay():
    for kwargs in ({}, {"alpha_per_layer": True}):
        revit = create_model("revit_micro_patch4_32", **kwargs)
        revit(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum().backward()
        assert revit.alpha.grad is not None
        assert torch.all(revit.alpha.grad != 0)
        assert "alpha" in revit.no_weight_decay()
    fixed = create_model("revit_micro_patch4_32", learn_alpha=False, alpha=0.25)
    assert "alpha" not in dict(fixed.named_parameters())
    assert "alpha" not in fixed.state_dict()
    assert float(fixed.alpha) == 0.25


def _cb(y, scale=None):
    m = y.mean(dim=1, keepdim=True)
    if scale is not None:
        m = m * scale
    return 0.5 * y + 0.5 * m


@pytest.mark.parametrize("name", ["vit_cb_micro_patch4_32", "revit_cb_micro_patch4_32"])
@pytest.mark.parametrize("placement", ["mlp", "block"])
@pytest.mark.parametrize("scale", [False, True])
def test_cb_matches_formula(name, placement, scale):
    model = create_model(name, cb_placement=placement, cb_learnable_scale=scale).eval()
    blk = model.blocks[2]
    s = None
    if scale:
        with torch.no_grad():
            blk.broadcast.scale.uniform_(0.5, 1.5)
        s = blk.broadcast.scale
    x = torch.randn(2, 65, 128)
    with torch.no_grad():
        if name.startswith("revit"):
            out, _ = blk(x, None, model.alpha[0])
            attn_out, _ = blk.attn(blk.norm1(x))
        else:
            out = blk(x)
            attn_out = blk.attn(blk.norm1(x))
        x1 = x + attn_out
        y = blk.mlp(blk.norm2(x1))
        expected = x1 + _cb(y, s) if placement == "mlp" else _cb(x1 + y, s)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_context_broadcast_is_uniform_attention():
    """CB's mean term is exactly attention with uniform weights over all tokens."""
    x = torch.randn(2, 17, 8)
    uniform = torch.full((2, 17, 17), 1 / 17)
    torch.testing.assert_close(ContextBroadcast()(x), 0.5 * x + 0.5 * uniform @ x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", ["micro_patch4_32", "tiny_patch4_32", "tiny_patch16_224"])
def test_cb_adds_no_parameters_and_cbs_one_vector_per_block(size):
    def count(m):
        return sum(p.numel() for p in m.parameters())

    with torch.device("meta"):
        vit = create_model(f"vit_{size}")
        cb = create_model(f"vit_cb_{size}")
        cbs = create_model(f"vit_cb_{size}", cb_learnable_scale=True)
        revit = create_model(f"revit_{size}")
        revit_cb = create_model(f"revit_cb_{size}")
    assert count(cb) == count(vit)
    assert count(cbs) == count(vit) + len(vit.blocks) * vit.embed_dim
    assert count(revit_cb) == count(revit) == count(vit) + 1  # ReViT adds the scalar `a`
    assert set(cb.state_dict()) == set(vit.state_dict())


def test_vit_and_cb_keep_fused_attention_revit_materialises():
    vit = create_model("vit_micro_patch4_32")
    cb = create_model("vit_cb_micro_patch4_32")
    revit = create_model("revit_micro_patch4_32")
    fused = timm.layers.use_fused_attn()
    assert all(b.attn.fused_attn == fused for b in list(vit.blocks) + list(cb.blocks))
    assert not any(b.attn.fused_attn for b in revit.blocks)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_name_builds_runs_forward_and_backward(name):
    entry = ENTRIES[name]
    model = timm.create_model(name)
    img = entry.config["img_size"]
    x = torch.randn(1, 3, img, img)
    out = model(x)
    assert out.shape == (1, entry.config.get("num_classes", 1000))
    assert torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.embed_dim == entry.config["embed_dim"] and len(model.blocks) == entry.config["depth"]
    assert model.blocks[0].attn.num_heads == entry.config["num_heads"]


@pytest.mark.parametrize("family", ["vit", "revit", "vit_cb", "revit_cb"])
def test_options_every_family_takes(family):
    name = f"{family}_micro_patch4_32"
    avg = create_model(name, class_token=False, global_pool="avg", pos_embed="none", in_chans=1,
                       img_size=48, num_classes=7)
    assert avg.num_prefix_tokens == 0 and avg.pos_embed is None
    assert avg.patch_embed.grid_size == (12, 12)
    assert avg(torch.randn(2, 1, 48, 48)).shape == (2, 7)
    regs = create_model(name, reg_tokens=2)
    assert regs.num_prefix_tokens == 3
    assert regs(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_revit_forward_intermediates_match_forward():
    model = create_model("revit_micro_patch4_32").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=[1, 5], output_fmt="NLC")
        torch.testing.assert_close(final, model.forward_features(x))
        assert [t.shape for t in inter] == [torch.Size([2, 64, 128])] * 2
        grid = model.forward_intermediates(x, indices=1, intermediates_only=True)
        assert grid[0].shape == (2, 128, 8, 8)


def test_revit_grad_checkpointing_gives_same_gradients():
    model = create_model("revit_micro_patch4_32")
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    plain = model.alpha.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    torch.testing.assert_close(model.alpha.grad, plain)
