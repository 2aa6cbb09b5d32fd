"""Capture of attention and tokens: exact, complete, and leaves the model as it found it."""
import copy

import pytest
import timm
import torch
from torch import nn

import attnlab  # noqa: F401
from attnlab.capture import NoAttentionError, capture_attention, hook_point_names, run_with_cache
from attnlab.errors import AttnlabError
from attnlab.layout import TokenLayout

FAMILIES = ["vit_micro_patch4_32", "revit_micro_patch4_32", "vit_cb_micro_patch4_32", "revit_cb_micro_patch4_32"]


def _state(model):
    """Everything a capture could leave behind."""
    return [(n, "forward" in m.__dict__, len(m._forward_hooks), len(m._forward_pre_hooks),
             getattr(m, "fused_attn", None)) for n, m in model.named_modules()]


@pytest.mark.parametrize("name,kwargs,img", [
    *[(n, {}, 32) for n in FAMILIES],
    ("vit_tiny_patch16_224", {"img_size": 48}, 48),                  # timm's own, fused
    ("deit_tiny_distilled_patch16_224", {"img_size": 64}, 64),       # class + distillation token
    ("vit_micro_patch4_32", {"reg_tokens": 4, "img_size": 40}, 40),  # register tokens, 10x10 grid
    ("revit_micro_patch4_32", {"class_token": False, "global_pool": "avg"}, 32),
])
def test_capture_rows_sum_to_one_and_model_left_as_found(name, kwargs, img):
    model = timm.create_model(name, **kwargs).eval()
    before = _state(model)
    x = torch.randn(2, 3, img, img)
    with torch.no_grad():
        y0 = model(x)
    attn = capture_attention(model, x)
    layout = TokenLayout.from_model(model)
    assert len(attn) == len(model.blocks)
    for a in attn:
        assert a.shape == (2, model.blocks[0].attn.num_heads, layout.num_tokens, layout.num_tokens)
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), rtol=0, atol=1e-5)
    assert _state(model) == before
    with torch.no_grad():
        assert torch.equal(model(x), y0)


def test_capture_reproduces_the_module_output():
    """A V, then the projection, equals what each attention module returns."""
    for name in FAMILIES:
        model = timm.create_model(name).eval()
        x = torch.randn(2, 3, 32, 32)
        inputs, outputs = [], []

        def record(module, args, output):
            inputs.append(args[0])
            outputs.append(output)

        hs = [b.attn.register_forward_hook(record) for b in model.blocks]
        with torch.no_grad():
            y = model(x)
        for h in hs:
            h.remove()
        out, cache = run_with_cache(model, x, "*.attn.pattern")
        torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)
        for blk, inp, o, a in zip(model.blocks, inputs, outputs, cache.stack("attn.pattern")):
            B, N, C = inp.shape
            v = blk.attn.qkv(inp).reshape(B, N, 3, blk.attn.num_heads, -1).permute(2, 0, 3, 1, 4)[2]
            expected = blk.attn.proj((a @ v).transpose(1, 2).reshape(B, N, C))
            got = o[0] if isinstance(o, tuple) else o
            torch.testing.assert_close(expected, got, rtol=1e-5, atol=1e-5)


def test_capture_on_fused_timm_vit_equals_timms_unfused_softmax():
    fused = timm.create_model("vit_tiny_patch16_224", img_size=64).eval()
    assert all(b.attn.fused_attn for b in fused.blocks) == timm.layers.use_fused_attn()
    unfused = copy.deepcopy(fused)
    timm_softmax = []
    for b in unfused.blocks:
        b.attn.fused_attn = False
        b.attn.attn_drop.register_forward_hook(lambda m, a, o: timm_softmax.append(o))  # timm's own softmax
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        unfused(x)
    for ours, theirs in zip(capture_attention(fused, x), timm_softmax):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert all(b.attn.fused_attn for b in fused.blocks) == timm.layers.use_fused_attn()


def test_revit_points_are_consistent():
    model = timm.create_model("revit_micro_patch4_32").eval()
    with torch.no_grad():
        model.alpha.fill_(0.3)
    _, c = run_with_cache(model, torch.randn(2, 3, 32, 32))
    prev = None
    for i in range(6):
        s, r = c[f"blocks.{i}.attn.scores"], c[f"blocks.{i}.attn.mixed_scores"]
        torch.testing.assert_close(c[f"blocks.{i}.attn.own_pattern"], s.softmax(-1))
        torch.testing.assert_close(c[f"blocks.{i}.attn.pattern"], r.softmax(-1))
        torch.testing.assert_close(r, s if prev is None else 0.3 * s + 0.7 * prev, rtol=1e-5, atol=1e-5)
        prev = r
    assert not torch.allclose(c["blocks.5.attn.pattern"], c["blocks.5.attn.own_pattern"])


def test_filter_computes_and_keeps_only_what_is_asked():
    model = timm.create_model("vit_micro_patch4_32").eval()
    _, cache = run_with_cache(model, torch.randn(1, 3, 32, 32), ["blocks.2.attn.pattern", "*.resid_post"])
    assert sorted(cache) == sorted(["blocks.2.attn.pattern"] + [f"blocks.{i}.resid_post" for i in range(6)])
    assert cache["blocks.0.resid_post"].shape == (1, 65, 128)
    _, cache = run_with_cache(model, torch.randn(1, 3, 32, 32), lambda n: n.endswith("scores") and "blocks.1." in n)
    assert list(cache) == ["blocks.1.attn.scores"]
    assert "blocks.0.attn.own_pattern" not in hook_point_names(model)
    assert "blocks.0.attn.own_pattern" in hook_point_names(timm.create_model("revit_micro_patch4_32"))
    with pytest.raises(AttnlabError, match="no hook point matches"):
        run_with_cache(model, torch.randn(1, 3, 32, 32), "*.attn.nothing")


def test_layout_comes_from_the_model_at_any_size():
    model = timm.create_model("deit_tiny_distilled_patch16_224", img_size=(48, 80)).eval()
    _, cache = run_with_cache(model, torch.randn(1, 3, 48, 80), "blocks.0.attn.pattern")
    assert cache.layout == TokenLayout(num_prefix_tokens=2, grid_size=(3, 5), patch_size=(16, 16))
    assert cache["blocks.0.attn.pattern"].shape[-1] == 2 + 15


def test_model_without_attention_raises_and_errors_restore_the_model():
    with pytest.raises(NoAttentionError, match="no ViT attention layer"):
        capture_attention(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(1, 3, 8, 8))
    model = timm.create_model("vit_micro_patch4_32").eval()
    before = _state(model)
    with pytest.raises(RuntimeError):
        capture_attention(model, torch.randn(1, 5, 32, 32))  # wrong channel count fails inside the forward
    assert _state(model) == before


def test_capture_keeps_gradients_when_asked():
    model = timm.create_model("vit_micro_patch4_32")
    x = torch.randn(1, 3, 32, 32)
    out, cache = run_with_cache(model, x, "blocks.5.attn.pattern", detach=False)
    cache["blocks.5.attn.pattern"].sum().backward()
    assert model.blocks[5].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("name", ["vit_micro_patch4_32", "revit_micro_patch4_32"])
def test_a_transient_sink_sees_the_same_maps_in_one_kept_storage(name):
    from attnlab.capture import hooks
    from attnlab.models import create_model

    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected_out, cache = run_with_cache(model, x, ["*.attn.pattern", "*.attn.scores"])
        seen, where, alive = {}, {}, []

        def sink(point, t):
            # holding each storage stops the allocator handing a freed block out again, so equal
            # addresses below mean one kept storage, not a coincidence
            seen[point], where[point] = t.clone(), t.data_ptr()
            alive.append(t.untyped_storage())

        with hooks(model, ["*.attn.pattern", "*.attn.scores"], sink, transient=True):
            for _ in range(2):  # the storage is kept across passes too
                out = model(x)
    assert torch.equal(out, expected_out) and seen.keys() == cache.keys()
    assert all(torch.equal(seen[k], cache[k]) for k in cache)  # bit for bit
    patterns = {where[k] for k in where if k.endswith(".pattern")}
    assert len(patterns) == 1  # every layer's pattern in one storage
    scores = {where[k] for k in where if k.endswith(".scores")}
    # timm's Attention discards its logits, so they reuse storage too; ReViT passes them on: never the kept one
    assert len(scores) == 1 if name.startswith("vit") else not scores & patterns
    # with gradients the maps are allocated as usual, and gradients flow
    with hooks(model, "*.attn.pattern", lambda point, t: None, detach=False, transient=True):
        model(x).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None
